#!/usr/bin/env python3
"""The Python job that scripts/bench compares the Rust binary with.

Written for this project (not copied from the tutorial), to behave like the
job of Snowpark Container Services Tutorial 3, the way users write it today:
the `requests` library and the standard `logging` module.

Single row (INPUT_FILE unset): POST {"data": [[0, ECHO_TEXT]]} to SERVICE_URL
and log, on stdout, in the tutorial's format,
  service-to-service [2024-05-01 12:00:00,123] [INFO] Calling <url> with input Hello
  service-to-service [2024-05-01 12:00:00,125] [INFO] Received response from <url>: Bob said Hello

Batch (INPUT_FILE set): one row per line of INPUT_FILE (the line number from 0
is the row index), BATCH_SIZE rows per POST over one requests.Session
(keep-alive), every reply checked (each index of the batch answered exactly
once), and OUTPUT_FILE written as JSON lines [index, reply] in index order,
through a temporary file renamed at the end. This is the same work the Rust
job does for the batch row of the benchmark, with the same output bytes.

Environment: SERVICE_URL (default http://localhost:8080/echo), ECHO_TEXT
(default Hello), INPUT_FILE, OUTPUT_FILE, BATCH_SIZE (default 100),
REQUEST_TIMEOUT_SECONDS (default 30).

Exit status: 0 on success, 1 on any failure (logged at ERROR).
"""

import json
import logging
import os
import sys
import time

import requests

LOGGER_NAME = "service-to-service"


def make_logger():
    handler = logging.StreamHandler(sys.stdout)
    formatter = logging.Formatter("%(name)s [%(asctime)s] [%(levelname)s] %(message)s")
    # The Rust job logs UTC; so does this one.
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


log = make_logger()


class JobError(Exception):
    pass


def positive_int(name, default):
    text = os.environ.get(name, str(default))
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise JobError(f"{name} must be a positive integer, got {text!r}")
    return value


def post_rows(http, url, rows, timeout):
    """POSTs [[index, text], ...]; returns {index: reply} after checking it."""
    try:
        reply = http.post(url, json={"data": rows}, timeout=timeout)
    except requests.RequestException as error:
        raise JobError(f"POST {url} failed: {error}") from error
    if reply.status_code != 200:
        raise JobError(f"{url} answered HTTP {reply.status_code}: {reply.text[:200]!r}")
    try:
        data = reply.json()["data"]
    except (ValueError, KeyError, TypeError) as error:
        raise JobError(f"{url} sent a reply without a data array: {reply.text[:200]!r}") from error
    sent = {index for index, _ in rows}
    answers = {}
    for entry in data:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int) and entry[0] in sent):
            raise JobError(f"{url} answered a row that was not sent: {entry!r}")
        if entry[0] in answers:
            raise JobError(f"{url} answered row {entry[0]} twice")
        answers[entry[0]] = entry[1]
    if len(answers) != len(sent):
        missing = sorted(sent - answers.keys())
        raise JobError(f"{url} left {len(missing)} rows unanswered, the first being {missing[0]}")
    return answers


def shown(value):
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def single_row(url, timeout):
    text = os.environ.get("ECHO_TEXT", "Hello")
    log.info("Calling %s with input %s", url, text)
    answers = post_rows(requests, url, [[0, text]], timeout)
    log.info("Received response from %s: %s", url, shown(answers[0]))


def batches(path, size):
    with open(path, "r", encoding="utf-8", errors="strict", newline="\n") as lines:
        batch = []
        for index, line in enumerate(lines):
            batch.append([index, line[:-1] if line.endswith("\n") else line])
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


def batch_rows(url, timeout):
    input_file = os.environ["INPUT_FILE"]
    output_file = os.environ.get("OUTPUT_FILE")
    size = positive_int("BATCH_SIZE", 100)
    started = time.monotonic()
    done = 0
    temporary = None
    out = None
    if output_file:
        directory = os.path.dirname(os.path.abspath(output_file))
        temporary = os.path.join(directory, f".{os.path.basename(output_file)}.{os.getpid()}.tmp")
        out = open(temporary, "w", encoding="utf-8", newline="\n")
    try:
        with requests.Session() as http:
            for batch in batches(input_file, size):
                answers = post_rows(http, url, batch, timeout)
                for index, _ in batch:
                    if out is None:
                        log.info("Received response from %s: %s", url, shown(answers[index]))
                    else:
                        out.write(json.dumps([index, answers[index]], separators=(",", ":"), ensure_ascii=False))
                        out.write("\n")
                done += len(batch)
        if out is not None:
            out.close()
            os.replace(temporary, output_file)
            temporary = None
    finally:
        if out is not None and not out.closed:
            out.close()
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
    elapsed = time.monotonic() - started
    log.info("Done: %d rows in %.2fs (%d rows/s)", done, elapsed, done / max(elapsed, 0.001))


def main():
    url = os.environ.get("SERVICE_URL", "http://localhost:8080/echo")
    try:
        timeout = float(os.environ.get("REQUEST_TIMEOUT_SECONDS", "30"))
        if os.environ.get("INPUT_FILE"):
            batch_rows(url, timeout)
        else:
            single_row(url, timeout)
    except (JobError, OSError, UnicodeDecodeError, ValueError) as error:
        log.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

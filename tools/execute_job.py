#!/usr/bin/env python3
"""Reads what `snow sql --format json` printed for scripts/execute-job, and
prints what that script shows: the job's containers, then each instance's
log, from its node or from the event table, and the platform events of a
job that did not end DONE.

The script makes every snow call itself and keeps each call's stdout and
stderr in files; this file only parses and formats them, so that it can be
tested without a Snowflake account (tools/test_execute_job.py).

Usage: execute_job.py COMMAND ARGS...

  status FILE         the status of the job that SHOW JOB SERVICES ... ->>
                      SELECT "status", "created_on" found (the first result
                      of FILE); nothing when there is no such job
  created-on FILE     that job's created_on, as ISO 8601 for START_TIME;
                      nothing when it is missing or unreadable
  containers FILE     the rows of SHOW SERVICE CONTAINERS (the second result
                      of FILE) as a table
  instances FILE      "<instance> <container>" a line, from those rows
  missing DIR PAIR... the instances, of the "<instance> <container>" PAIRs,
                      whose node log is empty or could not be read, as an SQL
                      list ("1, 2"); nothing when every node log has lines
  event-table FILE    the EVENT_TABLE parameter's value from SHOW PARAMETERS;
                      nothing when it is unset
  error FILE          snow's error message (the box on its stderr) on one line
  report DIR --job NAME --status STATUS --prefix PREFIX PAIR...
                      the logs of every PAIR, each under one line (on
                      stderr, starting with PREFIX) naming where it came
                      from; then the platform events, when DIR holds them

DIR holds, for a snow call named NAME: NAME.json (its stdout), NAME.err (its
stderr) and, when it failed, NAME.failed. The calls are node-<instance>-
<container> (SYSTEM$GET_SERVICE_LOGS), event-logs (SPCS_GET_LOGS), events
(SPCS_GET_EVENTS) and event-table (SHOW PARAMETERS LIKE 'EVENT_TABLE').

Exit status 0; 1 with one line on stderr when a file is not what snow
prints; 2 for a bad command line.
"""

import json
import os
import re
import sys
from datetime import datetime

CONTAINER_NAME = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?\Z")
STATUS = re.compile(r"[A-Z][A-Z_]*\Z")
# The fix printed when the account has no event table. SNOWFLAKE.TELEMETRY.
# EVENTS is the event table every account has.
SET_EVENT_TABLE = "ALTER ACCOUNT SET EVENT_TABLE = SNOWFLAKE.TELEMETRY.EVENTS"


class BadOutput(Exception):
    """A file that is not what snow prints."""


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise BadOutput(f"cannot read {path}: {e.strerror}")
    try:
        return json.loads(text)
    except ValueError as e:
        raise BadOutput(f"{path} is not snow's JSON output ({e})")


def results(doc, path="snow's output"):
    """The result sets of one snow call: a list of rows for one statement,
    a list of such lists for several."""
    if not isinstance(doc, list):
        raise BadOutput(f"{path} is not a JSON list")
    if all(isinstance(item, dict) for item in doc):
        return [doc]
    if all(isinstance(item, list) for item in doc):
        for rows in doc:
            if not all(isinstance(row, dict) for row in rows):
                raise BadOutput(f"{path} holds a result that is not a list of rows")
        return doc
    raise BadOutput(f"{path} mixes rows and results")


def result(path, index):
    sets = results(load(path), path)
    if index >= len(sets):
        raise BadOutput(f"{path} has {len(sets)} result(s), not {index + 1}")
    return sets[index]


def column(row, name):
    """A row's value by column name: SHOW gives lowercase names, table
    functions uppercase ones."""
    if name in row:
        return row[name]
    for key, value in row.items():
        if key.lower() == name.lower():
            return value
    return None


def instance_number(value, path):
    if isinstance(value, bool):
        raise BadOutput(f"{path}: instance id {value!r} is not a number")
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise BadOutput(f"{path}: instance id {value!r} is not a number")


# ---- The job and its containers.


def status(path):
    rows = result(path, 0)
    if not rows:
        return ""
    value = column(rows[0], "status")
    if not isinstance(value, str) or not STATUS.match(value):
        raise BadOutput(f"{path}: job status {value!r} is not a status")
    return value


def created_on(path):
    rows = result(path, 0)
    value = column(rows[0], "created_on") if rows else None
    if not isinstance(value, str):
        return ""
    try:
        return datetime.fromisoformat(value).isoformat()
    except ValueError:
        return ""


def container_rows(path):
    rows = result(path, 1)
    parsed = []
    for row in rows:
        instance = instance_number(column(row, "instance_id"), path)
        name = column(row, "container_name")
        if not isinstance(name, str) or not CONTAINER_NAME.match(name):
            raise BadOutput(f"{path}: container name {name!r} is not an SPCS name")
        parsed.append((instance, name, row))
    parsed.sort(key=lambda p: (p[0], p[1]))
    return parsed


def text(value):
    return "" if value is None else str(value)


def table(header, rows):
    """Columns padded to their widest cell, two spaces apart."""
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = []
    for r in [header] + rows:
        cells = [cell.ljust(width) for cell, width in zip(r, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def containers(path):
    parsed = container_rows(path)
    if not parsed:
        return "no containers listed\n"
    header = ["instance", "container", "status", "message"]
    with_code = any(column(row, "last_exit_code") not in (None, "") for _, _, row in parsed)
    if with_code:
        header.append("exit code")
    rows = []
    for instance, name, row in parsed:
        cells = [str(instance), name, text(column(row, "status")), text(column(row, "message"))]
        if with_code:
            cells.append(text(column(row, "last_exit_code")))
        rows.append([" ".join(c.split()) for c in cells])
    return table(header, rows)


def instances(path):
    pairs = []
    for instance, name, _ in container_rows(path):
        if (instance, name) not in pairs:
            pairs.append((instance, name))
    return "".join(f"{i} {c}\n" for i, c in pairs)


def parse_pair(arg):
    parts = arg.split()
    if len(parts) != 2 or not parts[0].isdigit() or not CONTAINER_NAME.match(parts[1]):
        raise ValueError(f"'{arg}' is not '<instance> <container>'")
    return int(parts[0]), parts[1]


# ---- Logs and events.


def one_line(message):
    return " ".join(message.split())


def error(path):
    """snow's message from its stderr: the lines of the box it draws,
    joined, or the whole text when there is no box."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    boxed = [line.strip().strip("│").strip() for line in lines if line.strip().startswith("│")]
    message = one_line(" ".join(boxed if boxed else lines))
    return message or "snow failed without a message"


def call(directory, name):
    """(failed, path of its output, path of its stderr) of one snow call,
    or None when the script did not make it."""
    base = os.path.join(directory, name)
    if os.path.exists(base + ".failed"):
        return True, base + ".json", base + ".err"
    if os.path.exists(base + ".json"):
        return False, base + ".json", base + ".err"
    return None


def node_log(directory, instance, container):
    """(text, why not): the node log when it has a line, else None and
    what became of it."""
    made = call(directory, f"node-{instance}-{container}")
    if made is None:
        return None, "was not read"
    failed, out, err = made
    if failed:
        return None, f"could not be read ({error(err)})"
    rows = result(out, 0)
    value = next(iter(rows[0].values()), None) if rows else None
    if not isinstance(value, str) or not value.strip():
        return None, "was empty"
    return value, ""


def missing(directory, pairs):
    seen = []
    for instance, container in pairs:
        found, _ = node_log(directory, instance, container)
        if found is None and instance not in seen:
            seen.append(instance)
    return ", ".join(str(i) for i in seen)


def event_table(path):
    for row in result(path, 0):
        key = column(row, "key")
        if isinstance(key, str) and key.upper() == "EVENT_TABLE":
            value = column(row, "value")
            if isinstance(value, str) and value.strip() and value.strip().upper() != "NONE":
                return value.strip()
            return ""
    return ""


def details(value):
    """An event's EVENT_DETAILS: an object, which snow's JSON gives as JSON
    text. Its message when it has one."""
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return one_line(value)
    if isinstance(parsed, dict):
        message = column(parsed, "message")
        if isinstance(message, str) and message.strip():
            return one_line(message)
        return json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    return one_line(text(parsed))


def where(instance, container):
    if instance is None:
        return "the job"
    if not container:
        return f"instance {instance}"
    return f"instance {instance}, container {container}"


def report(directory, job, job_status, prefix, pairs):
    out = []

    def say(message):
        out.append(("err", f"{prefix}: {message}\n"))

    def show(line):
        out.append(("out", line if line.endswith("\n") else line + "\n"))

    logs_call = call(directory, "event-logs")
    by_instance = {}
    if logs_call is not None and not logs_call[0]:
        for row in result(logs_call[1], 0):
            instance = instance_number(column(row, "INSTANCE_ID"), logs_call[1])
            key = (instance, text(column(row, "CONTAINER_NAME")))
            by_instance.setdefault(key, []).append(text(column(row, "LOG")))

    for instance, container in pairs:
        log, why = node_log(directory, instance, container)
        here = where(instance, container)
        if log is not None:
            say(f"{here}: the node's log (SYSTEM$GET_SERVICE_LOGS)")
            show(log)
            continue
        if logs_call is None:
            say(f"{here}: no log: the node's log {why}")
        elif logs_call[0]:
            say(f"{here}: no log: the node's log {why}, and the event table could not be read")
        elif by_instance.get((instance, container)):
            lines = by_instance[(instance, container)]
            say(
                f"{here}: {len(lines)} line{'s' if len(lines) != 1 else ''} from the event table "
                f"({job}!SPCS_GET_LOGS), as the node's log {why}"
            )
            for line in lines:
                show(line)
        else:
            say(
                f"{here}: no log: the node's log {why}, and the event table has no lines for "
                "it either (the instance printed none, the spec lacks logExporters."
                "eventTableConfig.logLevel: INFO, or the lines have yet to arrive)"
            )

    events_call = call(directory, "events")
    failed = [c for c in (logs_call, events_call) if c is not None and c[0]]
    if failed:
        table_call = call(directory, "event-table")
        if table_call is not None and not table_call[0] and not event_table(table_call[1]):
            say(
                "this account has no event table (EVENT_TABLE is unset), so the log of a "
                "reclaimed node and the platform events cannot be read; an ACCOUNTADMIN can set "
                f"one: {SET_EVENT_TABLE}"
            )
        else:
            say(f"could not read the event table: {error(failed[0][2])}")
    if events_call is not None and not events_call[0]:
        rows = result(events_call[1], 0)
        if rows:
            say(f"{job} is {job_status or 'in an unknown state'}; its platform events ({job}!SPCS_GET_EVENTS):")
        else:
            say(f"{job} is {job_status or 'in an unknown state'}, and the event table has no platform events for it")
        for row in rows:
            raw = column(row, "INSTANCE_ID")
            instance = None if raw in (None, "") else instance_number(raw, events_call[1])
            message = details(column(row, "EVENT_DETAILS"))
            show(
                f"{text(column(row, 'TIMESTAMP'))} {where(instance, text(column(row, 'CONTAINER_NAME')))}: "
                f"{text(column(row, 'SEVERITY'))} {text(column(row, 'EVENT_NAME'))}"
                + (f": {message}" if message else "")
            )
    return out


# ---- Command line.


def line(value):
    return value + "\n" if value else ""


ONE_FILE = {
    "status": lambda path: line(status(path)),
    "created-on": lambda path: line(created_on(path)),
    "containers": containers,
    "instances": instances,
    "event-table": lambda path: line(event_table(path)),
    "error": lambda path: line(error(path)),
}


def main(argv):
    try:
        if len(argv) < 2:
            raise ValueError("no command")
        command, args = argv[1], argv[2:]
        if command in ONE_FILE:
            if len(args) != 1:
                raise ValueError(f"{command} takes one FILE")
            sys.stdout.write(ONE_FILE[command](args[0]))
        elif command == "missing":
            if not args:
                raise ValueError("missing takes DIR and PAIRs")
            sys.stdout.write(line(missing(args[0], [parse_pair(a) for a in args[1:]])))
        elif command == "report":
            if not args:
                raise ValueError("report takes DIR")
            options = {"--job": None, "--status": "", "--prefix": "execute_job.py"}
            directory, rest = args[0], args[1:]
            while rest and rest[0] in options:
                if len(rest) < 2:
                    raise ValueError(f"{rest[0]} needs a value")
                options[rest[0]] = rest[1]
                rest = rest[2:]
            if options["--job"] is None:
                raise ValueError("report needs --job")
            pairs = [parse_pair(a) for a in rest]
            lines = report(directory, options["--job"], options["--status"], options["--prefix"], pairs)
            # In order, flushed one by one: a terminal shows the lines on
            # stderr that name each log's source right above it.
            for stream, text_line in lines:
                target = sys.stdout if stream == "out" else sys.stderr
                target.write(text_line)
                target.flush()
        else:
            raise ValueError(f"unknown command '{command}'")
    except ValueError as e:
        print(f"tools/execute_job.py: {e} (its docstring lists the commands)", file=sys.stderr)
        return 2
    except BadOutput as e:
        print(f"tools/execute_job.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

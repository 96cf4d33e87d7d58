#!/usr/bin/env python3
"""A Flask echo service following the contract of SPCS Tutorial 1.

Used as an interoperability peer by the tests (the job must work against a
Python service as well as against examples/echo_service.rs).

Contract:
  * POST /echo takes {"data": [[i, text], ...]} and answers
    {"data": [[i, "<CHARACTER_NAME> said <text>"], ...]} (application/json).
    A string text is used verbatim, any other JSON value as compact JSON.
    A body whose "data" is missing, null or empty gets {}.
  * POST /concat takes two-column rows {"data": [[i, a, b], ...]} and
    answers {"data": [[i, "<a><b>"], ...]}, each column as /echo shows a
    value: a service function with two arguments.
  * GET /healthcheck answers "I'm ready!".
  * Bad requests get 400 with a short message, unknown paths 404.

Environment: SERVER_HOST (default 127.0.0.1), SERVER_PORT (default 8080; 0
binds an ephemeral port), CHARACTER_NAME (default I).

Once listening it prints one line to stderr, the same as the Rust example:
"echo_service listening on <host>:<port>", with the port actually bound.
Werkzeug's server: a thread per connection, chunked request bodies accepted,
and every connection closed after one reply (Werkzeug does no keep-alive, so a
client's reconnecting gets exercised too). No log line per request.
"""

import json
import logging
import math
import os
import sys

from flask import Flask, Response, request
from werkzeug.serving import WSGIRequestHandler, make_server

CHARACTER_NAME = os.environ.get("CHARACTER_NAME", "I")

app = Flask(__name__)


def _reject_constant(name):
    # json.loads accepts NaN and Infinity, which are not JSON.
    raise ValueError(f"{name} is not JSON")


def _finite_float(text):
    # 1e400 would become inf, and go out as Infinity, which is not JSON.
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text} is out of range")
    return value


def _json(payload):
    try:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        # json.loads lets a lone surrogate escape such as "\ud800" through.
        return _bad("request body is not valid JSON")
    return Response(body, status=200, content_type="application/json")


def _bad(message):
    return Response(message, status=400, content_type="text/plain; charset=utf-8")


def _text(value):
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _said(value):
    return f"{CHARACTER_NAME} said {_text(value)}"


@app.errorhandler(404)
def _not_found(_error):
    return Response("not found", status=404, content_type="text/plain; charset=utf-8")


@app.errorhandler(405)
def _not_allowed(error):
    response = error.get_response()
    response.set_data("method not allowed")
    response.content_type = "text/plain; charset=utf-8"
    return response


@app.get("/healthcheck")
def healthcheck():
    return Response("I'm ready!", status=200, content_type="text/plain; charset=utf-8")


def _rows():
    """The request's rows, or a 400 response."""
    try:
        message = json.loads(
            request.get_data().decode("utf-8"),
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
    except UnicodeDecodeError:
        return _bad("request body is not UTF-8")
    except ValueError:
        return _bad("request body is not valid JSON")
    if not isinstance(message, dict):
        return _bad("request body must be a JSON object")
    rows = message.get("data")
    if rows is not None and rows != [] and not isinstance(rows, list):
        return _bad('"data" must be an array of rows')
    return rows or []


@app.post("/echo")
def echo():
    rows = _rows()
    if isinstance(rows, Response):
        return rows
    if not rows:
        return _json({})
    output = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 2:
            return _bad("each row must be an array [index, value]")
        output.append([row[0], _said(row[1])])
    return _json({"data": output})


@app.post("/concat")
def concat():
    rows = _rows()
    if isinstance(rows, Response):
        return rows
    output = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 3:
            return _bad("each row must be an array [index, a, b]")
        output.append([row[0], _text(row[1]) + _text(row[2])])
    return _json({"data": output})


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code="-", size="-"):
        pass


def main():
    host = os.environ.get("SERVER_HOST", "").strip() or "127.0.0.1"
    try:
        port = int(os.environ.get("SERVER_PORT", "").strip() or "8080")
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        got = os.environ.get("SERVER_PORT")
        print(f"echo_service: SERVER_PORT must be 0..=65535, got {got!r}", file=sys.stderr)
        return 2
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    bound_host, bound_port = server.socket.getsockname()[:2]
    if ":" in bound_host:
        bound_host = f"[{bound_host}]"
    print(f"echo_service listening on {bound_host}:{bound_port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Adversarial echo services on 127.0.0.1, for scripts/bench's robustness rows.

    python3 bench/peers/hostile.py BEHAVIOUR [--port N] [--character NAME]

Each answers POSTs of the row format, {"data": [[index, text], ...]}, the way
the tutorial's echo service does ([index, "Bob said <text>"]), but treats the
connection in its own way:

  keep-alive     an ordinary HTTP/1.1 server: many requests per connection
  close          answers one request correctly, with Content-Length and no
                 `Connection: close` header, then closes the connection at
                 once (what some proxies and servers with a keep-alive limit
                 of 1 do)
  close-header   the same, but says `Connection: close`, as HTTP/1.1 asks
  stall          reads the request, declares `Content-Length: 10485760`
                 (10 MiB), sends one byte of the body and then nothing more,
                 until the client gives up (or STALL_SECONDS pass)

It prints `hostile peer BEHAVIOUR listening on 127.0.0.1:PORT` on stderr once
bound, and serves until SIGINT or SIGTERM. scripts/bench (bench/bench.py)
runs the same servers in its own process through serve().

The standard library only: it runs wherever python3 does.
"""

import argparse
import json
import signal
import socketserver
import sys
import threading

BEHAVIOURS = ("keep-alive", "close", "close-header", "stall")
DECLARED_BYTES = 10 * 1024 * 1024
STALL_SECONDS = 120
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024


class BadRequest(Exception):
    """The client sent something this server does not take."""


def echo_reply(body, character):
    """The reply body to a row-format request body (bytes -> bytes)."""
    try:
        rows = json.loads(body)["data"]
        answers = [[row[0], f"{character} said {row[1]}"] for row in rows]
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise BadRequest(f"not the row format: {error}") from None
    return json.dumps({"data": answers}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_head(head):
    """(method, target, {lower-case header name: value}) of a request head
    (bytes, without the blank line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise BadRequest("undecodable head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(f"bad request line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest(f"bad header line {line!r}")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], headers


class Connection:
    """Reads requests off one socket, with what was read past each kept."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def _take(self, count):
        while len(self.buffer) < count:
            if not self._fill():
                raise EOFError
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    def _line(self):
        while True:
            end = self.buffer.find(b"\r\n")
            if end >= 0:
                return self._take(end + 2)[:-2]
            if len(self.buffer) > MAX_HEAD_BYTES or not self._fill():
                raise EOFError

    def read_request(self):
        """(method, target, headers, body), or None when the client closed
        the connection between requests."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise BadRequest("request head too long")
            if not self._fill():
                if self.buffer:
                    raise BadRequest("connection closed inside a request head")
                return None
        head = self._take(end + 4)[:-4]
        method, target, headers = parse_head(head)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._take(size)
                self._take(2)
                if len(body) > MAX_BODY_BYTES:
                    raise BadRequest("body too large")
            return method, target, headers, bytes(body)
        length = int(headers.get("content-length", "0"))
        if not 0 <= length <= MAX_BODY_BYTES:
            raise BadRequest(f"bad Content-Length {length}")
        return method, target, headers, self._take(length)


def response(status, body, extra_headers=(), content_length=None):
    """An HTTP/1.1 response head and body, as bytes."""
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[status]
    length = len(body) if content_length is None else content_length
    head = [f"HTTP/1.1 {status} {reason}", "Content-Type: application/json", f"Content-Length: {length}"]
    head += list(extra_headers)
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        server = self.server
        server.count("connections")
        connection = Connection(self.request)
        try:
            while True:
                request = connection.read_request()
                if request is None:
                    return
                method, _, _, body = request
                if method != "POST":
                    self.request.sendall(response(405, b'{"error":"POST only"}', ["Connection: close"]))
                    return
                try:
                    reply = echo_reply(body, server.character)
                except BadRequest as error:
                    self.request.sendall(response(400, json.dumps({"error": str(error)}).encode(), ["Connection: close"]))
                    return
                server.count("requests")
                if server.behaviour == "stall":
                    self._stall()
                    return
                if server.behaviour == "close-header":
                    self.request.sendall(response(200, reply, ["Connection: close"]))
                    return
                self.request.sendall(response(200, reply))
                if server.behaviour == "close":
                    return
        except (BadRequest, EOFError, ValueError, OSError):
            return

    def _stall(self):
        """Declare 10 MiB, send one byte, then hold the connection open until
        the client closes it."""
        server = self.server
        self.request.sendall(response(200, b"{", content_length=DECLARED_BYTES))
        server.stalling(+1)
        try:
            self.request.settimeout(server.stall_seconds)
            while self.request.recv(65536):
                pass
        except OSError:
            pass
        finally:
            server.stalling(-1)


class Peer(socketserver.ThreadingTCPServer):
    """One hostile echo service on 127.0.0.1 and a free port (or `port`),
    counting connections, requests answered and the most connections it
    stalled at once."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, behaviour, port=0, character="Bob", stall_seconds=STALL_SECONDS):
        if behaviour not in BEHAVIOURS:
            raise ValueError(f"behaviour must be one of {', '.join(BEHAVIOURS)}, not {behaviour!r}")
        self.behaviour = behaviour
        self.character = character
        self.stall_seconds = stall_seconds
        self._lock = threading.Lock()
        self.counts = {"connections": 0, "requests": 0, "stalled_now": 0, "stalled_at_once": 0}
        super().__init__(("127.0.0.1", port), Handler)

    @property
    def port(self):
        return self.server_address[1]

    def count(self, name):
        with self._lock:
            self.counts[name] += 1

    def stalling(self, delta):
        with self._lock:
            self.counts["stalled_now"] += delta
            self.counts["stalled_at_once"] = max(self.counts["stalled_at_once"], self.counts["stalled_now"])

    def snapshot(self):
        with self._lock:
            return dict(self.counts)

    def reset(self):
        with self._lock:
            for name in self.counts:
                if name != "stalled_now":
                    self.counts[name] = 0


class serve:
    """Context manager: a Peer serving from a thread of this process.

        with serve("close") as peer:
            ... http://127.0.0.1:{peer.port}/echo ...
    """

    def __init__(self, behaviour, **options):
        self.peer = Peer(behaviour, **options)
        self.thread = threading.Thread(target=self.peer.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.peer

    def __exit__(self, *exc):
        self.peer.shutdown()
        self.peer.server_close()
        self.thread.join()
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="bench/peers/hostile.py", description="Adversarial echo services on 127.0.0.1 (see the module's docstring)."
    )
    parser.add_argument("behaviour", choices=BEHAVIOURS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--character", default="Bob")
    args = parser.parse_args(argv)
    try:
        peer = Peer(args.behaviour, port=args.port, character=args.character)
    except OSError as error:
        print(f"bench/peers/hostile.py: cannot listen on 127.0.0.1:{args.port}: {error.strerror}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=peer.shutdown).start())
    print(f"hostile peer {args.behaviour} listening on 127.0.0.1:{peer.port}", file=sys.stderr, flush=True)
    try:
        peer.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        peer.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

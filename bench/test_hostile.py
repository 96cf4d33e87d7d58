"""Unit tests of bench/peers/hostile.py (run by scripts/test):
python3 -m unittest discover -s bench -p 'test_*.py'"""

import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))

import hostile  # noqa: E402
from hostile import BadRequest, echo_reply, parse_head, serve  # noqa: E402


def post(body, extra=""):
    data = json.dumps(body).encode()
    return f"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(data)}\r\n{extra}\r\n".encode() + data


def read_response(sock):
    """(status line, {header: value}, body) of one response with a length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(data)
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines[0], headers, body


def closed_by_peer(sock, timeout=5.0):
    """True when the peer closed (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class Replies(unittest.TestCase):
    def test_echo_reply_is_the_tutorial_format(self):
        reply = echo_reply(b'{"data": [[0, "Hello"], [7, "x y"]]}', "Bob")
        self.assertEqual(reply, b'{"data":[[0,"Bob said Hello"],[7,"Bob said x y"]]}')

    def test_not_the_row_format(self):
        for body in (b"{", b"{}", b'{"data": [[0]]}', b'{"data": 3}'):
            with self.assertRaises(BadRequest, msg=body):
                echo_reply(body, "Bob")

    def test_parse_head(self):
        method, target, headers = parse_head(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length:  12 ")
        self.assertEqual((method, target, headers), ("POST", "/echo", {"host": "a", "content-length": "12"}))
        with self.assertRaises(BadRequest):
            parse_head(b"GARBAGE")
        with self.assertRaises(BadRequest):
            parse_head(b"POST / HTTP/1.1\r\nno colon here")

    def test_unknown_behaviour(self):
        with self.assertRaisesRegex(ValueError, "behaviour must be one of"):
            hostile.Peer("polite")


class Behaviours(unittest.TestCase):
    def connect(self, peer):
        sock = socket.create_connection(("127.0.0.1", peer.port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    def test_keep_alive_answers_many_requests_on_one_connection(self):
        with serve("keep-alive") as peer:
            sock = self.connect(peer)
            for i in range(3):
                sock.sendall(post({"data": [[i, "Hello"]]}))
                status, headers, body = read_response(sock)
                self.assertEqual(status, "HTTP/1.1 200 OK")
                self.assertNotIn("connection", headers)
                self.assertEqual(json.loads(body), {"data": [[i, "Bob said Hello"]]})
            self.assertEqual(peer.snapshot()["connections"], 1)
            self.assertEqual(peer.snapshot()["requests"], 3)

    def test_close_says_nothing_and_closes_after_each_reply(self):
        with serve("close") as peer:
            sock = self.connect(peer)
            sock.sendall(post({"data": [[0, "Hello"]]}))
            status, headers, body = read_response(sock)
            self.assertEqual(status, "HTTP/1.1 200 OK")
            self.assertNotIn("connection", headers)
            self.assertEqual(body, b'{"data":[[0,"Bob said Hello"]]}')
            self.assertTrue(closed_by_peer(sock))

    def test_close_header_says_so(self):
        with serve("close-header") as peer:
            sock = self.connect(peer)
            sock.sendall(post({"data": [[0, "Hello"]]}))
            _, headers, _ = read_response(sock)
            self.assertEqual(headers["connection"], "close")
            self.assertTrue(closed_by_peer(sock))

    def test_stall_declares_ten_mib_sends_one_byte_and_holds_on(self):
        with serve("stall") as peer:
            socks = [self.connect(peer) for _ in range(3)]
            for sock in socks:
                sock.sendall(post({"data": [[0, "Hello"]]}))
            for sock in socks:
                data = b""
                while not data.endswith(b"\r\n\r\n{"):
                    data += sock.recv(65536)
                self.assertIn(b"Content-Length: 10485760\r\n", data)
                self.assertFalse(closed_by_peer(sock, timeout=0.3), "the stalling peer closed or sent more")
            deadline = time.monotonic() + 5
            while peer.snapshot()["stalled_at_once"] < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(peer.snapshot()["stalled_at_once"], 3)
            for sock in socks:
                sock.close()
            deadline = time.monotonic() + 5
            while peer.snapshot()["stalled_now"] and time.monotonic() < deadline:
                time.sleep(0.01)
            self.assertEqual(peer.snapshot()["stalled_now"], 0, "a client's close did not end its stall")

    def test_chunked_request_body(self):
        with serve("keep-alive") as peer:
            sock = self.connect(peer)
            data = json.dumps({"data": [[5, "chunked"]]}).encode()
            sock.sendall(
                b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                + f"{len(data) - 4:x}\r\n".encode() + data[:-4] + b"\r\n"
                + f"{4:x};ext=1\r\n".encode() + data[-4:] + b"\r\n0\r\n\r\n"
            )
            _, _, body = read_response(sock)
            self.assertEqual(json.loads(body), {"data": [[5, "Bob said chunked"]]})

    def test_a_bad_body_is_400_and_closes(self):
        with serve("keep-alive") as peer:
            sock = self.connect(peer)
            sock.sendall(b"POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc")
            status, headers, _ = read_response(sock)
            self.assertEqual(status, "HTTP/1.1 400 Bad Request")
            self.assertEqual(headers["connection"], "close")
            self.assertEqual(peer.snapshot()["requests"], 0)

    def test_reset_counts(self):
        with serve("close") as peer:
            sock = self.connect(peer)
            sock.sendall(post({"data": [[0, "x"]]}))
            read_response(sock)
            peer.reset()
            self.assertEqual(peer.snapshot()["requests"], 0)


if __name__ == "__main__":
    unittest.main()

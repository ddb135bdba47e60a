"""
The request limits of C{[gateway]} through the real gateway (twistd in a
subprocess, a raw-socket backend on loopback): C{maxRequestBodySize} (413
for a Content-Length over it before the backend sees a byte, 413 for a
chunked body that grows past it), C{maxRequestLineSize} and
C{maxRequestHeaderSize} (414, 431), and a 32 KB cookie taken with the
defaults.  See docs/traffic-policy.rst.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from tests.rawbackend import RawBackend
from tests.support import basicIni, freePort, startGateway, waitFor
from tests.test_security import _readResponse


class _Recorder:
    """A backend handler that reads the whole body (Content-Length or chunked) and records what came."""

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bytes]] = []
        """(head, body or a note on how it ended) per request."""
        self.lock = threading.Lock()

    def __call__(self, conn: socket.socket, head: bytes, rest: bytes) -> None:
        lower = head.lower()
        body = rest
        try:
            if b"\r\ntransfer-encoding: chunked" in lower:
                while not body.endswith(b"0\r\n\r\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        self._record(head, b"closed after %d" % len(body))
                        return
                    body += chunk
            else:
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        self._record(head, b"closed after %d" % len(body))
                        return
                    body += chunk
        except ConnectionError:
            self._record(head, b"reset after %d" % len(body))
            return
        self._record(head, body)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def _record(self, head: bytes, body: bytes) -> None:
        with self.lock:
            self.seen.append((head, body))


def _send(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(data)
        return _readResponse(s)


def test_body_and_head_limits_through_the_gateway(tmp_path: Path) -> None:
    """
    With maxRequestBodySize = 1000: a Content-Length of 1001 is 413 and the
    backend never gets a connection for it; 1000 passes; a chunked body of
    600 + 600 bytes is cut with 413 (the backend's exchange is closed
    before its body ends); a chunked body of 600 + 400 passes.  With the
    default head limits (32768 bytes each): a 32 KB cookie passes, a
    request line or header fields over 32768 bytes are 414 and 431, naming
    the limit.
    """
    recorder = _Recorder()
    backend = RawBackend(recorder)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port], gateway="maxRequestBodySize = 1000"), port)
    try:
        head = b"POST /up HTTP/1.1\r\nHost: x\r\n"
        answer = _send(port, head + b"Content-Length: 1001\r\n\r\n" + b"a" * 1001)
        assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), answer
        assert answer.endswith(b"413 Request Entity Too Large: the request body is larger than 1000 bytes\n")
        assert backend.requests == 0  # no request head reached it (health probes are not counted)
        answer = _send(port, head + b"Content-Length: 1000\r\nConnection: close\r\n\r\n" + b"a" * 1000)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
        assert recorder.seen[-1][1] == b"a" * 1000

        chunked = head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        chunk = lambda n: b"%x\r\n" % n + b"c" * n + b"\r\n"  # noqa: E731
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(chunked + chunk(600))
            waitFor(lambda: backend.requests == 2, what="the chunked request at the backend")
            s.sendall(chunk(600) + b"0\r\n\r\n")
            answer = _readResponse(s)
        assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), answer
        assert answer.endswith(b"413 Request Entity Too Large: the request body is larger than 1000 bytes\n")
        assert b"\r\nConnection: close" in answer.partition(b"\r\n\r\n")[0]
        waitFor(lambda: len(recorder.seen) == 2, what="the backend's exchange closed")
        assert recorder.seen[1][1].startswith((b"closed after", b"reset after")), recorder.seen[1]
        answer = _send(port, chunked + chunk(600) + chunk(400) + b"0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer

        # The head limits: 32768 bytes each by default.
        cookie = b"Cookie: session=" + b"s" * 32000 + b"\r\n"
        answer = _send(port, b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + cookie + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
        assert cookie in recorder.seen[-1][0] + b"\r\n"
        requests = backend.requests
        answer = _send(port, b"GET /" + b"a" * 32800 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 414 URI Too Long\r\n"), answer
        assert answer.endswith(b"the request line is longer than 32768 bytes\n")
        fields = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(33))
        answer = _send(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer
        assert answer.endswith(b"the request header fields are longer than 32768 bytes\n")
        assert backend.requests == requests
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        backend.close()


def test_a_chunked_body_over_the_limit_after_the_response_began_aborts(tmp_path: Path) -> None:
    """
    The backend answers (a chunked response, begun) while the body is still
    coming; when the body grows past maxRequestBodySize the status cannot
    change any more: the client's connection is aborted (its response left
    unfinished) and the backend's closed.
    """
    ended: list[bytes] = []

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        received = rest
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionError:
            pass
        ended.append(received)

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port], gateway="maxRequestBodySize = 1000"), port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(
                b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"258\r\n"
                + b"c" * 600
                + b"\r\n"
            )
            answer = b""
            while b"hello" not in answer:
                chunk = s.recv(65536)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
            s.sendall(b"258\r\n" + b"c" * 600 + b"\r\n0\r\n\r\n")
            answer += _readResponse(s)
        assert not answer.endswith(b"0\r\n\r\n"), answer  # cut, not finished
        waitFor(lambda: ended, what="the backend's connection closed")
        assert b"c" * 600 in ended[0] and b"0\r\n\r\n" not in ended[0]
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        backend.close()

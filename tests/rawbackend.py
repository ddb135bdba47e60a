"""
Scriptable raw-socket backends for proxy tests: each connection is handed to
a function that reads the request and writes whatever bytes the test wants,
so malformed, slow, chunked and huge responses are all easy to make.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import threading
from typing import Callable

Handler = Callable[[socket.socket, bytes, bytes], None]
"""Called with the connection, the request head and any bytes read past it."""

PROBE_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def readHead(conn: socket.socket, limit: int = 1 << 20) -> tuple[bytes, bytes]:
    """Read up to the end of the request head; return (head, extra bytes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the head ended")
        data += chunk
        if len(data) > limit:
            raise ValueError("head too large")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""RFC 6455's GUID, appended to the key for C{Sec-WebSocket-Accept}."""


def acceptFor(key: bytes) -> bytes:
    """The C{Sec-WebSocket-Accept} value that answers C{Sec-WebSocket-Key: key} (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324


def handshakeRequest(host: bytes, path: bytes = b"/ws", extra: bytes = b"") -> bytes:
    """A minimal WebSocket handshake; C{extra} adds header lines (each ending in CRLF)."""
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + extra + b"\r\n"
    )


def handshakeHead(
    port: int,
    host: bytes,
    path: bytes = b"/ws",
    timeout: float = 10,
    extra: bytes = b"",
    context: ssl.SSLContext | None = None,
    serverName: str = "localhost",
) -> bytes:
    """
    Send L{handshakeRequest} to the gateway on C{port} (over TLS with
    C{context}, for C{serverName}); return the answer's head.  The
    connection is then closed without a close frame.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        s = context.wrap_socket(raw, server_hostname=serverName) if context is not None else raw
        try:
            s.sendall(handshakeRequest(host, path, extra))
            head, _ = readHead(s)
        finally:
            s.close()
    return head


def headerValue(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


class RawBackend:
    """
    A threaded TCP server on 127.0.0.1 running C{handler} per connection,
    on C{port} (0: a free one).
    """

    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.probes = 0
        self.requests = 0
        """Requests handed to the handler (health probes excluded)."""
        self.events: list[str] = []
        self.closed = threading.Event()
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            head, rest = readHead(conn)
            if head.startswith(b"GET / HTTP/1.1") and b"\r\nConnection: close" in head:
                # The gateway's health probe: answer it so tests see only their own requests.
                self.probes += 1
                conn.sendall(PROBE_ANSWER)
                return
            self.requests += 1
            self.handler(conn, head, rest)
        except Exception as e:  # recorded for the test to inspect
            self.events.append(f"error: {e!r}")
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self.thread.join(2)

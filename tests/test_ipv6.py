"""
IPv6 backend members end to end: a member on C{::1} is proxied, probed,
pinned by affinity and bridged for WebSocket, and every Host line the
gateway writes for it brackets the address (RFC 3986 section 3.2.2), as
C{http.client}, curl and every server expect.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import threading
from pathlib import Path

import pytest

from tests.rawbackend import handshakeHead, headerValue, readHead
from tests.support import basicIni, freePort, startGateway, waitFor

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _hasIPv6Loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _hasIPv6Loopback(), reason="no IPv6 loopback (::1) on this machine")


class V6Backend:
    """A threaded server on C{[::1]} that records every request head and answers probes, GETs and WebSocket handshakes."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET6)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("::1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            while True:
                head, _ = readHead(conn)
                with self.lock:
                    self.heads.append(head)
                key = headerValue(head, b"sec-websocket-key")
                if key is not None:
                    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
                    conn.sendall(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                    )
                    # A close frame (1000) from the server side ends the bridged session.
                    conn.sendall(b"\x88\x02\x03\xe8")
                    conn.recv(1024)
                    return
                body = b"v6 member"
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                if headerValue(head, b"connection") == b"close":
                    return
        except (OSError, ConnectionError):
            pass
        finally:
            conn.close()

    def hosts(self, prefix: bytes) -> list[bytes]:
        with self.lock:
            return [headerValue(h, b"host") or b"" for h in self.heads if h.startswith(prefix)]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def v6backend():
    backend = V6Backend()
    yield backend
    backend.close()


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


def test_ipv6_member_is_proxied_probed_pinned_and_bridged_with_a_bracketed_host(
    tmp_path: Path, v6backend: V6Backend
) -> None:
    gw = freePort()
    adminPort = freePort()
    member = f"[::1]:{v6backend.port}"
    ini = basicIni(
        gw,
        [member],
        settings="pickHostNameFromBackendAddress = true\ncookieBasedAffinity = Enabled\nprobe = p1",
        gateway=f"admin = tcp:{adminPort}:interface=127.0.0.1",
        probe="protocol = Http\npickHostNameFromBackendHttpSettings = true\npath = /probe\ninterval = 1\ntimeout = 5",
    )
    proc = startGateway(tmp_path, ini, gw)
    try:
        # Probed: the probe's Host is the member's name, bracketed.
        waitFor(lambda: v6backend.hosts(b"GET /probe "), what="a probe of the ::1 member")
        assert set(v6backend.hosts(b"GET /probe ")) == {b"[::1]"}

        waitFor(lambda: b'"Healthy"' in _admin(adminPort, "/health"), what="the ::1 member healthy")

        # Proxied, with pickHostNameFromBackendAddress: Host is [::1].
        resp = _get(gw, "/app", {"Host": "site.example"})
        assert resp.status == 200
        assert v6backend.hosts(b"GET /app ") == [b"[::1]"]
        cookie = resp.getheader("Set-Cookie")
        assert cookie and cookie.startswith("ApplicationGatewayAffinity=")

        # Pinned: the cookie the gateway issued for the ::1 member is honoured (no new cookie issued).
        value = cookie.split(";", 1)[0]
        again = _get(gw, "/app2", {"Cookie": value})
        assert again.status == 200
        assert again.getheader("Set-Cookie") is None
        assert v6backend.hosts(b"GET /app2 ") == [b"[::1]"]

        # Bridged: the WebSocket handshake towards the member carries [::1] too.
        head = handshakeHead(gw, b"site.example")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert v6backend.hosts(b"GET /ws ") == [b"[::1]"]

        # The status page names the member as [::1]:port.
        status = json.loads(_admin(adminPort, "/status.json"))
        assert member in json.dumps(status)
    finally:
        proc.stop()


def _admin(adminPort: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", adminPort, timeout=10)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return body

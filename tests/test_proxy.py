"""
The reverse proxy end to end: the real twistd entry point in a subprocess,
real backends on loopback, real clients (http.client, raw sockets, curl).
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import os
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.rawbackend import RawBackend, headerValue
from tests.support import Proc, basicIni, freePort, startBackend, startGateway


@pytest.fixture(scope="module")
def tmpdir_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("proxy")


@pytest.fixture(scope="module")
def backends(tmpdir_module: Path) -> Iterator[list[int]]:
    procs = [startBackend(tmpdir_module, f"b{i}") for i in (1, 2)]
    yield [port for _, port in procs]
    for p, _ in procs:
        p.stop()


@pytest.fixture(scope="module")
def gateway(tmpdir_module: Path, backends: list[int]) -> Iterator[tuple[int, Proc]]:
    port = freePort()
    gw = startGateway(tmpdir_module, basicIni(port, backends), port)
    yield port, gw
    gw.stop()


def get(
    port: int,
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, resp


def backendHeaders(
    port: int, headers: dict[str, str] | None = None
) -> tuple[list[list[str]], dict[str, object]]:
    status, _, body, _ = get(port, "/headers", headers=headers)
    assert status == 200
    doc = json.loads(body)
    return doc["headers"], doc


def test_round_robin_over_two_members(gateway: tuple[int, Proc]) -> None:
    port, _ = gateway
    seen = [get(port)[2].decode().strip() for _ in range(6)]
    assert set(seen) == {"Hello from agw demo backend b1", "Hello from agw demo backend b2"}
    # strict alternation: round robin, not random
    assert all(seen[i] != seen[i + 1] for i in range(5))


def test_forwarded_headers_added(gateway: tuple[int, Proc]) -> None:
    port, _ = gateway
    hdrs, _ = backendHeaders(port, {"X-Forwarded-For": "203.0.113.7", "Host": "app.example.com"})
    d = {k.lower(): v for k, v in hdrs}
    assert d["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert d["x-forwarded-proto"] == "http"
    assert d["x-forwarded-port"] == str(port)
    assert d["x-original-host"] == "app.example.com"
    assert d["host"] == "app.example.com"
    assert [k.lower() for k, _ in hdrs].count("x-forwarded-for") == 1


def test_hop_by_hop_headers_removed_and_repeats_kept(gateway: tuple[int, Proc]) -> None:
    port, _ = gateway
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\n"
        b"X-Secret: drop-me\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        b"Proxy-Authorization: Basic Zm9v\r\nX-Multi: one\r\nX-Multi: two\r\n"
        b"Upgrade: h2c\r\n\r\n"
    )
    resp = http.client.HTTPResponse(s)
    resp.begin()
    assert resp.status == 200
    doc = json.loads(resp.read())
    s.close()
    names = [k.lower() for k, _ in doc["headers"]]
    for gone in ("connection", "x-secret", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert gone not in names
    assert [v for k, v in doc["headers"] if k.lower() == "x-multi"] == ["one", "two"]


def rawExchange(port: int, raw: bytes) -> tuple[int, bytes]:
    """Send C{raw} (which must ask for Connection: close); the status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(raw)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, resp.read()


def test_host_named_in_connection_is_still_sent(gateway: tuple[int, Proc]) -> None:
    port, _ = gateway
    status, body = rawExchange(
        port,
        b"GET /headers HTTP/1.1\r\nHost: app.example\r\n"
        b"Connection: close, Host, X-Secret\r\nX-Secret: drop-me\r\n\r\n",
    )
    assert status == 200
    headers = json.loads(body)["headers"]
    assert [v for k, v in headers if k.lower() == "host"] == ["app.example"]
    assert "x-secret" not in [k.lower() for k, _ in headers]


@pytest.mark.parametrize("method, body", [(b"GET", b""), (b"POST", b"hello")])
def test_absolute_form_target_is_accepted(gateway: tuple[int, Proc], method: bytes, body: bytes) -> None:
    # RFC 9112 section 3.2.2: the authority replaces the Host header, the
    # backend gets the origin-form path and query.
    port, _ = gateway
    status, data = rawExchange(
        port,
        method + b" HTTP://app.example:8443/headers?a=1 HTTP/1.1\r\nHost: ignored.example\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    assert status == 200, data
    doc = json.loads(data)
    assert doc["method"] == method.decode()
    assert doc["uri"] == "/headers?a=1"
    hosts = [v for k, v in doc["headers"] if k.lower() == "host"]
    assert hosts == ["app.example:8443"]
    # Without a path the target is "/"; a query alone keeps it.
    status, data = rawExchange(
        port, b"GET http://app.example?x=2 HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n"
    )
    assert status == 200
    assert data.startswith(b"Hello from")
    # HTTP/1.1 without Host is 400 even so (RFC 9112 section 3.2, as nginx);
    # HTTP/1.0 may leave it out.
    status, data = rawExchange(port, b"GET http://app.example/ HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert (status, data) == (400, b"400 Bad Request: missing Host header\n")
    status, data = rawExchange(port, b"GET http://app.example/ HTTP/1.0\r\n\r\n")
    assert status == 200 and data.startswith(b"Hello from")


@pytest.mark.parametrize(
    "target",
    [b"http:///headers", b"http://user@app.example/headers", b"ftp://app.example/headers"],
)
def test_bad_absolute_form_is_400(gateway: tuple[int, Proc], target: bytes) -> None:
    port, _ = gateway
    status, data = rawExchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status == 400
    assert b"request target" in data


def test_host_override(tmp_path: Path, backends: list[int]) -> None:
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, backends[:1], settings="hostName = backend.internal"), port)
    try:
        hdrs, _ = backendHeaders(port, {"Host": "public.example.com"})
        d = {k.lower(): v for k, v in hdrs}
        assert d["host"] == "backend.internal"
        assert d["x-original-host"] == "public.example.com"
    finally:
        gw.stop()


def test_streams_request_and_response_bodies(gateway: tuple[int, Proc]) -> None:
    port, _ = gateway
    body = os.urandom(3 * 1024 * 1024 + 17)
    status, headers, data, _ = get(port, "/echo", method="POST", body=body)
    assert status == 200
    assert hashlib.sha256(data).digest() == hashlib.sha256(body).digest()


def test_head_204_304(gateway: tuple[int, Proc]) -> None:
    port, _ = gateway
    status, headers, data, _ = get(port, "/", method="HEAD")
    assert status == 200 and data == b"" and headers["content-length"] == "31"
    assert get(port, "/status/204")[0] == 204
    status, headers, data, _ = get(port, "/status/304")
    assert status == 304 and data == b""
    # the connection is still usable after bodiless responses (keep-alive)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for path in ("/status/204", "/status/304", "/"):
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        assert r.status in (200, 204, 304)
    conn.close()


def test_expect_100_continue(gateway: tuple[int, Proc]) -> None:
    port, _ = gateway
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n")
    s.sendall(b"hello")
    data = b""
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = s.recv(4096)
        assert chunk
        data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    assert b"\r\n5\r\nhello\r\n" in data
    s.close()


def test_chunked_response_is_relayed(tmp_path: Path) -> None:
    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
            b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n"
        )

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        status, headers, data, _ = get(port)
        assert status == 200
        assert data == b"hello, world"
        assert headers.get("content-type") == "text/plain"
    finally:
        gw.stop()
        backend.close()


@pytest.mark.parametrize(
    "backendLine, expected",
    [
        # The backend's own phrase is relayed as it is.
        (b"HTTP/1.1 200 Fine Thanks", b"HTTP/1.1 200 Fine Thanks"),
        # An empty phrase gets the standard one, also for codes Twisted's
        # table lacks (it would write "Unknown Status").
        (b"HTTP/1.1 429 ", b"HTTP/1.1 429 Too Many Requests"),
        (b"HTTP/1.1 451", b"HTTP/1.1 451 Unavailable For Legal Reasons"),
        (b"HTTP/1.1 404 ", b"HTTP/1.1 404 Not Found"),
        # An unregistered code keeps an empty phrase (RFC 9112 allows it).
        (b"HTTP/1.1 599 ", b"HTTP/1.1 599 "),
    ],
)
def test_status_line_reason_phrase(tmp_path: Path, backendLine: bytes, expected: bytes) -> None:
    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        conn.sendall(backendLine + b"\r\nContent-Length: 2\r\n\r\nok")

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        assert data.split(b"\r\n")[0] == expected
        assert data.endswith(b"\r\n\r\nok")
    finally:
        gw.stop()
        backend.close()


OK_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@contextmanager
def gatewayOverRawBackend(tmp_path: Path, answers: dict[bytes, bytes]) -> Iterator[int]:
    """A gateway (its port) before a raw backend that sends C{answers[path]}, else OK_ANSWER."""

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        conn.sendall(answers.get(head.split(b" ")[1], OK_ANSWER))

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        yield port
    finally:
        gw.stop()
        backend.close()


def test_an_ambiguous_or_corrupt_backend_head_is_502(tmp_path: Path) -> None:
    # Relayed, each of these would wedge or split the client's response.
    answers = {
        b"/clte": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        b"/nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
        b"/lf": b"HTTP/1.1 200 OK\r\nX-A: a\nSet-Cookie: injected=1\r\nContent-Length: 2\r\n\r\nok",
    }
    with gatewayOverRawBackend(tmp_path, answers) as port:
        for path in answers:
            status, data = rawExchange(
                port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert status == 502, (path, data)
            assert b"backend response failed" in data
        assert get(port, "/fine")[2] == b"ok"


def test_a_backend_breaking_off_mid_body_aborts_the_client_connection(tmp_path: Path) -> None:
    # The 200 has gone out: the client must see a broken response (not a
    # short one that looks complete, and not a connection kept for reuse).
    broken = {b"/broken": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-this"}
    with gatewayOverRawBackend(tmp_path, broken) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/broken")
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            resp.read()
        conn.close()
        assert get(port)[0] == 200


def readResponse(s: socket.socket, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """One response from a socket left open: status, headers (lowercased names), body."""
    resp = http.client.HTTPResponse(s, method=method)
    resp.begin()
    body = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def closedAfter(s: socket.socket) -> bool:
    """Whether the gateway closes the connection (EOF) rather than waiting for more."""
    s.settimeout(10)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False


def test_http10_keep_alive_is_granted_when_the_response_has_a_length(tmp_path: Path) -> None:
    chunked = {b"/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"}
    keepAlive = b"Host: x\r\nConnection: keep-alive\r\n\r\n"
    with gatewayOverRawBackend(tmp_path, chunked) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            for method in ("GET", "HEAD", "GET"):
                s.sendall(method.encode() + b" / HTTP/1.0\r\n" + keepAlive)
                status, headers, body = readResponse(s, method)
                assert (status, headers.get("connection")) == (200, "keep-alive"), method
                assert body == (b"" if method == "HEAD" else b"ok")
            # A 1.0 request without keep-alive ends the connection.
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            status, headers, body = readResponse(s)
            assert (status, body) == (200, b"ok") and "connection" not in headers
            assert closedAfter(s)
        # A response without a length (chunked from the backend: 1.0 has no
        # chunked coding) is delimited by the close, keep-alive or not.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /chunked HTTP/1.0\r\n" + keepAlive)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.0 200") and body == b"ok"
            assert b"keep-alive" not in head.lower() and b"content-length" not in head.lower()


@pytest.mark.parametrize("connection", [b"close", b"close,TE", b"TE, Close"])
def test_connection_close_is_announced_and_done(gateway: tuple[int, Proc], connection: bytes) -> None:
    port, _ = gateway
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: " + connection + b"\r\n\r\n")
        status, headers, _ = readResponse(s)
        assert (status, headers.get("connection")) == (200, "close")
        assert closedAfter(s)


def test_date_is_added_when_the_backend_sends_none(tmp_path: Path) -> None:
    # RFC 9110 section 6.6.1; a backend's own Date passes unchanged, once.
    dated = {
        b"/dated": b"HTTP/1.1 200 OK\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok"
    }
    with gatewayOverRawBackend(tmp_path, dated) as port:
        _, _, _, resp = get(port, "/undated")
        [date] = resp.headers.get_all("Date")
        assert abs(email.utils.parsedate_to_datetime(date).timestamp() - time.time()) < 300
        _, _, _, resp = get(port, "/dated")
        assert resp.headers.get_all("Date") == ["Mon, 01 Jan 2024 00:00:00 GMT"]
    # and on the gateway's own answers (nothing listens on the backend port: 502)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [freePort()]), port)
    try:
        status, headers, _, _ = get(port)
        assert status == 502 and email.utils.parsedate_to_datetime(headers["date"])
    finally:
        gw.stop()


def test_backend_down_is_502(tmp_path: Path) -> None:
    dead = freePort()  # nothing listens here
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [dead]), port)
    try:
        status, headers, data, _ = get(port)
        assert status == 502
        assert headers["content-type"].startswith("text/plain")
        assert b"backend could not be reached" in data or b"no healthy backend" in data
        # the gateway stays up
        assert get(port)[0] == 502
    finally:
        gw.stop()


def test_backend_silent_is_504(tmp_path: Path) -> None:
    hold = threading.Event()

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        hold.wait(20)

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port], settings="requestTimeout = 1"), port)
    try:
        t0 = time.monotonic()
        status, _, data, _ = get(port)
        elapsed = time.monotonic() - t0
        assert status == 504
        assert b"Gateway Timeout" in data
        assert elapsed < 15  # generous: the point is that it did not hang for the backend's 20 s
    finally:
        hold.set()
        gw.stop()
        backend.close()


def test_client_disconnect_cancels_backend_request(tmp_path: Path) -> None:
    got = threading.Event()
    closed = threading.Event()

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        got.set()
        conn.settimeout(15)
        try:
            if conn.recv(1) == b"":
                closed.set()
        except OSError:
            closed.set()

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert got.wait(10)
        s.close()
        assert closed.wait(10), "the backend connection was not closed after the client left"
    finally:
        gw.stop()
        backend.close()


def test_large_download_memory_bounded(tmp_path: Path) -> None:
    size = 300 * 1024 * 1024
    block = b"x" * 65536

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            conn.sendall(block)

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        before = gw.rssKiB()
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        received = 0
        peak = before
        deadline = time.monotonic() + 90
        while received < size and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            received += len(chunk)
            if received % (16 * 1024 * 1024) < 65536:
                peak = max(peak, gw.rssKiB())
                time.sleep(0.05)  # a slow reader: the gateway must pause the backend
        s.close()
        assert received >= size
        growth_mb = (peak - before) / 1024
        assert growth_mb < 40, f"gateway RSS grew {growth_mb:.1f} MB for a {size >> 20} MB body"
    finally:
        gw.stop()
        backend.close()


def test_large_upload_memory_bounded(tmp_path: Path) -> None:
    size = 200 * 1024 * 1024
    seen = {"n": 0}

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        length = int(headerValue(head, b"content-length") or b"0")
        n = len(rest)
        while n < length:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            n += len(chunk)
        seen["n"] = n
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        before = gw.rssKiB()
        peak = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                try:
                    peak[0] = max(peak[0], gw.rssKiB())
                except Exception:
                    return

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        block = b"y" * (1 << 20)
        for _ in range(size // len(block)):
            s.sendall(block)
        resp = s.recv(4096)
        s.close()
        stop.set()
        t.join(2)
        assert resp.startswith(b"HTTP/1.1 200"), resp[:200]
        assert seen["n"] == size
        growth_mb = (peak[0] - before) / 1024
        assert growth_mb < 40, f"gateway RSS grew {growth_mb:.1f} MB for a {size >> 20} MB upload"
    finally:
        gw.stop()
        backend.close()


def test_affinity_pins_and_forged_cookie_falls_back(tmp_path: Path, backends: list[int]) -> None:
    port = freePort()
    ini = basicIni(
        port,
        backends,
        settings="cookieBasedAffinity = Enabled",
        gateway="affinitySecret = 0123456789abcdef0123",
    )
    gw = startGateway(tmp_path, ini, port)
    try:
        status, headers, body, resp = get(port)
        cookies = resp.msg.get_all("Set-Cookie")
        assert cookies and len(cookies) == 2
        assert cookies[0].startswith("ApplicationGatewayAffinity=")
        assert cookies[1].startswith("ApplicationGatewayAffinityCORS=") and "SameSite=None" in cookies[1]
        value = cookies[0].split(";")[0].split("=", 1)[1]
        first = body
        for _ in range(6):
            status, headers, body, resp = get(port, headers={"Cookie": f"ApplicationGatewayAffinity={value}"})
            assert body == first
            assert resp.msg.get_all("Set-Cookie") is None  # already pinned: no new cookie
        # forged: a token of the right shape that no member has -> balanced normally and re-pinned
        forged = value[:-1] + ("A" if value[-1] != "A" else "B")
        bodies = set()
        for _ in range(4):
            status, headers, body, resp = get(
                port, headers={"Cookie": f"ApplicationGatewayAffinity={forged}"}
            )
            assert status == 200
            assert resp.msg.get_all("Set-Cookie")
            bodies.add(body)
        assert len(bodies) == 2
    finally:
        gw.stop()


def test_affinity_shared_secret_across_instances(tmp_path: Path, backends: list[int]) -> None:
    ini = "cookieBasedAffinity = Enabled"
    secret = "affinitySecret = shared-secret-0123456789"
    p1, p2 = freePort(), freePort()
    g1 = startGateway(tmp_path, basicIni(p1, backends, settings=ini, gateway=secret), p1)
    g2 = startGateway(tmp_path, basicIni(p2, backends, settings=ini, gateway=secret), p2)
    try:
        _, _, body1, resp = get(p1)
        value = resp.msg.get_all("Set-Cookie")[0].split(";")[0]
        for _ in range(4):
            assert get(p2, headers={"Cookie": value})[2] == body1
    finally:
        g1.stop()
        g2.stop()


def test_bad_requests_get_400(gateway: tuple[int, Proc]) -> None:
    port, _ = gateway
    for raw in (
        b"GET / HTTP/1.1\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n",  # invalid Host values
        b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: ../etc\r\n\r\n",
        b"BLAH\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    ):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(raw)
        data = s.recv(4096)
        s.close()
        assert data.startswith(b"HTTP/1.1 400"), (raw, data[:100])
    assert get(port)[0] == 200


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: a\r\nCookie: " + b"c" * 70000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\nHost: a\n\n" + b"x" * 70000, 400),  # bare LF
    ],
)
def test_an_unreadable_head_gets_its_answer_though_input_is_left_unread(
    gateway: tuple[int, Proc], raw: bytes, status: int
) -> None:
    # 70 KB at once: the gateway stops parsing after 16 KB. Closed at once,
    # the unread rest would make the kernel reset the connection and the
    # client could lose the answer; it gets the whole answer, then EOF (the
    # gateway shuts its side down and drops what the client still sends).
    port, _ = gateway
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), data[:200]
    assert b"\r\nContent-Length: %d\r\n" % len(body) in head + b"\r\n"
    assert body.startswith(b"%d " % status)
    assert get(port)[0] == 200


def test_content_length_past_64_bits_is_400_and_not_forwarded(tmp_path: Path) -> None:
    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        for length in (
            b"9223372036854775808",
            b"99999999999999999999999",
            b"0" * 30 + b"99999999999999999999",
        ):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\nabc")
                data = b""
                while chunk := s.recv(4096):  # the gateway closes after the 400
                    data += chunk
            assert data.startswith(b"HTTP/1.1 400"), (length, data[:100])
        assert backend.requests == 0
        # A leading-zero length that fits is taken.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0000000000000000000003\r\n\r\nabc"
            )
            resp = http.client.HTTPResponse(s)
            resp.begin()
            assert (resp.status, resp.read()) == (200, b"ok")
        assert backend.requests == 1
    finally:
        gw.stop()
        backend.close()


def test_curl_keepalive_reuses_connection(gateway: tuple[int, Proc]) -> None:
    port, _ = gateway
    out = subprocess.run(
        ["curl", "-sv", f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/headers"],
        capture_output=True,
        timeout=30,
        text=True,
    )
    assert out.returncode == 0
    assert "Re-using existing connection" in out.stderr or "Reusing existing connection" in out.stderr


class _RefusingUpstream:
    """An upstream pool whose every connect attempt is refused at once."""

    def __init__(self) -> None:
        self.dialled: list[int] = []

    def getConnection(self, host: str, port: int, callback: Any, **kwargs: Any) -> Any:
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        self.dialled.append(port)
        callback(None, Failure(ConnectionRefusedError()))
        return lambda: None


@pytest.mark.parametrize(
    "method, ports, dialled",
    [
        (b"GET", (9,), [9]),  # nothing to fail over to
        (b"GET", (9, 10), [9, 10]),  # failed over, then failed again
        (b"POST", (9, 10), [9]),  # not safe to repeat
    ],
)
def test_refused_connects_leave_no_request_counted_in_flight(
    method: bytes, ports: tuple[int, ...], dialled: list[int]
) -> None:
    """Each member's inflight count is back to 0 after a 502 (it once went to -1)."""
    from types import SimpleNamespace

    from twisted.internet.task import Clock
    from twisted.web.test.requesthelper import DummyRequest

    from agwtx.proxy.affinity import AffinityCodec
    from agwtx.config.model import BackendAddress, BackendAddressPool, BackendHttpSettings
    from agwtx.proxy.pool import PoolState
    from agwtx.proxy.reverse import proxy
    from agwtx.context import GatewayContext

    upstream = _RefusingUpstream()
    ctx = GatewayContext(Clock(), upstream, AffinityCodec(b"k" * 32))
    settings = BackendHttpSettings(name="s")
    pool = BackendAddressPool("p", tuple(BackendAddress("127.0.0.1", p) for p in ports))
    state = PoolState(pool, settings)
    target = SimpleNamespace(
        settings=settings,
        state=state,
        scope="p/s",
        rewrite=None,
        connector=None,
        tlsKey="",
        hostHeader=None,
        backendPath=lambda request: request.uri,
    )
    request: Any = DummyRequest([b""])
    request.method, request.uri, request.content = method, b"/", None
    request.clientIP = request.peerIP = "192.0.2.1"
    request.peerTrusted = request.agwDiscarded = False
    request.listenerPort, request.isSecure = 80, lambda: False
    request.agwStream = request.agwOnLost = request.agwPreferred = None
    request._disconnected, request.startedWriting = False, False
    request.site, request.agwListener = SimpleNamespace(ctx=ctx), None
    ctx.tagger.tag(request)
    proxy(ctx, request, target)  # type: ignore[arg-type]
    assert upstream.dialled == dialled
    assert request.responseCode == 502
    assert [m.inflight for m in state.members] == [0] * len(ports)


def test_connect_failure_kind_comes_from_the_exception_type() -> None:
    """Passive health takes a member out at once only for a refused connect, decided by type, not message text."""
    from twisted.internet import error
    from twisted.python.failure import Failure

    from agwtx.proxy.reverse import connectFailureKind

    assert connectFailureKind(Failure(error.ConnectionRefusedError("any text"))) == "refused"
    assert connectFailureKind(Failure(error.TimeoutError("connection refused? no: a timeout"))) == "connect"
    assert connectFailureKind(Failure(error.ConnectError("refused"))) == "connect"
    assert connectFailureKind(None) == "connect"
    # socket() failing in the gateway (EMFILE): the member is not at fault
    assert connectFailureKind(Failure(error.ConnectBindError(24, "Too many open files"))) == "local"


def test_answer_before_the_body_is_read_says_it_closes(tmp_path: Path) -> None:
    """
    A backend that answers a streamed upload before reading its body: the
    client gets that answer with Connection: close (the rest of its body is
    not read as a next request), then the close.
    """

    from tests.test_security import _readResponse

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
        time.sleep(1)

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 10)
            answer = _readResponse(s)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 "), answer
        assert b"\r\nConnection: close" in head, answer
        assert body == b"big!"
    finally:
        gw.stop()
        backend.close()


def test_absolute_form_target_with_a_body_reaches_the_backend_as_a_path(tmp_path: Path) -> None:
    """
    C{POST http://authority/path?query} with a body (streamed, its target
    converted when the head is complete): the backend gets the path and
    query, Host is the authority, and the body.
    """
    seen: list[tuple[bytes, bytes]] = []

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        body = rest
        while len(body) < 5:
            body += conn.recv(65536)
        seen.append((head, body))
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(
                b"POST http://absolute.test/up?x=1 HTTP/1.1\r\nHost: other.test\r\n"
                b"Content-Length: 5\r\nConnection: close\r\n\r\nhello"
            )
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
        [(head, body)] = seen
        assert head.startswith(b"POST /up?x=1 HTTP/1.1\r\n"), head
        assert headerValue(head, b"host") == b"absolute.test"
        assert body == b"hello"
    finally:
        gw.stop()
        backend.close()

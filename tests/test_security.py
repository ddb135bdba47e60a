"""
The edge's security measures through the real gateway (twistd in a
subprocess, real sockets on loopback): the admin endpoint's Host, CSRF and
token checks, connection limits, the request-body deadline, discarded
bodies, affinity keys and forwarding headers.  See docs/security.rst.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from pathlib import Path

from tests.support import basicIni, freePort, startBackend, startGateway, waitFor

TOKEN = "s3cret-admin-token-0123456789"


def adminRequest(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def test_admin_refuses_rebinding_hosts_cross_site_posts_and_missing_tokens(tmp_path: Path) -> None:
    """
    The probes of the security review: a rebinding Host on /status.json is
    a 421, a cross-site POST /reload a 403 (by Origin and by
    Sec-Fetch-Site), and with adminToken a POST /reload without the token a
    401 with a Bearer challenge, with it a 200; reads stay open until
    adminTokenForReads, which a reload turns on.
    """
    b, pb = startBackend(tmp_path, "A")
    port, admin = freePort(), freePort()
    tokenFile = tmp_path / "admin.token"
    tokenFile.write_text(TOKEN + "\n")
    tokenFile.chmod(0o600)
    gateway = f"admin = tcp:{admin}:interface=127.0.0.1\nadminToken = {tokenFile}"
    gw = startGateway(tmp_path, basicIni(port, [pb], gateway=gateway), port)
    cfg = tmp_path / f"gw-{port}.ini"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        # Host: loopback names and the listener's address, with or without its port
        for host in ("localhost", f"localhost:{admin}", "127.0.0.1", f"127.0.0.1:{admin}", "[::1]"):
            assert adminRequest(admin, "GET", "/status.json", {"Host": host})[0] == 200, host
        for host in ("evil.example", f"evil.example:{admin}", "127.0.0.1:1", "localhost.evil.example"):
            status, _, body = adminRequest(admin, "GET", "/status.json", {"Host": host})
            assert (status, body) == (
                421,
                b"421 Misdirected Request: this admin endpoint answers only to its own address\n",
            ), host
        # No Host at all: an HTTP/1.0 health check (HAProxy's httpchk) passes, HTTP/1.1 does not
        for version, expected in ((b"1.0", b"200"), (b"1.1", b"421")):
            with socket.create_connection(("127.0.0.1", admin), timeout=10) as s:
                s.sendall(b"GET /ready HTTP/" + version + b"\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := s.recv(65536):
                    answer += chunk
            assert answer.split(b" ", 2)[1] == expected, answer
        # CSRF: a browser's cross-site POST, by Origin or Sec-Fetch-Site, even with the token
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Origin": f"http://127.0.0.1:{admin + 1}"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ):
            status, _, body = adminRequest(admin, "POST", "/reload", {**headers, **auth})
            assert (status, body) == (403, b"403 Forbidden: cross-site requests may not change the gateway\n")
        # the token: 401 with a challenge without it or with a wrong one, 200 with it
        status, headers, _ = adminRequest(admin, "POST", "/reload")
        assert status == 401 and headers["www-authenticate"] == 'Bearer realm="agw admin"'
        status, headers, _ = adminRequest(admin, "POST", "/reload", {"Authorization": "Bearer " + "x" * 29})
        assert status == 401 and 'error="invalid_token"' in headers["www-authenticate"]
        same = {"Origin": f"http://127.0.0.1:{admin}", "Sec-Fetch-Site": "same-origin", **auth}
        assert adminRequest(admin, "POST", "/reload", same)[0] == 200
        assert adminRequest(admin, "POST", "/reload", auth)[0] == 200
        # reads need the token only with adminTokenForReads (applied by a reload)
        assert adminRequest(admin, "GET", "/health")[0] == 200
        cfg.write_text(basicIni(port, [pb], gateway=gateway + "\nadminTokenForReads = true"))
        assert adminRequest(admin, "POST", "/reload", auth)[0] == 200
        assert adminRequest(admin, "GET", "/health")[0] == 401
        assert adminRequest(admin, "GET", "/health", auth)[0] == 200
        # a new token file applies on reload; the old token stops working
        tokenFile.write_text("another-token-abcdefghijklmnop")
        assert adminRequest(admin, "POST", "/reload", auth)[0] == 200
        assert adminRequest(admin, "GET", "/health", auth)[0] == 401
        new = {"Authorization": "Bearer another-token-abcdefghijklmnop"}
        assert adminRequest(admin, "GET", "/health", new)[0] == 200
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        b.stop()


def _exchange(source: str, port: int, prefix: bytes = b"") -> socket.socket | None:
    """
    Connect from C{source} and send C{prefix} (a PROXY header) and a GET:
    the open socket when it was answered 200 (kept alive), None when the
    gateway closed it unanswered.
    """
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    try:
        s.sendall(prefix + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.recv(65536)
    except ConnectionError:
        data = b""
    if not data:
        s.close()
        return None
    assert data.startswith(b"HTTP/1.1 200 OK\r\n"), data
    return s


def _metric(admin: int, line: str) -> float:
    body = adminRequest(admin, "GET", "/metrics")[2].decode()
    for row in body.splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


def test_connection_limits_hold_under_a_loopback_flood(tmp_path: Path) -> None:
    """
    maxConnectionsPerClient = 4 and maxConnections = 10: a fifth connection
    from one address and an eleventh in all are closed unanswered, the others
    are served; a flood of 300 connections is refused, counted by reason and
    logged in a line or two, not 300; once the holders close, new
    connections are served again (the counts were released).
    """
    b, pb = startBackend(tmp_path, "A")
    port, admin = freePort(), freePort()
    gateway = f"admin = tcp:{admin}:interface=127.0.0.1\nmaxConnections = 10\nmaxConnectionsPerClient = 4"
    gw = startGateway(tmp_path, basicIni(port, [pb], gateway=gateway), port)
    held: list[socket.socket] = []
    try:
        first = [_exchange("127.0.0.1", port) for _ in range(5)]
        assert [s is not None for s in first] == [True] * 4 + [False]
        second = [_exchange("127.0.0.2", port) for _ in range(5)]
        assert [s is not None for s in second] == [True] * 4 + [False]
        third = [_exchange("127.0.0.3", port) for _ in range(3)]
        assert [s is not None for s in third] == [True, True, False]  # 10 in all
        held = [s for s in first + second + third if s is not None]
        flood = []
        for i in range(300):
            s = socket.socket()
            s.bind((f"127.0.1.{i % 200 + 1}", 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            flood.append(s)
        for s in flood:
            try:
                assert s.recv(1) == b""  # closed at once, nothing read or answered
            except ConnectionResetError:
                pass
            s.close()
        refused = 'agw_connections_refused_total{reason="maxConnections"}'
        perClient = 'agw_connections_refused_total{reason="maxConnectionsPerClient"}'
        waitFor(lambda: _metric(admin, refused) == 301, what="refusals counted")
        assert _metric(admin, perClient) == 2
        lines = [ln for ln in gw.output().splitlines() if "refused: [gateway] max" in ln]
        assert 1 <= len(lines) <= 3, lines
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")  # still served
            s.close()
        held = []
        again = waitFor(
            lambda: _exchange("127.0.0.1", port), what="a connection served after the holders left"
        )
        held.append(again)
        assert gw.proc.poll() is None
    finally:
        for s in held:
            s.close()
        gw.stop()
        b.stop()


def _readResponse(s: socket.socket) -> bytes:
    """All that comes back on C{s} until the gateway closes it."""
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data


def test_stalled_request_body_gets_408_and_closes_its_backend_connection(tmp_path: Path) -> None:
    """
    requestBodyTimeout = 1: a body that stops after 10 of 100 bytes is
    answered 408 with Connection: close and the connection closed, and the backend, which was
    receiving that body, sees its connection closed (not left waiting for the
    other 90 bytes); a body that keeps coming, a byte every 0.3 s, is not.
    """
    from tests.rawbackend import RawBackend

    seen: list[bytes] = []

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        length = int(
            next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
        )
        body = rest
        try:
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    seen.append(b"closed after %d" % len(body))
                    return
                body += chunk
        except ConnectionError:
            seen.append(b"reset after %d" % len(body))
            return
        seen.append(b"complete")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port], gateway="requestBodyTimeout = 1"), port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
            answer = _readResponse(s)
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert answer.endswith(b"408 Request Timeout: the request body stalled for more than 1 s\n")
        assert b"\r\nConnection: close" in answer.partition(b"\r\n\r\n")[0]  # it says it closes
        waitFor(lambda: seen, what="the backend's connection closed")
        assert seen[0] in (b"closed after 10", b"reset after 10"), seen
        # a slow body that keeps coming is not cut
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n")
            for _ in range(8):
                time.sleep(0.3)
                s.sendall(b"b")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        assert seen[1:] == [b"complete"]
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        backend.close()


def _redirectIni(port: int) -> str:
    return f"""
[frontendPort:fp]
port = {port}
interface = 127.0.0.1

[httpListener:l1]
frontendPort = fp

[redirectConfiguration:toHttps]
redirectType = Permanent
targetUrl = https://example.test/

[requestRoutingRule:r1]
ruleType = Basic
priority = 100
httpListener = l1
redirectConfiguration = toHttps
"""


def _deletedFiles(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.endswith("(deleted)"):  # a spooled body: an unlinked temporary file
            out.append(target)
    return out


def test_body_of_a_redirected_post_is_discarded_not_spooled(tmp_path: Path) -> None:
    """
    A 200 MB POST (generated as it is sent, never held) to a redirect
    listener: the gateway reads and drops it (no temporary file open at any
    point, its resident memory stays within 50 MB of where it started) and
    answers 301.
    """
    port = freePort()
    gw = startGateway(tmp_path, _redirectIni(port), port)
    try:
        size = 200 * 1024 * 1024
        block = b"x" * 65536
        rssBefore = gw.rssKiB()
        peak, deleted = rssBefore, []
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            for i in range(size // len(block)):
                s.sendall(block)
                if i % 256 == 0:  # every 16 MB
                    peak = max(peak, gw.rssKiB())
                    deleted += _deletedFiles(gw.pid)
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 301 Moved Permanently\r\n"), answer
        assert b"\r\nLocation: https://example.test/upload\r\n" in answer
        assert deleted == []
        assert peak - rssBefore < 50 * 1024, (rssBefore, peak)
    finally:
        gw.stop()


def _cookie(resp: http.client.HTTPResponse) -> str | None:
    for name, value in resp.getheaders():
        if name.lower() == "set-cookie" and value.startswith("ApplicationGatewayAffinity="):
            return value.split(";")[0].split("=", 1)[1]
    return None


def _get(port: int, cookie: str | None = None) -> tuple[bytes, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Cookie": f"ApplicationGatewayAffinity={cookie}"} if cookie else {})
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200
        return body, _cookie(r)
    finally:
        conn.close()


def test_affinity_keys_rotate_on_reload_and_cookies_are_opaque(tmp_path: Path) -> None:
    """
    The affinity cookie holds no member address (not even base64 of one);
    a changed affinitySecret applies on reload (the old cookie re-pins);
    affinitySecrets = new, old keeps old cookies on their member while new
    cookies are signed with the new key; dropping the old key ends them.
    """
    import base64

    a, pa = startBackend(tmp_path, "A")
    b, pb = startBackend(tmp_path, "B")
    port, admin = freePort(), freePort()
    old, new, other = "old-key-0123456789abcdef", "new-key-0123456789abcdef", "other-key-0123456789abc"

    def ini(keys: str) -> str:
        gateway = f"admin = tcp:{admin}:interface=127.0.0.1\n{keys}"
        return basicIni(port, [pa, pb], settings="cookieBasedAffinity = Enabled", gateway=gateway)

    def reload(keys: str) -> None:
        (tmp_path / f"gw-{port}.ini").write_text(ini(keys))
        assert adminRequest(admin, "POST", "/reload")[0] == 200

    gw = startGateway(tmp_path, ini(f"affinitySecret = {old}"), port)
    try:
        body, cookie = _get(port)
        assert cookie is not None and len(cookie) == 22
        decoded = base64.urlsafe_b64decode(cookie + "==")
        for address in (pa, pb):
            for text in (f"127.0.0.1:{address}", str(address), "127.0.0.1"):
                assert text not in cookie and text.encode() not in decoded
        assert _get(port, cookie) == (body, None)  # pinned: no new cookie
        # a changed affinitySecret applies on reload: the old cookie no longer pins
        reload(f"affinitySecret = {other}")
        assert _get(port, cookie)[1] is not None
        # rotation: the old key verifies (same member), the new one signs
        reload(f"affinitySecret = {old}")
        assert _get(port, cookie) == (body, None)
        reload(f"affinitySecrets = {new}, {old}")
        again, renewed = _get(port, cookie)
        assert again == body and renewed is not None and renewed != cookie
        assert _get(port, renewed) == (body, None)
        # the old key dropped: old cookies are balanced and re-pinned, new ones stay
        reload(f"affinitySecrets = {new}")
        assert _get(port, cookie)[1] is not None
        assert _get(port, renewed) == (body, None)
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        a.stop()
        b.stop()


SPOOFED = (
    b"Forwarded: for=198.51.100.1;host=evil.example\r\n"
    b"X-Forwarded-Host: evil.example\r\n"
    b"X-Real-IP: 198.51.100.1\r\n"
)


def test_forwarding_headers_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    """
    Forwarded, X-Forwarded-Host and X-Real-IP from a client reach no backend
    (plain requests and WebSocket handshakes), and X-Forwarded-Host is the
    client's Host; from an address in trustedProxies they pass unchanged.
    """
    import base64
    import hashlib

    from tests.rawbackend import RawBackend, headerValue

    heads: list[bytes] = []

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        heads.append(head)
        key = headerValue(head, b"sec-websocket-key")
        if key is None:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            return
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        conn.recv(1024)  # until the gateway closes

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port], gateway="trustedProxies = 127.0.0.2/32"), port)
    http = b"GET / HTTP/1.1\r\nHost: app.example\r\n" + SPOOFED + b"\r\n"
    ws = (
        b"GET /chat HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + SPOOFED + b"\r\n"
    )
    try:
        for source, trusted in (("127.0.0.1", False), ("127.0.0.2", True)):
            for request, status in ((http, b"200"), (ws, b"101")):
                heads.clear()
                with socket.socket() as s:
                    s.settimeout(10)
                    s.bind((source, 0))
                    s.connect(("127.0.0.1", port))
                    s.sendall(request)
                    assert s.recv(65536).startswith(b"HTTP/1.1 " + status), (source, request)
                waitFor(lambda: heads, what="the backend's request")
                head = heads[0]
                values = {
                    name: [
                        ln.split(b":", 1)[1].strip()
                        for ln in head.split(b"\r\n")[1:]
                        if ln.split(b":", 1)[0].lower() == name
                    ]
                    for name in (b"forwarded", b"x-forwarded-host", b"x-real-ip", b"x-original-host")
                }
                if trusted:
                    assert values == {
                        b"forwarded": [b"for=198.51.100.1;host=evil.example"],
                        b"x-forwarded-host": [b"evil.example"],
                        b"x-real-ip": [b"198.51.100.1"],
                        b"x-original-host": [b"app.example"],
                    }, (source, head)
                else:
                    assert values == {
                        b"forwarded": [],
                        b"x-forwarded-host": [b"app.example"],
                        b"x-real-ip": [],
                        b"x-original-host": [b"app.example"],
                    }, (source, head)
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        backend.close()


def test_service_unit_scores_at_most_2_in_systemd_analyze_security() -> None:
    """
    etc/agw.service as systemd rates it offline: an exposure of at most 2.0
    ("OK"), with the settings the unit relies on present.
    """
    import re
    import shutil
    import subprocess

    import pytest

    from tests.support import ROOT

    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (.ci/run installs systemd)")
    unit = ROOT / "etc" / "agw.service"
    result = subprocess.run(
        [tool, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for agw\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout
    text = unit.read_text()
    for setting in ("User=agw", "UMask=0077", "LogsDirectory=agw", "SystemCallFilter=@system-service"):
        assert f"\n{setting}\n" in text, setting
    assert "\nMemoryDenyWriteExecute=yes" not in text  # PyPy's JIT needs W+X memory


def test_refused_head_with_a_body_gets_one_answer_with_its_request_id(tmp_path: Path) -> None:
    """
    On an HTTPS listener with requestBodyTimeout = 1 (under the 5 s the
    refused connection lingers), a POST with a Content-Length, a body that
    never comes and an invalid Host: exactly one answer, the 400, then the
    close; no 408 after it on the same connection.  The answer carries the
    request's ID (the client's, trustClientRequestId), the one in the
    access log.
    """
    from tests.certs import selfSigned

    b, pb = startBackend(tmp_path, "A")
    port = freePort()
    certPath, keyPath = selfSigned(["x.test"]).write(tmp_path, "x")
    accessLog = tmp_path / "access.log"
    gateway = f"accessLog = {accessLog}\naccessLogFormat = json\nrequestBodyTimeout = 1\ntrustClientRequestId = true"
    ini = basicIni(port, [pb], gateway=gateway).replace(
        "frontendPort = fp\nprotocol = Http\n", "frontendPort = fp\nprotocol = Https\nsslCertificate = c\n", 1
    )
    ini += f"\n[sslCertificate:c]\ncertificate = {certPath}\nprivateKey = {keyPath}\n"
    gw = startGateway(tmp_path, ini, port)
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port), timeout=15) as raw:
            with ctx.wrap_socket(raw, server_hostname="x.test") as s:
                s.sendall(
                    b"POST /up HTTP/1.1\r\nHost: bad host!\r\nContent-Length: 100\r\n"
                    b"X-Request-ID: refused-request-7\r\n\r\n"
                )
                answer = _readResponse(s)  # until the gateway closes (the end of its lingering)
        assert answer.count(b"HTTP/1.1 ") == 1, answer
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"\r\nX-Request-ID: refused-request-7\r\n" in answer, answer
        waitFor(accessLog.exists, what="the access log")
        events = [json.loads(line) for line in accessLog.read_text().splitlines()]
        assert [(e["httpStatus"], e["transactionId"]) for e in events] == [(400, "refused-request-7")]
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        b.stop()

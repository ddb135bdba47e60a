"""
The edge's security measures through the real gateway (twistd in a
subprocess, real sockets on loopback): the admin endpoint's Host, CSRF and
token checks, connection limits, the request-body deadline, discarded
bodies, affinity keys and forwarding headers.  See docs/security.rst.
"""

from __future__ import annotations

import http.client
import os
import socket
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

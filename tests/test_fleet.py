"""
Running a fleet: readiness and the lame duck period, one view of a
multi-process instance, following the config file, against the real twistd
gateway.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
from pathlib import Path

from tests.support import basicIni, freePort, startBackend, startGateway, waitFor


def get(port: int, path: str = "/", timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_ready_turns_503_on_sigterm_while_the_lame_duck_still_serves(tmp_path: Path) -> None:
    b, pb = startBackend(tmp_path, "A")
    port, admin = freePort(), freePort()
    gateway = f"admin = tcp:{admin}:interface=127.0.0.1\nlameDuckPeriod = 4s\nshutdownGracePeriod = 5"
    gw = startGateway(tmp_path, basicIni(port, [pb], gateway=gateway), port)
    try:
        assert get(admin, "/ready") == (200, b'{\n  "ready": true\n}\n')
        assert get(port)[0] == 200
        gw.proc.send_signal(signal.SIGTERM)
        waitFor(lambda: get(admin, "/ready")[0] == 503, what="/ready at 503")
        # A lame duck: new connections are still accepted and served.
        served = get(port)
        assert gw.proc.poll() is None, "the gateway stopped before the request was answered"
        assert served == (200, b"Hello from agw demo backend A\n")
        assert gw.proc.wait(20) == 0
        assert refused(port)
        assert "lame duck for 4s" in gw.output()
    finally:
        gw.stop()
        b.stop()

"""
C{[backendHttpSettings] connectTimeout} bounds how long the proxy and the
WebSocket bridge wait for a backend connection, through the real gateway.

The backend is a listening socket whose accept queue is full (backlog 0
and one connection never accepted), so the kernel drops further SYNs and
a connect neither succeeds nor fails until the dialer gives up.
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.rawbackend import handshakeHead
from tests.support import basicIni, freePort, startGateway


@pytest.fixture
def blackhole() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port), timeout=5)
    yield port
    filler.close()
    listener.close()


def test_connect_timeout_setting_bounds_proxy_and_bridge_dials(tmp_path: Path, blackhole: int) -> None:
    gw = freePort()
    ini = basicIni(
        gw,
        [blackhole],
        settings="requestTimeout = 60\nconnectTimeout = 500ms",
        probe="protocol = Http\nhost = 127.0.0.1\npath = /\ninterval = 3600\ntimeout = 3600",
    )
    ini = ini.replace("[backendHttpSettings:s1]", "[backendHttpSettings:s1]\nprobe = p1")
    proc = startGateway(tmp_path, ini, gw)
    try:
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", gw, timeout=30)
        conn.request("GET", "/")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        elapsed = time.monotonic() - started
        assert resp.status == 502, body
        # Far below the 10 s default and the 60 s requestTimeout: the 0.5 s
        # setting ended the dial (the one retry goes to the same lone member).
        assert elapsed < 9, elapsed

        started = time.monotonic()
        head = handshakeHead(gw, b"app.example", timeout=30)
        assert head.startswith(b"HTTP/1.1 502 "), head
        assert time.monotonic() - started < 9
    finally:
        proc.stop()
    assert "Traceback" not in proc.output()

"""
The backend lease (L{agwtx.proxy.pool.Lease}) is the one place that counts a
request or WebSocket in flight on a member, for the proxy and the WebSocket
bridge alike.  This drives a failure at every step through the real twistd
gateway -- connect refused (with failover), reset before the response,
backend timeout, a client gone while queued, while connecting, while the
response streams, during a WebSocket handshake and while a WebSocket is open
-- and checks through the admin C{/health} that every member's in-flight
count is back to 0 (it never went negative: the field would show it).
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from websockets.sync.client import connect

from tests.rawbackend import RawBackend, handshakeHead, handshakeRequest, readHead
from tests.support import TWISTD, Proc, freePort, httpGet, startBackend, waitFor, waitForPort

WS_HANDSHAKE = handshakeRequest(b"x", b"/chat")


def reset(conn: socket.socket, head: bytes, rest: bytes) -> None:
    """Close with a TCP RST before any response."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def waitForClose(conn: socket.socket) -> None:
    conn.settimeout(15)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def silent(conn: socket.socket, head: bytes, rest: bytes) -> None:
    """Never answer; hold the connection until the gateway closes it."""
    waitForClose(conn)


def streaming(conn: socket.socket, head: bytes, rest: bytes) -> None:
    """Promise a large body, send a little of it, then stall until the gateway goes."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
    waitForClose(conn)


def portSection(name: str, port: int, pool: str, settings: str, priority: int) -> str:
    return f"""
[frontendPort:{name}]
port = {port}
interface = 127.0.0.1

[httpListener:{name}]
frontendPort = {name}
protocol = Http

[requestRoutingRule:{name}]
ruleType = Basic
priority = {priority}
httpListener = {name}
backendAddressPool = {pool}
backendHttpSettings = {settings}
"""


class Setup:
    def __init__(self, tmp: Path) -> None:
        self.procs: list[Any] = []
        self.raw: list[RawBackend] = []
        self.sockets: list[socket.socket] = []
        a, self.good = startBackend(tmp, "A")
        self.procs.append(a)
        self.reset = self._raw(reset)
        self.silent = self._raw(silent)
        self.streaming = self._raw(streaming)
        self.refused = freePort()
        # A listener whose accept queue is full and never served: a connect hangs.
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        self.sockets.append(hole)
        self.blackhole = hole.getsockname()[1]
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.blackhole))
            self.sockets.append(filler)
        self.ports = {
            name: freePort() for name in ("dead", "mixed", "wsmixed", "reset", "silent", "stream", "hole")
        }
        self.admin = freePort()
        text = f"""
[gateway]
admin = tcp:{self.admin}:interface=127.0.0.1

[probe:p]
protocol = Http
host = 127.0.0.1
path = /
port = {self.good}
interval = 3600
timeout = 10

[backendHttpSettings:s]
port = 80
probe = p
requestTimeout = 2

[backendHttpSettings:capped]
port = 80
probe = p
requestTimeout = 2
maxConnectionsPerServer = 1
maxQueuedRequestsPerServer = 5

[backendHttpSettings:quick]
port = 80
probe = p
requestTimeout = 30
connectTimeout = 1

[backendAddressPool:dead]
backendAddresses = 127.0.0.1:{self.refused}, 127.0.0.1:{freePort()}

[backendAddressPool:mixed]
backendAddresses = 127.0.0.1:{freePort()}, 127.0.0.1:{self.good}

[backendAddressPool:wsmixed]
backendAddresses = 127.0.0.1:{freePort()}, 127.0.0.1:{self.good}

[backendAddressPool:reset]
backendAddresses = 127.0.0.1:{self.reset.port}

[backendAddressPool:silent]
backendAddresses = 127.0.0.1:{self.silent.port}

[backendAddressPool:stream]
backendAddresses = 127.0.0.1:{self.streaming.port}

[backendAddressPool:hole]
backendAddresses = 127.0.0.1:{self.blackhole}
"""
        text += portSection("dead", self.ports["dead"], "dead", "s", 1)
        text += portSection("mixed", self.ports["mixed"], "mixed", "s", 2)
        text += portSection("wsmixed", self.ports["wsmixed"], "wsmixed", "s", 7)
        text += portSection("reset", self.ports["reset"], "reset", "s", 3)
        text += portSection("silent", self.ports["silent"], "silent", "capped", 4)
        text += portSection("stream", self.ports["stream"], "stream", "s", 5)
        text += portSection("hole", self.ports["hole"], "hole", "quick", 6)
        cfg = tmp / "gw.ini"
        cfg.write_text(text)
        self.gw = Proc([TWISTD, "-n", "--pidfile=", "agw", "--config", str(cfg)], tmp / "gw.log")
        self.procs.append(self.gw)
        for port in [*self.ports.values(), self.admin]:
            waitForPort(port, self.gw.proc)

    def _raw(self, handler: Any) -> RawBackend:
        backend = RawBackend(handler)
        self.raw.append(backend)
        return backend

    def members(self) -> list[tuple[str, str, str, int]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10)
        try:
            conn.request("GET", "/health")
            doc = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        return [
            (p["backendAddressPool"]["name"], m["address"], m["health"], m["inflight"])
            for p in doc["backendAddressPools"]
            for s in p["backendHttpSettingsCollection"]
            for m in s["servers"]
        ]

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        for proc in reversed(self.procs):
            proc.stop()
        for backend in self.raw:
            backend.close()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    try:
        yield s
    finally:
        s.close()


def status(port: int, method: str = "GET", body: bytes | None = None) -> int:
    return httpGet(port, timeout=20, method=method, body=body)[0]


def sendAndLeave(port: int, data: bytes, after: float = 0.3) -> None:
    """Send C{data}, give the gateway a moment to act on it, and close the connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(data)
    time.sleep(after)  # ordering only: the gateway has read the head when we leave
    s.close()


def test_every_failure_releases_its_lease(setup: Setup) -> None:
    ports = setup.ports
    # Members start Unknown until their first probe (slower to come on PyPy): wait for every one.
    waitFor(lambda: all(m[2] == "Healthy" for m in setup.members()), timeout=20, what="every member Healthy")
    # connect refused: a POST is not retried (502), a GET fails over to the other refused member (502)
    assert status(ports["dead"], "POST", b"x") == 502
    assert status(ports["dead"]) == 502
    # refused, then failover to the good member: served (HTTP; a WebSocket handshake)
    assert status(ports["mixed"]) == 200
    with connect(f"ws://127.0.0.1:{ports['wsmixed']}/chat", open_timeout=10, proxy=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
    # a WebSocket dropped by its client without a close frame
    head = handshakeHead(ports["mixed"], b"x", b"/chat")
    assert head.startswith(b"HTTP/1.1 101 "), head
    # reset before the response
    assert status(ports["reset"]) == 502
    # a backend that never answers: 504, and meanwhile a client queued behind it leaves
    holder = socket.create_connection(("127.0.0.1", ports["silent"]), timeout=10)
    holder.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    sendAndLeave(ports["silent"], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _ = readHead(holder)
    assert head.startswith(b"HTTP/1.1 504 "), head
    holder.close()
    # a client that leaves while the response streams
    sendAndLeave(ports["stream"], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    # clients that leave while the gateway is still connecting (HTTP, WebSocket), then a connect timeout
    sendAndLeave(ports["hole"], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    sendAndLeave(ports["hole"], WS_HANDSHAKE)
    assert status(ports["hole"]) in (502, 504)

    def settled() -> Any:
        members = setup.members()
        return members if all(m[3] == 0 for m in members) else None

    members = waitFor(settled, timeout=15, what="every member's inflight back to 0")
    assert {m[0] for m in members} == set(ports)
    # each step happened as described
    log = setup.gw.output()
    assert log.count("retrying GET on") == 1  # mixed (dead: its other member was refused already)
    assert log.count("(passive: connection refused)") == 4  # dead x2, mixed, wsmixed
    assert '"GET /chat" 101 0' in log and "listener=wsmixed" in log  # the handshake failed over
    assert log.count('error="client went away"') == 4  # queued, streaming, connecting (HTTP, WebSocket)

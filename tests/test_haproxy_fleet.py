"""
A fleet on one machine: three agw processes with the same configuration
behind Debian's HAProxy in TCP mode (C{send-proxy-v2}, health check on the
admin C{/ready}), rolled one at a time while HTTP requests and 100
WebSockets run through the balancer.

It checks that the backend sees each client's own address (distinct
127.0.0.x sources, through the PROXY protocol), that an affinity cookie
issued by one instance is honoured by the others, that the rolling restart
loses no HTTP request, and that only the WebSockets of the instance being
stopped are closed, with 1001.  The figures are printed (pytest -s) for
docs/fleet.rst.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.support import TWISTD, Proc, freePort, startBackend, waitFor, waitForPort

HTTP_CLIENTS = 4
"""Threads sending HTTP requests through the balancer during the roll."""
WEBSOCKETS = 100
MAX_REQUESTS = 50000
"""A bound on the HTTP load, whatever happens."""
SECRET = "8c1d5e0f7a2b4c6d9e8f0a1b2c3d4e5f"


def instanceIni(port: int, admin: int, backends: list[int]) -> str:
    """The fleet's configuration; only the two port numbers differ between instances."""
    members = ", ".join(f"127.0.0.1:{p}" for p in backends)
    return f"""
[gateway]
admin = tcp:{admin}:interface=127.0.0.1
affinitySecret = {SECRET}
lameDuckPeriod = 2s
shutdownGracePeriod = 1s
accessLog = off

[frontendPort:fp]
port = {port}
interface = 127.0.0.1
proxyProtocol = true
proxyProtocolSources = 127.0.0.1/32

[httpListener:l1]
frontendPort = fp

[backendAddressPool:pool]
backendAddresses = {members}

[backendHttpSettings:s1]
port = 80
cookieBasedAffinity = Enabled

[requestRoutingRule:r1]
ruleType = Basic
priority = 1
httpListener = l1
backendAddressPool = pool
backendHttpSettings = s1
"""


def haproxyCfg(tmp: Path, lbPort: int, instances: list[tuple[int, int]]) -> str:
    servers = "\n".join(
        f"    server agw{i} 127.0.0.1:{port} check port {admin}" for i, (port, admin) in enumerate(instances)
    )
    return f"""
global
    maxconn 4000
    stats socket {tmp}/haproxy.sock mode 600 level admin

defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    # No retries: like a balancer that cannot retry (IPVS, most cloud
    # balancers), a connection sent to an instance that no longer accepts
    # fails, so the lame duck period is what keeps the count at 0.
    retries 0

frontend fleet
    bind 127.0.0.1:{lbPort}
    default_backend agw

backend agw
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server inter 200ms fall 1 rise 2 send-proxy-v2
{servers}
"""


def serverStates(tmp: Path) -> dict[str, str]:
    """HAProxy's view: server name -> UP/DOWN/..."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(tmp / "haproxy.sock"))
        s.sendall(b"show stat\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    states = {}
    for line in out.decode().splitlines():
        fields = line.split(",")
        if len(fields) > 17 and fields[0] == "agw" and fields[1].startswith("agw"):
            states[fields[1]] = fields[17]
    return states


class Fleet:
    def __init__(self, tmp: Path, backends: list[int]) -> None:
        self.tmp = tmp
        self.instances = [(freePort(), freePort()) for _ in range(3)]
        self.procs: list[Proc | None] = [None, None, None]
        self.starts = 0
        for i, (port, admin) in enumerate(self.instances):
            (tmp / f"agw{i}.ini").write_text(instanceIni(port, admin, backends))

    def start(self, i: int) -> None:
        self.starts += 1
        proc = Proc(
            [TWISTD, "-n", "--pidfile=", "agw", "--config", str(self.tmp / f"agw{i}.ini")],
            self.tmp / f"agw{i}-{self.starts}.log",
        )
        self.procs[i] = proc
        waitForPort(self.instances[i][0], proc.proc)

    def admin(self, i: int, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.instances[i][1], timeout=10)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def stopAll(self) -> None:
        for proc in self.procs:
            if proc is not None:
                proc.stop()


def request(
    lbPort: int, source: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], str]:
    conn = http.client.HTTPConnection("127.0.0.1", lbPort, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", "/headers", headers={"Connection": "close", **(headers or {})})
        r = conn.getresponse()
        body = json.loads(r.read())
        return r.status, body, r.getheader("Set-Cookie") or ""
    finally:
        conn.close()


class HttpLoad:
    """Threads sending requests through the balancer until stopped; counts and checks each answer."""

    def __init__(self, lbPort: int) -> None:
        self.lbPort = lbPort
        self.sent = 0
        self.failed: list[str] = []
        self.wrongAddress = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self.run, args=(k,), daemon=True) for k in range(HTTP_CLIENTS)
        ]

    def run(self, k: int) -> None:
        source = f"127.0.0.{20 + k}"
        while not self.stop.is_set() and self.sent < MAX_REQUESTS:
            with self.lock:
                self.sent += 1
            try:
                status, body, _ = request(self.lbPort, source)
                xff = dict((name.lower(), v) for name, v in body["headers"]).get("x-forwarded-for")
                if status != 200:
                    raise RuntimeError(f"status {status}")
                if xff != source:
                    with self.lock:
                        self.wrongAddress += 1
            except Exception as e:
                with self.lock:
                    self.failed.append(f"{type(e).__name__}: {e}")

    def __enter__(self) -> "HttpLoad":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


class WebSockets:
    """WEBSOCKETS connections through the balancer on an asyncio loop in a thread; records close codes."""

    def __init__(self, lbPort: int) -> None:
        self.lbPort = lbPort
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connections: list[Any] = []
        self.closeCodes: dict[int, int | None] = {}

    def call(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self, n: int) -> None:
        async def one(k: int) -> Any:
            ws = await websockets.connect(
                f"ws://127.0.0.1:{self.lbPort}/ws", local_addr=(f"127.0.0.{40 + k % 100}", 0), open_timeout=15
            )
            await ws.send(f"hello {k}")
            assert await asyncio.wait_for(ws.recv(), 15) == f"hello {k}"
            asyncio.ensure_future(self._watch(k, ws))
            return ws

        self.connections = list(await asyncio.gather(*(one(k) for k in range(n))))

    async def _watch(self, k: int, ws: Any) -> None:
        try:
            await ws.wait_closed()
        finally:
            self.closeCodes[k] = ws.close_code

    def open(self, n: int) -> None:
        self.call(self._open(n))

    async def _echoAll(self) -> int:
        alive = [(k, ws) for k, ws in enumerate(self.connections) if k not in self.closeCodes]

        async def echo(k: int, ws: Any) -> None:
            await ws.send(f"still {k}")
            assert await asyncio.wait_for(ws.recv(), 15) == f"still {k}"

        await asyncio.gather(*(echo(k, ws) for k, ws in alive))
        return len(alive)

    def echoAll(self) -> int:
        """Every WebSocket not closed still echoes; returns how many."""
        return int(self.call(self._echoAll()))

    def close(self) -> None:
        async def closeAll() -> None:
            await asyncio.gather(*(ws.close() for ws in self.connections), return_exceptions=True)

        try:
            self.call(closeAll(), timeout=20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def test_rolling_restart_behind_haproxy(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if haproxy is None:
        pytest.fail("haproxy is not installed (.ci/run installs Debian's haproxy package)")
    backends = [startBackend(tmp_path, name) for name in ("A", "B")]
    fleet = Fleet(tmp_path, [port for _, port in backends])
    lbPort = freePort()
    (tmp_path / "haproxy.cfg").write_text(haproxyCfg(tmp_path, lbPort, fleet.instances))
    lb: subprocess.Popen[bytes] | None = None
    sockets: WebSockets | None = None
    started = time.monotonic()
    try:
        for i in range(3):
            fleet.start(i)
        lb = subprocess.Popen(
            [haproxy, "-db", "-f", str(tmp_path / "haproxy.cfg"), "-p", str(tmp_path / "haproxy.pid")],
            stdout=open(tmp_path / "haproxy.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        waitForPort(lbPort, lb)
        waitFor(lambda: set(serverStates(tmp_path).values()) == {"UP"}, what="all three instances UP")

        # The backend sees the client's own address, through the balancer.
        status, body, cookie = request(lbPort, "127.0.0.7")
        assert status == 200
        headers = {name.lower(): v for name, v in body["headers"]}
        assert headers["x-forwarded-for"] == "127.0.0.7"
        # An affinity cookie issued by one instance is honoured by the others
        # (roundrobin: six new connections visit all three twice).
        cookie = cookie.split(";")[0]
        pinned = body["backend"]
        for _ in range(6):
            assert request(lbPort, "127.0.0.8", {"Cookie": cookie})[1]["backend"] == pinned
        perInstance = [fleet.admin(i, "/status.json")["counters"]["requests"].get("2xx", 0) for i in range(3)]
        assert all(n >= 2 for n in perInstance), perInstance

        sockets = WebSockets(lbPort)
        sockets.open(WEBSOCKETS)
        closedAt: list[int] = []
        with HttpLoad(lbPort) as load:
            waitFor(lambda: load.sent > 50, what="HTTP load running")
            for i in range(3):
                expected = (
                    len(sockets.closeCodes) + fleet.admin(i, "/status.json")["counters"]["activeWebSockets"]
                )
                proc = fleet.procs[i]
                assert proc is not None
                proc.proc.send_signal(signal.SIGTERM)
                assert proc.proc.wait(30) == 0
                proc.stop()
                # Only the stopped instance's WebSockets were closed (all of them).
                waitFor(
                    lambda n=expected: len(sockets.closeCodes) >= n,  # type: ignore[misc]
                    what=f"instance {i}'s WebSockets closed",
                )
                assert len(sockets.closeCodes) == expected
                assert sockets.echoAll() == WEBSOCKETS - expected
                closedAt.append(expected)
                fleet.start(i)
                waitFor(
                    lambda name=f"agw{i}": serverStates(tmp_path).get(name) == "UP",  # type: ignore[misc]
                    what=f"agw{i} back UP",
                )
            sentBefore = load.sent
            waitFor(lambda: load.sent > sentBefore + 20, what="load after the roll")
        codes: dict[str, int] = {}
        for code in sockets.closeCodes.values():
            codes[str(code)] = codes.get(str(code), 0) + 1
        elapsed = time.monotonic() - started
        print(
            f"\nfleet: {load.sent} HTTP requests sent through HAProxy during the roll, "
            f"{len(load.failed)} failed, {load.wrongAddress} with a wrong client address; "
            f"{WEBSOCKETS} WebSockets, closed by code: {codes} (after each stop: {closedAt}); "
            f"{elapsed:.1f}s"
        )
        assert load.failed == [], load.failed[:5]
        assert load.wrongAddress == 0
        assert codes == {"1001": WEBSOCKETS}
    finally:
        if sockets is not None:
            sockets.close()
        if lb is not None:
            lb.terminate()
            lb.wait(10)
        fleet.stopAll()
        for proc, _ in backends:
            proc.stop()

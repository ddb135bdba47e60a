"""
Reload and stop under load (issue 7), against the real twistd process with
demo backends on loopback:

  - 20 SIGHUPs, valid and invalid configs alternating, while 200 WebSockets
    echo and HTTP requests stream: nothing dropped, nothing failed, and the
    new routing is live after each valid reload;
  - a member removed with C{connectionDraining = 3}: its WebSocket runs on
    for the drain, new requests go elsewhere, then it is closed with 1001;
  - with C{connectionDraining = 0} (draining off) a removed member is dropped
    at once: its WebSockets are closed with 1001 right after the reload;
  - SIGTERM with C{shutdownGracePeriod = 2}: open WebSockets get 1001 when
    the grace period ends, and the process exits 0.

Every wait is bounded; the clients run in threads (HTTP) or in one asyncio
loop in a thread (the 200 WebSockets).
"""

from __future__ import annotations

import asyncio
import http.client
import inspect
import os
import random
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as asyncConnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.rawbackend import readHead
from tests.support import Proc, backendOf, basicIni, freePort, startBackend, startGateway, waitFor

RELOADED = "configuration reloaded from"
REJECTED = "still running the previous configuration"


# -- helpers ------------------------------------------------------------------


# websockets >= 17.1 wants legacy=True for a connection used outside a with
# block; older releases (the last for Python 3.9 is 15) have no such argument.
_DIRECT = {"legacy": True} if "legacy" in inspect.signature(connect).parameters else {}


def wsConnect(port: int, path: str) -> ClientConnection:
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        open_timeout=10,
        close_timeout=5,
        proxy=None,
        ping_interval=None,
        **_DIRECT,
    )


def echo(ws: ClientConnection, text: str) -> None:
    ws.send(text)
    assert ws.recv(timeout=5) == text


def wsMember(gw: Proc, path: str) -> str:
    """The member the gateway bridged the WebSocket on C{path} to, from its log."""
    pattern = re.compile(r"WebSocket open \S+ -> (\S+) " + re.escape(path) + r" ")
    found: str = waitFor(
        lambda: (m := pattern.search(gw.output())) and m.group(1), timeout=5, what=f"log of {path}"
    )
    return found


def hup(gw: Proc, marker: str) -> float:
    """SIGHUP the gateway; wait until it logged the outcome (one more C{marker})."""
    before = gw.output().count(marker)
    sent = time.monotonic()
    os.kill(gw.pid, signal.SIGHUP)
    waitFor(lambda: gw.output().count(marker) > before, timeout=10, what=f"reload -> {marker!r}")
    return sent


# -- 1. reload under load ---------------------------------------------------------


class WebSocketLoad:
    """
    C{count} WebSockets through the gateway, each echoing a message every
    C{period} seconds (jittered), in one asyncio loop on a thread.  Anything
    that is not an echo in time (a close, an error, a timeout) is recorded.
    """

    def __init__(self, port: int, count: int, period: float = 1.0) -> None:
        self.port = port
        self.count = count
        self.period = period
        self.opened = threading.Event()
        self.failures: list[str] = []
        self.echoes = [0] * count
        self.finalOk = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="ws-load", daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self.opened.wait(60):
            raise TimeoutError("WebSockets not all open after 60 s")
        if self.failures:
            raise AssertionError(f"opening WebSockets failed: {self.failures[:5]}")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the echo loops; each WebSocket echoes once more, then closes (1000)."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "WebSocket load did not finish"

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # recorded for the assertions
            self.failures.append(f"load loop: {e!r}")
            self.opened.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        gate = asyncio.Semaphore(20)

        async def open1(i: int) -> Any:
            async with gate:
                return await asyncConnect(
                    f"ws://127.0.0.1:{self.port}/ws/{i}",
                    open_timeout=10,
                    close_timeout=5,
                    proxy=None,
                    ping_interval=None,
                )

        results = await asyncio.gather(*(open1(i) for i in range(self.count)), return_exceptions=True)
        conns = []
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                self.failures.append(f"ws {i}: open failed: {r!r}")
            else:
                conns.append((i, r))
        self.opened.set()
        if self.failures:
            for _, ws in conns:
                await ws.close()
            return
        deadline = time.monotonic() + 120
        await asyncio.gather(*(self._echoLoop(i, ws, deadline) for i, ws in conns))

    async def _echo(self, i: int, ws: Any, text: str) -> bool:
        """Send C{text}; whether it came back (a wrong answer is recorded)."""
        await ws.send(text)
        got = await asyncio.wait_for(ws.recv(), 5)
        if got != text:
            self.failures.append(f"ws {i}: sent {text!r}, got {got!r}")
            return False
        return True

    async def _echoLoop(self, i: int, ws: Any, deadline: float) -> None:
        assert self._stop is not None
        rng = random.Random(i)
        n = 0
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self._stop.wait(), self.period * rng.uniform(0.5, 1.5))
                except asyncio.TimeoutError:
                    pass
                if self._stop.is_set():
                    break
                n += 1
                if not await self._echo(i, ws, f"ws {i} message {n}"):
                    return
                self.echoes[i] += 1
            # the end: still open and echoing
            if not await self._echo(i, ws, f"ws {i} final"):
                return
            self.finalOk += 1
            await ws.close()
        except ConnectionClosed as e:
            self.failures.append(f"ws {i}: closed early at {time.monotonic():.2f}: {e!r}")
        except Exception as e:  # a timeout or anything else: recorded
            self.failures.append(f"ws {i}: {e!r}")
        finally:
            if ws.state.name != "CLOSED":
                try:
                    await asyncio.wait_for(ws.close(), 5)
                except Exception:
                    pass


class HttpLoad:
    """Threads issuing GET / back to back on keep-alive connections; every failure recorded."""

    def __init__(self, port: int, threads: int = 2) -> None:
        self.port = port
        self.done = threading.Event()
        self.failures: list[str] = []
        self.ok = 0
        self.seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.done.set()
        for t in self.threads:
            t.join(20)
            assert not t.is_alive(), "HTTP load did not finish"

    def _run(self, k: int) -> None:
        deadline = time.monotonic() + 120
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = 0
        try:
            while not self.done.is_set() and time.monotonic() < deadline:
                n += 1
                try:
                    conn.request("GET", f"/?t={k}&n={n}")
                    r = conn.getresponse()
                    body = r.read()
                except Exception as e:
                    with self._lock:
                        self.failures.append(f"thread {k} request {n}: {e!r}")
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    continue
                m = re.fullmatch(rb"Hello from agw demo backend (\w+)\n", body)
                with self._lock:
                    if r.status != 200 or m is None:
                        self.failures.append(f"thread {k} request {n}: {r.status} {body[:200]!r}")
                    else:
                        self.ok += 1
                        name = m.group(1).decode()
                        self.seen[name] = self.seen.get(name, 0) + 1
                time.sleep(0.005)
        finally:
            conn.close()


def test_reload_under_load_drops_nothing(tmp_path: Path) -> None:
    """
    20 SIGHUPs, 10 valid configs (the pool alternating between A+C and A+B,
    requestTimeout changing every time) and 10 invalid ones (an unknown key,
    and a pool that would route to C only), while 200 WebSockets echo and
    two keep-alive HTTP clients stream GETs.

    B leaves the pool and comes back every other valid reload, sooner than
    its 3 s drain ends; several drains end during the run.  The WebSockets
    to B must not notice: a member back in the pool is not drained.
    """
    procs = {name: startBackend(tmp_path, name) for name in "ABC"}
    pa, pb, pc = (procs[n][1] for n in "ABC")
    port = freePort()
    timeouts = iter(range(21, 41))

    def valid(members: list[int]) -> str:
        settings = f"requestTimeout = {next(timeouts)}\nconnectionDraining = 3"
        return basicIni(port, members, settings=settings)

    invalid = basicIni(port, [pc], settings="requestTimeout = 5\nconnectionDraining = 3\nfrobnicate = 1")
    gw = startGateway(tmp_path, valid([pa, pb]), port)
    cfg = tmp_path / f"gw-{port}.ini"
    wsLoad = WebSocketLoad(port, 200)
    httpLoad = HttpLoad(port)
    started = time.monotonic()
    try:
        wsLoad.start()
        opened = time.monotonic()
        members = [wsMember(gw, f"/ws/{i}") for i in range(200)]
        toB = members.count(f"127.0.0.1:{pb}")
        assert toB >= 50 and members.count(f"127.0.0.1:{pa}") >= 50, (toB, len(members))
        httpLoad.start()
        time.sleep(0.5)

        expected = {"A", "B"}
        for k in range(20):
            if k % 2 == 0:
                # valid: A+C, then A+B, ...
                expected = {"A", "C"} if k % 4 == 0 else {"A", "B"}
                newcomer = ({"B", "C"} & expected).pop()
                cfg.write_text(valid([pa, pc] if "C" in expected else [pa, pb]))
                hup(gw, RELOADED)
            else:
                newcomer = ""
                cfg.write_text(invalid)
                hup(gw, REJECTED)
            # the routing in force: the new one after a valid reload, unchanged after an invalid one
            seen: set[str] = set()
            for _ in range(20):
                seen.add(backendOf(port))
                if seen == expected:
                    break
            assert seen == expected, (k, seen, expected)
            if newcomer:
                assert newcomer in seen
            time.sleep(0.3)
        reloads = time.monotonic()
        # Let every pending drain end (3 s) while the load goes on.
        time.sleep(4.0)
        assert gw.proc.poll() is None
        httpLoad.stop()
        wsLoad.stop()
        finished = time.monotonic()
    finally:
        httpLoad.done.set()
        gw.stop()
        for proc, _ in procs.values():
            proc.stop()

    out = gw.output()
    assert out.count(RELOADED) == 10 and out.count(REJECTED) == 10
    assert "frobnicate" in out and "unknown key" in out
    assert wsLoad.failures == [], f"{len(wsLoad.failures)} failure(s): {wsLoad.failures[:10]}"
    assert wsLoad.finalOk == 200
    # every WebSocket echoed all along (about one message a second)
    assert min(wsLoad.echoes) >= 5, sorted(wsLoad.echoes)[:5]
    assert httpLoad.failures == [], f"{len(httpLoad.failures)} failure(s): {httpLoad.failures[:10]}"
    assert httpLoad.ok > 200 and set(httpLoad.seen) == {"A", "B", "C"}, (httpLoad.ok, httpLoad.seen)
    print(
        f"\nreload under load: open 200 ws {opened - started:.1f}s, "
        f"20 reloads {reloads - opened:.1f}s, total {finished - started:.1f}s; "
        f"{sum(wsLoad.echoes)} echoes, {httpLoad.ok} HTTP requests "
        f"{httpLoad.seen}; {toB} WebSockets to B"
    )


# -- 2, 3. draining ---------------------------------------------------------------


def _drainSetup(
    tmp_path: Path, drain: int
) -> tuple[dict[str, Any], int, Proc, ClientConnection, ClientConnection]:
    """Gateway on A+B with C{connectionDraining = drain}; one WebSocket to each member."""
    procs = {name: startBackend(tmp_path, name) for name in "AB"}
    pa, pb = procs["A"][1], procs["B"][1]
    port = freePort()
    ini = basicIni(port, [pa, pb], settings=f"connectionDraining = {drain}")
    gw = startGateway(tmp_path, ini, port)
    # round robin: two WebSockets in a row go to the two members
    first, second = wsConnect(port, "/d/0"), wsConnect(port, "/d/1")
    byMember = {wsMember(gw, "/d/0"): first, wsMember(gw, "/d/1"): second}
    wsA, wsB = byMember[f"127.0.0.1:{pa}"], byMember[f"127.0.0.1:{pb}"]
    for ws in (wsA, wsB):
        echo(ws, "before")
    return procs, port, gw, wsA, wsB


def test_removed_member_drains_then_its_websocket_gets_1001(tmp_path: Path) -> None:
    procs, port, gw, wsA, wsB = _drainSetup(tmp_path, 3)
    cfg = tmp_path / f"gw-{port}.ini"
    pa = procs["A"][1]
    try:
        cfg.write_text(basicIni(port, [pa], settings="connectionDraining = 3"))
        sent = hup(gw, RELOADED)
        assert "draining 127.0.0.1:" in gw.output()
        # new requests go only to A; a new WebSocket too
        assert {backendOf(port) for _ in range(10)} == {"A"}
        ws3 = wsConnect(port, "/d/new")
        assert wsMember(gw, "/d/new") == f"127.0.0.1:{pa}"
        # ~1 s in: B's WebSocket still open and echoing
        time.sleep(max(0.0, sent + 1.0 - time.monotonic()))
        echo(wsB, "draining at 1s")
        echo(wsA, "A at 1s")
        time.sleep(max(0.0, sent + 2.0 - time.monotonic()))
        echo(wsB, "draining at 2s")
        # ~3 s in: B's WebSocket is closed with 1001
        with pytest.raises(ConnectionClosed):
            wsB.recv(timeout=5)
        closedAt = time.monotonic() - sent
        assert wsB.close_code == 1001, (wsB.close_code, wsB.close_reason)
        assert wsB.close_reason == "backend removed from the pool"
        assert 2.5 <= closedAt <= 4.5, closedAt
        # the others are not touched
        echo(wsA, "A after the drain")
        echo(ws3, "new after the drain")
        assert {backendOf(port) for _ in range(5)} == {"A"}
        for ws in (wsA, ws3):
            ws.close()
        print(f"\ndrain 3 s: B's WebSocket closed 1001 {closedAt:.2f}s after SIGHUP")
    finally:
        gw.stop()
        for proc, _ in procs.values():
            proc.stop()


def test_draining_off_closes_removed_members_websockets_at_once(tmp_path: Path) -> None:
    """
    C{connectionDraining = 0} turns draining off: a member removed by a
    reload is dropped from the pool at once and its WebSockets are closed
    with 1001 ("backend removed from the pool") right after the reload;
    the others go on.
    """
    procs, port, gw, wsA, wsB = _drainSetup(tmp_path, 0)
    cfg = tmp_path / f"gw-{port}.ini"
    pa = procs["A"][1]
    try:
        cfg.write_text(basicIni(port, [pa], settings="connectionDraining = 0"))
        sent = hup(gw, RELOADED)
        with pytest.raises(ConnectionClosed):
            wsB.recv(timeout=5)
        closedAt = time.monotonic() - sent
        assert wsB.close_code == 1001, (wsB.close_code, wsB.close_reason)
        assert wsB.close_reason == "backend removed from the pool"
        assert closedAt < 1.0, closedAt
        assert "members removed from pool pool: 127.0.0.1:" in gw.output()
        echo(wsA, "A goes on")
        assert {backendOf(port) for _ in range(5)} == {"A"}
        wsA.close()
        print(f"\ndrain off: B's WebSocket closed 1001 {closedAt:.2f}s after SIGHUP")
    finally:
        gw.stop()
        for proc, _ in procs.values():
            proc.stop()


# -- the drain bookkeeping on a fake clock ------------------------------------------


class FakeWebSocket:
    """What C{GatewayContext.closeWebSockets} needs of an open WebSocket."""

    def __init__(self, ctx: Any, member: Any) -> None:
        self.ctx = ctx
        self.member = member
        self.closed: tuple[int, str] | None = None
        ctx.openWebSockets.add(self)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)
        self.ctx.openWebSockets.discard(self)


def test_drain_follows_the_member_across_reloads(tmp_path: Path) -> None:
    """
    Deterministic companion of the tests above (the same GatewayService.apply,
    on a fake clock): a member is the same object across reloads, so the
    WebSockets holding it stay its own; a member put back before its drain
    ends is not closed; one removed again drains from the later removal.
    """
    from twisted.internet.testing import MemoryReactorClock

    from agwtx.config.loader import loadConfig
    from agwtx.service import GatewayService

    cfg = tmp_path / "gw.ini"
    A, B, C = "127.0.0.1:1001", "127.0.0.1:1002", "127.0.0.1:1003"

    def config(members: list[str], timeout: int = 20) -> Any:
        settings = f"requestTimeout = {timeout}\nconnectionDraining = 3"
        cfg.write_text(basicIni(1, members, settings=settings))
        return loadConfig(cfg)

    reactor = MemoryReactorClock()
    gw = GatewayService(config([A, B]), reactor, serveAdmin=False)
    ctx = gw.ctx

    def state() -> Any:
        return ctx.pools[("pool", "s1")]

    a, b = state().member(A), state().member(B)
    wsA, wsB = FakeWebSocket(ctx, a), FakeWebSocket(ctx, b)

    gw.apply(config([A, C], 21))  # t=0: B drains until t=3
    assert state().member(A) is a and state().member(B) is b and b.draining
    reactor.advance(1)
    gw.apply(config([A, B], 22))  # t=1: B is back
    assert state().member(B) is b and not b.draining
    reactor.advance(1)
    gw.apply(config([A, C], 23))  # t=2: B drains again, until t=5
    reactor.advance(1.5)  # t=3.5: the first drain's end passed
    assert wsB.closed is None and b in state().members
    reactor.advance(1.6)  # t=5.1
    assert wsB.closed == (1001, "backend removed from the pool")
    assert b not in state().members and state().member(B) is None
    # A stayed through four state replacements: still the same member, so
    # removing it now finds the WebSocket opened before them all.
    assert wsA.closed is None and state().member(A) is a
    gw.apply(config([C], 24))
    reactor.advance(3.1)
    assert wsA.closed == (1001, "backend removed from the pool")
    assert not ctx.openWebSockets


# -- 4. SIGTERM ---------------------------------------------------------------------


def test_sigterm_closes_websockets_with_1001_after_grace_and_exits_0(tmp_path: Path) -> None:
    proc, pb = startBackend(tmp_path, "A")
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [pb], gateway="shutdownGracePeriod = 2"), port)
    conns: list[ClientConnection] = []
    try:
        conns = [wsConnect(port, f"/t/{i}") for i in range(5)]
        for ws in conns:
            echo(ws, "before")
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        # within the grace period the WebSockets go on
        time.sleep(1.0)
        assert gw.proc.poll() is None
        for ws in conns:
            echo(ws, "during grace")
        closedAt = []
        for ws in conns:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=6)
            closedAt.append(time.monotonic() - sent)
            assert ws.close_code == 1001, (ws.close_code, ws.close_reason)
            assert ws.close_reason == "gateway shutting down"
        assert gw.proc.wait(2 + 5) == 0
        exitedAt = time.monotonic() - sent
        assert 1.5 <= min(closedAt) and max(closedAt) <= 4.0, closedAt
        print(f"\nSIGTERM: WebSockets closed 1001 at {max(closedAt):.2f}s, exit 0 at {exitedAt:.2f}s")
    finally:
        for ws in conns:
            ws.close()
        gw.stop()
        proc.stop()


def test_sigterm_answers_a_handshake_still_dialing_with_503_after_grace(tmp_path: Path) -> None:
    # A backend that accepts TCP and never answers the WebSocket handshake:
    # the gateway is still dialing when it is told to stop.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent.settimeout(10)
    port = freePort()
    ini = basicIni(
        port,
        [silent.getsockname()[1]],
        settings="requestTimeout = 60",
        gateway="shutdownGracePeriod = 1",
    )
    gw = startGateway(tmp_path, ini, port)
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    held: list[socket.socket] = []
    try:
        client.sendall(
            b"GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        # Wait for the gateway's dial (probes may connect too: keep them all).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            conn, _ = silent.accept()
            held.append(conn)
            conn.settimeout(2)
            try:
                first = conn.recv(4096)
            except socket.timeout:
                continue
            if b"upgrade: websocket" in first.lower():
                break
        else:
            raise AssertionError("the gateway never dialed the backend")
        sent = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        head, body = readHead(client)
        answeredAt = time.monotonic() - sent
        assert head.startswith(b"HTTP/1.1 503 "), head[:200]
        assert b"shutting down" in (body if b"shutting down" in body else client.recv(4096)).lower()
        assert 0.8 <= answeredAt <= 5.0, answeredAt
        assert gw.proc.wait(10) == 0
        assert "1 WebSocket handshake(s) answered 503" in gw.output()
    finally:
        client.close()
        for conn in held:
            conn.close()
        silent.close()
        gw.stop()

"""
Health probes, passive detection, the admin /health endpoint and agw-health.

The state machine and the HTTP probe are tested deterministically (Clock,
MemoryReactorClock, StringTransport, an injected probe function); the rest
runs the real twistd gateway against real backends on loopback.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from agwtx.ops.admin import adminResource, backendHealth, isoTime
from agwtx.proxy.affinity import AffinityCodec
from agwtx.health.probe import (
    MAX_PROBE_BODY,
    HealthService,
    HttpProber,
    ProbeRequest,
    ProbeResult,
    ProbeSkipped,
    probeRequestFor,
)
from agwtx.tools.healthcli import COLUMNS, formatTable
from agwtx.tools.healthcli import main as healthMain
from agwtx.config.model import (
    DEFAULT_PROBE,
    BackendAddress,
    BackendAddressPool,
    BackendHttpSettings,
    GatewayConfig,
    Probe,
)
from agwtx.proxy.pool import HEALTHY, UNHEALTHY, UNKNOWN, PoolState
from agwtx.context import GatewayContext
from tests.support import ROOT, Proc, basicIni, freePort, startBackend, startGateway, stubResult, waitForPort

# -- deterministic: fixtures ----------------------------------------------------------


class FakeProbes:
    """An injected probe function: every call is a Deferred the test fires."""

    def __init__(self) -> None:
        self.calls: list[tuple[ProbeRequest, Deferred[ProbeResult]]] = []
        self.cancelled: list[ProbeRequest] = []
        self.raiseNext: Exception | None = None

    def __call__(self, request: ProbeRequest) -> Deferred[ProbeResult]:
        if self.raiseNext is not None:
            e, self.raiseNext = self.raiseNext, None
            raise e
        d: Deferred[ProbeResult] = Deferred(lambda _: self.cancelled.append(request))
        self.calls.append((request, d))
        return d

    def pending(self) -> list[tuple[ProbeRequest, Deferred[ProbeResult]]]:
        return [(r, d) for r, d in self.calls if not d.called]

    def answer(self, port: int, healthy: bool, reason: str = "") -> None:
        for r, d in self.pending():
            if r.port == port:
                d.callback(
                    ProbeResult(healthy, reason or ("200 OK" if healthy else "status 500 not in 200-399"))
                )
                return
        raise AssertionError(f"no pending probe for port {port}")


@dataclass
class World:
    clock: Clock
    ctx: GatewayContext
    state: PoolState
    fake: FakeProbes
    service: HealthService


def makeWorld(
    probe: Probe | None = None,
    ports: tuple[int, ...] = (8081, 8082),
    settings: BackendHttpSettings | None = None,
) -> World:
    clock = Clock()
    clock.advance(1_700_000_000)
    pool = BackendAddressPool("pool", tuple(BackendAddress("127.0.0.1", p) for p in ports))
    settings = settings or BackendHttpSettings("s1", probe=probe.name if probe else None)
    config = GatewayConfig(
        path="test.ini",
        backendAddressPools={"pool": pool},
        backendHttpSettings={"s1": settings},
        probes={probe.name: probe} if probe else {},
    )
    ctx = GatewayContext(clock, None, AffinityCodec(b"k" * 32))
    state = PoolState(pool, settings)
    ctx.pools[("pool", "s1")] = state
    fake = FakeProbes()
    service = HealthService(ctx, config, clock, probeFunction=fake)
    return World(clock, ctx, state, fake, service)


@pytest.fixture
def logged() -> Any:
    obs = EventLoggingObserver()
    globalLogPublisher.addObserver(obs)
    yield obs
    globalLogPublisher.removeObserver(obs)


P3 = Probe("p", interval=10, timeout=5, unhealthyThreshold=3)


# -- deterministic: probe requests ---------------------------------------------------


def test_defaultProbeIsAzures() -> None:
    w = makeWorld()
    w.service.startService()
    assert len(w.fake.calls) == 2  # both members at once, at start
    req = w.fake.calls[0][0]
    assert (req.address, req.port, req.hostHeader, req.path) == (
        "127.0.0.1",
        8081,
        "127.0.0.1",
        "/",
    )
    assert req.probe is DEFAULT_PROBE
    assert (req.probe.interval, req.probe.timeout, req.probe.unhealthyThreshold) == (30, 30, 3)
    assert req.probe.statusCodes == ((200, 399),)
    assert req.url == "http://127.0.0.1:8081/"
    w.service.stopService()


def test_customProbeRequest() -> None:
    probe = Probe("p", host=None, pickHostNameFromBackendHttpSettings=True, path="/healthz", port=9000)
    settings = BackendHttpSettings("s1", hostName="app.example", probe="p")
    member = PoolState(BackendAddressPool("pool", (BackendAddress("10.0.0.4", 8080),)), settings).members[0]
    req = probeRequestFor(probe, settings, member)
    assert (req.address, req.port, req.hostHeader, req.path) == (
        "10.0.0.4",
        9000,
        "app.example",
        "/healthz",
    )
    # host = None and no pick: the member's own host
    req = probeRequestFor(Probe("p", host=None), settings, member)
    assert (req.hostHeader, req.port) == ("10.0.0.4", 8080)
    # host given
    req = probeRequestFor(Probe("p", host="probe.example"), settings, member)
    assert req.hostHeader == "probe.example"


# -- deterministic: the state machine ----------------------------------------------------


def test_unknownIsDecidedByTheFirstProbe() -> None:
    w = makeWorld(P3)
    a, b = w.state.members
    assert a.health == b.health == UNKNOWN and a.available
    w.service.startService()
    w.fake.answer(8081, True, "200 OK")
    w.fake.answer(8082, False, "connection refused")
    assert (a.health, a.lastReason) == (HEALTHY, "200 OK")
    # an Unknown member has no credit: its first failure decides it
    assert (b.health, b.lastReason) == (UNHEALTHY, "connection refused")
    assert a.lastChange == a.lastProbe == w.clock.seconds()
    assert not b.available
    assert w.state.pick() is a and w.state.pick() is a
    w.service.stopService()


def test_unhealthyAfterThresholdHealthyAfterOneSuccess() -> None:
    w = makeWorld(P3, ports=(8081,))
    (m,) = w.state.members
    w.service.startService()
    w.fake.answer(8081, True)
    assert m.health == HEALTHY
    changed = m.lastChange
    for i in range(2):
        w.clock.advance(10)
        w.fake.answer(8081, False, f"status 500 not in 200-399 #{i}")
        assert m.health == HEALTHY, i
        assert m.lastReason == f"status 500 not in 200-399 #{i}"
        assert m.lastChange == changed and m.lastProbe == w.clock.seconds()
    w.clock.advance(10)
    w.fake.answer(8081, False, "status 500 not in 200-399")
    assert m.health == UNHEALTHY and m.lastChange == w.clock.seconds()
    w.clock.advance(10)
    w.fake.answer(8081, False)
    assert m.health == UNHEALTHY
    w.clock.advance(10)
    w.fake.answer(8081, True, "200 OK")
    assert (m.health, m.lastReason, m.consecutiveFailures) == (HEALTHY, "200 OK", 0)
    w.service.stopService()


def test_successResetsTheFailureCount() -> None:
    w = makeWorld(P3, ports=(8081,))
    (m,) = w.state.members
    w.service.startService()
    w.fake.answer(8081, True)
    for ok in (False, False, True, False, False):
        w.clock.advance(10)
        w.fake.answer(8081, ok)
    assert m.health == HEALTHY and m.consecutiveFailures == 2
    w.service.stopService()


def test_healthChangesAreLogged(logged: EventLoggingObserver) -> None:
    w = makeWorld(P3, ports=(8081,))
    w.service.startService()
    w.fake.answer(8081, True, "200 OK")
    w.clock.advance(10)
    w.fake.answer(8081, True, "200 OK")
    changes = [e for e in logged if e.get("event") == "health_change"]
    assert [(e["old"], e["new"], e["reason"]) for e in changes] == [(UNKNOWN, HEALTHY, "200 OK")]
    w.service.stopService()


def test_membersAreProbedConcurrentlyWithoutOverlap() -> None:
    w = makeWorld(Probe("p", interval=2, timeout=5), ports=(1, 2, 3))
    w.service.startService()
    assert sorted(r.port for r, _ in w.fake.pending()) == [1, 2, 3]
    w.fake.answer(2, True)
    w.clock.advance(2)  # 1 and 3 still running: only 2 is probed again
    assert sorted(r.port for r, _ in w.fake.pending()) == [1, 2, 3]
    assert [r.port for r, _ in w.fake.calls] == [1, 2, 3, 2]
    w.clock.advance(2)  # nothing finished: nothing new
    assert len(w.fake.calls) == 4
    w.fake.answer(1, True)
    w.clock.advance(1)  # timeout of 5s for the first probes of 3 (started at 0) hits at 5
    assert len(w.fake.calls) == 4
    assert [r.port for r in w.fake.cancelled] == [3]
    assert w.state.members[2].health == UNHEALTHY
    assert w.state.members[2].lastReason == "timeout after 5s"
    w.service.stopService()


def test_timeoutMarksFailureAndCancels() -> None:
    w = makeWorld(P3, ports=(8081,))
    (m,) = w.state.members
    w.service.startService()
    w.fake.answer(8081, True)
    w.clock.advance(10)
    w.clock.advance(4.9)
    assert w.fake.cancelled == [] and m.lastReason == "200 OK"
    w.clock.advance(0.1)
    assert len(w.fake.cancelled) == 1
    assert (m.health, m.lastReason, m.consecutiveFailures) == (HEALTHY, "timeout after 5s", 1)
    w.clock.advance(5.0)  # next tick (t=20) probes again
    assert len(w.fake.pending()) == 1
    w.service.stopService()


def test_timeoutEqualToIntervalStillProbesEveryInterval() -> None:
    w = makeWorld(Probe("p", interval=1, timeout=1), ports=(8081,))
    w.service.startService()
    for i in range(1, 4):
        w.clock.advance(1)
        assert len(w.fake.calls) == i + 1 and len(w.fake.cancelled) == i
        assert w.state.members[0].lastReason == "timeout after 1s"
    w.service.stopService()


def test_defaultTimeoutReason() -> None:
    w = makeWorld(ports=(8081,))
    w.service.startService()
    w.clock.advance(30)
    assert w.state.members[0].lastReason == "timeout after 30s"
    w.service.stopService()


def test_errorInATickDoesNotStopTheLoop(logged: EventLoggingObserver) -> None:
    w = makeWorld(P3, ports=(8081,))
    w.fake.raiseNext = RuntimeError("boom")
    w.service.startService()
    assert w.fake.calls == []
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 1 and failures[0]["log_failure"].check(RuntimeError)
    w.clock.advance(10)
    assert len(w.fake.pending()) == 1
    # a probe function whose Deferred fails (a bug, not a result) is logged and counted
    w.fake.pending()[0][1].errback(Failure(ValueError("bad")))
    assert w.state.members[0].lastReason == "probe error: bad"
    w.clock.advance(10)
    assert len(w.fake.pending()) == 1
    w.service.stopService()


def test_stopServiceCancelsLoopsAndProbes() -> None:
    w = makeWorld(P3)
    w.service.startService()
    assert w.service.passiveFailure in w.ctx.passiveListeners
    d = w.service.stopService()
    assert isinstance(d, Deferred) and d.called
    assert len(w.fake.cancelled) == 2
    assert w.clock.getDelayedCalls() == []
    w.clock.advance(100)
    assert len(w.fake.calls) == 2
    assert [m.health for m in w.state.members] == [UNKNOWN, UNKNOWN]  # a cancel teaches nothing
    assert w.service.passiveFailure not in w.ctx.passiveListeners


def test_refreshFollowsReloadedPools() -> None:
    w = makeWorld(P3, ports=(8081,))
    w.service.startService()
    newState = PoolState(BackendAddressPool("pool", (BackendAddress("127.0.0.1", 9090),)), w.state.settings)
    w.ctx.pools[("pool", "s1")] = newState
    w.service.refresh(w.service.config)
    assert len(w.fake.cancelled) == 1  # the old member's probe
    assert [r.port for r, _ in w.fake.pending()] == [9090]
    w.service.stopService()


def test_refreshRestartsAChangedProbe() -> None:
    w = makeWorld(P3, ports=(8081,))
    w.service.startService()
    w.fake.answer(8081, True)
    w.service.refresh(w.service.config)  # same probe: nothing happens
    assert len(w.fake.calls) == 1
    faster = replace(P3, interval=2)
    w.service.refresh(replace(w.service.config, probes={"p": faster}))
    assert len(w.fake.calls) == 2  # restarted: probes at once, then every 2s
    w.fake.answer(8081, True)
    w.clock.advance(2)
    assert len(w.fake.calls) == 3
    w.service.stopService()


def test_membersAddedAndDroppedBetweenTicks() -> None:
    w = makeWorld(P3, ports=(8081, 8082))
    w.service.startService()
    b = w.state.members[1]
    w.fake.answer(8081, True)
    w.state.dropMembers([b])  # the end of a drain; b's probe is still running
    extra = PoolState(BackendAddressPool("x", (BackendAddress("127.0.0.1", 9000),)), w.state.settings)
    w.state.members.append(extra.members[0])
    w.clock.advance(10)
    assert [r.port for r in w.fake.cancelled] == [8082]
    assert sorted(r.port for r, _ in w.fake.pending()) == [8081, 9000]
    w.service.stopService()


# -- deterministic: passive detection ---------------------------------------------------


def test_passiveConnectionRefusedIsImmediate() -> None:
    w = makeWorld(P3)
    a, b = w.state.members
    w.service.startService()
    w.fake.answer(8081, True)
    w.fake.answer(8082, True)
    w.ctx.passiveFailure(
        w.state, b, "refused", "Connection was refused by other side: 111: Connection refused."
    )
    assert (b.health, b.lastReason) == (UNHEALTHY, "passive: connection refused")
    assert w.state.pick() is a and w.state.pick() is a
    w.clock.advance(10)
    w.fake.answer(8082, True, "200 OK")  # back with the next successful probe
    assert (b.health, b.lastReason) == (HEALTHY, "200 OK")
    w.service.stopService()


def test_passiveResetCountsTowardsThreshold() -> None:
    w = makeWorld(P3, ports=(8081,))
    (m,) = w.state.members
    w.service.startService()
    w.fake.answer(8081, True)
    for _ in range(2):
        w.ctx.passiveFailure(w.state, m, "reset", "backend closed the connection before responding")
        assert m.health == HEALTHY
    assert m.lastReason == "passive: connection reset: backend closed the connection before responding"
    w.ctx.passiveFailure(w.state, m, "connect", "No route to host")
    assert (m.health, m.lastReason) == (UNHEALTHY, "passive: connect failed: No route to host")
    w.service.stopService()


def test_passiveLocalShortageLeavesTheMemberAlone() -> None:
    # The gateway out of file descriptors: every member would go out of
    # rotation for a fault of the gateway's own.
    w = makeWorld(P3, ports=(8081,))
    (m,) = w.state.members
    w.service.startService()
    w.fake.answer(8081, True)
    for _ in range(5):
        w.ctx.passiveFailure(w.state, m, "local", "Couldn't bind: 24: Too many open files.")
    assert (m.health, m.consecutiveFailures) == (HEALTHY, 0)
    w.service.stopService()


def test_passiveIgnoredWhenNothingProbes() -> None:
    w = makeWorld(P3, ports=(8081,))
    (m,) = w.state.members
    w.ctx.passiveListeners.append(w.service.passiveFailure)  # registered, never started
    w.ctx.passiveFailure(w.state, m, "refused", "Connection refused")
    assert m.health == UNKNOWN and m.available


# -- deterministic: the HTTP probe on a memory reactor ----------------------------------


class Wire:
    """One probe's connection on a MemoryReactorClock."""

    def __init__(self, probe: Probe, port: int = 8081, host: str = "127.0.0.1") -> None:
        self.reactor = MemoryReactorClock()
        self.prober = HttpProber(self.reactor)
        settings = BackendHttpSettings("s1")
        member = PoolState(BackendAddressPool("pool", (BackendAddress(host, port),)), settings).members[0]
        self.request = probeRequestFor(probe, settings, member)
        self.results: list[Any] = []
        self.d = self.prober(self.request)
        self.d.addBoth(self.results.append)
        self.host, self.port, self.factory, self.timeout, _ = self.reactor.tcpClients[-1]
        self.transport = StringTransport()
        self.proto: Any = None

    def connect(self) -> None:
        self.proto = self.factory.buildProtocol(None)
        self.proto.makeConnection(self.transport)

    def receive(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def lose(self) -> None:
        self.proto.connectionLost(Failure(ierror.ConnectionDone()))

    @property
    def result(self) -> ProbeResult:
        assert len(self.results) == 1, self.results
        return self.results[0]


def test_httpProbeSendsConnectionClose() -> None:
    w = Wire(Probe("p", host="app.example", path="/health check", timeout=7))
    assert (w.host, w.port, w.timeout) == ("127.0.0.1", 8081, 7)
    w.connect()
    head = w.transport.value()
    assert head.startswith(b"GET /health%20check HTTP/1.1\r\n")
    lines = head.split(b"\r\n")
    assert b"Host: app.example" in lines
    assert b"Connection: close" in lines
    assert head.endswith(b"\r\n\r\n")
    w.receive(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    assert w.result == ProbeResult(True, "204 No Content")
    assert w.transport.disconnecting  # closed, not kept alive
    w.lose()
    assert w.prober.pool.active == set() and w.prober.pool.idle.get(("127.0.0.1", 8081, ""), []) == []


@pytest.mark.parametrize(
    "probe, response, expected",
    [
        (
            Probe("p", statusCodes=((200, 299), (404, 404))),
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\n\r\nbusy!",
            ProbeResult(False, "status 503 not in 200-299,404"),
        ),
        (
            Probe("p", statusCodes=((200, 299), (404, 404))),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            ProbeResult(True, "404 Not Found"),
        ),
        (
            DEFAULT_PROBE,
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n",
            ProbeResult(False, "status 500 not in 200-399"),
        ),
        (
            Probe("p", body="ready"),
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nstarting",
            ProbeResult(False, "body mismatch: 'ready' not found"),
        ),
        (
            DEFAULT_PROBE,
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            ProbeResult(False, "protocol error: malformed status line"),
        ),
    ],
)
def test_httpProbeVerdict(probe: Probe, response: bytes, expected: ProbeResult) -> None:
    w = Wire(probe)
    w.connect()
    w.receive(response)
    assert w.result == expected


def test_httpProbeBodyMatch() -> None:
    w = Wire(Probe("p", body="ready"))
    w.connect()
    w.receive(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nall\r\n")
    assert w.results == []
    w.receive(b"6\r\n ready\r\n")
    assert w.result == ProbeResult(True, "200 OK")
    assert w.transport.disconnected  # aborted: the rest is not read


def test_httpProbeHugeBodyIsNotBuffered() -> None:
    w = Wire(Probe("p", body="needle"))
    w.connect()
    w.receive(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (10 * 1024 * 1024))
    block = b"x" * 16384
    sent = 0
    attempt = None
    while not w.results and sent < 10 * 1024 * 1024:
        w.receive(block)
        sent += len(block)
        attempt = w.proto.handler or attempt
    assert sent <= MAX_PROBE_BODY
    assert w.result == ProbeResult(False, "body mismatch: 'needle' not found in the first 64 KiB")
    assert w.transport.disconnected
    assert attempt is not None and len(attempt.body) == 0  # dropped once decided


def test_httpProbeHugeBodyWithoutMatchIsCutShort() -> None:
    w = Wire(DEFAULT_PROBE)
    w.connect()
    w.receive(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (10 * 1024 * 1024))
    w.receive(b"x" * MAX_PROBE_BODY)
    assert w.result == ProbeResult(True, "200 OK")
    assert w.transport.disconnected


@pytest.mark.parametrize(
    "probe, error, expected",
    [
        (DEFAULT_PROBE, ierror.ConnectionRefusedError(), "connection refused"),
        (Probe("p", timeout=2), ierror.TimeoutError(), "timeout after 2s (connecting)"),
    ],
)
def test_httpProbeConnectFailed(probe: Probe, error: Exception, expected: str) -> None:
    w = Wire(probe)
    w.factory.clientConnectionFailed(w.reactor.connectors[-1], Failure(error))
    assert w.result == ProbeResult(False, expected)


def test_httpProbeWithoutASocketIsSkippedNotFailed() -> None:
    # socket() failed in the gateway (EMFILE): nothing is known about the member.
    w = Wire(DEFAULT_PROBE)
    w.factory.clientConnectionFailed(
        w.reactor.connectors[-1], Failure(ierror.ConnectBindError(24, "Too many open files"))
    )
    (result,) = w.results
    assert isinstance(result, Failure) and result.check(ProbeSkipped)
    assert "Too many open files" in str(result.value)


def test_skippedProbeLeavesTheMemberAlone() -> None:
    w = makeWorld(P3, ports=(8081,))
    (m,) = w.state.members
    w.service.startService()
    w.fake.answer(8081, True)
    for _ in range(4):  # past unhealthyThreshold (3) if they counted
        w.clock.advance(10)
        [(_, d)] = w.fake.pending()
        d.errback(ProbeSkipped("Couldn't bind: 24: Too many open files."))
    assert (m.health, m.consecutiveFailures, m.lastReason) == (HEALTHY, 0, "200 OK")
    w.service.stopService()


def test_httpProbeClosedBeforeResponse() -> None:
    w = Wire(DEFAULT_PROBE)
    w.connect()
    w.lose()
    assert w.result == ProbeResult(False, "connection reset: backend closed the connection before responding")


def test_httpProbeCancelAbortsTheConnection() -> None:
    w = Wire(DEFAULT_PROBE)
    w.connect()
    w.d.cancel()
    assert w.transport.disconnected
    assert isinstance(w.results[0], Failure)
    w.results[0].trap(CancelledError)
    # and while still connecting: the connection attempt is dropped
    w2 = Wire(DEFAULT_PROBE)
    connector = w2.reactor.connectors[-1]
    w2.d.cancel()
    w2.results[0].trap(CancelledError)
    assert connector._disconnected


def test_httpProbeTimeoutThroughTheService() -> None:
    """The real prober under the service: a silent backend times out and is aborted."""
    reactor = MemoryReactorClock()
    probe = Probe("p", interval=10, timeout=3)
    pool = BackendAddressPool("pool", (BackendAddress("127.0.0.1", 8081),))
    settings = BackendHttpSettings("s1", probe="p")
    config = GatewayConfig(
        path="t",
        backendAddressPools={"pool": pool},
        backendHttpSettings={"s1": settings},
        probes={"p": probe},
    )
    ctx = GatewayContext(reactor, None, AffinityCodec(b"k" * 32))
    state = ctx.pools[("pool", "s1")] = PoolState(pool, settings)
    service = HealthService(ctx, config, reactor)
    service.startService()
    factory = reactor.tcpClients[-1][2]
    proto: Any = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    assert b"Connection: close" in transport.value()
    reactor.advance(3)
    assert transport.disconnected
    assert (state.members[0].health, state.members[0].lastReason) == (UNHEALTHY, "timeout after 3s")
    stopped = service.stopService()
    assert not stopped.called  # waits for the aborted connection to go
    proto.connectionLost(Failure(ierror.ConnectionAborted()))
    assert stopped.called


# -- deterministic: /health document and the CLI table ------------------------------------


def test_healthDocumentShape() -> None:
    w = makeWorld(P3)
    w.service.startService()
    w.fake.answer(8081, True, "200 OK")
    w.state.members[1].inflight = 2
    w.state.members[1].draining = True
    doc = backendHealth(w.ctx.pools)
    assert doc == {
        "backendAddressPools": [
            {
                "backendAddressPool": {"name": "pool"},
                "backendHttpSettingsCollection": [
                    {
                        "backendHttpSettings": {"name": "s1"},
                        "servers": [
                            {
                                "address": "127.0.0.1:8081",
                                "health": "Healthy",
                                "healthProbeLog": "200 OK",
                                "lastChange": isoTime(w.clock.seconds()),
                                "lastProbe": isoTime(w.clock.seconds()),
                                "draining": False,
                                "inflight": 0,
                            },
                            {
                                "address": "127.0.0.1:8082",
                                "health": "Unknown",
                                "healthProbeLog": "not probed yet",
                                "lastChange": None,
                                "lastProbe": None,
                                "draining": True,
                                "inflight": 2,
                            },
                        ],
                    }
                ],
            }
        ]
    }
    assert isoTime(1_700_000_000) == "2023-11-14T22:13:20.000Z"
    w.service.stopService()


def test_adminResourceServesHealth() -> None:
    from treq.testing import StubTreq

    w = makeWorld(P3)
    root = adminResource(w.ctx, w.service.config, w.clock)
    treq = StubTreq(root)

    response = stubResult(treq, treq.get("http://admin/health"))
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    body = json.loads(stubResult(treq, response.content()))
    assert body == backendHealth(w.ctx.pools)
    index = stubResult(treq, treq.get("http://admin/"))
    assert index.code == 200
    assert b"/health" in stubResult(treq, index.content())
    missing = stubResult(treq, treq.get("http://admin/nope"))
    assert missing.code == 404


def test_cliTable() -> None:
    w = makeWorld(P3)
    w.service.startService()
    w.fake.answer(8081, True, "200 OK")
    w.fake.answer(8082, False, "connection refused")
    text = formatTable(json.loads(json.dumps(backendHealth(w.ctx.pools))))
    lines = text.splitlines()
    assert lines[0].split() == ["POOL", "SETTINGS", "SERVER", "HEALTH", "REASON", "LAST", "CHANGE"]
    assert lines[1].split()[:5] == ["pool", "s1", "127.0.0.1:8081", "Healthy", "200"]
    assert "Unhealthy" in lines[2] and "connection refused" in lines[2]
    assert lines[1].index("127.0.0.1:8081") == lines[0].index("SERVER")
    assert lines[2].endswith(isoTime(w.clock.seconds()) or "")
    assert formatTable({"backendAddressPools": []}).splitlines()[1] == "(no backend pools in use)"
    w.service.stopService()


def test_cliUnreachable() -> None:
    port = freePort()
    out, err = io.StringIO(), io.StringIO()
    assert healthMain(["--admin", f"http://127.0.0.1:{port}"], out, err) == 2
    assert f"cannot reach http://127.0.0.1:{port}/health" in err.getvalue()
    assert out.getvalue() == ""


# -- real processes on loopback ----------------------------------------------------------

FAST_PROBE = "interval = 1\ntimeout = 1\nunhealthyThreshold = 2"


def waitFor(check: Callable[[], Any], timeout: float, what: str, gw: Proc | None = None) -> Any:
    """Poll C{check} until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f"\n{gw.output()}" if gw else "")
    )


def healthDoc(adminPort: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{adminPort}/health", timeout=5) as r:
        assert r.headers["Content-Type"] == "application/json"
        return json.loads(r.read())


def servers(adminPort: int) -> dict[str, dict[str, Any]]:
    doc = healthDoc(adminPort)
    return {
        s["address"]: s
        for p in doc["backendAddressPools"]
        for c in p["backendHttpSettingsCollection"]
        for s in c["servers"]
    }


def healthOf(adminPort: int, port: int) -> str:
    return str(servers(adminPort)[f"127.0.0.1:{port}"]["health"])


def get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


class Gateway:
    def __init__(
        self,
        tmp: Path,
        backends: list[int] | list[str],
        probe: str = FAST_PROBE,
        settings: str = "",
    ) -> None:
        self.port = freePort()
        self.admin = freePort()
        ini = basicIni(
            self.port,
            backends,
            settings="probe = p1\n" + settings,
            gateway=f"admin = tcp:{self.admin}:interface=127.0.0.1",
            probe=probe,
        )
        self.proc = startGateway(tmp, ini, self.port)
        waitForPort(self.admin, self.proc.proc)

    def waitHealth(self, port: int, health: str, timeout: float = 15.0) -> dict[str, Any]:
        def check() -> Any:
            s = servers(self.admin)[f"127.0.0.1:{port}"]
            return s if s["health"] == health else None

        return waitFor(check, timeout, f"127.0.0.1:{port} {health}", self.proc)  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture
def procs() -> Any:
    started: list[Any] = []
    yield started
    for p in reversed(started):
        p.stop()


def test_backendLeavesRotationAndComesBack(tmp_path: Path, procs: list[Any]) -> None:
    b1, p1 = startBackend(tmp_path, "b1")
    b2, p2 = startBackend(tmp_path, "b2")
    procs += [b1, b2]
    gw = Gateway(tmp_path, [p1, p2])
    procs.append(gw)
    gw.waitHealth(p1, "Healthy")
    s2 = gw.waitHealth(p2, "Healthy")
    assert s2["healthProbeLog"] == "200 OK"
    seen = {get(gw.port)[2]["x-demo-backend"] for _ in range(6)}
    assert seen == {"b1", "b2"}

    b2.proc.kill()
    b2.proc.wait(5)
    # no traffic: the probe alone notices (threshold 2, interval 1)
    s2 = gw.waitHealth(p2, "Unhealthy")
    assert s2["healthProbeLog"] == "connection refused"
    for _ in range(20):
        status, _, headers = get(gw.port)
        assert (status, headers["x-demo-backend"]) == (200, "b1")

    b2again, _ = startBackend(tmp_path, "b2", p2)
    procs.append(b2again)
    gw.waitHealth(p2, "Healthy")
    seen = {get(gw.port)[2]["x-demo-backend"] for _ in range(6)}
    assert seen == {"b1", "b2"}
    assert "Unhealthy -> Healthy" in gw.proc.output()


def test_refusedConnectTakesMemberOutBeforeTheNextProbe(tmp_path: Path, procs: list[Any]) -> None:
    """Passive detection end to end: a real refused connect, classified by exception type."""
    b1, p1 = startBackend(tmp_path, "b1")
    b2, p2 = startBackend(tmp_path, "b2")
    procs += [b1, b2]
    # One probe per minute and a threshold of 5: only the proxy can take b2 out in this test.
    gw = Gateway(tmp_path, [p1, p2], probe="interval = 60\ntimeout = 5\nunhealthyThreshold = 5")
    procs.append(gw)
    gw.waitHealth(p1, "Healthy")
    gw.waitHealth(p2, "Healthy")
    b2.proc.kill()
    b2.proc.wait(5)
    for _ in range(6):  # GETs fail over: every answer comes from b1
        status, _, headers = get(gw.port)
        assert (status, headers["x-demo-backend"]) == (200, "b1")
    s2 = servers(gw.admin)[f"127.0.0.1:{p2}"]
    assert (s2["health"], s2["healthProbeLog"]) == ("Unhealthy", "passive: connection refused")


def test_allMembersDownIs502(tmp_path: Path, procs: list[Any]) -> None:
    b1, p1 = startBackend(tmp_path, "b1")
    procs.append(b1)
    gw = Gateway(tmp_path, [p1])
    procs.append(gw)
    gw.waitHealth(p1, "Healthy")
    b1.proc.kill()
    b1.proc.wait(5)
    gw.waitHealth(p1, "Unhealthy")
    status, body, _ = get(gw.port)
    assert status == 502
    assert b"no healthy backend" in body


def test_healthEndpointShape(tmp_path: Path, procs: list[Any]) -> None:
    b1, p1 = startBackend(tmp_path, "b1")
    procs.append(b1)
    dead = freePort()
    gw = Gateway(tmp_path, [p1, dead])
    procs.append(gw)
    gw.waitHealth(p1, "Healthy")
    gw.waitHealth(dead, "Unhealthy")
    doc = healthDoc(gw.admin)
    assert list(doc) == ["backendAddressPools"]
    (pool,) = doc["backendAddressPools"]
    assert pool["backendAddressPool"] == {"name": "pool"}
    (coll,) = pool["backendHttpSettingsCollection"]
    assert coll["backendHttpSettings"] == {"name": "s1"}
    ok, bad = coll["servers"]
    assert set(ok) == {
        "address",
        "health",
        "healthProbeLog",
        "lastChange",
        "lastProbe",
        "draining",
        "inflight",
    }
    assert (ok["address"], ok["health"], ok["healthProbeLog"]) == (
        f"127.0.0.1:{p1}",
        "Healthy",
        "200 OK",
    )
    assert (bad["address"], bad["health"], bad["healthProbeLog"]) == (
        f"127.0.0.1:{dead}",
        "Unhealthy",
        "connection refused",
    )
    for s in (ok, bad):
        assert s["draining"] is False and s["inflight"] == 0
        for key in ("lastChange", "lastProbe"):
            when = datetime.fromisoformat(s[key].replace("Z", "+00:00"))  # 3.9 does not read "Z"
            assert abs(when.timestamp() - time.time()) < 60


def test_bodyMatchProbe(tmp_path: Path, procs: list[Any]) -> None:
    b1, p1 = startBackend(tmp_path, "b1")
    b2, p2 = startBackend(tmp_path, "b2")
    procs += [b1, b2]
    gw = Gateway(tmp_path, [p1, p2], probe=FAST_PROBE + "\nmatch.body = demo backend b1")
    procs.append(gw)
    gw.waitHealth(p1, "Healthy")
    s2 = gw.waitHealth(p2, "Unhealthy")
    assert s2["healthProbeLog"] == "body mismatch: 'demo backend b1' not found"


def test_backend503IsUnhealthy(tmp_path: Path, procs: list[Any]) -> None:
    b1, p1 = startBackend(tmp_path, "b1")
    procs.append(b1)
    gw = Gateway(tmp_path, [p1], probe=FAST_PROBE + "\npath = /status/503")
    procs.append(gw)
    s = gw.waitHealth(p1, "Unhealthy")
    assert s["healthProbeLog"] == "status 503 not in 200-399"
    status, body, _ = get(gw.port)
    assert status == 502 and b"no healthy backend" in body


class SilentServer:
    """Accepts connections and never answers (nor closes them until stopped)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def stop(self) -> None:
        self.running = False
        self.thread.join(5)
        for c in self.accepted:
            c.close()
        self.sock.close()


def test_silentBackendTimesOutAndGatewayStaysResponsive(tmp_path: Path, procs: list[Any]) -> None:
    silent = SilentServer()
    procs.append(silent)
    b1, p1 = startBackend(tmp_path, "b1")
    procs.append(b1)
    gw = Gateway(tmp_path, [p1, silent.port], settings="requestTimeout = 5")
    procs.append(gw)
    s = gw.waitHealth(silent.port, "Unhealthy")
    assert s["healthProbeLog"] == "timeout after 1s"
    assert healthOf(gw.admin, p1) == "Healthy"
    # probes keep timing out every second meanwhile; requests are not held up
    started = time.monotonic()
    for _ in range(50):
        t0 = time.monotonic()
        status, _, headers = get(gw.port)
        assert (status, headers["x-demo-backend"]) == (200, "b1")
        assert time.monotonic() - t0 < 0.5
    assert time.monotonic() - started < 5
    # probed again (every interval) on fresh connections
    waitFor(lambda: len(silent.accepted) >= 3, 10, "three probe connections")


def test_cliAgainstRunningGateway(tmp_path: Path, procs: list[Any]) -> None:
    b1, p1 = startBackend(tmp_path, "b1")
    procs.append(b1)
    dead = freePort()
    gw = Gateway(tmp_path, [p1, dead])
    procs.append(gw)
    gw.waitHealth(p1, "Healthy")
    gw.waitHealth(dead, "Unhealthy")

    def agwHealth(adminPort: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agwtx.tools.healthcli", "--admin", f"http://127.0.0.1:{adminPort}"],
            cwd=str(ROOT),
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )

    run = agwHealth(gw.admin)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    header = lines[0]
    for column in COLUMNS:
        assert column in header
    assert lines[1].split()[:5] == ["pool", "s1", f"127.0.0.1:{p1}", "Healthy", "200"]
    assert lines[2].split()[:4] == ["pool", "s1", f"127.0.0.1:{dead}", "Unhealthy"]
    assert "connection refused" in lines[2]
    down = agwHealth(freePort())
    assert down.returncode == 2
    assert "agw-health: cannot reach" in down.stderr


def test_failoverWhileBackendDies(tmp_path: Path, procs: list[Any]) -> None:
    """2,000 GETs over 4 keep-alive connections; one of two backends is killed midway."""
    b1, p1 = startBackend(tmp_path, "b1")
    b2, p2 = startBackend(tmp_path, "b2")
    procs += [b1, b2]
    gw = Gateway(tmp_path, [p1, p2])
    procs.append(gw)
    gw.waitHealth(p1, "Healthy")
    gw.waitHealth(p2, "Healthy")

    total, clients = 2000, 4
    done = [0]
    lock = threading.Lock()
    killed = threading.Event()
    errors: list[str] = []
    byBackend: dict[str, int] = {}

    def client(c: int, n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
        for i in range(n):
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read()
                if r.status != 200:
                    errors.append(f"client {c} request {i}: {r.status} {body!r}")
                else:
                    name = r.getheader("x-demo-backend") or "?"
                    with lock:
                        byBackend[name] = byBackend.get(name, 0) + 1
            except Exception as e:  # noqa: BLE001 - a client-visible error too
                errors.append(f"client {c} request {i}: {type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
            with lock:
                done[0] += 1
                if done[0] == total // 4 and not killed.is_set():
                    b2.proc.kill()
                    killed.set()
        conn.close()

    threads = [threading.Thread(target=client, args=(c, total // clients)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads)
    assert killed.is_set() and done[0] == total
    assert errors == [], f"{len(errors)} client-visible errors: {errors[:10]}\n{gw.proc.output()[-4000:]}"
    assert byBackend.get("b2", 0) > 0 and byBackend["b1"] > total // 2
    s2 = servers(gw.admin)[f"127.0.0.1:{p2}"]
    assert s2["health"] == "Unhealthy"

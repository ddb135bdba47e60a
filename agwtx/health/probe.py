"""
Backend health: active HTTP probes and passive failure detection.

Every L{PoolState} in C{ctx.pools} (one per backendAddressPool and
backendHttpSettings pair, as in Azure's backend health view) gets a
L{LoopingCall} on the injected clock.  Each tick starts one probe per member,
all members concurrently, never two at once for the same member: a member
whose previous probe is still running is skipped for that tick.  A probe that
has not finished after the probe's C{timeout} is cancelled, which aborts its
connection, and counts as a failure ("timeout after 30s").

The probe is C{config.probes[settings.probe]} or, without one, Azure's
default probe: C{GET <settings protocol>://127.0.0.1:<member port>/} with
C{Host: 127.0.0.1}, every 30 s, timeout 30 s, unhealthy after 3 failures,
200-399 healthy.  A custom probe sets the Host header (C{host}, or with
C{pickHostNameFromBackendHttpSettings} the settings' C{hostName}, else the
member's host), the path, the port (else the member's), the interval, the
timeout, the threshold, the status ranges and a body substring.  The body is
read only up to L{MAX_PROBE_BODY} bytes to look for the substring; then the
connection is aborted, so a huge response body is never buffered.

Probes use their own L{UpstreamPool} with no idle connections (the same
client code as the proxy, so end-to-end TLS connectors apply to probes too)
and send C{Connection: close}: a probe never borrows or leaves a keep-alive
connection of the proxy.

State machine (per member; C{unhealthyThreshold} is the probe's):

  - B{Unknown} (at start): routable, because routing treats Unknown as
    available.  Its I{first} result decides it: success -> Healthy, failure
    -> Unhealthy at once.  The threshold exists to ride out transient
    failures of a member known to work; a member never seen working has no
    such credit, and waiting for 3 failures would send it traffic for up to
    3 intervals (90 s by default) after a start or reload.
  - B{Healthy}: a success keeps it Healthy and resets the failure count; a
    failure is recorded (its reason shows in C{/health}) and it becomes
    Unhealthy after C{unhealthyThreshold} consecutive failures.
  - B{Unhealthy}: one success makes it Healthy again, as in Azure.

Passive detection (C{ctx.passiveListeners}, called by the proxy when
connecting to or talking with a member fails; only for pools that are
probed, since only a probe can bring a member back):

  - connection refused: the member becomes Unhealthy at once ("passive:
    connection refused"); the next successful probe brings it back.
  - any other connect failure or a reset: counts as one failure, exactly like
    a failed probe (so it can tip a Healthy member over its threshold, and
    decides an Unknown one).

Every result goes through L{PoolState.setHealth}, which records the reason
and the time and logs each change of health.

Members are read from the state at every tick, so draining members are
probed until they are dropped (an affinity-pinned client may still use
them).  After a reload, L{HealthService.refresh} starts probers for new pool
states, restarts those whose probe changed and stops the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import quote

from twisted.application.service import Service
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from agwtx.config.model import DEFAULT_PROBE, BackendHttpSettings, GatewayConfig, Probe
from agwtx.proxy.pool import HEALTHY, UNHEALTHY, UNKNOWN, Member, PoolState, hostForHeader
from agwtx.proxy.client import UpstreamConnection, UpstreamError, UpstreamPool

__all__ = [
    "MAX_PROBE_BODY",
    "HealthService",
    "HttpProber",
    "ProbeFunction",
    "ProbeRequest",
    "ProbeResult",
    "ProbeSkipped",
    "formatStatusRanges",
    "probeFor",
    "probeRequestFor",
]

MAX_PROBE_BODY = 64 * 1024
"""How much of a response body a probe reads (to match C{match.body}) before it stops."""

USER_AGENT = b"agw-health-probe"
TIMEOUT_SLACK = 0.05
"""A probe due to time out this close to a tick is expired at the tick."""

ConnectorFor = Callable[[BackendHttpSettings], "tuple[Callable[..., Any] | None, str]"]


class ProbeSkipped(Exception):
    """
    A probe function's failure for a probe that could not be made at all for
    a reason of the gateway's own (no socket: out of file descriptors): it
    says nothing about the member, whose health is left as it is.
    """


class ProbeResult(NamedTuple):
    """The outcome of one probe: healthy or not, and why (shown in C{/health})."""

    healthy: bool
    reason: str


@dataclass(frozen=True)
class ProbeRequest:
    """Everything one probe of one member needs; built by L{probeRequestFor}."""

    address: str
    """Where to connect: the member's host."""
    port: int
    protocol: str
    hostHeader: str
    path: str
    probe: Probe
    connector: Callable[..., Any] | None = None
    tlsKey: str = ""

    @property
    def url(self) -> str:
        scheme = "https" if self.protocol == "Https" else "http"
        return f"{scheme}://{hostForHeader(self.address)}:{self.port}{self.path}"


ProbeFunction = Callable[[ProbeRequest], "Deferred[ProbeResult]"]
"""
Runs one probe.  The Deferred fires with a L{ProbeResult} (connection
failures are results, not errors); cancelling it must abort the attempt.
"""


# -- pure helpers -------------------------------------------------------------


def probeFor(config: GatewayConfig, settings: BackendHttpSettings) -> Probe:
    """The probe a settings names, else the default probe."""
    if settings.probe is not None and settings.probe in config.probes:
        return config.probes[settings.probe]
    return DEFAULT_PROBE


def formatStatusRanges(ranges: tuple[tuple[int, int], ...]) -> str:
    """C{((200, 399), (404, 404))} -> C{"200-399,404"}."""
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def _probeProtocol(probe: Probe, settings: BackendHttpSettings) -> str:
    """The default probe speaks the settings' protocol; a custom probe names its own."""
    return settings.protocol if probe is DEFAULT_PROBE else probe.protocol


def probeRequestFor(
    probe: Probe,
    settings: BackendHttpSettings,
    member: Member,
    connector: Callable[..., Any] | None = None,
    tlsKey: str = "",
) -> ProbeRequest:
    """
    Where and how to probe C{member}.  The default probe speaks the settings'
    protocol (a custom probe names its own) and always sends C{Host:
    127.0.0.1}, like Azure's.
    """
    if probe.pickHostNameFromBackendHttpSettings and settings.hostName:
        host = settings.hostName
    elif probe.pickHostNameFromBackendHttpSettings and settings.pickHostNameFromBackendAddress:
        host = member.host
    elif probe.host:
        host = probe.host
    else:
        host = member.host
    return ProbeRequest(
        address=member.host,
        port=probe.port if probe.port is not None else member.port,
        protocol=_probeProtocol(probe, settings),
        hostHeader=hostForHeader(host),
        path=probe.path or "/",
        probe=probe,
        connector=connector,
        tlsKey=tlsKey,
    )


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _connectFailureReason(reason: Failure | None, timeout: float) -> str:
    if reason is None:
        return "connection failed"
    if reason.check(ierror.ConnectionRefusedError):
        return "connection refused"
    if reason.check(ierror.TimeoutError):
        return f"timeout after {_seconds(timeout)} (connecting)"
    if reason.check(ierror.DNSLookupError):
        return f"DNS lookup failed: {reason.getErrorMessage()}"
    return f"connection failed: {reason.getErrorMessage()}"


# -- the HTTP probe -------------------------------------------------------------


class _ProbePool(UpstreamPool):
    """An L{UpstreamPool} that keeps nothing idle and can say when all its connections are gone."""

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor, maxIdlePerMember=0, idleTimeout=0.0)
        self._idleWaiters: list[Deferred[None]] = []

    def _forget(self, conn: UpstreamConnection) -> None:
        super()._forget(conn)
        if not self.active and self._idleWaiters:
            waiters, self._idleWaiters = self._idleWaiters, []
            for d in waiters:
                d.callback(None)

    def whenClosed(self) -> Deferred[None]:
        """Fires once no probe connection is open any more."""
        if not self.active:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._idleWaiters.append(d)
        return d


class _ProbeAttempt:
    """One probe: connect, send, judge status and (maybe) body, then close."""

    def __init__(self, prober: HttpProber, request: ProbeRequest) -> None:
        self.prober = prober
        self.request = request
        self.probe = request.probe
        self.conn: UpstreamConnection | None = None
        self.cancelConnect: Callable[[], None] | None = None
        self.status: int | None = None
        self.statusText = ""
        self.needle: bytes | None = self.probe.body.encode("utf-8") if self.probe.body else None
        self.body = bytearray()
        self.bodyRead = 0
        self.finished = False
        self.deferred: Deferred[ProbeResult] = Deferred(self._cancel)

    def start(self) -> Deferred[ProbeResult]:
        req = self.request
        self.cancelConnect = self.prober.pool.getConnection(
            req.address,
            req.port,
            self._connected,
            connectTimeout=self.probe.timeout,
            connector=req.connector,
            tlsKey=req.tlsKey,
        )
        return self.deferred

    def _head(self) -> bytes:
        req = self.request
        path = quote(req.path, safe="/?&=%:@!$'()*+,;~-._")
        return (
            b"GET " + path.encode("ascii") + b" HTTP/1.1\r\n"
            b"Host: " + req.hostHeader.encode("idna" if not req.hostHeader.isascii() else "ascii") + b"\r\n"
            b"User-Agent: " + USER_AGENT + b"\r\n"
            b"Accept: */*\r\n"
            b"Connection: close\r\n"
            b"\r\n"
        )

    def _connected(self, conn: UpstreamConnection | None, reason: Failure | None) -> None:
        self.cancelConnect = None
        if self.finished:
            if conn is not None:
                conn.abort()
            return
        if conn is None:
            if reason is not None and reason.check(ierror.ConnectBindError):
                self.finished = True
                self.deferred.errback(ProbeSkipped(reason.getErrorMessage()))
                return
            self._result(False, _connectFailureReason(reason, self.probe.timeout))
            return
        self.conn = conn
        conn.send(self._head(), self, False, False)

    def _result(self, healthy: bool, reason: str, abort: bool = False) -> None:
        if self.finished:
            return
        self.finished = True
        if abort and self.conn is not None:
            self.conn.abort()
        self.body = bytearray()
        self.deferred.callback(ProbeResult(healthy, reason))

    def _cancel(self, d: Deferred[ProbeResult]) -> None:
        # Timeout or service stop: drop whatever is in progress.  The
        # Deferred then fails with CancelledError.
        self.finished = True
        if self.cancelConnect is not None:
            self.cancelConnect()
            self.cancelConnect = None
        if self.conn is not None:
            self.conn.abort()

    def _success(self) -> str:
        return f"{self.status} {self.statusText}".rstrip()

    # -- ResponseHandler

    def responseHead(
        self,
        conn: UpstreamConnection,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        self.status = status
        self.statusText = reason.decode("latin-1", "replace")
        ranges = self.probe.statusCodes
        if not any(lo <= status <= hi for lo, hi in ranges):
            self._result(False, f"status {status} not in {formatStatusRanges(ranges)}", abort=True)

    def responseData(self, data: bytes) -> None:
        if self.finished:
            return
        self.bodyRead += len(data)
        needle = self.needle
        if needle is not None:
            room = MAX_PROBE_BODY - len(self.body)
            self.body += data[:room]
            if needle in self.body:
                self._result(True, self._success(), abort=True)
                return
        if self.bodyRead >= MAX_PROBE_BODY:
            if needle is not None:
                self._result(False, self._mismatch(), abort=True)
            else:
                self._result(True, self._success(), abort=True)

    def responseDone(self) -> None:
        if self.finished:
            return
        if self.needle is not None and self.needle not in self.body:
            self._result(False, self._mismatch())
        else:
            self._result(True, self._success())

    def responseFailed(self, err: UpstreamError, retryable: bool) -> None:
        if err.kind == "protocol":
            self._result(False, f"protocol error: {err.detail}")
        elif err.kind == "reset":
            self._result(False, f"connection reset: {err.detail}" if err.detail else "connection reset")
        else:
            self._result(False, str(err))

    def _mismatch(self) -> str:
        shown = self.probe.body or ""
        limit = "" if self.bodyRead < MAX_PROBE_BODY else f" in the first {MAX_PROBE_BODY // 1024} KiB"
        return f"body mismatch: {shown!r} not found{limit}"


class HttpProber:
    """
    The real L{ProbeFunction}: one fresh connection per probe through a
    dedicated L{UpstreamPool}, so the proxy's keep-alive pool is never used.
    """

    def __init__(self, reactor: Any) -> None:
        self.pool = _ProbePool(reactor)

    def __call__(self, request: ProbeRequest) -> Deferred[ProbeResult]:
        return _ProbeAttempt(self, request).start()

    def close(self) -> Deferred[None]:
        """Abort every probe connection; fires when they are all gone."""
        for conn in list(self.pool.active):
            conn.abort()
        return self.pool.whenClosed()


# -- the service ----------------------------------------------------------------


class _MemberProbe:
    """Probe bookkeeping for one member: at most one probe in flight."""

    def __init__(self, member: Member) -> None:
        self.member = member
        self.inflight: Deferred[Any] | None = None
        self.timer: IDelayedCall | None = None
        self.timedOut = False

    def expire(self) -> None:
        """The probe's timeout: cancel it (aborting its connection); it counts as a failure."""
        self._cancel(timedOut=True)

    def stop(self) -> None:
        """Cancel the probe without a verdict (service stop, member gone)."""
        self._cancel(timedOut=False)

    def _cancel(self, timedOut: bool) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.inflight is not None:
            self.timedOut = timedOut
            self.inflight.cancel()


class _PoolProber:
    """The loop of one L{PoolState}: ticks every C{probe.interval} seconds."""

    def __init__(
        self,
        service: HealthService,
        state: PoolState,
        probe: Probe,
        connector: Callable[..., Any] | None,
        tlsKey: str,
    ) -> None:
        self.service = service
        self.state = state
        self.probe = probe
        self.connector = connector
        self.tlsKey = tlsKey
        self.members: dict[Member, _MemberProbe] = {}
        self.loop = LoopingCall(self.tick)
        self.loop.clock = service.clock
        self.loopDone: Deferred[Any] | None = None

    def start(self) -> None:
        self.loopDone = self.loop.start(self.probe.interval, now=True)
        self.loopDone.addErrback(self._loopFailed)

    def _loopFailed(self, failure: Failure) -> None:
        # tick() catches everything, so this is a bug in LoopingCall use.
        self.service.log.failure(
            "health probe loop for pool {pool} settings {settings} stopped",
            failure,
            pool=self.state.name,
            settings=self.state.settings.name,
        )

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()
        for mp in self.members.values():
            mp.stop()

    def tick(self) -> None:
        # Members are read afresh each tick: a reload's draining members come
        # and go from the same state.
        try:
            members = list(self.state.members)
            for m in [m for m in self.members if m not in members]:
                self.members.pop(m).stop()
        except Exception:  # noqa: BLE001 - never stop the loop
            self.service.log.failure("health probe loop of pool {pool}", pool=self.state.name)
            return
        for member in members:
            try:
                mp = self.members.get(member)
                if mp is None:
                    mp = self.members[member] = _MemberProbe(member)
                self.probeMember(mp)
            except Exception:  # noqa: BLE001 - one bad member must not stop the loop
                self.service.log.failure(
                    "health probe of {member} (pool {pool} settings {settings}) failed to start",
                    pool=self.state.name,
                    settings=self.state.settings.name,
                    member=member.key,
                )

    def probeMember(self, mp: _MemberProbe) -> None:
        service = self.service
        if mp.inflight is not None:
            # A probe whose timeout falls on this tick (timeout == interval) is
            # expired now rather than after the tick, so the member is still
            # probed every interval.
            if mp.timer is not None and mp.timer.getTime() - service.clock.seconds() <= TIMEOUT_SLACK:
                mp.expire()
            if mp.inflight is not None:
                service.log.debug(
                    "health probe of {member} still running; skipping this tick",
                    member=mp.member.key,
                )
                return
        request = probeRequestFor(self.probe, self.state.settings, mp.member, self.connector, self.tlsKey)
        timeout = self.probe.timeout
        d = service.probeFunction(request)
        mp.inflight = d
        mp.timedOut = False
        mp.timer = service.clock.callLater(timeout, mp.expire)

        def finished() -> bool:
            # False when this probe was already replaced (never happens with a
            # well-behaved probe function, whose cancel is synchronous).
            if mp.inflight is not d:
                return False
            mp.inflight = None
            if mp.timer is not None and mp.timer.active():
                mp.timer.cancel()
            mp.timer = None
            return True

        def done(result: ProbeResult) -> None:
            if finished():
                service.record(self.state, mp.member, result.healthy, result.reason, self.probe)

        def failed(failure: Failure) -> None:
            if not finished():
                return
            if failure.check(CancelledError):
                if mp.timedOut:
                    reason = f"timeout after {_seconds(timeout)}"
                    service.record(self.state, mp.member, False, reason, self.probe)
                # else: stopped; nothing learned
                return
            if failure.check(ProbeSkipped):
                service.log.warn(
                    "health probe of {member} not made: {why}", member=mp.member.key, why=failure.value
                )
                return
            service.log.failure("health probe of {member} raised", failure, member=mp.member.key)
            reason = f"probe error: {failure.getErrorMessage()}"
            service.record(self.state, mp.member, False, reason, self.probe)

        d.addCallbacks(done, failed)
        d.addErrback(
            lambda f: service.log.failure("recording a probe result for {member}", f, member=mp.member.key)
        )


class HealthService(Service):
    """
    Probes every backend member of C{ctx.pools} and listens for passive
    failures; see the module docstring for the rules.

    C{probeFunction} is the probe itself (L{HttpProber} by default; tests
    inject a fake).  C{connectorFor} returns the connector and TLS key for a
    settings, as for the proxy (L{agwtx.routing.router.buildRouters}); without one,
    Https probes cannot run and their members stay Unknown (routable).
    """

    log = Logger(namespace="agw.health")

    def __init__(
        self,
        ctx: Any,
        config: GatewayConfig,
        reactor: Any,
        probeFunction: ProbeFunction | None = None,
        connectorFor: ConnectorFor | None = None,
    ) -> None:
        self.ctx = ctx
        self.config = config
        self.clock: IReactorTime = reactor
        self.connectorFor = connectorFor
        self.httpProber: HttpProber | None = None
        if probeFunction is None:
            self.httpProber = HttpProber(reactor)
            probeFunction = self.httpProber
        self.probeFunction: ProbeFunction = probeFunction
        self.probers: dict[PoolState, _PoolProber] = {}
        self._listening = False

    # -- lifecycle

    def startService(self) -> None:
        super().startService()
        if not self._listening:
            self.ctx.passiveListeners.append(self.passiveFailure)
            self._listening = True
        self.refresh(self.config)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        if self._listening:
            try:
                self.ctx.passiveListeners.remove(self.passiveFailure)
            except ValueError:
                pass
            self._listening = False
        loops = []
        for prober in self.probers.values():
            if prober.loopDone is not None:
                loops.append(prober.loopDone)
            prober.stop()
        self.probers.clear()
        if self.httpProber is not None:
            loops.append(self.httpProber.close())
        return DeferredList(loops, consumeErrors=True)

    def refresh(self, config: GatewayConfig) -> None:
        """
        Match the probers to C{ctx.pools} and C{config}: start one for each
        new pool state, restart those whose probe changed, stop those whose
        state is gone.  Called after a reload swapped the pools.
        """
        self.config = config
        current = set(self.ctx.pools.values())
        for state in list(self.probers):
            if state not in current:
                self.probers.pop(state).stop()
        if not self.running:
            return
        for state in self.ctx.pools.values():
            probe = probeFor(config, state.settings)
            connector, tlsKey = (None, "")
            if _probeProtocol(probe, state.settings) == "Https":
                if self.connectorFor is None:
                    old = self.probers.pop(state, None)
                    if old is not None:
                        old.stop()
                    self.log.warn(  # noqa: G010 - twisted.logger.Logger has no .warning
                        "pool {pool} settings {settings}: Https probes are not available; "
                        "members stay Unknown",
                        pool=state.name,
                        settings=state.settings.name,
                    )
                    for m in state.members:
                        m.lastReason = "not probed: Https probes are not available"
                    continue
                connector, tlsKey = self.connectorFor(state.settings)
            prober = self.probers.get(state)
            if prober is not None:
                if prober.probe == probe and prober.tlsKey == tlsKey:
                    prober.connector = connector  # new certificates apply to the next probe
                    continue
                prober.stop()
            prober = _PoolProber(self, state, probe, connector, tlsKey)
            self.probers[state] = prober
            prober.start()

    # -- results

    def record(self, state: PoolState, member: Member, healthy: bool, reason: str, probe: Probe) -> None:
        """Apply one result (probe or passive) to a member; see the module docstring."""
        now = self.clock.seconds()
        if healthy:
            member.consecutiveFailures = 0
            state.setHealth(member, HEALTHY, reason, now)
            return
        member.consecutiveFailures += 1
        health = member.health
        if health == UNKNOWN or member.consecutiveFailures >= probe.unhealthyThreshold:
            health = UNHEALTHY
        state.setHealth(member, health, reason, now)

    def passiveFailure(self, state: PoolState, member: Member, kind: str, detail: str) -> None:
        """A C{ctx.passiveListeners} entry: the proxy could not use C{member}."""
        try:
            prober = self.probers.get(state)
            if prober is None:
                # Nothing probes this pool (service stopped, or Https without a
                # connector): no probe could ever bring the member back.
                return
            probe = prober.probe
            if kind == "local":  # the gateway's own shortage, not the member's
                return
            if kind == "refused":
                member.consecutiveFailures += 1
                state.setHealth(member, UNHEALTHY, "passive: connection refused", self.clock.seconds())
                return
            what = "connection reset" if kind == "reset" else f"{kind} failed"
            reason = f"passive: {what}: {detail}" if detail else f"passive: {what}"
            self.record(state, member, False, reason, probe)
        except Exception:  # noqa: BLE001 - never break the proxy's error path
            self.log.failure("recording a passive failure of {member}", member=member.key)

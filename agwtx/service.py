"""
The gateway as a tree of services: one listener service per frontend port,
plus the health prober and the optional admin endpoint.

Reload (SIGHUP, or POST /reload on the admin endpoint) is all or nothing
(see C{docs/reload.rst}): the file is parsed and validated, then everything
it needs is built on new objects (certificates loaded, plugins configured,
pool states, the access log opened: L{GatewayService._plan}), every new
endpoint is bound (L{GatewayService._bind}), and only then is it switched
to in one synchronous step (L{GatewayService._commit}).  Any failure before
that step is logged and answered error by error and changes nothing.  The
switch: each port's Site gets its new routing table in one assignment (a
port whose endpoint stays is never re-bound: a TLS or PROXY protocol change
swaps its protocol stack, L{agwtx.ops.listening}), listeners are added or removed as needed,
unchanged (pool, settings) pairs keep their state, changed ones take over
the members that stay (the same objects, health included), and removed
members drain: no new requests (affinity-pinned clients excepted, as in
Azure), open requests and WebSockets go on for the settings'
C{connectionDraining} seconds, then the WebSockets are closed with 1001.  A
member put back before its drain ends is not closed; one removed again
drains from that removal.  Connections in flight keep the objects they
started with.

Stop (SIGTERM): first C{[gateway] lameDuckPeriod} seconds (default 0) of
serving as usual while the admin C{/ready} answers 503, so load balancers
stop sending; then stop accepting, let in-flight requests finish and
WebSockets run for up to C{[gateway] shutdownGracePeriod} seconds, close
the WebSockets with 1001 and exit.  systemd's C{TimeoutStopSec} (and a
Kubernetes C{terminationGracePeriodSeconds}) must cover both.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any, Callable
from weakref import WeakKeyDictionary

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from agwtx.proxy.affinity import AffinityCodec
from agwtx.compat.twistedprivate import clearExitSignal
from agwtx.ops.listening import BindError, PortFactory, PortListener
from agwtx.config.model import GatewayConfig
from agwtx.proxy.pool import Member, PoolState
from agwtx.context import GatewayContext
from agwtx.routing.router import PortRouter, buildRouters
from agwtx.ops.startup import StartupError, reason, serverEndpoint
from agwtx.ops.systemd import notify
from agwtx.proxy.client import UpstreamPool
from agwtx.http.site import GatewaySite
from agwtx.websocket.bridge import WebSocketBridge
from agwtx.config.certificates import TlsError
from agwtx.config.errors import ConfigError
from agwtx.config.loader import loadConfig
from agwtx.health.probe import HealthService
from agwtx.http.proxyprotocol import ProxyProtocolFactory
from agwtx.ops.accesslog import accessPublisher
from agwtx.ops.workers import reusePortEndpoint
from agwtx.ops.workerview import adminService
from agwtx.routing.rewrite import rewriteCompiler
from agwtx.runtime.errorpages import ErrorPages
from agwtx.runtime.requestid import RequestTagger
from agwtx.tls.gateway import GatewayTls

__all__ = ["GatewayService", "ReloadError", "makeGatewayService"]


LISTEN_BACKLOG = 4096
"""
The listen backlog of a C{tcp:}/C{tcp6:} frontend port whose endpoint sets
none: Twisted's default of 50 drops (and makes clients retry after a second)
connections when thousands of clients connect at once; nginx uses 511.  The
kernel caps it at C{net.core.somaxconn}.
"""


def withBacklog(description: str) -> str:
    """C{description} with C{backlog=}L{LISTEN_BACKLOG} added when it is a TCP endpoint that sets none."""
    kind = description.split(":", 1)[0].strip().lower()
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={LISTEN_BACKLOG}"
    return description


class ReloadError(Exception):
    """A reload that changed nothing; C{errors} says what failed, one line each."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass
class _Stack:
    """A frontend port's protocol stack, innermost first; C{outer} is what the port listens with."""

    site: GatewaySite
    tls: Any
    proxy: Any
    outer: Any


@dataclass
class _Port:
    listener: PortListener
    stack: _Stack


@dataclass
class _PortPlan:
    """
    What a reload does to one port: C{reuse} names the running port whose
    socket it keeps (None: C{listener} is a new one); C{stack} is a new
    stack to swap in (None: the running stack is updated in place).
    """

    router: PortRouter
    reuse: str | None
    stack: _Stack | None
    listener: PortListener | None


class _Plan:
    """A new configuration built on new objects, not yet in force (see L{GatewayService.apply})."""

    def __init__(
        self,
        config: GatewayConfig,
        tls: Any,
        routers: dict[str, PortRouter],
        pools: dict[tuple[str, str], PoolState],
        replaced: list[tuple[PoolState, PoolState]],
    ) -> None:
        self.config = config
        self.tls = tls
        self.routers = routers
        self.pools = pools
        self.replaced = replaced
        self.ports: dict[str, _PortPlan] = {}
        self.access: tuple[Any, Any] | None = None
        self.tagger = RequestTagger(config.gateway)
        self.errorPages = ErrorPages(config)

    def discard(self) -> None:
        """Give back what the plan opened (the new access log)."""
        if self.access is not None and self.access[1] is not None:
            self.access[1].close()
        self.access = None


def _secure(config: GatewayConfig, tls: Any, name: str) -> bool:
    """Whether frontend port C{name} speaks TLS (the gateway's own, or an C{ssl:} endpoint's)."""
    return name in tls.server or config.frontendPorts[name].endpoint.startswith("ssl:")


class GatewayService(MultiService):
    """Everything one gateway process runs for one configuration."""

    log = Logger(namespace="agw")

    webSockets: WebSocketBridge
    """The WebSocket bridge of L{ctx}: a stop answers its handshakes still dialing."""

    def __init__(
        self,
        config: GatewayConfig,
        reactor: Any,
        reusePort: bool = False,
        serveAdmin: bool = True,
        affinitySecret: bytes | None = None,
        instanceId: str = "",
        workerAdmin: bool = False,
        workerView: Any = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.reusePort = reusePort
        self.upstream = UpstreamPool(reactor)
        self.fallbackSecret = affinitySecret
        """The key of affinity cookies while the file gives none (shared by workers)."""
        self.reloadListeners: list[Callable[[list[str]], None]] = []
        """Called with each reload's errors (none: it applied), e.g. to pass SIGHUP on to workers."""
        self.tls = GatewayTls(config, reactor)
        """The TLS objects (certificates loaded) of the configuration running now."""
        self.routers, pools, _ = self._build(config, self.tls, None)
        try:
            publisher, self.accessWriter = accessPublisher(
                reactor, config.gateway.accessLog, config.gateway.accessLogFormat
            )
        except OSError as e:
            raise StartupError(
                f"cannot open the access log {config.gateway.accessLog}: {reason(e)}"
            ) from None
        self.ctx = GatewayContext(
            reactor,
            self.upstream,
            self._affinityCodec(config),
            config=config,
            pools=pools,
            tagger=RequestTagger(config.gateway),
            errorPages=ErrorPages(config),
            accessObserver=publisher,
            instanceId=instanceId or socket.gethostname(),
            reloadHandler=self.reload,
            webSocketFactory=self._webSocketBridge,
            workerAdmin=workerAdmin,
            workerView=workerView,
        )
        self.ports: dict[str, _Port] = {}
        """Each frontend port's listening socket and the protocol stack new connections get."""
        self.drains: list[Any] = []
        self.drainOf: WeakKeyDictionary[Member, object] = WeakKeyDictionary()
        """Each draining member's latest drain (a token): the one that ends it."""
        for name, router in self.routers.items():
            stack = self._stack(config, self.tls, name, self._newSite(config, self.tls, name, router))
            listener = self._listener(config, name, stack)
            listener.setServiceParent(self)
            self.ports[name] = _Port(listener, stack)
        # Health probes and the admin endpoint.

        self.health = HealthService(
            self.ctx,
            config,
            reactor,
            connectorFor=self._connectorFor,  # agw-tls (issue 5)
        )
        self.health.setServiceParent(self)
        if config.gateway.admin and serveAdmin:
            adminService(self.ctx, config, reactor).setServiceParent(self)

    def _webSocketBridge(self, ctx: GatewayContext) -> WebSocketBridge:
        """The context's WebSocket bridge (L{GatewayContext} builds it with itself), kept as L{webSockets}."""
        self.webSockets = WebSocketBridge(ctx)
        return self.webSockets

    def _affinityCodec(self, config: GatewayConfig) -> AffinityCodec:
        """The affinity keys of C{config} (the first signs, all verify), else the fallback key."""
        secrets = config.gateway.affinitySecrets
        if secrets:
            return AffinityCodec(secrets=secrets)
        return AffinityCodec(self.fallbackSecret)

    def reopenLogs(self) -> None:
        """SIGUSR1 (logrotate's postrotate): reopen the access log file by name."""
        writer = self.accessWriter
        if writer is None:
            return
        try:
            writer.reopen()
        except OSError as e:
            self.log.error("cannot reopen the access log {path}: {error}", path=writer.target, error=e)
            return
        self.log.info("access log reopened: {path}", path=writer.target)

    # -- building

    def _build(
        self, config: GatewayConfig, tls: Any, previous: dict[tuple[str, str], PoolState] | None
    ) -> tuple[dict[str, PortRouter], dict[tuple[str, str], PoolState], list[tuple[PoolState, PoolState]]]:
        """
        The routing tables of C{config}, built on new objects only: the
        (pool, settings) states, and the pairs (running state, its new
        replacement) whose members the commit hands over (L{PoolState.inherit}).
        Routing plugins are configured here, once per plugin rule.

        @raise agwtx.config.ConfigError: a plugin rule cannot be configured.
        """

        pools: dict[tuple[str, str], PoolState] = {}
        replaced: list[tuple[PoolState, PoolState]] = []
        routers = buildRouters(
            config,
            pools,
            previous=previous,
            onReplace=lambda old, state: replaced.append((old, state)),
            rewriteFor=rewriteCompiler(config),
            connectorFor=tls.connectorFor,  # agw-tls (issue 5)
        )
        return routers, pools, replaced

    def _connectorFor(self, settings: Any) -> Any:
        """For the health prober: the connector of the configuration running now."""
        return self.tls.connectorFor(settings)

    def _newSite(self, config: GatewayConfig, tls: Any, name: str, router: PortRouter) -> GatewaySite:
        site = GatewaySite(self.ctx, router, config.frontendPorts[name].port)
        site.secure = _secure(config, tls, name)
        return site

    def _stack(self, config: GatewayConfig, tls: Any, name: str, site: GatewaySite) -> _Stack:
        """The protocol stack of port C{name}: the Site, TLS around it, the PROXY protocol around that."""
        fp = config.frontendPorts[name]
        outer = tls.wrap(name, site)
        tlsFactory = outer if outer is not site else None
        proxyFactory = None
        if fp.proxyProtocol:
            outer = proxyFactory = ProxyProtocolFactory(
                outer, fp.proxyProtocolSources, self.reactor, lambda: site.headerTimeout, name
            )
        return _Stack(site, tlsFactory, proxyFactory, outer)

    def _listener(self, config: GatewayConfig, name: str, stack: _Stack) -> PortListener:
        fp = config.frontendPorts[name]
        description = withBacklog(fp.endpoint)
        if self.reusePort:
            endpoint = reusePortEndpoint(self.reactor, description)
        else:
            endpoint = serverEndpoint(self.reactor, description, f"frontendPort:{name}")
        return PortListener(
            f"[frontendPort:{name}]",
            fp.endpoint,
            endpoint,
            PortFactory(stack.outer),
            what=f"frontendPort:{name}",
        )

    @property
    def sites(self) -> dict[str, GatewaySite]:
        """Each frontend port's Site (the one new connections get)."""
        return {name: port.stack.site for name, port in self.ports.items()}

    # -- lifecycle

    def startService(self) -> None:
        self.log.info(
            "agw starting: {listeners} listener(s) on {ports} port(s), {rules} rule(s)",
            listeners=len(self.config.httpListeners),
            ports=len(self.routers),
            rules=len(self.config.requestRoutingRules),
        )
        super().startService()
        notify("READY=1", f"STATUS=serving {len(self.routers)} port(s)")

    def stopService(self) -> Deferred[Any]:
        """
        Be a lame duck for C{lameDuckPeriod} seconds (serving and accepting,
        C{/ready} at 503, so balancers' health checks take the instance
        out), then stop accepting, let work in flight finish within the
        grace period, and close.
        """
        self.ctx.stopping = True
        notify("STOPPING=1")
        lameDuck = self.config.gateway.lameDuckPeriod
        if lameDuck <= 0:
            return self._drainAndStop()
        self.log.info(
            "stopping: lame duck for {seconds:g}s (serving, /ready answers 503), then draining",
            seconds=lameDuck,
        )
        waited: Deferred[None] = Deferred()
        self.reactor.callLater(lameDuck, waited.callback, None)
        return waited.addCallback(lambda _: self._drainAndStop())

    def _drainAndStop(self) -> Deferred[Any]:
        for call in self.drains:
            if call.active():
                call.cancel()
        self.drains = []
        grace = self.config.gateway.shutdownGracePeriod
        # Stop accepting: each listener leaves the tree, so the final
        # MultiService.stopService does not stop it a second time.
        listeners = [maybeDeferred(port.listener.disownServiceParent) for port in self.ports.values()]
        done: Deferred[Any] = Deferred()
        deadline = self.reactor.seconds() + grace

        def poll() -> None:
            busy = self.ctx.activeRequests + len(self.ctx.openWebSockets)
            if busy and self.reactor.seconds() < deadline:
                self.reactor.callLater(0.1, poll)
                return
            if busy:
                self.log.info(
                    "grace period over: closing {ws} WebSocket(s) with 1001, {req} request(s) still open",
                    ws=len(self.ctx.openWebSockets),
                    req=self.ctx.activeRequests,
                )
            # A WebSocket handshake still dialing its backend counts as a
            # request in flight; past the grace period its client gets a 503.
            aborted = self.webSockets.abortHandshakes()
            if aborted:
                self.log.info("grace period over: {n} WebSocket handshake(s) answered 503", n=aborted)
            closing = self.ctx.closeWebSockets(1001, "gateway shutting down")
            self.upstream.closeAll()
            self.ctx.deadlines.stop()
            closing.addBoth(lambda _: done.callback(None))

        for d in listeners:
            d.addErrback(lambda f: self.log.failure("stopping a listener", f))
        poll()

        def rest(_: Any) -> Any:
            if self.accessWriter is not None:
                self.accessWriter.close()
                self.accessWriter = None
            # The stop was orderly: exit 0 rather than re-raising SIGTERM
            # (twistd's default), so supervisors see a clean stop.
            clearExitSignal(self.reactor)
            return MultiService.stopService(self)

        return done.addCallback(rest)

    # -- reload

    def reload(self) -> list[str]:
        """
        Re-read the config file and apply it (L{apply}).  Returns the errors
        (nothing changed) or an empty list (the new config is live).
        """
        errors = self._reloadFile()
        for listener in self.reloadListeners:
            try:
                listener(errors)
            except Exception:
                self.log.failure("a reload listener failed")
        return errors

    def _reloadFile(self) -> list[str]:
        try:
            new = loadConfig(self.config.path)
        except ConfigError as e:
            return self._rejected(e.errors)
        notify("RELOADING=1")
        try:
            self.apply(new)
        except ReloadError as e:
            notify("READY=1")
            return self._rejected(e.errors)
        self.ctx.metrics.reloads.labels("ok").inc()
        notify("READY=1", f"STATUS=serving {len(self.routers)} port(s)")
        self.log.info("configuration reloaded from {path}", path=new.path)
        return []

    def _rejected(self, errors: list[str]) -> list[str]:
        for line in errors:
            self.log.error("reload rejected: {error}", error=line)
        self.log.error(
            "reload rejected: {n} error(s); still running the previous configuration", n=len(errors)
        )
        self.ctx.metrics.reloads.labels("failed").inc()
        return list(errors)

    def apply(self, new: GatewayConfig) -> None:
        """
        Swap in a validated configuration, all or nothing: L{_plan} builds
        everything on new objects, L{_bind} listens on every new endpoint,
        then L{_commit} switches over in one synchronous step.

        @raise ReloadError: nothing was changed; the errors say what failed.
        """
        try:
            plan = self._plan(new)
        except ReloadError:
            raise
        except Exception as e:
            self.log.failure("reload failed while planning the new configuration")
            raise ReloadError([f"{new.path}: internal error while planning: {e}"]) from e
        self._bind(plan)
        self._commit(plan)

    def _plan(self, new: GatewayConfig) -> _Plan:
        """
        Everything C{new} needs, built without touching what runs: TLS
        contexts (every certificate loaded), routing tables and pool states
        (plugins configured), the access log opened, each port's stack.

        @raise ReloadError: naming the certificate, plugin rule or file.
        """
        # The loader checked the certificate files; they are read again here
        # to be used, and may have changed in between.
        try:
            tls = GatewayTls(new, self.reactor, previous=self.tls)
            routers, pools, replaced = self._build(new, tls, self.ctx.pools)
        except TlsError as e:
            raise ReloadError(e.lines(new.path)) from e
        except ConfigError as e:
            raise ReloadError(e.errors) from e
        plan = _Plan(new, tls, routers, pools, replaced)
        gw, old = new.gateway, self.config.gateway
        if (gw.accessLog, gw.accessLogFormat) != (old.accessLog, old.accessLogFormat):
            try:
                plan.access = accessPublisher(self.reactor, gw.accessLog, gw.accessLogFormat)
            except OSError as e:
                raise ReloadError(
                    [f"{new.path}: [gateway] accessLog: cannot open {gw.accessLog}: {e}"]
                ) from e
        # Ports: keep each listening socket whose endpoint stays (by name, else
        # a renamed port's), swap its stack when TLS or PROXY turn on or off.
        byEndpoint = {port.listener.description: name for name, port in self.ports.items()}
        kept: set[str] = set()
        for name, router in routers.items():
            fp = new.frontendPorts[name]
            same = self.ports.get(name)
            reuse = name if same is not None and same.listener.description == fp.endpoint else None
            if reuse is None:
                reuse = byEndpoint.get(fp.endpoint)
            if reuse is not None and reuse not in kept:
                kept.add(reuse)
                stack = self.ports[reuse].stack
                secure = _secure(new, tls, name)
                inPlace = (
                    reuse == name
                    and stack.site.secure == secure
                    and (stack.tls is not None) == (name in tls.server)
                    and (stack.proxy is not None) == fp.proxyProtocol
                )
                if inPlace:
                    plan.ports[name] = _PortPlan(router, reuse, None, None)
                    continue
                # A site keeps its connections' notion of https: a new one when that changes.
                site = stack.site if stack.site.secure == secure else self._newSite(new, tls, name, router)
                plan.ports[name] = _PortPlan(router, reuse, self._stack(new, tls, name, site), None)
                continue
            stack = self._stack(new, tls, name, self._newSite(new, tls, name, router))
            plan.ports[name] = _PortPlan(router, None, stack, self._listener(new, name, stack))
        return plan

    def _bind(self, plan: _Plan) -> None:
        """Listen on every new endpoint of C{plan}; on a failure, close those bound and raise."""
        if not self.running:
            return  # bound when the service starts
        bound: list[PortListener] = []
        for port in plan.ports.values():
            if port.listener is None:
                continue
            try:
                port.listener.bind()
            except BindError as e:
                for listener in bound:
                    listener.unbind()
                plan.discard()
                raise ReloadError([f"{plan.config.path}: {e}"]) from e
            bound.append(port.listener)

    def _commit(self, plan: _Plan) -> None:
        """Switch to C{plan} in one synchronous step (see the module docstring)."""
        new = plan.config
        removed: list[tuple[PoolState, list[Member], float]] = []
        for old, state in plan.replaced:
            drain = state.settings.connectionDraining
            gone = state.inherit(old, drain > 0)
            if gone:
                removed.append((state, gone, drain))
        for key, oldState in self.ctx.pools.items():
            if key not in plan.pools:
                # A pair no rule uses any more: all its members drain away.
                gone = [m for m in oldState.members if not m.draining]
                for m in gone:
                    m.draining = True
                removed.append((oldState, gone, oldState.settings.connectionDraining))
        kept = {p.reuse for p in plan.ports.values() if p.reuse is not None}
        for name in [n for n in self.ports if n not in kept]:
            listener = self.ports.pop(name).listener
            d = maybeDeferred(listener.disownServiceParent)
            d.addErrback(lambda f, name=name: self.log.failure("stopping listener {name}", f, name=name))
        ports: dict[str, _Port] = {}
        for name, p in plan.ports.items():
            fp = new.frontendPorts[name]
            if p.listener is not None:
                p.listener.setServiceParent(self)  # bound already (L{_bind})
                ports[name] = _Port(p.listener, p.stack)  # type: ignore[arg-type]
                continue
            assert p.reuse is not None
            running = self.ports[p.reuse]
            stack = running.stack
            if p.stack is None:
                if stack.tls is not None:
                    stack.tls.serverTls = plan.tls.server[name]  # new connections use it
                if stack.proxy is not None:
                    stack.proxy.sources = fp.proxyProtocolSources
            else:
                stack = p.stack
                running.listener.factory.swap(stack.outer)
            stack.site.router = p.router
            stack.site.listenerPort = fp.port or 0
            running.listener.label = f"[frontendPort:{name}]"
            ports[name] = _Port(running.listener, stack)
        self.ports = ports
        publisher = None
        if plan.access is not None:
            publisher, writer = plan.access
            if self.accessWriter is not None:
                self.accessWriter.close()
            self.accessWriter = writer
        affinity = self.ctx.affinity
        if new.gateway.affinitySecrets != self.config.gateway.affinitySecrets:
            affinity = self._affinityCodec(new)
            self.log.info("affinity keys changed: {n} key(s), the first signs", n=len(affinity.secrets))
        self.ctx.switch(new, plan.pools, plan.tagger, plan.errorPages, affinity, publisher)
        self.routers = plan.routers
        self.tls = plan.tls
        self.config = new
        self.health.refresh(new)
        for state, members, drain in removed:
            self._drain(state, members, drain)

    def _drain(self, state: PoolState, members: list[Member], seconds: float) -> None:
        keys = ", ".join(m.key for m in members)
        if seconds <= 0:
            self.log.info("members removed from pool {pool}: {members}", pool=state.name, members=keys)
            for m in members:
                self.drainOf.pop(m, None)
            self._endDrain(state, members)
            return
        self.log.info(
            "draining {members} from pool {pool} for {seconds}s",
            members=keys,
            pool=state.name,
            seconds=seconds,
        )
        token = object()
        for m in members:
            self.drainOf[m] = token
        self.drains.append(self.reactor.callLater(seconds, self._endDrain, state, members, token))

    def _endDrain(self, state: PoolState, members: list[Member], token: object | None = None) -> None:
        self.drains = [c for c in self.drains if c.active()]
        if token is not None:
            # Not this drain's to end: members back in the pool since (no
            # longer draining), and members removed again by a later reload
            # (whose own drain ends them).
            members = [m for m in members if m.draining and self.drainOf.get(m) is token]
            for m in members:
                del self.drainOf[m]
            if not members:
                return
        state.dropMembers(members)
        self.ctx.closeWebSockets(1001, "backend removed from the pool", members=members)


def makeGatewayService(config: GatewayConfig, reactor: Any, **options: Any) -> GatewayService:
    """Build (but do not start) the service tree for C{config}."""
    return GatewayService(config, reactor, **options)

"""
The gateway as a tree of services: one listener service per frontend port,
plus the health prober and the optional admin endpoint.

Reload (SIGHUP, or POST /reload on the admin endpoint) parses and validates
the file again; an invalid file is logged error by error and changes
nothing.  A valid one is swapped in at once: each port's Site gets its new
routing table in one assignment, listeners are added or removed as needed,
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
from typing import Any, Callable
from weakref import WeakKeyDictionary

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from agwtx.proxy.affinity import AffinityCodec
from agwtx.config.model import GatewayConfig
from agwtx.proxy.pool import Member, PoolState
from agwtx.routing.router import GatewayContext, PortRouter, buildRouters
from agwtx.ops.startup import ListeningService, StartupError, reason, serverEndpoint
from agwtx.ops.systemd import notify
from agwtx.proxy.client import UpstreamPool
from agwtx.http.site import GatewaySite
from agwtx.websocket.bridge import WebSocketBridge

__all__ = ["GatewayService", "makeGatewayService"]


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


class GatewayService(MultiService):
    """Everything one gateway process runs for one configuration."""

    log = Logger(namespace="agw")

    def __init__(
        self,
        config: GatewayConfig,
        reactor: Any,
        reusePort: bool = False,
        serveAdmin: bool = True,
        affinitySecret: bytes | None = None,
        instanceId: str = "",
    ) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.reusePort = reusePort
        self.upstream = UpstreamPool(reactor)
        self.fallbackSecret = affinitySecret
        """The key of affinity cookies while the file gives none (shared by workers)."""
        self.ctx = GatewayContext(reactor, self.upstream, self._affinityCodec(config))
        self.ctx.instanceId = instanceId or socket.gethostname()
        self.accessWriter: Any = None
        self._setAccessLog(config.gateway.accessLog, config.gateway.accessLogFormat)
        self._setObservability(config)
        self.webSockets = WebSocketBridge(self.ctx)
        self.ctx.webSocketHandler = self.webSockets
        self.routers = self._buildRouters(config, self.ctx.pools, None)
        self.sites: dict[str, GatewaySite] = {}
        self.listeners: dict[str, StreamServerEndpointService] = {}
        self.endpoints: dict[str, str] = {}
        self.drains: list[Any] = []
        self.drainOf: WeakKeyDictionary[Member, object] = WeakKeyDictionary()
        """Each draining member's latest drain (a token): the one that ends it."""
        self.stopping = False
        for name, router in self.routers.items():
            self._addListener(config, name, router)
        # Health probes and the admin endpoint.
        from agwtx.health.probe import HealthService

        self.health = HealthService(
            self.ctx,
            config,
            reactor,
            connectorFor=self._connectorFor,  # agw-tls (issue 5)
        )
        self.health.setServiceParent(self)
        if config.gateway.admin and serveAdmin:
            from agwtx.ops.workerview import adminService

            adminService(self.ctx, config, reactor).setServiceParent(self)
        self.ctx.reloadHandler = self.reload
        self.ctx.config = config

    def _affinityCodec(self, config: GatewayConfig) -> AffinityCodec:
        """The affinity keys of C{config} (the first signs, all verify), else the fallback key."""
        secrets = config.gateway.affinityKeys()
        if secrets:
            return AffinityCodec(secrets=secrets)
        return AffinityCodec(self.fallbackSecret)

    def _setAccessLog(self, target: str, format: str) -> None:
        from agwtx.ops.accesslog import accessPublisher

        try:
            publisher, writer = accessPublisher(self.reactor, target, format)
        except OSError as e:
            raise StartupError(f"cannot open the access log {target}: {reason(e)}") from None
        if self.accessWriter is not None:
            self.accessWriter.close()
        self.accessWriter = writer
        self.ctx.accessObserver = publisher

    def _setObservability(self, config: GatewayConfig) -> None:
        """Request IDs, trace context and custom error pages by C{config}."""
        from agwtx.runtime.errorpages import ErrorPages
        from agwtx.runtime.requestid import RequestTagger

        self.ctx.tagger = RequestTagger(config.gateway)
        self.ctx.errorPages = ErrorPages(config)

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

    def _buildRouters(
        self,
        config: GatewayConfig,
        pools: dict[tuple[str, str], PoolState],
        previous: dict[tuple[str, str], PoolState] | None,
        onReplace: Callable[[PoolState, PoolState], None] | None = None,
    ) -> dict[str, PortRouter]:
        from agwtx.routing.rewrite import rewriteCompiler

        return buildRouters(
            config,
            pools,
            previous=previous,
            onReplace=onReplace,
            rewriteFor=rewriteCompiler(config),
            connectorFor=self._tlsFor(config).connectorFor,  # agw-tls (issue 5)
        )

    # TLS: listeners and end-to-end.
    def _tlsFor(self, config: GatewayConfig) -> Any:
        """The TLS objects (certificates loaded) of C{config}; built once per config."""
        from agwtx.tls.gateway import GatewayTls

        tls = getattr(self, "_tls", None)
        if tls is None or tls.config is not config:
            tls = self._tls = GatewayTls(config, self.reactor)
        return tls

    def _connectorFor(self, settings: Any) -> Any:
        """For the health prober: the connector of the configuration running now."""
        return self._tlsFor(self.config).connectorFor(settings)

    def _siteFactory(self, config: GatewayConfig, name: str, site: GatewaySite) -> Any:
        """The protocol factory a port listens with (TLS wraps the Site here)."""
        return self._tlsFor(config).wrap(name, site)

    def _addListener(
        self, config: GatewayConfig, name: str, router: PortRouter
    ) -> StreamServerEndpointService:
        fp = config.frontendPorts[name]
        site = GatewaySite(self.ctx, router, fp.port)
        self.sites[name] = site
        description = withBacklog(fp.endpoint)
        if self.reusePort:
            from agwtx.ops.workers import reusePortEndpoint

            endpoint = reusePortEndpoint(self.reactor, description)
        else:
            endpoint = serverEndpoint(self.reactor, description, f"frontendPort:{name}")
        factory = self._siteFactory(config, name, site)
        site.secure = factory is not site or fp.endpoint.startswith("ssl:")
        if fp.proxyProtocol:
            from agwtx.http.proxyprotocol import ProxyProtocolFactory

            factory = ProxyProtocolFactory(
                factory, fp.proxyProtocolSources, self.reactor, lambda: site.headerTimeout, name
            )
        svc = ListeningService(f"frontendPort:{name}", fp.endpoint, endpoint, factory)
        svc.setName(f"frontendPort:{name}")
        svc.setServiceParent(self)
        self.listeners[name] = svc
        self.endpoints[name] = fp.endpoint
        return svc

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
        self.stopping = True
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
        listeners = [maybeDeferred(svc.disownServiceParent) for svc in self.listeners.values()]
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
            if getattr(self.reactor, "_exitSignal", None) is not None:
                self.reactor._exitSignal = None
            return MultiService.stopService(self)

        return done.addCallback(rest)

    # -- reload

    def reload(self) -> list[str]:
        """
        Re-read the config file.  Returns the errors (nothing changed) or an
        empty list (the new config is live).
        """
        from agwtx.config.errors import ConfigError
        from agwtx.config.loader import loadConfig
        from agwtx.config.certificates import TlsError

        from agwtx.routing.plugin import checkPlugins

        try:
            new = loadConfig(self.config.path)
            checkPlugins(new)
            # The loader checked the certificate files; they are read again
            # here to be used, and may have changed in between: a failure
            # now is a config error too, reported before anything changes.
            self._tlsFor(new)
        except (ConfigError, TlsError) as e:
            errors = e.errors if isinstance(e, ConfigError) else e.lines(self.config.path)
            for line in errors:
                self.log.error("reload rejected: {error}", error=line)
            self.log.error(
                "reload rejected: {n} error(s); still running the previous configuration", n=len(errors)
            )
            self.ctx.metrics.reloads.labels("failed").inc()
            return list(errors)
        notify("RELOADING=1")
        try:
            self.apply(new)
        except Exception as e:
            self.log.failure("reload failed while applying the new configuration")
            self.ctx.metrics.reloads.labels("failed").inc()
            notify("READY=1")
            return [f"{self.config.path}: internal error while applying: {e}"]
        self.ctx.metrics.reloads.labels("ok").inc()
        notify("READY=1", f"STATUS=serving {len(self.routers)} port(s)")
        self.log.info("configuration reloaded from {path}", path=new.path)
        return []

    def apply(self, new: GatewayConfig) -> None:
        """Swap in a validated configuration (see the module docstring)."""
        previous = self.ctx.pools
        pools: dict[tuple[str, str], PoolState] = {}
        removed: list[tuple[PoolState, list[Member], float]] = []

        def onReplace(old: PoolState, state: PoolState) -> None:
            drain = state.settings.connectionDraining
            gone = state.inherit(old, drain > 0)
            if gone:
                removed.append((state, gone, drain))

        routers = self._buildRouters(new, pools, previous, onReplace)
        for key, old in previous.items():
            if key not in pools:
                # A pair no rule uses any more: all its members drain away.
                gone = [m for m in old.members if not m.draining]
                for m in gone:
                    m.draining = True
                removed.append((old, gone, old.settings.connectionDraining))
        # Ports: swap tables in place, add new ports, remove old ones.
        for name, router in routers.items():
            fp = new.frontendPorts[name]
            if (
                name in self.sites
                and self.endpoints.get(name) == fp.endpoint
                and self._proxyInPlace(fp, name)
                and self._tlsInPlace(new, name)
            ):
                self.sites[name].router = router
                self.sites[name].listenerPort = fp.port or 0
            else:
                if name in self.listeners:
                    self._removeListener(name)
                svc = self._addListener(new, name, router)
                if self.running:
                    svc.privilegedStartService()
                    svc.startService()
        for name in list(self.listeners):
            if name not in routers:
                self._removeListener(name)
        if (new.gateway.accessLog, new.gateway.accessLogFormat) != (
            self.config.gateway.accessLog,
            self.config.gateway.accessLogFormat,
        ):
            self._setAccessLog(new.gateway.accessLog, new.gateway.accessLogFormat)
        self._setObservability(new)
        if new.gateway.affinityKeys() != self.config.gateway.affinityKeys():
            self.ctx.affinity = self._affinityCodec(new)
            self.log.info(
                "affinity keys changed: {n} key(s), the first signs", n=len(self.ctx.affinity.secrets)
            )
        self.ctx.pools = pools
        self.routers = routers
        self.config = new
        self.ctx.config = new
        self.health.refresh(new)
        for state, members, drain in removed:
            self._drain(state, members, drain)

    def _listenerFactory(self, name: str) -> Any:
        """The factory port C{name} listens with, under any PROXY protocol wrapper."""
        factory = getattr(self.listeners.get(name), "factory", None)
        from agwtx.http.proxyprotocol import ProxyProtocolFactory

        if isinstance(factory, ProxyProtocolFactory):
            return factory.wrappedFactory
        return factory

    def _proxyInPlace(self, fp: Any, name: str) -> bool:
        """
        Give a port that keeps the PROXY protocol its new sources in place
        and say so; False when the port turns it on or off (re-listened).
        """
        from agwtx.http.proxyprotocol import ProxyProtocolFactory

        factory = getattr(self.listeners.get(name), "factory", None)
        if isinstance(factory, ProxyProtocolFactory) != fp.proxyProtocol:
            return False
        if fp.proxyProtocol:
            factory.sources = fp.proxyProtocolSources
        return True

    def _tlsInPlace(self, new: GatewayConfig, name: str) -> bool:
        """
        Give a port that stays Https its new certificates in place (new
        connections use them) and say so; False when the port switches
        between Http and Https, so it must be re-listened.
        """
        # agw-tls (issue 5)
        from agwtx.tls.server import TlsServerFactory

        factory = self._listenerFactory(name)
        serverTls = self._tlsFor(new).server.get(name)
        if isinstance(factory, TlsServerFactory) != (serverTls is not None):
            return False
        if serverTls is not None:
            factory.serverTls = serverTls
        return True

    def _removeListener(self, name: str) -> None:
        svc = self.listeners.pop(name)
        self.sites.pop(name, None)
        self.endpoints.pop(name, None)
        d = maybeDeferred(svc.disownServiceParent)
        d.addErrback(lambda f: self.log.failure("stopping listener {name}", f, name=name))

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

"""
Routing: listener -> rule -> target, per frontend port.

A L{PortRouter} is built once from a config (and again on reload) and never
changes; the listener's Site holds the current one and swaps it in one step.
A WebSocket handshake is routed exactly like any other request to the same
listener and path.

Evaluation order on a port: multi-site listeners before the basic one;
among them, the rule priority (lower first) when priorities are set, then
exact host names before wildcard ones, then file order.  Within a rule:
Basic -> its target; PathBasedRouting -> the first path rule (in file order)
whose pattern matches the normalised path, else the map's default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger, globalLogPublisher
from twisted.web.server import NOT_DONE_YET

from agwtx.proxy.affinity import AffinityCodec
from agwtx.config.errors import ConfigError
from agwtx.runtime.limits import ConnectionLimits
from agwtx.runtime.errorpages import ErrorPages
from agwtx.config.model import (
    REDIRECT_STATUS,
    BackendHttpSettings,
    GatewayConfig,
    GatewaySettings,
    HttpListener,
    RedirectConfiguration,
    RequestRoutingRule,
)
from agwtx.proxy.pool import Member, PoolState
from agwtx.proxy.reverse import errorPage, httpDate, proxy
from agwtx.runtime.requestid import RequestTagger
from agwtx.routing.index import HostIndex, PathIndex, hostMatcher

if TYPE_CHECKING:
    from agwtx.http.site import GatewayRequest

__all__ = [
    "BackendTarget",
    "GatewayContext",
    "PortRouter",
    "RedirectTarget",
    "buildRouters",
    "hostMatcher",
    "normalizePath",
    "pathMatcher",
    "requestHost",
    "validHost",
]

log = Logger(namespace="agw.routing")

# -- pure helpers ---------------------------------------------------------


# RFC 3986 section 3.2.2 and 3.2.3: a reg-name (unreserved, sub-delims and
# %-escapes) or a bracketed IPv6 literal, then an optional port of digits.
_HOST_SYNTAX = re.compile(rb"(?:[A-Za-z0-9\-._~%!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{0,5}))?\Z")


def validHost(host: bytes) -> bool:
    """
    Whether a Host header value is a syntactically valid authority.  Empty
    is allowed (RFC 9110 section 7.2: a target without an authority).  Like
    nginx, a name that starts with a dot or holds two dots together is
    refused, and so is a port past 65535.
    """
    if not host:
        return True
    m = _HOST_SYNTAX.match(host)
    if m is None or host[:1] == b"." or b".." in host:
        return False
    port = m.group(1)
    return not port or int(port) <= 65535


def requestHost(host: bytes | None) -> str:
    """The Host header's name, lowercased, without port or trailing dot."""
    if not host:
        return ""
    h = host.decode("latin-1").strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end] if end > 0 else h
    name, _, _ = h.partition(":")
    return name.rstrip(".")


def normalizePath(path: bytes) -> str | None:
    """
    Percent-decode a request path and resolve C{.} and C{..} segments
    (RFC 3986 5.2.4), so that C{/images/../admin} is matched as C{/admin}.
    None when the path is not origin-form or decodes to invalid UTF-8 or NUL.
    """
    if not path.startswith(b"/"):
        return None
    if b"%" not in path and b"/." not in path and b"\0" not in path:
        # The common case: nothing to decode or resolve (same result, a fraction of the cost).
        try:
            return path.decode("utf-8")
        except UnicodeDecodeError:
            return None
    decoded = unquote_to_bytes(path)
    if b"\0" in decoded:
        return None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out: list[str] = []
    segments = text.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)


def pathMatcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Azure path patterns: exact, or a prefix when they end in C{*}; case-insensitive."""
    exact = {p.lower() for p in patterns if not p.endswith("*")}
    prefixes = tuple(p[:-1].lower() for p in patterns if p.endswith("*"))

    def match(path: str) -> bool:
        lowered = path.lower()
        return lowered in exact or (bool(prefixes) and lowered.startswith(prefixes))

    return match


def isWebSocketUpgrade(request: "GatewayRequest") -> bool:
    upgrade = request.requestHeaders.getRawHeaders(b"upgrade")
    return bool(upgrade) and any(v.strip().lower() == b"websocket" for v in upgrade)  # type: ignore[union-attr]


# -- targets --------------------------------------------------------------


@dataclass(eq=False)
class BackendTarget:
    """Send the request (or the WebSocket) to a member of a pool."""

    rule: str
    state: PoolState
    settings: BackendHttpSettings
    scope: str
    hostHeader: bytes | None = None
    rewrite: Any = None
    pathPrefix: str | None = None
    """For path maps with a settings C{path}: the matched prefix it replaces."""
    connector: Callable[..., Any] | None = None
    tlsKey: str = ""
    kind: str = "backend"

    def backendPath(self, request: "GatewayRequest") -> bytes:
        uri: bytes = request.uri
        override = self.settings.path
        if override is None:
            return uri
        path, q, query = uri.partition(b"?")
        raw = path.decode("latin-1")
        if self.pathPrefix is not None and raw.lower().startswith(self.pathPrefix.lower()):
            rest = raw[len(self.pathPrefix) :]
        else:
            rest = raw.lstrip("/")
        base = override if override.endswith("/") else override + "/"
        newPath = (base + rest.lstrip("/")).encode("latin-1")
        return newPath + (b"?" + query if q else b"")

    def render(self, ctx: "GatewayContext", request: "GatewayRequest") -> Any:
        request.agwPool = self.state.name
        request.agwSettings = self.settings.name
        if isWebSocketUpgrade(request):
            return ctx.webSocket(request, self)
        return proxy(ctx, request, self)


@dataclass(eq=False)
class RedirectTarget:
    """Answer with a redirect (301/302/303/307), WebSocket handshakes included."""

    rule: str
    config: RedirectConfiguration
    targetBase: str | None = None
    """For targetListener: scheme://host[:port] template; host comes from the request."""
    targetScheme: str = "https"
    targetPort: int | None = None
    kind: str = "redirect"

    def location(self, request: "GatewayRequest") -> bytes:
        cfg = self.config
        path, q, query = request.uri.partition(b"?")
        if cfg.targetUrl is not None:
            base = cfg.targetUrl.encode("utf-8")
            if cfg.includePath:
                base = base.rstrip(b"/") + path
        else:
            host = requestHost(request.requestHeaders.getRawHeaders(b"host", [b""])[0])
            if ":" in host:
                host = f"[{host}]"
            default = 443 if self.targetScheme == "https" else 80
            port = "" if self.targetPort in (None, default) else f":{self.targetPort}"
            base = f"{self.targetScheme}://{host}{port}".encode("idna" if host.isascii() else "utf-8")
            base += path if cfg.includePath else b"/"
        if cfg.includeQueryString and q:
            base += (b"&" if b"?" in base else b"?") + query
        return base

    def render(self, ctx: "GatewayContext", request: "GatewayRequest") -> Any:
        code = REDIRECT_STATUS[self.config.redirectType]
        location = self.location(request)
        request.setResponseCode(code)
        request.responseHeaders.setRawHeaders(b"date", [httpDate()])
        request.responseHeaders.setRawHeaders(b"location", [location])
        request.responseHeaders.setRawHeaders(b"content-length", [b"0"])
        request.agwStatus = code
        request.write(b"")
        request.finish()
        return NOT_DONE_YET


@dataclass(eq=False)
class PathMapTarget:
    """Choose among path rules (first match wins), else the default."""

    rule: str
    entries: list[tuple[Callable[[str], bool], list[str], Any]]
    default: Any
    kind: str = "pathmap"
    _index: Any = field(default=None, repr=False, compare=False)

    def resolve(self, request: "GatewayRequest") -> Any:
        path = normalizePath(request.path)
        if path is None:
            return None
        index = self._index
        if index is None:
            index = self._index = PathIndex(self.entries)
        return index.lookup(path, self.default)

    def render(self, ctx: "GatewayContext", request: "GatewayRequest") -> Any:
        target = self.resolve(request)
        if target is None:
            return errorPage(request, 400, "Bad Request: the path cannot be decoded")
        return target.render(ctx, request)


@dataclass(eq=False)
class ListenerRoute:
    listener: HttpListener
    rule: RequestRoutingRule
    target: Any
    order: tuple[int, int, int, int] = (0, 0, 0, 0)


@dataclass(eq=False)
class PortRouter:
    """All listeners of one frontend port, in evaluation order."""

    port: str
    protocol: str
    routes: list[ListenerRoute] = field(default_factory=list)
    _index: Any = field(default=None, repr=False, compare=False)

    def route(self, host: str) -> ListenerRoute | None:
        """The first route serving C{host}, found by index (L{agwtx.routing.index}), not by a scan."""
        index = self._index
        if index is None:  # built on first use: buildRouters has finished the table
            index = self._index = HostIndex(self.routes)
        return index.route(host)  # type: ignore[no-any-return]


# -- runtime context --------------------------------------------------------


class OpenWebSockets(set):  # type: ignore[type-arg]
    """
    The registry of open WebSocket bridges (objects with C{member} and
    C{close(code, reason)}): counted by the status page, closed by a drain
    or a stop.
    """

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock

    def close(self, code: int, reason: str, members: Sequence[Member] | None = None) -> Any:
        """
        Close open WebSockets (all, or those to C{members}) on both legs with
        C{code}; the Deferred fires when they are gone, or after 5 s.
        """
        from twisted.internet.defer import Deferred

        chosen = [ws for ws in list(self) if members is None or getattr(ws, "member", None) in members]
        for ws in chosen:
            try:
                ws.close(code, reason)
            except Exception:
                log.failure("closing a WebSocket")
        done: Deferred[None] = Deferred()
        deadline = self.clock.seconds() + 5.0

        def poll() -> None:
            if any(ws in self for ws in chosen) and self.clock.seconds() < deadline:
                self.clock.callLater(0.05, poll)
            else:
                done.callback(None)

        poll()
        return done


class GatewayContext:
    """
    What request handling needs at runtime, made of collaborators the
    gateway service builds and hands over at construction: the reactor, the
    upstream pool, the affinity codec, the configuration in force with its
    pool states, request tagger and error pages, the access log's
    observer, the reload hook, the WebSocket bridge (a factory, given the
    context), the worker view.  Built here from those: the metrics, the
    request deadlines, the connection limits, the access events
    (L{agwtx.ops.accesslog.AccessEvents}) and the open WebSockets' registry.

    After construction only L{switch} (a reload's commit) replaces the
    configuration-dependent collaborators, all in one step; the rest is
    runtime state (counters, C{stopping}).
    """

    def __init__(
        self,
        reactor: Any,
        upstream: Any,
        affinity: AffinityCodec,
        *,
        config: Any = None,
        pools: dict[tuple[str, str], PoolState] | None = None,
        tagger: RequestTagger | None = None,
        errorPages: ErrorPages | None = None,
        accessObserver: Callable[[dict[str, Any]], None] = globalLogPublisher,
        instanceId: str = "",
        reloadHandler: Callable[[], list[str]] | None = None,
        webSocketFactory: Callable[["GatewayContext"], Any] | None = None,
        workerView: Any = None,
        workerAdmin: bool = False,
        metrics: Any = None,
        deadlines: Any = None,
    ) -> None:
        from agwtx.ops.accesslog import AccessEvents
        from agwtx.runtime.deadlines import Deadlines
        from agwtx.ops.metrics import GatewayMetrics

        self.reactor = reactor
        self.upstream = upstream
        self.affinity = affinity
        self.config: Any = config
        """The configuration in force (swapped by L{switch})."""
        self.pools: dict[tuple[str, str], PoolState] = pools if pools is not None else {}
        self.tagger = tagger if tagger is not None else RequestTagger(GatewaySettings())
        """Request IDs and trace context by the settings in force."""
        self.errorPages = errorPages if errorPages is not None else ErrorPages(None)
        """Custom error pages of the configuration in force."""
        self.instanceId = instanceId
        """This process in the JSON access log's instanceId (host name and worker)."""
        self.reloadHandler = reloadHandler
        """Re-read the configuration (C{POST /reload}, SIGHUP): returns the errors."""
        self.workerView = workerView
        """With C{workers} > 1, in the supervisor: its L{agwtx.ops.workerview.WorkerView}."""
        self.workerAdmin = workerAdmin
        """In a worker: its admin site is the private one the supervisor asks."""
        self.passiveListeners: list[Callable[[PoolState, Member, str, str], None]] = []
        self.metrics = metrics if metrics is not None else GatewayMetrics(self)
        self.deadlines = deadlines if deadlines is not None else Deadlines(reactor)
        """Request timeouts (a sweep, not a timer per request)."""
        self.connections = ConnectionLimits(self)
        """Client connections held now, against C{[gateway] maxConnections*}."""
        self.access = AccessEvents(reactor, accessObserver, self.metrics, instanceId)
        # The access events' entry points, bound once (they are on every request's path).
        self.accessLog = self.access.accessLog
        self.webSocketClosed = self.access.webSocketClosed
        self.refusedLog = self.access.refusedLog
        self.openWebSockets = OpenWebSockets(reactor)
        """Open WebSocket bridges: objects with C{member} and C{close(code, reason)}."""
        self.closeWebSockets = self.openWebSockets.close
        self.activeRequests = 0
        """HTTP requests being answered now (graceful stop waits for them)."""
        self.stopping = False
        """A stop has begun (lame duck, then drain): the admin C{/ready} answers 503."""
        self.webSocketHandler: Callable[["GatewayRequest", BackendTarget], Any] | None = (
            webSocketFactory(self) if webSocketFactory is not None else None
        )

    def switch(
        self,
        config: Any,
        pools: dict[tuple[str, str], PoolState],
        tagger: RequestTagger,
        errorPages: ErrorPages,
        affinity: AffinityCodec,
        accessObserver: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """A reload's commit: the new configuration's collaborators, all at once."""
        self.config = config
        self.pools = pools
        self.tagger = tagger
        self.errorPages = errorPages
        self.affinity = affinity
        if accessObserver is not None:
            self.access.observer = accessObserver

    @property
    def accessObserver(self) -> Callable[[dict[str, Any]], None]:
        """Where access events go (the access log)."""
        return self.access.observer

    def webSocket(self, request: "GatewayRequest", target: BackendTarget) -> Any:
        if self.webSocketHandler is None:
            return errorPage(request, 501, "Not Implemented: WebSocket bridge not available")
        return self.webSocketHandler(request, target)

    def passiveFailure(self, state: PoolState, member: Member, kind: str, detail: str) -> None:
        self.metrics.upstreamError(state.name, member.key, kind)
        for listener in self.passiveListeners:
            listener(state, member, kind, detail)


def buildRouters(
    config: GatewayConfig,
    pools: dict[tuple[str, str], PoolState],
    connectorFor: Callable[[BackendHttpSettings], tuple[Callable[..., Any] | None, str]] | None = None,
    rewriteFor: Callable[[str], Any] | None = None,
    previous: dict[tuple[str, str], PoolState] | None = None,
    onReplace: Callable[[PoolState, PoolState], None] | None = None,
) -> dict[str, PortRouter]:
    """
    One L{PortRouter} per frontend port from a validated config.  C{pools}
    is filled with a L{PoolState} per (pool, settings) pair the rules use.
    On a reload, C{previous} holds the running states: an unchanged pair
    keeps its state object (health, counters, open connections), a changed
    one gets a new state and C{onReplace(old, new)} is called, so that the
    caller can carry over what must survive when it commits.  Nothing
    running is changed.

    @raise agwtx.config.ConfigError: a plugin rule cannot be configured
        (every such rule's problems).
    """
    routers: dict[str, PortRouter] = {}
    pluginErrors: list[str] = []

    def backend(rule: str, poolName: str, settingsName: str, prefix: str | None = None) -> BackendTarget:
        settings = config.backendHttpSettings[settingsName]
        pool = config.backendAddressPools[poolName]
        key = (poolName, settingsName)
        state = pools.get(key)
        if state is None:
            old = previous.get(key) if previous else None
            if old is not None and old.pool == pool and old.settings == settings:
                state = old
            else:
                state = PoolState(pool, settings)
                if old is not None and onReplace is not None:
                    onReplace(old, state)
            pools[key] = state
        connector, tlsKey = connectorFor(settings) if connectorFor else (None, "")
        host = settings.hostName.encode("idna") if settings.hostName else None
        return BackendTarget(
            rule=rule,
            state=state,
            settings=settings,
            scope=f"{poolName}/{settingsName}",
            hostHeader=host,
            pathPrefix=prefix,
            connector=connector,
            tlsKey=tlsKey,
        )

    def redirect(rule: str, name: str) -> RedirectTarget:
        cfg = config.redirectConfigurations[name]
        if cfg.targetListener is None:
            return RedirectTarget(rule=rule, config=cfg)
        target = config.httpListeners[cfg.targetListener]
        fp = config.frontendPorts[target.frontendPort]
        return RedirectTarget(
            rule=rule,
            config=cfg,
            targetScheme=target.protocol.lower(),
            targetPort=fp.port,
        )

    for index, (name, rule) in enumerate(config.requestRoutingRules.items()):
        listener = config.httpListeners[rule.httpListener]
        target: Any
        if rule.ruleType == "PathBasedRouting":
            assert rule.urlPathMap is not None
            pm = config.urlPathMaps[rule.urlPathMap]
            entries = []
            for pr in pm.pathRules:
                if pr.redirectConfiguration is not None:
                    t: Any = redirect(name, pr.redirectConfiguration)
                else:
                    assert pr.backendAddressPool and pr.backendHttpSettings
                    prefix = None
                    if len(pr.paths) == 1 and pr.paths[0].endswith("*"):
                        prefix = pr.paths[0][:-1]
                    t = backend(name, pr.backendAddressPool, pr.backendHttpSettings, prefix)
                entries.append((pathMatcher(pr.paths), list(pr.paths), t))
            if pm.defaultRedirectConfiguration is not None:
                default: Any = redirect(name, pm.defaultRedirectConfiguration)
            else:
                assert pm.defaultBackendAddressPool and pm.defaultBackendHttpSettings
                default = backend(name, pm.defaultBackendAddressPool, pm.defaultBackendHttpSettings)
            target = PathMapTarget(rule=name, entries=entries, default=default)
        elif rule.redirectConfiguration is not None:
            target = redirect(name, rule.redirectConfiguration)
        elif rule.ruleType == "Plugin":
            from agwtx.routing.plugin import pluginTarget

            fallback = None
            if rule.backendAddressPool and rule.backendHttpSettings:
                fallback = backend(name, rule.backendAddressPool, rule.backendHttpSettings)
            try:
                target = pluginTarget(config, rule, fallback, backend, redirect)
            except ConfigError as e:  # every plugin rule's problems at once
                pluginErrors.extend(e.errors)
                continue
        else:
            assert rule.backendAddressPool and rule.backendHttpSettings
            target = backend(name, rule.backendAddressPool, rule.backendHttpSettings)
        if rewriteFor is not None and rule.rewriteRuleSet:
            _attachRewrite(target, rewriteFor(rule.rewriteRuleSet))
        hostNames = listener.hostNames
        wildcard = any("*" in h or "?" in h for h in hostNames)
        order = (
            0 if hostNames else 1,
            rule.priority if rule.priority is not None else 0,
            1 if wildcard else 0,
            index,
        )
        router = routers.get(listener.frontendPort)
        if router is None:
            router = routers[listener.frontendPort] = PortRouter(listener.frontendPort, listener.protocol)
        router.routes.append(
            ListenerRoute(
                listener=listener,
                rule=rule,
                target=target,
                order=order,
            )
        )
    if pluginErrors:
        raise ConfigError(pluginErrors)
    for router in routers.values():
        router.routes.sort(key=lambda r: r.order)
    return routers


def _attachRewrite(target: Any, rewrite: Any) -> None:
    if isinstance(target, BackendTarget):
        target.rewrite = rewrite
    elif isinstance(target, PathMapTarget):
        for _, _, t in target.entries:
            _attachRewrite(t, rewrite)
        _attachRewrite(target.default, rewrite)
    elif hasattr(target, "attachRewrite"):  # e.g. agwtx.routing.plugin.PluginTarget
        target.attachRewrite(rewrite)

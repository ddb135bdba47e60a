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

from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.web.server import NOT_DONE_YET

from agwtx.proxy.affinity import AffinityCodec
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

ACCESS_FORMAT = (
    '{client} "{method} {uri}" {status} {bytes} {duration_ms:.1f}ms '
    "listener={listener} rule={rule} pool={pool} member={member}"
)
WEBSOCKET_CLOSE_FORMAT = (
    '{client} "{method} {uri}" WebSocket closed by {closedBy}: client {clientCode} backend {backendCode} '
    "request={requestId}"
)


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


class GatewayContext:
    """
    What request handling needs at runtime: the reactor, the upstream pool,
    pool states and the affinity codec.  Built by the gateway service.
    """

    def __init__(self, reactor: Any, upstream: Any, affinity: AffinityCodec) -> None:
        self.reactor = reactor
        self.upstream = upstream
        self.affinity = affinity
        self.pools: dict[tuple[str, str], PoolState] = {}
        self.webSocketHandler: Callable[["GatewayRequest", BackendTarget], Any] | None = None
        self.passiveListeners: list[Callable[[PoolState, Member, str, str], None]] = []
        from agwtx.ops.metrics import GatewayMetrics

        self.metrics = GatewayMetrics(self)
        from agwtx.runtime.deadlines import Deadlines

        self.deadlines = Deadlines(reactor)
        """Request timeouts (a sweep, not a timer per request)."""
        self.connections = ConnectionLimits(self)
        """Client connections held now, against C{[gateway] maxConnections*}."""
        self.activeRequests = 0
        """HTTP requests being answered now (graceful stop waits for them)."""
        self.stopping = False
        """A stop has begun (lame duck, then drain): the admin C{/ready} answers 503."""
        self.workerView: Any = None
        """With C{workers} > 1, in the supervisor: its L{agwtx.ops.workerview.WorkerView}."""
        self.workerAdmin = False
        """In a worker: its admin site is the private one the supervisor asks."""
        self.openWebSockets: set[Any] = set()
        """Open WebSocket bridges: objects with C{member} and C{close(code, reason)}."""
        self.reloadHandler: Callable[[], list[str]] | None = None
        self.accessObserver: Callable[[dict[str, Any]], None] = globalLogPublisher
        """Where access events go; the gateway service points it at the access log."""
        self.config: Any = None
        """The configuration in force (set by the gateway service, swapped on reload)."""
        self.tagger = RequestTagger(GatewaySettings())
        """Request IDs and trace context by the settings in force (swapped on reload)."""
        self.errorPages = ErrorPages(None)
        """Custom error pages of the configuration in force (swapped on reload)."""
        self.instanceId = ""
        """This process in the JSON access log's instanceId (host name and worker)."""

    def closeWebSockets(self, code: int, reason: str, members: Sequence[Member] | None = None) -> Any:
        """
        Close open WebSockets (all, or those to C{members}) on both legs with
        C{code}; the Deferred fires when they are gone, or after 5 s.
        """
        from twisted.internet.defer import Deferred

        chosen = [
            ws
            for ws in list(self.openWebSockets)
            if members is None or getattr(ws, "member", None) in members
        ]
        for ws in chosen:
            try:
                ws.close(code, reason)
            except Exception:
                log.failure("closing a WebSocket")
        done: Deferred[None] = Deferred()
        deadline = self.reactor.seconds() + 5.0

        def poll() -> None:
            if any(ws in self.openWebSockets for ws in chosen) and self.reactor.seconds() < deadline:
                self.reactor.callLater(0.05, poll)
            else:
                done.callback(None)

        poll()
        return done

    def webSocket(self, request: "GatewayRequest", target: BackendTarget) -> Any:
        if self.webSocketHandler is None:
            return errorPage(request, 501, "Not Implemented: WebSocket bridge not available")
        return self.webSocketHandler(request, target)

    def passiveFailure(self, state: PoolState, member: Member, kind: str, detail: str) -> None:
        self.metrics.upstreamError(state.name, member.key, kind)
        for listener in self.passiveListeners:
            listener(state, member, kind, detail)

    def accessLog(self, request: "GatewayRequest", aborted: bool = False) -> None:
        """The access event of an answered (or, C{aborted}, abandoned) request."""
        now = self.reactor.seconds()
        event = self._requestEvent(request, now)
        if aborted:
            event["status"] = 499
        self._emit(event)

    def webSocketClosed(self, request: "GatewayRequest", fields: dict[str, Any]) -> None:
        """
        The access event of a WebSocket's end (C{event} C{websocket_close}):
        the handshake's fields plus C{fields} (close codes, duration, traffic).
        The JSON access log writes it; the text line stays one per request.
        """
        event = self._requestEvent(request, self.reactor.seconds())
        event["event"] = "websocket_close"
        event["log_format"] = WEBSOCKET_CLOSE_FORMAT
        event.update(fields)
        self.accessObserver(event)

    def refusedLog(self, client: str, status: int, sent: int, error: str, **fields: Any) -> None:
        """
        The access event of a request refused while its head was read (400,
        408, 414, 431): no method, target or route is known, so they are "-"
        and None, as for other requests refused before routing.
        """
        event = self._event(
            self.reactor.seconds(), 0.0, client, "-", "-", status, sent, None, None, None, None, error
        )
        event.update(fields)
        self._emit(event)

    def _requestEvent(self, request: "GatewayRequest", now: float) -> dict[str, Any]:
        event = self._event(
            now,
            now - request.agwStart,
            request.clientIP,
            request.method.decode("latin-1"),
            request.uri.decode("latin-1"),
            request.code,
            request.sentLength,
            request.agwListener,
            request.agwRule,
            request.agwPool,
            request.agwMember,
            request.agwError,
        )
        headers = request.requestHeaders
        host = headers.getRawHeaders(b"host")
        agent = headers.getRawHeaders(b"user-agent")
        trace = request.agwTrace
        secure = request.isSecure()
        event.update(
            clientPort=getattr(request.client, "port", 0),
            requestId=request.agwRequestId,
            traceId=trace.traceId.decode("ascii") if trace is not None else None,
            spanId=trace.spanId.decode("ascii") if trace is not None else None,
            host=host[0].decode("latin-1") if host else None,
            userAgent=agent[0].decode("latin-1") if agent else None,
            httpVersion=request.clientproto.decode("latin-1"),
            receivedBytes=request.agwHeadBytes + request.agwBodyBytes,
            secure=secure,
            ssl=request.tlsInfo() if secure else None,
            serverStatus=request.agwStatus if request.agwMember is not None else None,
            serverLatency=request.agwServerLatency,
            settings=request.agwSettings,
        )
        return event

    def _event(
        self,
        now: float,
        duration: float,
        client: str,
        method: str,
        uri: str,
        status: int,
        sent: int,
        listener: str | None,
        rule: str | None,
        pool: str | None,
        member: str | None,
        error: str | None,
    ) -> dict[str, Any]:
        """
        An access event: a twisted.logger event (namespace C{agw.access})
        handed straight to the access observer, without L{Logger}'s per-call
        work (it is on every request's path).
        """
        return {
            "log_format": ACCESS_FORMAT,
            "log_level": LogLevel.info,
            "log_namespace": "agw.access",
            "log_source": None,
            "log_time": now,
            "client": client,
            "method": method,
            "uri": uri,
            "status": status,
            "bytes": sent,
            "duration_ms": duration * 1000,
            "listener": listener,
            "rule": rule,
            "pool": pool,
            "member": member,
            "error": error,
            "event": "access",
            "instance": self.instanceId,
        }

    def _emit(self, event: dict[str, Any]) -> None:
        """Write an access event and count it in the metrics."""
        self.accessObserver(event)
        self.metrics.request(
            event["listener"] or "-",
            event["rule"] or "-",
            event["pool"] or "-",
            event["status"],
            event["duration_ms"] / 1000.0,
        )


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
    one gets a new state and C{onReplace(old, new)} is called to carry over
    what must survive.
    """
    routers: dict[str, PortRouter] = {}

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
            target = pluginTarget(config, rule, fallback, backend, redirect)
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

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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from twisted.logger import Logger
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from agwtx.config.errors import ConfigError
from agwtx.config.model import (
    REDIRECT_STATUS,
    BackendHttpSettings,
    GatewayConfig,
    HttpListener,
    RedirectConfiguration,
    RequestRoutingRule,
)
from agwtx.proxy.distribution import Distributor
from agwtx.proxy.pool import PoolState, hostForHeader
from agwtx.runtime.answers import errorPage
from agwtx.runtime.headers import httpDate
from agwtx.proxy.reverse import proxy
from agwtx.routing.index import HostIndex, PathIndex, hostMatcher
from agwtx.routing.match import isWebSocketUpgrade, normalizePath, pathMatcher, requestHost
from agwtx.routing.plugin import pluginTarget
from agwtx.routing.resource import GatewayResource

if TYPE_CHECKING:
    from agwtx.http.request import GatewayRequest


__all__ = [
    "BackendTarget",
    "PolicyTarget",
    "PortRouter",
    "RedirectTarget",
    "buildRouters",
    "hostMatcher",
]

log = Logger(namespace="agw.routing")

# -- targets --------------------------------------------------------------


@implementer(IResource)
@dataclass(eq=False)
class BackendTarget(GatewayResource):
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
        uri: bytes = request.agwUri or request.uri
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

    def render(self, request: "GatewayRequest") -> Any:
        ctx = request.site.ctx
        request.agwPool = self.state.name
        request.agwSettings = self.settings.name
        if isWebSocketUpgrade(request):
            return ctx.webSocket(request, self)
        return proxy(ctx, request, self)


@implementer(IResource)
@dataclass(eq=False)
class RedirectTarget(GatewayResource):
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
        path, q, query = (request.agwUri or request.uri).partition(b"?")
        if cfg.targetUrl is not None:
            base = cfg.targetUrl.encode("utf-8")
            if cfg.includePath:
                base = base.rstrip(b"/") + path
        else:
            host = hostForHeader(requestHost(request.requestHeaders.getRawHeaders(b"host", [b""])[0]))
            default = 443 if self.targetScheme == "https" else 80
            port = "" if self.targetPort in (None, default) else f":{self.targetPort}"
            base = f"{self.targetScheme}://{host}{port}".encode("idna" if host.isascii() else "utf-8")
            base += path if cfg.includePath else b"/"
        if cfg.includeQueryString and q:
            base += (b"&" if b"?" in base else b"?") + query
        return base

    def render(self, request: "GatewayRequest") -> Any:
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


@implementer(IResource)
@dataclass(eq=False)
class PathMapTarget(GatewayResource):
    """Choose among path rules (first match wins), else the default."""

    rule: str
    entries: list[tuple[Callable[[str], bool], list[str], Any]]
    default: Any
    kind: str = "pathmap"
    _index: Any = field(default=None, repr=False, compare=False)

    def resolve(self, request: "GatewayRequest") -> Any:
        return self.lookup(request.path)

    def lookup(self, rawPath: bytes) -> Any:
        """The target for a path as sent (percent-encoded); None when it cannot be decoded."""
        path = normalizePath(rawPath)
        if path is None:
            return None
        index = self._index
        if index is None:
            index = self._index = PathIndex(self.entries)
        return index.lookup(path, self.default)

    def render(self, request: "GatewayRequest") -> Any:
        target = self.resolve(request)
        if target is None:
            return errorPage(request, 400, "Bad Request: the path cannot be decoded")
        return target.render(request)


@implementer(IResource)
@dataclass(eq=False)
class PolicyTarget(GatewayResource):
    """
    A rule or path rule with a C{loadDistributionPolicy}: the policy's
    algorithm picks a member of one of its pools per request
    (L{agwtx.proxy.distribution}); the request then goes to that pool's
    backend target, which sends it to the chosen member.  An affinity
    cookie naming a member of one of the pools still wins.
    """

    rule: str
    distributor: Distributor
    kind: str = "policy"

    @property
    def backends(self) -> list[BackendTarget]:
        return [target for target, _ in self.distributor.targets]

    def attachRewrite(self, rewrite: Any) -> None:
        for target in self.backends:
            target.rewrite = rewrite

    def resolve(self, request: "GatewayRequest") -> BackendTarget:
        """The backend target for C{request}, its member chosen (see L{agwtx.proxy.reverse.chooseMember})."""
        backends = self.backends
        settings = backends[0].settings
        if settings.cookieBasedAffinity:
            raw = request.received_cookies.get(settings.affinityCookieName.encode("ascii"))
            if raw:
                affinity = request.site.ctx.affinity
                for target in backends:
                    found = affinity.findMember(target.scope, raw, (m.key for m in target.state.members))
                    if found is not None:
                        member = target.state.member(found[0])
                        if member is not None and member.pinnable:
                            return target  # chooseMember keeps the pinned member
        chosen = self.distributor.pick(request.clientIP)
        if chosen is None:
            return backends[0]  # no member available: its pool answers 502
        request.agwPreferred = chosen[0]
        return chosen[1]  # type: ignore[no-any-return]

    def render(self, request: "GatewayRequest") -> Any:
        return self.resolve(request).render(request)


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
    soleListener: str | None = None
    """The port's listener when it has only one (set by L{buildRouters}): a request not yet read can only be for it."""

    def route(self, host: str) -> ListenerRoute | None:
        """The first route serving C{host}, found by index (L{agwtx.routing.index}), not by a scan."""
        index = self._index
        if index is None:  # built on first use: buildRouters has finished the table
            index = self._index = HostIndex(self.routes)
        return index.route(host)  # type: ignore[no-any-return]


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

    def policy(rule: str, policyName: str, settingsName: str, prefix: str | None = None) -> PolicyTarget:
        spec = config.loadDistributionPolicies[policyName]
        targets = [
            (backend(rule, t.backendAddressPool, settingsName, prefix), t.weightPerServer)
            for t in spec.targets
        ]
        return PolicyTarget(
            rule=rule, distributor=Distributor(spec.name, spec.loadDistributionAlgorithm, targets)
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
                prefix = None
                if len(pr.paths) == 1 and pr.paths[0].endswith("*"):
                    prefix = pr.paths[0][:-1]
                if pr.redirectConfiguration is not None:
                    t: Any = redirect(name, pr.redirectConfiguration)
                elif pr.loadDistributionPolicy is not None:
                    assert pr.backendHttpSettings
                    t = policy(name, pr.loadDistributionPolicy, pr.backendHttpSettings, prefix)
                else:
                    assert pr.backendAddressPool and pr.backendHttpSettings
                    t = backend(name, pr.backendAddressPool, pr.backendHttpSettings, prefix)
                entries.append((pathMatcher(pr.paths), list(pr.paths), t))
            if pm.defaultRedirectConfiguration is not None:
                default: Any = redirect(name, pm.defaultRedirectConfiguration)
            elif pm.defaultLoadDistributionPolicy is not None:
                assert pm.defaultBackendHttpSettings
                default = policy(name, pm.defaultLoadDistributionPolicy, pm.defaultBackendHttpSettings)
            else:
                assert pm.defaultBackendAddressPool and pm.defaultBackendHttpSettings
                default = backend(name, pm.defaultBackendAddressPool, pm.defaultBackendHttpSettings)
            target = PathMapTarget(rule=name, entries=entries, default=default)
        elif rule.redirectConfiguration is not None:
            target = redirect(name, rule.redirectConfiguration)
        elif rule.ruleType == "Plugin":
            fallback = None
            if rule.backendAddressPool and rule.backendHttpSettings:
                fallback = backend(name, rule.backendAddressPool, rule.backendHttpSettings)
            try:
                target = pluginTarget(config, rule, fallback, backend, redirect)
            except ConfigError as e:  # every plugin rule's problems at once
                pluginErrors.extend(e.errors)
                continue
        elif rule.loadDistributionPolicy is not None:
            assert rule.backendHttpSettings
            target = policy(name, rule.loadDistributionPolicy, rule.backendHttpSettings)
        else:
            assert rule.backendAddressPool and rule.backendHttpSettings
            target = backend(name, rule.backendAddressPool, rule.backendHttpSettings)
        if rewriteFor is not None and rule.rewriteRuleSet:
            rewrite = rewriteFor(rule.rewriteRuleSet)
            _attachRewrite(target, rewrite)
            if getattr(rewrite, "rewritesUrl", False):
                target.urlRewrite = rewrite
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
        names = {route.listener.name for route in router.routes}
        router.soleListener = names.pop() if len(names) == 1 else None
    return routers


def rewriteUrl(ruleTarget: Any, chosen: Any, request: "GatewayRequest") -> tuple[Any, int, str]:
    """
    The routing decision after the URL rewrite of C{ruleTarget}'s rule
    (C{modifiedPath}, C{modifiedQueryString}, C{reroute}), for a request the
    rule sent to C{chosen}.  Rewrites apply to requests for a backend, as in
    Azure (not to a redirect or a plugin's own answer); the new path and query
    go to C{request.agwUri}, so that the proxy, the WebSocket bridge and a
    redirect the new path routes to all use them.  With C{reroute} the
    rule's path map is evaluated again with the new path, once: the target it
    finds is final, and the rewrite set is not applied again.
    """
    if not isinstance(chosen, BackendTarget):
        return chosen, 0, ""
    uri, reroute = ruleTarget.urlRewrite.rewriteUrl(request)
    if uri is None:
        return chosen, 0, ""
    request.agwUri = uri
    if reroute and isinstance(ruleTarget, PathMapTarget):
        chosen = ruleTarget.lookup(uri.partition(b"?")[0])
        if chosen is None:
            return None, 400, "Bad Request: the rewritten path cannot be decoded"
    return chosen, 0, ""


def _attachRewrite(target: Any, rewrite: Any) -> None:
    if isinstance(target, BackendTarget):
        target.rewrite = rewrite
    elif isinstance(target, PathMapTarget):
        for _, _, t in target.entries:
            _attachRewrite(t, rewrite)
        _attachRewrite(target.default, rewrite)
    elif hasattr(target, "attachRewrite"):  # e.g. agwtx.routing.plugin.PluginTarget
        target.attachRewrite(rewrite)

"""
Routing plugins: discovery, config checks, and the target a plugin rule routes through.

Plugins are objects providing L{agwtx.interfaces.IRoutingPlugin} (and
L{twisted.plugin.IPlugin}) in modules of the L{agwtx.plugins} drop-in
package; see C{docs/plugins.rst}.  They are discovered once per process
with L{twisted.plugin.getPlugins}, sorted by name; two plugins with the same
name (case-insensitively) are an error, as is a rule naming a plugin that is
not installed (the message lists the installed ones).

Per request, a L{PluginTarget} builds a L{RoutingRequest}, asks the plugin,
and renders the chosen target:

  - None (or a L{Decision} without target): the rule's fallback, i.e. its own
    C{backendAddressPool}/C{backendHttpSettings}; without one, 404 C{Not
    Found: the routing plugin chose no target} -- as for a host name no
    listener serves, nothing on this rule wants the request.
  - An exception, or a value that is not one of the rule's targets: 502
    C{Bad Gateway: the routing plugin failed}, and a C{log.failure} (or
    C{log.error}) event naming the plugin and the rule.  The gateway carries on.
  - A path that does not decode (see L{agwtx.routing.match.normalizePath}): 400,
    as for path maps, without asking the plugin.

A request whose body streams to the backend is routed when its headers are
complete (L{PluginTarget.resolve}); the decision is kept on the request so
that the plugin runs once per request.
"""

from __future__ import annotations

import copy
import re
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from twisted.logger import Logger
import twisted.plugin
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource
from zope.interface import implementer

import agwtx.plugins
from agwtx.proxy.affinity import AffinityCodec
from agwtx.interfaces import (
    ANSWER_STATUSES,
    Answer,
    Candidates,
    Decision,
    IRoutingPlugin,
    PluginConfigError,
    PluginRuleConfig,
    RoutingRequest,
)
from agwtx.config.model import GatewayConfig, RequestRoutingRule
from agwtx.config.errors import ConfigError
from agwtx.config.ini import _scan
from agwtx.runtime.answers import bodyAnswer, errorPage, reasonPhrase
from agwtx.routing.match import normalizePath, requestHost
from agwtx.routing.resource import GatewayResource, renderResource

if TYPE_CHECKING:
    from agwtx.http.request import GatewayRequest

__all__ = [
    "PluginDiscoveryError",
    "PluginTarget",
    "availablePlugins",
    "checkPluginConfig",
    "checkPlugins",
    "findPlugin",
    "pluginTarget",
    "routingRequest",
]

log = Logger(namespace="agw.plugin")

_NAME_RE = re.compile(r"[A-Za-z0-9_.\-]{1,80}")


class PluginDiscoveryError(Exception):
    """The installed plugins cannot be used as they are (e.g. two share a name)."""


# -- discovery -----------------------------------------------------------------

_discovered: dict[str, IRoutingPlugin] | None = None


def availablePlugins(refresh: bool = False) -> Mapping[str, IRoutingPlugin]:
    """
    The installed routing plugins by name, sorted; found once per process.

    @param refresh: look again (tests that add a drop-in directory).
    @raise PluginDiscoveryError: when two plugins share a name or a name is invalid.
    """
    global _discovered
    if _discovered is not None and not refresh:
        return _discovered
    found: dict[str, list[IRoutingPlugin]] = {}
    problems: list[str] = []
    for plugin in twisted.plugin.getPlugins(IRoutingPlugin, agwtx.plugins):
        name = getattr(plugin, "name", None)
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            problems.append(f"routing plugin {_origin(plugin)} has an invalid name {name!r}")
            continue
        found.setdefault(name.lower(), []).append(plugin)
    for plugins in found.values():
        if len(plugins) > 1:
            problems.append(
                f"duplicate routing plugin name {plugins[0].name!r}: provided by "
                + " and ".join(sorted(_origin(p) for p in plugins))
            )
    if problems:
        raise PluginDiscoveryError("; ".join(sorted(problems)))
    _discovered = {p[0].name: p[0] for _, p in sorted(found.items())}
    return _discovered


def _origin(plugin: object) -> str:
    cls = type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def findPlugin(name: str) -> IRoutingPlugin:
    """
    The installed plugin called C{name} (case-insensitively).

    @raise LookupError: naming the installed plugins.
    """
    plugins = availablePlugins()
    plugin = plugins.get(name)
    if plugin is None:
        lowered = name.lower()
        plugin = next((p for n, p in plugins.items() if n.lower() == lowered), None)
    if plugin is None:
        available = ", ".join(plugins) if plugins else "(none installed)"
        raise LookupError(f"unknown routing plugin {name!r}; available: {available}")
    return plugin


# -- options --------------------------------------------------------------------


class _Options(Mapping[str, str]):
    """Option keys look up case-insensitively (as config keys do) and iterate as written."""

    def __init__(self, items: Sequence[tuple[str, str]]) -> None:
        self._items = list(items)
        self._byLower = {k.lower(): v for k, v in reversed(self._items)}
        self._spelling = {k.lower(): k for k, _ in reversed(self._items)}

    def __getitem__(self, key: str) -> str:
        return self._byLower[key.lower()]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._byLower

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def spelling(self, key: str) -> str:
        return self._spelling.get(key.lower(), key)

    def __repr__(self) -> str:
        return f"_Options({self._items!r})"


# -- config checks -------------------------------------------------------------

Problem = tuple[str, str]
"""(key as written, or C{plugin} for the rule as a whole; message)."""


def _configureRule(
    config: GatewayConfig, rule: RequestRoutingRule
) -> tuple[IRoutingPlugin | None, PluginRuleConfig | None, list[Problem]]:
    assert rule.plugin is not None
    try:
        plugin = findPlugin(rule.plugin)
    except (LookupError, PluginDiscoveryError) as e:
        return None, None, [("plugin", str(e))]
    options = _Options(rule.pluginOptions)
    section = f"requestRoutingRule:{rule.name}"
    try:
        setup = plugin.configure(options, section)
    except PluginConfigError as e:
        return plugin, None, [(f"plugin.{options.spelling(e.key)}", e.message)]
    except Exception as e:
        log.failure(
            "routing plugin {plugin} failed to configure {section}",
            plugin=plugin.name,
            section=section,
        )
        return plugin, None, [("plugin", f"routing plugin {plugin.name!r} failed: {e!r}")]
    if not isinstance(setup, PluginRuleConfig):
        message = (
            f"routing plugin {plugin.name!r} returned {type(setup).__name__} "
            "from configure, expected PluginRuleConfig"
        )
        return plugin, None, [("plugin", message)]
    problems: list[Problem] = []
    for ref in setup.backends:
        if _canonical(config.backendAddressPools, ref.pool) is None:
            problems.append(
                (
                    f"plugin.{options.spelling(ref.key)}",
                    f"refers to backendAddressPool {ref.pool!r}, which is not defined",
                )
            )
        if _canonical(config.backendHttpSettings, ref.settings) is None:
            key = ref.settingsKey or ref.key
            problems.append(
                (
                    f"plugin.{options.spelling(key)}",
                    f"refers to backendHttpSettings {ref.settings!r}, which is not defined",
                )
            )
    for red in setup.redirects:
        if _canonical(config.redirectConfigurations, red.name) is None:
            problems.append(
                (
                    f"plugin.{options.spelling(red.key)}",
                    f"refers to redirectConfiguration {red.name!r}, which is not defined",
                )
            )
    return plugin, setup, problems


def _canonical(names: Mapping[str, Any], name: str) -> str | None:
    if name in names:
        return name
    lowered = name.lower()
    return next((n for n in names if n.lower() == lowered), None)


class _Locator:
    """Finds the line of a rule's key by re-reading the config file (the model has no lines)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.headers: dict[str, tuple[str, int]] = {}
        self.keys: dict[tuple[str, str], tuple[str, int]] = {}
        try:
            with open(path, encoding="utf-8-sig") as f:
                scan = _scan(f.read(), path)
        except Exception:
            return
        for header, lines in scan.headerLines.items():
            kind, _, name = header.partition(":")
            if kind.strip().lower() == "requestroutingrule":
                self.headers.setdefault(name.strip().lower(), (header.strip(), lines[0]))
        for (header, key), line in scan.keyLines.items():
            kind, _, name = header.partition(":")
            if kind.strip().lower() == "requestroutingrule":
                self.keys.setdefault((name.strip().lower(), key.lower()), (key, line))

    def _find(self, rule: str, key: str) -> tuple[str, str, int | None]:
        """The section header and key as written, and the key's line (else the header's)."""
        header, line = self.headers.get(rule.lower(), (f"requestRoutingRule:{rule}", None))
        written, keyLine = self.keys.get((rule.lower(), key.lower()), (key, line))
        return header, written, keyLine

    def lineOf(self, rule: str, key: str) -> int:
        """The line to sort an error about C{key} by; unknown lines sort last."""
        line = self._find(rule, key)[2]
        return 1 << 30 if line is None else line

    def format(self, rule: str, key: str, message: str) -> str:
        header, written, line = self._find(rule, key)
        where = f"{self.path}:{line}" if line is not None else self.path
        return f"{where}: [{header}] {written}: {message}"


def checkPluginConfig(config: GatewayConfig) -> list[str]:
    """
    Check every C{ruleType = Plugin} rule: the plugin is installed, accepts
    the rule's C{plugin.*} options, and the pools, settings and redirects it
    refers to exist.  One line per problem, in the config error format::

        etc/gw.ini:41: [requestRoutingRule:canary] plugin.match: expected ...

    Plugins are only discovered (imported) when a rule uses one.
    """
    rules = [r for r in config.requestRoutingRules.values() if r.ruleType == "Plugin" and r.plugin]
    if not rules:
        return []
    locator: _Locator | None = None  # re-reads the file: only when there is something to report
    errors: list[tuple[int, str]] = []
    for rule in rules:
        for key, message in _configureRule(config, rule)[2]:
            if locator is None:
                locator = _Locator(config.path)
            errors.append((locator.lineOf(rule.name, key), locator.format(rule.name, key, message)))
    return [text for _, text in sorted(errors, key=lambda e: e[0])]


# -- the request side ------------------------------------------------------------


class _HeaderView(Mapping[str, Sequence[str]]):
    """Read-only, lowercased-name view of twisted Headers, decoded on access."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> Sequence[str]:
        values = self.get(name)
        if values is None:
            raise KeyError(name)
        return values  # type: ignore[no-any-return]

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        try:
            raw = name.lower().encode("latin-1")
        except UnicodeEncodeError:
            return default
        values = self._headers.getRawHeaders(raw)
        return tuple([v.decode("latin-1") for v in values]) if values else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        return (n.decode("latin-1").lower() for n, _ in self._headers.getAllRawHeaders())

    def __len__(self) -> int:
        return sum(1 for _ in self._headers.getAllRawHeaders())


class _CookieView(Mapping[str, str]):
    """Read-only view of the request's cookies, found on first use (most plugins never look)."""

    __slots__ = ("_request", "_cookies")

    def __init__(self, request: Any) -> None:
        self._request = request
        self._cookies: Mapping[bytes, bytes] | None = None

    def _all(self) -> Mapping[bytes, bytes]:
        cookies = self._cookies
        if cookies is None:
            cookies = self._cookies = _cookies(self._request)
        return cookies

    def __getitem__(self, name: str) -> str:
        return self._all()[name.encode("latin-1")].decode("latin-1")

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        value = self._all().get(name.encode("latin-1", "replace"))
        return default if value is None else value.decode("latin-1")

    def __iter__(self) -> Iterator[str]:
        return (n.decode("latin-1") for n in self._all())

    def __len__(self) -> int:
        return len(self._all())


def _cookies(request: Any) -> Mapping[bytes, bytes]:
    parsed = getattr(request, "received_cookies", None)
    if parsed:
        return parsed  # type: ignore[no-any-return]
    raw = request.requestHeaders.getRawHeaders(b"cookie")
    if not raw:
        return {}
    jar = SimpleCookie()
    out: dict[bytes, bytes] = {}
    for line in raw:
        try:
            jar.load(line.decode("latin-1"))
        except CookieError:
            continue
    for name, morsel in jar.items():
        out[name.encode("latin-1")] = morsel.value.encode("latin-1")
    return out


def routingRequest(request: "GatewayRequest") -> RoutingRequest | None:
    """The plugin's view of C{request}; None when its path does not decode."""
    path = normalizePath(request.path)
    if path is None:
        return None
    headers = request.requestHeaders
    hosts = headers.getRawHeaders(b"host")
    client = request.clientIP  # decided in one place: agwtx.http.forwarded.clientAddress
    uri = request.uri
    return RoutingRequest(
        request.method.decode("latin-1"),
        requestHost(hosts[0] if hosts else None),
        path,
        uri[uri.find(b"?") + 1 :].decode("latin-1") if b"?" in uri else "",
        _HeaderView(headers),
        _CookieView(request),
        client,
        bool(request.isSecure()),
    )


class _WithHeaders:
    """A target's rewrite plus the response headers a plugin's L{Decision} adds."""

    def __init__(self, inner: Any, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.inner = inner
        self.headers = headers

    def applyRequest(self, request: Any, fwd: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        return fwd if self.inner is None else self.inner.applyRequest(request, fwd)  # type: ignore[no-any-return]

    def applyResponse(self, request: Any, headers: Headers) -> Headers:
        if self.inner is not None:
            self.inner.applyResponse(request, headers)
        for name, value in self.headers:
            headers.addRawHeader(name, value)
        return headers

    def applyResponseHeaders(
        self, request: Any, headerPairs: Sequence[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        out = (
            list(headerPairs) if self.inner is None else self.inner.applyResponseHeaders(request, headerPairs)
        )
        out.extend(self.headers)
        return out  # type: ignore[no-any-return]


_CRLF = re.compile(rb"[\r\n\0]")


class _Refusal:
    """A request the rule answers itself, with this error page, instead of routing it."""

    __slots__ = ("code", "message")

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message


class _Answered(_Refusal):
    """A request the plugin answers itself (an L{Answer}), checked and with its headers encoded."""

    __slots__ = ("headers", "body")

    def __init__(
        self, code: int, message: str, headers: tuple[tuple[bytes, bytes], ...], body: bytes | None
    ) -> None:
        super().__init__(code, message)
        self.headers = headers
        self.body = body

    def render(self, request: Any) -> Any:
        if self.body is None:
            return errorPage(request, self.code, self.message, self.headers)
        return bodyAnswer(request, self.code, self.body, self.headers, self.message)


_BARRED_ANSWER_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection", b"date"})


def _answered(answer: Answer) -> _Answered | None:
    """The plugin's L{Answer} ready to send, or None when it is not one agw can send."""
    status = answer.status
    if not isinstance(status, int) or status not in ANSWER_STATUSES:
        return None
    body = answer.body
    if isinstance(body, str):
        body = body.encode("utf-8")
    if body is not None and not isinstance(body, bytes):
        return None
    headers = tuple(_header(n, v) for n, v in answer.headers)
    headers = tuple(h for h in headers if h[0].lower() not in _BARRED_ANSWER_HEADERS)
    phrase = reasonPhrase(status).decode("ascii")
    message = f"{phrase}: {answer.message}" if answer.message else phrase
    return _Answered(status, message, headers, body)


_FAILED = _Refusal(502, "Bad Gateway: the routing plugin failed")
_NO_TARGET = _Refusal(404, "Not Found: the routing plugin chose no target")
_BAD_PATH = _Refusal(400, "Bad Request: the path cannot be decoded")

_process_codec: AffinityCodec | None = None


def _processCodec() -> AffinityCodec:
    global _process_codec
    if _process_codec is None:
        _process_codec = AffinityCodec()
    return _process_codec


@implementer(IResource)
class PluginTarget(GatewayResource):
    """
    A rule with C{ruleType = Plugin}: asks its plugin which candidate serves
    each request.  The plugin may also answer with any twisted.web resource
    (L{IResource}: a C{static.File}, a plain C{Resource} subclass, a Klein
    app's resource), which is then traversed and rendered the twisted.web way.
    """

    kind = "plugin"

    def __init__(self, rule: str, plugin: IRoutingPlugin, candidates: Candidates) -> None:
        self.rule = rule
        self.plugin = plugin
        self.candidates = candidates
        self._allowed = frozenset(id(t) for t in self._targets())

    # routing.buildRouters attaches the rule's rewrite set through this hook
    def attachRewrite(self, rewrite: Any) -> None:
        for target in self._targets():
            if hasattr(target, "rewrite"):
                target.rewrite = rewrite

    def _targets(self) -> list[Any]:
        c = self.candidates
        out = list(c.backends.values()) + list(c.redirects.values())
        if c.fallback is not None:
            out.append(c.fallback)
        return out

    def _ask(self, request: Any) -> Any:
        """The concrete target, or a L{_Refusal}; once per request."""
        cached = getattr(request, "agwPluginChoice", None)
        if cached is not None:
            return cached
        choice = self._choose(request)
        try:
            request.agwPluginChoice = choice
        except AttributeError:
            pass
        return choice

    def _choose(self, request: Any) -> Any:
        candidates = self.candidates
        if candidates.codec is None:
            ctx = getattr(getattr(request, "site", None), "ctx", None)
            codec = getattr(ctx, "affinity", None)
            candidates.codec = codec if isinstance(codec, AffinityCodec) else _processCodec()
        view = routingRequest(request)
        if view is None:
            return _BAD_PATH
        try:
            chosen = self.plugin.route(view, candidates)
        except Exception:
            log.failure(
                "routing plugin {plugin} failed on rule {rule} for {method} {uri}",
                plugin=self.plugin.name,
                rule=self.rule,
                method=request.method.decode("latin-1"),
                uri=request.uri.decode("latin-1"),
            )
            return _FAILED
        if isinstance(chosen, Answer):
            answered = _answered(chosen)
            if answered is None:
                log.error(
                    "routing plugin {plugin} answered {value!r} on rule {rule}: "
                    "the status must be 200..599 and the body bytes",
                    plugin=self.plugin.name,
                    value=chosen,
                    rule=self.rule,
                )
                return _FAILED
            return answered
        extra: tuple[tuple[bytes, bytes], ...] = ()
        if isinstance(chosen, Decision):
            extra = tuple(_header(n, v) for n, v in chosen.responseHeaders)
            chosen = chosen.target
        if chosen is None:
            chosen = candidates.fallback
            if chosen is None:
                return _NO_TARGET
        elif id(chosen) not in self._allowed and (
            getattr(chosen, "agwTarget", False) or not IResource.providedBy(chosen)
        ):
            log.error(
                "routing plugin {plugin} returned {value!r} on rule {rule}, not one of its targets",
                plugin=self.plugin.name,
                value=chosen,
                rule=self.rule,
            )
            return _FAILED
        if not extra:
            return chosen
        if getattr(chosen, "agwTarget", False) and hasattr(chosen, "rewrite"):
            chosen = copy.copy(chosen)
            chosen.rewrite = _WithHeaders(chosen.rewrite, extra)
            return chosen
        return _Prefixed(chosen, extra)

    def resolve(self, request: "GatewayRequest") -> Any:
        """
        The concrete target for C{request} (a backend or redirect target, or
        the plugin's own resource), or None when it is answered with an error.
        L{agwtx.http.site.GatewaySite.decide} calls this once per request.
        """
        choice = self._ask(request)
        return None if isinstance(choice, _Refusal) else choice

    def render(self, request: "GatewayRequest") -> Any:
        choice = self._ask(request)
        if isinstance(choice, _Answered):
            return choice.render(request)
        if isinstance(choice, _Refusal):
            return errorPage(request, choice.code, choice.message)
        return renderResource(choice, request)

    def __repr__(self) -> str:
        return f"<PluginTarget rule={self.rule} plugin={self.plugin.name}>"


def _header(name: bytes | str, value: bytes | str) -> tuple[bytes, bytes]:
    n = name.encode("latin-1") if isinstance(name, str) else name
    v = value.encode("latin-1") if isinstance(value, str) else value
    return _CRLF.sub(b"", n), _CRLF.sub(b" ", v)


@implementer(IResource)
class _Prefixed(GatewayResource):
    """A target without a rewrite hook (a redirect, any resource): the headers go on before it renders."""

    def __init__(self, target: Any, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.target = target
        self.headers = headers
        self.kind = getattr(target, "kind", "resource")

    def render(self, request: Any) -> Any:
        for name, value in self.headers:
            request.responseHeaders.addRawHeader(name, value)
        return renderResource(self.target, request)


def pluginTarget(
    config: GatewayConfig,
    rule: RequestRoutingRule,
    fallback: Any,
    backend: Callable[[str, str, str], Any],
    redirect: Callable[[str, str], Any],
) -> PluginTarget:
    """
    Build the target of a C{ruleType = Plugin} rule (called by
    L{agwtx.routing.router.buildRouters}): configure the plugin and make a target
    per backend and redirect it declares.

    @raise agwtx.config.errors.ConfigError: as L{checkPluginConfig} would report.
    """
    plugin, setup, problems = _configureRule(config, rule)
    if problems or plugin is None or setup is None:
        locator = _Locator(config.path)
        raise ConfigError([locator.format(rule.name, key, message) for key, message in problems])
    secrets = config.gateway.affinitySecrets
    codec = AffinityCodec(secrets=secrets) if secrets else None
    backends: dict[tuple[str, str], Any] = {}
    for ref in setup.backends:
        key = (ref.pool.lower(), ref.settings.lower())
        if key not in backends:
            pool = _canonical(config.backendAddressPools, ref.pool)
            settings = _canonical(config.backendHttpSettings, ref.settings)
            assert pool is not None and settings is not None
            backends[key] = backend(rule.name, pool, settings)
    redirects: dict[str, Any] = {}
    for red in setup.redirects:
        if red.name.lower() not in redirects:
            name = _canonical(config.redirectConfigurations, red.name)
            assert name is not None
            redirects[red.name.lower()] = redirect(rule.name, name)
    candidates = Candidates(
        rule=rule.name,
        options=setup.options,
        fallback=fallback,
        codec=codec,
        backends=backends,
        redirects=redirects,
    )
    return PluginTarget(rule.name, plugin, candidates)


def checkPlugins(config: GatewayConfig) -> None:
    """Raise L{ConfigError} listing every routing-plugin problem of C{config}."""
    problems = checkPluginConfig(config)
    if problems:
        raise ConfigError(problems)

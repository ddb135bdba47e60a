"""
Plugin points of agw, as zope.interface interfaces.

A routing plugin decides, per request, which of a rule's targets serves it.
It lives in a module of the L{agwtx.plugins} drop-in package (like
C{twisted/plugins/}) as a module-level object that provides both
L{twisted.plugin.IPlugin} and L{IRoutingPlugin}; a rule names it::

    [requestRoutingRule:canary]
    ruleType = Plugin
    httpListener = l1
    plugin = headerRoute                  ; IRoutingPlugin.name
    plugin.header = X-Canary              ; handed to configure()
    plugin.match = ^1$
    plugin.backendAddressPool = canaryPool
    plugin.backendHttpSettings = canarySettings
    backendAddressPool = mainPool         ; the fallback (optional)
    backendHttpSettings = mainSettings

The life of a plugin rule:

  1. At config load, L{IRoutingPlugin.configure} validates the C{plugin.*}
     keys and returns a L{PluginRuleConfig}: the plugin's parsed options and
     the backends and redirects it may route to.  A L{PluginConfigError}
     becomes a config error naming the file, line, section and key; so does
     a reference to a pool, settings or redirect that does not exist.
  2. When the routing table is built, each referenced backend and redirect
     becomes a target (with its pool state, health probes and affinity, as
     for any rule) and the rule gets a L{Candidates} holding them.
  3. Per request, L{IRoutingPlugin.route} gets a L{RoutingRequest} and the
     L{Candidates} and returns one of the candidates' targets, a L{Decision}
     (a target plus response headers such as a sticky cookie), an L{Answer}
     (the gateway answers the request itself: a 403 for a denied address,
     say), or None for the rule's fallback.

C{route} runs on the reactor thread for every request: it must not block
and should be cheap (microseconds).  An exception it raises costs that one
request a 502 and a logged traceback; the gateway carries on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Sequence

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from agwtx.proxy.affinity import AffinityCodec

__all__ = [
    "Answer",
    "BackendRef",
    "Candidates",
    "Decision",
    "IRoutingPlugin",
    "PluginConfigError",
    "boolOption",
    "checkOptionKeys",
    "PluginRuleConfig",
    "RedirectRef",
    "RoutingRequest",
]


class PluginConfigError(Exception):
    """
    Raised by L{IRoutingPlugin.configure} for an option it cannot use.

    agw reports it like every config error, pointing at the option::

        etc/gw.ini:40: [requestRoutingRule:canary] plugin.match: expected a regular expression, ...
    """

    def __init__(self, key: str, message: str) -> None:
        """
        @param key: the option, without the C{plugin.} prefix (C{match}); for
            a missing required option, the option that is missing.
        @param message: what was expected and what was found.
        """
        super().__init__(key, message)
        self.key = key
        self.message = message

    def __str__(self) -> str:
        return f"plugin.{self.key}: {self.message}"


_EMPTY_MAP: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class BackendRef:
    """A backend (pool and settings pair) a plugin rule may route to."""

    pool: str
    """The C{backendAddressPool} name."""
    settings: str
    """The C{backendHttpSettings} name."""
    key: str
    """The option it came from (for errors), e.g. C{backendAddressPool} or C{targets}."""
    settingsKey: str | None = None
    """The option the settings came from when it is another one; None: C{key}."""


@dataclass(frozen=True)
class RedirectRef:
    """A C{redirectConfiguration} a plugin rule may answer with."""

    name: str
    key: str


@dataclass(frozen=True)
class PluginRuleConfig:
    """What L{IRoutingPlugin.configure} returns for one rule."""

    options: Any = None
    """The plugin's own parsed options (compiled patterns, weights...), handed
    back to C{route} as L{Candidates.options}.  Should be immutable."""
    backends: tuple[BackendRef, ...] = ()
    redirects: tuple[RedirectRef, ...] = ()


@dataclass(frozen=True)
class Decision:
    """A chosen target plus headers to add to its response (e.g. a sticky cookie)."""

    target: Any
    """One of the L{Candidates}' targets, or None for the fallback."""
    responseHeaders: tuple[tuple[bytes, bytes], ...] = ()
    """Added to the response, whichever status the target answers with."""


ANSWER_STATUSES = range(200, 600)
"""The statuses an L{Answer} may have."""


@dataclass(frozen=True)
class Answer:
    """
    The request is answered by the gateway itself, not routed: no backend
    sees it, its body (if any) is read and dropped, and a WebSocket
    handshake gets this answer instead of an upgrade.  It is access-logged
    and counted like every other answer.

    With C{body} None the answer is the gateway's own page for C{status}
    (the listener's or the gateway's custom error page when one is set,
    JSON for clients that prefer it, else a line of text ending with
    C{message}), as for the gateway's other errors.  With a C{body}, that
    body is sent as it is, with C{Content-Type} from C{headers} (else
    C{text/plain; charset=utf-8}).
    """

    status: int
    """200..599."""
    message: str = ""
    """The reason given in the gateway's own page and in the access log's
    error field, e.g. C{"the client address is not allowed"}."""
    headers: tuple[tuple[str | bytes, str | bytes], ...] = ()
    """Added to the answer (C{Content-Length} and C{Date} are the gateway's)."""
    body: bytes | None = None


class RoutingRequest(NamedTuple):
    """
    What a routing plugin may look at: an immutable view of the request.

    A named tuple, so it is cheap to build and cannot be changed; headers
    and cookies are read-only mappings decoded as Latin-1 on access, so
    building one costs the same whatever the request carries.

      - C{method}: C{GET}, C{POST}, ...
      - C{host}: the Host header's name, lowercased, no port, no trailing dot.
      - C{path}: percent-decoded, C{.} and C{..} resolved: what path maps match.
      - C{query}: the raw query string after C{?} (empty if none).
      - C{headers}: lowercased header name -> tuple of its values, in order.
      - C{cookies}: cookie name (case-sensitive) -> value.
      - C{clientAddress}: the client's IP address (the TCP peer, the
        address a PROXY protocol header named, or the client a trusted
        forwarder named in X-Forwarded-For; the header is in C{headers}).
      - C{secure}: whether the request arrived over TLS.
    """

    method: str
    host: str
    path: str
    query: str = ""
    headers: Mapping[str, Sequence[str]] = _EMPTY_MAP
    cookies: Mapping[str, str] = _EMPTY_MAP
    clientAddress: str = ""
    secure: bool = False

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header C{name} (any case), else C{default}."""
        values = self.headers.get(name.lower())
        return values[0] if values else default

    def __repr__(self) -> str:
        return f"<RoutingRequest {self.method} {self.host}{self.path} from {self.clientAddress}>"


@dataclass(eq=False)
class Candidates:
    """
    The targets one plugin rule may route to, built once per routing table.

    Targets are opaque to plugins: return one of them from C{route}.  Names
    match case-insensitively, as config references do.
    """

    rule: str
    """The C{requestRoutingRule} name."""
    options: Any
    """L{PluginRuleConfig.options}: what C{configure} parsed for this rule."""
    fallback: Any = None
    """The rule's own backendAddressPool/backendHttpSettings target, or None."""
    codec: "AffinityCodec | None" = None
    """Signs and checks cookie values (sticky decisions) with the gateway's
    affinity secret, the one its affinity cookies use (so every instance and
    worker agrees); never None by the time C{route} is called.  Use a scope
    of your own in C{encode}/C{decode}."""
    backends: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    """(pool, settings), lowercased -> target."""
    redirects: Mapping[str, Any] = field(default_factory=dict)
    """Redirect configuration name, lowercased -> target."""

    def backend(self, pool: str, settings: str) -> Any:
        """
        The target for a pool and settings pair declared in
        L{PluginRuleConfig.backends}.

        @raise KeyError: for a pair that was not declared.
        """
        return self.backends[(pool.lower(), settings.lower())]

    def redirect(self, name: str) -> Any:
        """
        The target for a redirect declared in L{PluginRuleConfig.redirects}.

        @raise KeyError: for a name that was not declared.
        """
        return self.redirects[name.lower()]


class IRoutingPlugin(Interface):
    """
    Chooses a target per request for rules with C{ruleType = Plugin}.

    Providers are module-level objects in the L{agwtx.plugins} drop-in
    package that also provide L{twisted.plugin.IPlugin}.  One object serves
    every rule naming it, so keep per-rule state in what C{configure}
    returns, not on the object.
    """

    name = Attribute(
        """
        The name rules use in C{plugin = NAME}: unique among the installed
        routing plugins (case-insensitively), 1..80 of C{A-Z a-z 0-9 _ . -}.
        A user sees it in configs, in errors and in the access log, so make
        it short and stable (C{headerRoute}, not C{HeaderRoutePluginV2}).
        """
    )

    def configure(options: Mapping[str, str], section: str) -> PluginRuleConfig:
        """
        Validate a rule's C{plugin.KEY = value} options and parse them, once,
        at config load (and again when the routing table is built).

        Reject unknown keys as well as bad values: a typo must not be
        ignored silently.  Do not check that pools exist: declare them in
        the result and agw checks them against the config.

        @param options: option key (without C{plugin.}) -> value, in file
            order; keys look up case-insensitively and iterate as written.
        @param section: the section header, e.g. C{requestRoutingRule:canary},
            for messages and logs.
        @raise PluginConfigError: for the first (or every, chained) problem.
        """

    def route(request: RoutingRequest, candidates: Candidates) -> Any:
        """
        Choose the target for one request.

        @return: a target from C{candidates} (C{candidates.backend(...)},
            C{candidates.redirect(...)}, C{candidates.fallback}), any
            twisted.web resource (L{twisted.web.resource.IResource}: a
            C{static.File}, a C{Resource} subclass, a Klein app's resource;
            traversed from the request's path and rendered as twisted.web
            does), a L{Decision} holding either, an L{Answer} (the gateway
            answers itself), or None for the rule's fallback (a 404 when the
            rule has none).  Anything else is
            treated as a plugin failure.
        """


# -- helpers for IRoutingPlugin.configure --------------------------------------


def checkOptionKeys(
    options: Mapping[str, str], required: Sequence[str] = (), optional: Sequence[str] = ()
) -> None:
    """
    A helper for L{IRoutingPlugin.configure}: unknown keys and missing
    required ones raise L{PluginConfigError}.
    """
    allowed = {k.lower(): k for k in (*required, *optional)}
    for key in options:
        if key.lower() not in allowed:
            expected = ", ".join(f"plugin.{k}" for k in (*required, *optional)) or "none"
            raise PluginConfigError(key, f"unknown option; expected one of: {expected}")
    given = {k.lower() for k, v in options.items() if v.strip()}
    for key in required:
        if key.lower() not in given:
            raise PluginConfigError(key, "required option is missing")


_BOOLS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def boolOption(options: Mapping[str, str], key: str, default: bool) -> bool:
    """
    A helper for L{IRoutingPlugin.configure}: the boolean option C{key}
    (C{true}/C{false}, C{yes}/C{no}, C{1}/C{0}), or C{default} when it is
    absent or empty.

    @raise PluginConfigError: for any other value.
    """
    text = (options.get(key) or "").strip()
    if not text:
        return default
    value = _BOOLS.get(text.lower())
    if value is None:
        raise PluginConfigError(key, f"expected true or false, got {text!r}")
    return value

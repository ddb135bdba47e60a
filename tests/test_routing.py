"""
Routing: host names, priorities and path maps as tables; header rewrites;
routing plugins (discovery, config checks, the shipped ones, a drop-in);
and all of it end to end through the real twistd gateway.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import random
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Mapping

import pytest
from twisted.internet.address import IPv4Address
from twisted.logger import globalLogPublisher
from twisted.web.http_headers import Headers
from zope.interface.verify import verifyObject

import agwtx.plugins
from agwtx.routing import plugin as pluginModule
from agwtx.proxy.affinity import AffinityCodec
from agwtx.config.errors import ConfigError
from agwtx.config.loader import loadConfig
from agwtx.interfaces import (
    Candidates,
    Decision,
    IRoutingPlugin,
    PluginConfigError,
    PluginRuleConfig,
    RoutingRequest,
)
from agwtx.config.model import (
    BackendAddress,
    BackendAddressPool,
    BackendHttpSettings,
    FrontendPort,
    GatewayConfig,
    HttpListener,
    PathRule,
    RedirectConfiguration,
    RequestRoutingRule,
    RewriteRule,
    RewriteRuleSet,
    UrlPathMap,
)
from agwtx.routing.plugin import (
    PluginDiscoveryError,
    PluginTarget,
    availablePlugins,
    checkPluginConfig,
    findPlugin,
    routingRequest,
)
from agwtx.routing.rewrite import compileRewriteSet, rewriteCompiler
from agwtx.routing.router import BackendTarget, PathMapTarget, RedirectTarget, buildRouters, hostMatcher
from agwtx.http.site import GatewaySite
from tests.support import TWISTD, Proc, freePort, startBackend, waitForPort, writeDropIn

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------
# Fakes
# ---------------------------------------------------------------------------


class FakeRequest:
    """Just what routing, rewrites and plugin targets read and write."""

    def __init__(
        self,
        host: bytes | None = b"www.contoso.com",
        uri: bytes = b"/",
        method: bytes = b"GET",
        headers: tuple[tuple[bytes, bytes], ...] = (),
        clientproto: bytes = b"HTTP/1.1",
        clientIP: str = "192.0.2.7",
        clientPort: int = 50123,
        secure: bool = False,
        cookies: Mapping[bytes, bytes] | None = None,
    ) -> None:
        self.requestHeaders = Headers()
        if host is not None:
            self.requestHeaders.addRawHeader(b"host", host)
        for name, value in headers:
            self.requestHeaders.addRawHeader(name, value)
        self.uri = uri
        self.path = uri.split(b"?", 1)[0]
        self.method = method
        self.clientproto = clientproto
        self.clientIP = self.peerIP = clientIP
        self.clientPort = self._port = clientPort
        self._secure = secure
        self.received_cookies = dict(cookies or {})
        self.responseHeaders = Headers()
        self.code = 200
        self.written: list[bytes] = []
        self.finished = False
        self.startedWriting = False
        self._disconnected = False
        self.agwError: str | None = None
        self.agwStatus: int | None = None
        self.agwDecision: Any = None
        self.agwListener: str | None = None
        self.agwRule: str | None = None
        self.agwPool: str | None = None
        self.agwUri: bytes | None = None

    def getClientAddress(self) -> IPv4Address:
        return IPv4Address("TCP", self.clientIP, self._port)

    def isSecure(self) -> bool:
        return self._secure

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        self.code = code

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish(self) -> None:
        self.finished = True


def pool(name: str) -> BackendAddressPool:
    return BackendAddressPool(name, (BackendAddress("127.0.0.1", 9),))


# ---------------------------------------------------------------------------
# Routing tables: host x path x priority -> target
# ---------------------------------------------------------------------------


def routingConfig() -> GatewayConfig:
    """
    Port fp1: a basic listener (priority 10, still evaluated last) and
    multi-site listeners with priorities; port fp2: multi-site only, no
    priorities (exact names before wildcards).
    """
    listeners = [
        HttpListener("basic", "fp1"),
        HttpListener("siteA", "fp1", hostNames=("www.contoso.com",)),
        HttpListener("wild", "fp1", hostNames=("*.contoso.com",)),
        HttpListener("shadow", "fp1", hostNames=("shop.contoso.com",)),
        HttpListener("api", "fp1", hostNames=("api.contoso.com", "api?.example.org")),
        HttpListener("wild2", "fp2", hostNames=("*.example.com",)),
        HttpListener("exact2", "fp2", hostNames=("app.example.com",)),
    ]
    pools = ["default", "web", "images", "admin", "apiv1", "wild", "shop", "api", "app", "wild2"]
    mapA = UrlPathMap(
        "mapA",
        defaultBackendAddressPool="web",
        defaultBackendHttpSettings="s",
        pathRules=(
            PathRule("images", ("/images/*",), "images", "s"),
            PathRule("admin", ("/admin", "/admin/*"), "admin", "s"),
            PathRule("api", ("/api/v1/*",), "apiv1", "s"),
            PathRule("old", ("/old/*",), redirectConfiguration="toNew"),
            PathRule("late", ("/images/late/*",), "api", "s"),  # shadowed: first match wins
        ),
    )

    def rule(name: str, listener: str, priority: int | None, target: str) -> RequestRoutingRule:
        if target.startswith("map:"):
            return RequestRoutingRule(name, listener, "PathBasedRouting", priority, urlPathMap=target[4:])
        return RequestRoutingRule(name, listener, "Basic", priority, target, "s")

    rules = [
        rule("rBasic", "basic", 10, "default"),
        rule("rWild2", "wild2", None, "wild2"),  # listed before the exact one on purpose
        rule("rExact2", "exact2", None, "app"),
        rule("rA", "siteA", 100, "map:mapA"),
        rule("rWild", "wild", 200, "wild"),
        rule("rShadow", "shadow", 300, "shop"),  # behind *.contoso.com (200)
        rule("rApi", "api", 50, "api"),
    ]
    return GatewayConfig(
        path="routing.ini",
        frontendPorts={
            "fp1": FrontendPort("fp1", "tcp:80", 80),
            "fp2": FrontendPort("fp2", "tcp:81", 81),
        },
        httpListeners={lst.name: lst for lst in listeners},
        backendAddressPools={p: pool(p) for p in pools},
        backendHttpSettings={"s": BackendHttpSettings("s")},
        redirectConfigurations={
            "toNew": RedirectConfiguration("toNew", "Found", targetUrl="https://new.example.com")
        },
        urlPathMaps={"mapA": mapA},
        requestRoutingRules={r.name: r for r in rules},
    )


@pytest.fixture(scope="module")
def sites() -> dict[str, GatewaySite]:
    routers = buildRouters(routingConfig(), {})
    ctx: Any = SimpleNamespace()
    return {name: GatewaySite(ctx, router, 80) for name, router in routers.items()}


def decide(site: GatewaySite, request: Any) -> str:
    """The table's notation: the pool name, C{redirect:NAME}, or the status code."""
    target, code, _ = site.resolve(request)
    if target is None:
        return str(code)
    if isinstance(target, PathMapTarget):
        target = target.resolve(request)
        if target is None:
            return "400"
    if isinstance(target, RedirectTarget):
        return f"redirect:{target.config.name}"
    assert isinstance(target, BackendTarget)
    return target.state.name


HOST_TABLE = [
    # port, Host header, expected
    ("fp1", b"www.contoso.com", "web"),
    ("fp1", b"WWW.Contoso.COM", "web"),  # case-insensitive
    ("fp1", b"www.contoso.com:80", "web"),  # port ignored
    ("fp1", b"www.contoso.com.", "web"),  # trailing dot
    ("fp1", b"foo.contoso.com", "wild"),  # wildcard
    ("fp1", b"a.b.contoso.com", "wild"),  # * spans dots
    ("fp1", b"shop.contoso.com", "wild"),  # priority 200 beats an exact name at 300
    ("fp1", b"contoso.com", "default"),  # *.contoso.com needs a label
    ("fp1", b"api.contoso.com", "api"),  # priority 50 before the wildcard at 200
    ("fp1", b"api1.example.org", "api"),  # ? is one character
    ("fp1", b"api12.example.org", "default"),
    ("fp1", b"unknown.org", "default"),  # basic listener last, despite priority 10
    ("fp1", b"[::1]:80", "default"),
    ("fp1", None, "400"),  # HTTP/1.1 without Host
    ("fp1", b"", "default"),  # empty Host: no authority, the basic listener
    ("fp1", b"\xff\xfe", "400"),  # not an authority
    ("fp1", b"www.contoso.com/x", "400"),
    ("fp1", b"www.contoso.com:99999", "400"),  # port past 65535
    ("fp1", b"[::1", "400"),  # unclosed IPv6 literal
    ("fp2", b"app.example.com", "app"),  # exact before wildcard without priorities
    ("fp2", b"APP.example.com", "app"),
    ("fp2", b"x.example.com", "wild2"),
    ("fp2", b"example.com", "404"),  # no basic listener on this port
    ("fp2", b"other.org", "404"),
]


@pytest.mark.parametrize("port,host,expected", HOST_TABLE)
def test_host_routing(sites: dict[str, GatewaySite], port: str, host: bytes | None, expected: str) -> None:
    assert decide(sites[port], FakeRequest(host=host, uri=b"/")) == expected


@pytest.mark.parametrize(
    "host,valid",
    [
        (b"", True),
        (b"app.example", True),
        (b"app.example:8080", True),
        (b"app.example:", True),  # RFC 3986: port = *DIGIT
        (b"app.example:65535", True),
        (b"xn--bcher-kva.example", True),
        (b"under_score.example", True),
        (b"127.0.0.1:80", True),
        (b"[::1]", True),
        (b"[2001:db8::1]:443", True),
        (b"app.example:65536", False),
        (b"app.example:8x", False),
        (b"app.example:123456", False),
        (b"app example", False),
        (b"user@app.example", False),
        (b"app.example/path", False),
        (b".app.example", False),
        (b"app..example", False),
        (b"[::1", False),
        (b"[::1]x", False),
        (b"\xc3\xa9.example", False),  # raw UTF-8: IDNs arrive as xn-- labels
    ],
)
def test_valid_host(host: bytes, valid: bool) -> None:
    from agwtx.routing.match import validHost

    assert validHost(host) is valid


PATH_TABLE = [
    (b"/", "web"),
    (b"/images/cat.png", "images"),
    (b"/IMAGES/Cat.png", "images"),  # case-insensitive
    (b"/images/", "images"),  # trailing slash matches /images/*
    (b"/images", "web"),  # ...and without it, it does not
    (b"/images/late/x", "images"),  # first listed match wins
    (b"/admin", "admin"),
    (b"/admin/", "admin"),
    (b"/Admin/users", "admin"),
    (b"/administrator", "web"),  # /admin is exact, /admin/* needs the slash
    (b"/images/../admin", "admin"),  # traversal is resolved before matching
    (b"/images/%2e%2e/admin", "admin"),
    (b"/images/%2E%2E/admin/", "admin"),
    (b"/images/..%2fadmin", "admin"),  # an encoded slash is a slash for matching
    (b"/../../images/x", "images"),  # cannot climb above the root
    (b"/./images/x", "images"),
    (b"/a/./images/x", "web"),
    (b"/%61dmin", "admin"),  # percent-encoded letters
    (b"/images/%E4%BD%A0.png", "images"),  # UTF-8
    (b"/api/v1/users?x=/admin", "apiv1"),  # the query is not part of the path
    (b"/api/v1", "web"),
    (b"/old/page", "redirect:toNew"),
    (b"/images/%00", "400"),  # NUL
    (b"/images/%ff", "400"),  # not UTF-8
]


@pytest.mark.parametrize("uri,expected", PATH_TABLE)
def test_path_routing(sites: dict[str, GatewaySite], uri: bytes, expected: str) -> None:
    assert decide(sites["fp1"], FakeRequest(host=b"www.contoso.com", uri=uri)) == expected


def test_path_map_uses_the_same_rule_for_every_path(sites: dict[str, GatewaySite]) -> None:
    request = FakeRequest(host=b"www.contoso.com", uri=b"/images/x")
    decide(sites["fp1"], request)
    assert (request.agwListener, request.agwRule) == ("siteA", "rA")


@pytest.mark.parametrize(
    "uri",
    [
        b"ftp://evil.example/",  # an absolute-form the gateway does not take
        b"evil.example:443",  # authority-form (CONNECT's)
        b"*",  # asterisk-form with GET
        b"images/x",
    ],
)
def test_non_path_request_target_is_400(sites: dict[str, GatewaySite], uri: bytes) -> None:
    # http(s) absolute-form becomes a path before routing (test_proxy.py).
    assert decide(sites["fp1"], FakeRequest(uri=uri)) == "400"


def _linearRoute(router: Any, host: str) -> Any:
    """The specification the index must agree with: each listener in order, host names matched one by one."""
    for r in router.routes:
        names = r.listener.hostNames
        if not names or hostMatcher(names)(host):
            return r
    return None


def test_host_index_agrees_with_trying_each_listener_in_order() -> None:
    """The index is an optimisation only: same answer as the scan it replaces."""
    rng = random.Random(5)
    listeners = [HttpListener("basic", "fp1")]
    rules = [RequestRoutingRule("rbasic", "basic", "Basic", 20000, "p", "s")]
    labels = ["a", "b", "www", "api", "x1", "shop"]
    domains = ["contoso.com", "example.org", "b.example.org", "test"]
    for i in range(120):
        kind = rng.choice(["exact", "suffix", "q", "star"])
        label, domain = rng.choice(labels), rng.choice(domains)
        name = {
            "exact": f"{label}.{domain}",
            "suffix": f"*.{domain}",
            "q": f"{label[:-1]}?.{domain}",
            "star": f"{label}*.{domain}",
        }[kind]
        listeners.append(HttpListener(f"l{i}", "fp1", hostNames=(name,)))
        rules.append(RequestRoutingRule(f"r{i}", f"l{i}", "Basic", rng.randint(1, 300), "p", "s"))
    config = GatewayConfig(
        path="x.ini",
        frontendPorts={"fp1": FrontendPort("fp1", "tcp:80", 80)},
        httpListeners={lst.name: lst for lst in listeners},
        backendAddressPools={"p": pool("p")},
        backendHttpSettings={"s": BackendHttpSettings("s")},
        requestRoutingRules={r.name: r for r in rules},
    )
    router = buildRouters(config, {})["fp1"]
    hosts = [f"{a}.{d}" for a in labels + ["zz", "a.b", ""] for d in domains] + [
        "contoso.com",
        "",
        "test",
    ]
    for host in hosts:
        assert router.route(host) is _linearRoute(router, host), host
    for port, r in buildRouters(routingConfig(), {}).items():
        for _, rawHost, _ in HOST_TABLE:
            h = (rawHost or b"").decode("latin-1")
            assert r.route(h) is _linearRoute(r, h), (port, h)


def test_path_index_agrees_with_trying_each_path_rule_in_order() -> None:
    from agwtx.routing.index import PathIndex
    from agwtx.routing.match import normalizePath, pathMatcher

    rng = random.Random(11)
    pieces = ["a", "B", "img", "images", "api", "v1", ""]
    patterns = []
    for _ in range(80):
        path = "/" + "/".join(rng.choice(pieces) for _ in range(rng.randint(0, 3)))
        patterns.append(rng.choice([path, path + "*", path.rstrip("/") + "/*"]))
    entries: list[tuple[Any, list[str], Any]] = [(pathMatcher([p]), [p], i) for i, p in enumerate(patterns)]
    entries.append((pathMatcher(["/x", "/y/*"]), ["/x", "/y/*"], "xy"))
    index = PathIndex(entries)
    for _ in range(3000):
        path = "/" + "/".join(rng.choice(pieces + ["x", "y", "imgs"]) for _ in range(rng.randint(0, 4)))
        linear = next((t for m, _, t in entries if m(path)), "default")
        assert index.lookup(path, "default") == linear, path
    # the fast path of normalizePath gives what the full decoding gives
    for raw in [b"/", b"/a/b", b"//a//", b"/a.b/c.", b"/\xc3\xa9", b"/\xff", b"/a?b"]:
        assert normalizePath(raw) == _slowNormalize(raw)


def _slowNormalize(path: bytes) -> str | None:
    from agwtx.routing.match import normalizePath

    # with an escape in it (%41 is "A"), a path takes the full decoding route
    decoded = normalizePath(path + b"%41")
    return None if decoded is None else decoded[:-1]


# ---------------------------------------------------------------------------
# Rewrites (pure)
# ---------------------------------------------------------------------------


def ruleSet(*rules: RewriteRule) -> Any:
    return compileRewriteSet(RewriteRuleSet("rw", rules))


FWD = [(b"Host", b"app.test"), (b"Accept", b"*/*"), (b"X-Forwarded-For", b"192.0.2.7")]

REQUEST_TABLE: list[tuple[str, tuple[RewriteRule, ...], dict[str, Any], list[tuple[bytes, bytes]]]] = [
    (
        "client ip and port",
        (RewriteRule("a", requestHeaders=(("X-Client", "{var_client_ip}:{var_client_port}"),)),),
        {},
        FWD + [(b"X-Client", b"192.0.2.7:50123")],
    ),
    (
        "remove",
        (RewriteRule("a", requestHeaders=(("accept", None),)),),
        {},
        [(b"Host", b"app.test"), (b"X-Forwarded-For", b"192.0.2.7")],
    ),
    (
        "replace keeps one value",
        (RewriteRule("a", requestHeaders=(("Accept", "text/html"),)),),
        {},
        [(b"Host", b"app.test"), (b"X-Forwarded-For", b"192.0.2.7"), (b"Accept", b"text/html")],
    ),
    (
        "uri variables",
        (
            RewriteRule(
                "a",
                requestHeaders=(
                    ("X-Path", "{var_uri_path}"),
                    ("X-Query", "[{var_query_string}]"),
                    ("X-Uri", "{var_request_uri}"),
                    ("X-Host", "{var_host}"),
                    ("X-Tls", "<{var_ssl_enabled}>"),
                ),
            ),
        ),
        {"uri": b"/a%20b/c?x=1&y=2", "host": b"App.Test:8080"},
        FWD
        + [
            (b"X-Path", b"/a%20b/c"),
            (b"X-Query", b"[x=1&y=2]"),
            (b"X-Uri", b"/a%20b/c?x=1&y=2"),
            (b"X-Host", b"app.test"),
            (b"X-Tls", b"<>"),
        ],
    ),
    (
        "ssl on",
        (RewriteRule("a", requestHeaders=(("X-Tls", "{var_ssl_enabled}"),)),),
        {"secure": True},
        FWD + [(b"X-Tls", b"on")],
    ),
    (
        "request header variable, repeated values joined",
        (RewriteRule("a", requestHeaders=(("X-Copy", "{http_req_X-Tag}|{http_req_X-Missing}"),)),),
        {"headers": ((b"X-Tag", b"a"), (b"X-Tag", b"b"))},
        FWD + [(b"X-Copy", b"a, b|")],
    ),
    (
        "condition holds",
        (
            RewriteRule(
                "a",
                conditions=(("var_uri_path", "^/admin", False, False),),
                requestHeaders=(("X-Admin", "1"),),
            ),
        ),
        {"uri": b"/admin/x"},
        FWD + [(b"X-Admin", b"1")],
    ),
    (
        "condition is case-sensitive by default",
        (
            RewriteRule(
                "a",
                conditions=(("var_uri_path", "^/admin", False, False),),
                requestHeaders=(("X-Admin", "1"),),
            ),
        ),
        {"uri": b"/ADMIN/x"},
        FWD,
    ),
    (
        "ignoreCase",
        (
            RewriteRule(
                "a",
                conditions=(("var_uri_path", "^/admin", True, False),),
                requestHeaders=(("X-Admin", "1"),),
            ),
        ),
        {"uri": b"/ADMIN/x"},
        FWD + [(b"X-Admin", b"1")],
    ),
    (
        "negate",
        (
            RewriteRule(
                "a",
                conditions=(("http_req_X-Debug", "^1$", False, True),),
                requestHeaders=(("X-Debug", None),),
            ),
        ),
        {"headers": ((b"X-Debug", b"2"),)},
        FWD,  # X-Debug is not in FWD: nothing to remove, nothing added
    ),
    (
        "all conditions must hold",
        (
            RewriteRule(
                "a",
                conditions=(
                    ("var_uri_path", "^/a", False, False),
                    ("var_client_ip", "^10\\.", False, False),
                ),
                requestHeaders=(("X-Both", "1"),),
            ),
        ),
        {"uri": b"/a"},
        FWD,
    ),
    (
        "a later rule wins",
        (
            RewriteRule("a", requestHeaders=(("X-Who", "first"),)),
            RewriteRule("b", requestHeaders=(("X-Who", "second"),)),
        ),
        {},
        FWD + [(b"X-Who", b"second")],
    ),
    (
        "conditions read the client's headers, not another rule's result",
        (
            RewriteRule("a", requestHeaders=(("X-Flag", "1"),)),
            RewriteRule(
                "b",
                conditions=(("http_req_X-Flag", "1", False, False),),
                requestHeaders=(("X-Seen", "yes"),),
            ),
        ),
        {},
        FWD + [(b"X-Flag", b"1")],
    ),
    (
        "a negated condition captures nothing",
        (
            RewriteRule(
                "a",
                conditions=(("var_uri_path", "^/(x)", False, True),),
                requestHeaders=(("X-C", "[{var_uri_path_1}]"),),
            ),
        ),
        {"uri": b"/y"},
        FWD + [(b"X-C", b"[]")],
    ),
    (
        "captures come from the first condition on the variable",
        (
            RewriteRule(
                "a",
                conditions=(
                    ("http_req_X-In", "^(a)(b)?", False, False),
                    ("http_req_x-in", "(c)$", False, False),
                ),
                requestHeaders=(("X-C", "{http_req_X-In_1}{http_req_X-In_2}{http_req_X-In_0}"),),
            ),
        ),
        {"headers": ((b"X-In", b"axc"),)},
        FWD + [(b"X-C", b"aa")],  # group 2 took no part; group 0 is the whole match,
    ),
    (
        "cookie, basic user, version, query, scheme",
        (
            RewriteRule(
                "a",
                requestHeaders=(
                    ("X-Sid", "{var_cookie_sid}|{var_cookie_none}"),
                    ("X-User", "{var_client_user}"),
                    ("X-Line", "{var_http_version} {var_request_query} {var_request_scheme}"),
                ),
            ),
        ),
        {
            "uri": b"/p?q=1",
            "secure": True,
            "headers": (
                (b"Cookie", b"a=1; sid=xyz"),
                (b"Authorization", b"Basic YWxpY2U6cHc="),
            ),
        },
        FWD + [(b"X-Sid", b"xyz|"), (b"X-User", b"alice"), (b"X-Line", b"HTTP/1.1 q=1 https")],
    ),
    (
        "client user of a malformed Authorization",
        (RewriteRule("a", requestHeaders=(("X-User", "<{var_client_user}>"),)),),
        {"headers": ((b"Authorization", b"Basic !!!"),)},
        FWD + [(b"X-User", b"<>")],
    ),
    (
        "CR and LF never reach a header",
        (RewriteRule("a", requestHeaders=(("X-Copy", "{http_req_X-In}"),)),),
        {"headers": ((b"X-In", b"a\rb\nc"),)},
        FWD + [(b"X-Copy", b"a b c")],
    ),
]


@pytest.mark.parametrize("label,rules,kwargs,expected", REQUEST_TABLE, ids=[r[0] for r in REQUEST_TABLE])
def test_request_rewrites(
    label: str,
    rules: tuple[RewriteRule, ...],
    kwargs: dict[str, Any],
    expected: list[tuple[bytes, bytes]],
) -> None:
    request = FakeRequest(**{"host": b"app.test", **kwargs})
    assert ruleSet(*rules).applyRequest(request, list(FWD)) == expected


def test_request_rewrite_without_request_rules_returns_fwd_itself() -> None:
    rs = ruleSet(RewriteRule("a", responseHeaders=(("Server", None),)))
    fwd = list(FWD)
    assert rs.applyRequest(FakeRequest(), fwd) is fwd


URL_TABLE: list[tuple[str, tuple[RewriteRule, ...], bytes, tuple[bytes | None, bool]]] = [
    (
        "no rule acts",
        (RewriteRule("a", conditions=(("var_uri_path", "^/x", False, False),), modifiedPath="/y"),),
        b"/a?b",
        (None, False),
    ),
    ("path only keeps the query", (RewriteRule("a", modifiedPath="/y"),), b"/a?b=1", (b"/y?b=1", False)),
    (
        "query only keeps the path",
        (RewriteRule("a", modifiedQueryString="c=2"),),
        b"/a?b=1",
        (b"/a?c=2", False),
    ),
    ("empty query removes it", (RewriteRule("a", modifiedQueryString=""),), b"/a?b=1", (b"/a", False)),
    ("a path gets its slash", (RewriteRule("a", modifiedPath="buy.aspx"),), b"/a", (b"/buy.aspx", False)),
    (
        "captured bytes a request line cannot carry are encoded, not %",
        (
            RewriteRule(
                "a",
                conditions=(("http_req_X-In", "(.*)", False, False),),
                modifiedPath="/p/{http_req_X-In_1}",
                modifiedQueryString="v={http_req_X-In_1}",
            ),
        ),
        b"/",
        (b"/p/a%20b%3Fc%23d%C3%A9%?v=a%20b?c%23d%C3%A9%", False),  # % kept: captures are still encoded,
    ),
    (
        "the last acting rule's path and its reroute win",
        (
            RewriteRule("a", modifiedPath="/first", reroute=True),
            RewriteRule("b", modifiedPath="/second"),
            RewriteRule("c", conditions=(("var_uri_path", "^/nope", False, False),), modifiedPath="/third"),
        ),
        b"/a",
        (b"/second", False),
    ),
]


@pytest.mark.parametrize("label,rules,uri,expected", URL_TABLE, ids=[r[0] for r in URL_TABLE])
def test_url_rewrites(
    label: str, rules: tuple[RewriteRule, ...], uri: bytes, expected: tuple[bytes | None, bool]
) -> None:
    request = FakeRequest(uri=uri, headers=((b"X-In", "a b?c#d\u00e9%".encode()),))
    assert ruleSet(*rules).rewriteUrl(request) == expected


RESPONSE = [
    (b"Server", b"demo/1.0"),
    (b"Content-Type", b"application/json"),
    (b"Set-Cookie", b"a=1"),
    (b"Set-Cookie", b"b=2"),
]

RESPONSE_TABLE: list[tuple[str, tuple[RewriteRule, ...], list[tuple[bytes, bytes]]]] = [
    ("remove", (RewriteRule("a", responseHeaders=(("server", None),)),), RESPONSE[1:]),
    (
        "set from a request variable",
        (RewriteRule("a", responseHeaders=(("X-Path", "{var_uri_path}"),)),),
        RESPONSE + [(b"X-Path", b"/p")],
    ),
    (
        "set from a response variable",
        (RewriteRule("a", responseHeaders=(("X-Type", "was {http_resp_Content-Type}"),)),),
        RESPONSE + [(b"X-Type", b"was application/json")],
    ),
    (
        "response condition",
        (
            RewriteRule(
                "a",
                conditions=(("http_resp_Content-Type", "^APPLICATION/JSON", True, False),),
                responseHeaders=(("X-Json", "yes"),),
            ),
            RewriteRule(
                "b",
                conditions=(("http_resp_Content-Type", "^text/", False, False),),
                responseHeaders=(("X-Text", "yes"),),
            ),
        ),
        RESPONSE + [(b"X-Json", b"yes")],
    ),
    (
        "repeated response headers replaced by one",
        (RewriteRule("a", responseHeaders=(("Set-Cookie", "c=3"),)),),
        RESPONSE[:2] + [(b"Set-Cookie", b"c=3")],
    ),
]


@pytest.mark.parametrize("label,rules,expected", RESPONSE_TABLE, ids=[r[0] for r in RESPONSE_TABLE])
def test_response_rewrites(
    label: str, rules: tuple[RewriteRule, ...], expected: list[tuple[bytes, bytes]]
) -> None:
    rs = ruleSet(*rules)
    request = FakeRequest(uri=b"/p?q")
    # the pairs form (what a WebSocket 101 carries) ...
    assert rs.applyResponseHeaders(request, list(RESPONSE)) == expected
    # ... and the twisted Headers form (what the proxy holds) agree
    headers = Headers()
    for name, value in RESPONSE:
        headers.addRawHeader(name, value)
    rs.applyResponse(request, headers)
    got = sorted((n.lower(), v) for n, vs in headers.getAllRawHeaders() for v in vs)
    assert got == sorted((n.lower(), v) for n, v in expected)


@pytest.mark.parametrize(
    "rule,message",
    [
        (
            RewriteRule("a", requestHeaders=(("X", "{var_nope}"),)),
            "unknown rewrite variable 'var_nope'",
        ),
        (
            RewriteRule("a", conditions=(("http_req_X", "(", False, False),), requestHeaders=(("X", "1"),)),
            "rewriteRuleSet rw rule a: missing ), unterminated subpattern at position 0",
        ),
        (RewriteRule("a", requestHeaders=(("Bad Name", "1"),)), "invalid header name 'Bad Name'"),
    ],
)
def test_rewrite_compile_errors(rule: RewriteRule, message: str) -> None:
    with pytest.raises(ValueError) as e:
        ruleSet(rule)
    assert str(e.value) == message


def test_rewrite_compiler_shares_one_compiled_set() -> None:
    config = GatewayConfig(
        path="x.ini",
        rewriteRuleSets={
            "Headers": RewriteRuleSet("Headers", (RewriteRule("a", requestHeaders=(("X", "1"),)),))
        },
    )
    rewriteFor = rewriteCompiler(config)
    assert rewriteFor("Headers") is rewriteFor("headers")


# ---------------------------------------------------------------------------
# Plugins: discovery and the interface
# ---------------------------------------------------------------------------

EXAMPLE_HEADER = "# agwtx/plugins/sourcenetwork.py"


def docsExample() -> str:
    """The complete example module of docs/plugins.rst, exactly as documented."""
    lines = (ROOT / "docs" / "plugins.rst").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == EXAMPLE_HEADER and lines[i - 2].strip() == ".. code-block:: python":
            block: list[str] = []
            for text in lines[i:]:
                if text and not text.startswith("    "):
                    break
                block.append(text)
            return textwrap.dedent("\n".join(block)).strip() + "\n"
    raise AssertionError("docs/plugins.rst has no example module")


BOOM_PLUGIN = """
from twisted.plugin import IPlugin
from zope.interface import implementer

from agwtx.interfaces import IRoutingPlugin, PluginRuleConfig


@implementer(IPlugin, IRoutingPlugin)
class Boom:
    name = "boom"

    def configure(self, options, section):
        return PluginRuleConfig()

    def route(self, request, candidates):
        if request.path.startswith("/boom"):
            raise RuntimeError("the plugin blew up")
        if request.path.startswith("/stray"):
            return object()
        return None


boom = Boom()
"""


RESOURCES_PLUGIN = """
from twisted.plugin import IPlugin
from twisted.web.resource import Resource
from twisted.web.static import File
from zope.interface import implementer

from agwtx.interfaces import IRoutingPlugin, PluginRuleConfig, checkOptionKeys


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"hello from a plain Resource, postpath " + b"/".join(request.postpath) + b"\\n"


@implementer(IPlugin, IRoutingPlugin)
class Resources:
    name = "resources"

    def configure(self, options, section):
        checkOptionKeys(options, required=("root",))
        return PluginRuleConfig(options=File(options["root"]))

    def route(self, request, candidates):
        if request.path.startswith("/static/"):
            return candidates.options  # a twisted.web.static.File of the root directory
        if request.path.startswith("/hello/"):
            return Hello()
        return None


resources = Resources()
"""


@pytest.fixture
def dropIn(tmp_path: Path) -> Iterator[Any]:
    """Install drop-in modules into agwtx.plugins for one test, then remove them."""
    added: list[str] = []
    names: list[str] = []

    def install(modules: Mapping[str, str]) -> None:
        directory = str(writeDropIn(tmp_path / f"dropin{len(added)}", modules))
        agwtx.plugins.__path__.append(directory)
        added.append(directory)
        names.extend(modules)

    yield install
    for directory in added:
        agwtx.plugins.__path__.remove(directory)
    for name in names:
        sys.modules.pop(f"agwtx.plugins.{name}", None)
    availablePlugins(refresh=True)


def test_shipped_plugins_are_found_sorted_and_verify() -> None:
    plugins = availablePlugins(refresh=True)
    assert list(plugins)[:3] == ["headerRoute", "ipFilter", "weightedSplit"]
    assert list(plugins) == sorted(plugins, key=str.lower)
    for plugin in plugins.values():
        assert verifyObject(IRoutingPlugin, plugin)


def test_discovery_happens_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import twisted.plugin

    scans: list[object] = []
    realGetPlugins = twisted.plugin.getPlugins

    def getPlugins(*args: Any) -> Any:
        scans.append(args)
        return realGetPlugins(*args)

    first = availablePlugins(refresh=True)
    monkeypatch.setattr(twisted.plugin, "getPlugins", getPlugins)
    assert availablePlugins() is first
    assert findPlugin("headerRoute") is first["headerRoute"]
    assert scans == []
    availablePlugins(refresh=True)
    assert len(scans) == 1


def test_plugin_from_a_drop_in_directory(dropIn: Any) -> None:
    dropIn({"sourcenetwork": docsExample()})
    plugins = availablePlugins(refresh=True)
    assert list(plugins) == ["headerRoute", "ipFilter", "sourceNetwork", "weightedSplit"]
    assert verifyObject(IRoutingPlugin, plugins["sourceNetwork"])
    assert findPlugin("SOURCENETWORK") is plugins["sourceNetwork"]


def test_duplicate_plugin_names_are_an_error(dropIn: Any) -> None:
    source = BOOM_PLUGIN.replace('name = "boom"', 'name = "headerroute"')
    dropIn(
        {
            "dupa": source,
            "dupb": source.replace("class Boom", "class Other").replace("Boom()", "Other()"),
        }
    )
    with pytest.raises(PluginDiscoveryError) as e:
        availablePlugins(refresh=True)
    assert str(e.value) == (
        "duplicate routing plugin name 'headerRoute': provided by "
        "agwtx.plugins.agw_headerroute.HeaderRoute and agwtx.plugins.dupa.Boom "
        "and agwtx.plugins.dupb.Other"
    )


def test_unknown_plugin_lists_the_available_ones() -> None:
    with pytest.raises(LookupError) as e:
        findPlugin("nope")
    assert str(e.value) == "unknown routing plugin 'nope'; available: headerRoute, ipFilter, weightedSplit"


def test_routing_request_is_read_only() -> None:
    view = routingRequest(
        FakeRequest(  # type: ignore[arg-type]
            host=b"Shop.Test:8443",
            uri=b"/a/%2e%2e/B%20c?x=1",
            method=b"POST",
            headers=((b"X-Tag", b"one"), (b"x-tag", b"two")),
            cookies={b"canary": b"1"},
            secure=True,
        )
    )
    assert view is not None
    assert (view.method, view.host, view.path, view.query, view.clientAddress, view.secure) == (
        "POST",
        "shop.test",
        "/B c",
        "x=1",
        "192.0.2.7",
        True,
    )
    assert view.headers["x-tag"] == ("one", "two")
    assert view.headers["X-TAG"] == ("one", "two")
    assert view.header("X-Tag") == "one"
    assert "x-tag" in view.headers and "x-none" not in view.headers
    assert set(view.headers) == {"host", "x-tag"}
    assert dict(view.cookies) == {"canary": "1"}
    with pytest.raises(AttributeError):
        view.path = "/admin"  # type: ignore[misc]
    with pytest.raises(TypeError):
        view.headers["x-tag"] = ("three",)  # type: ignore[index]


def test_routing_request_parses_cookies_when_twisted_has_not() -> None:
    request = FakeRequest(headers=((b"Cookie", b"a=1; AGWSplit=xyz"),))
    view = routingRequest(request)  # type: ignore[arg-type]
    assert view is not None and dict(view.cookies) == {"a": "1", "AGWSplit": "xyz"}


# ---------------------------------------------------------------------------
# Plugin config errors, as the user sees them
# ---------------------------------------------------------------------------

PLUGIN_INI = """\
[frontendPort:fp]
port = {port}
interface = 127.0.0.1

[httpListener:l1]
frontendPort = fp

[backendAddressPool:main]
backendAddresses = 127.0.0.1:9

[backendAddressPool:canaryPool]
backendAddresses = 127.0.0.1:9

[backendHttpSettings:s1]
port = 80

[redirectConfiguration:away]
targetUrl = https://example.com

[requestRoutingRule:r1]
ruleType = Plugin
httpListener = l1
backendAddressPool = main
backendHttpSettings = s1
{options}
"""


def pluginErrors(tmp_path: Path, options: str) -> list[str]:
    path = tmp_path / "gw.ini"
    path.write_text(PLUGIN_INI.format(port=8080, options=options.strip()))
    config = loadConfig(path)
    return [line.replace(str(path), "gw.ini") for line in checkPluginConfig(config)]


CANARY = """
plugin = headerRoute
plugin.header = X-Canary
plugin.match = ^1$
plugin.backendAddressPool = canaryPool
plugin.backendHttpSettings = s1
"""


def at(line: int) -> str:
    return f"gw.ini:{line}: [requestRoutingRule:r1] "


CONFIG_ERRORS = [
    (CANARY, []),
    (
        "plugin = headerRoot",
        [
            at(25)
            + "plugin: unknown routing plugin 'headerRoot'; available: headerRoute, ipFilter, weightedSplit"
        ],
    ),
    (
        CANARY + "plugin.colour = red",
        [
            at(30) + "plugin.colour: unknown option; expected one of: "
            "plugin.match, plugin.header, plugin.cookie, plugin.ignoreCase, "
            "plugin.backendAddressPool, plugin.backendHttpSettings, plugin.redirectConfiguration"
        ],
    ),
    (
        CANARY.replace("plugin.match = ^1$", "plugin.Match = ("),
        [
            at(27) + "plugin.Match: pattern '(' is not a valid regular "
            "expression: missing ), unterminated subpattern at position 0"
        ],
    ),
    (
        CANARY.replace("plugin.match = ^1$\n", ""),
        [at(20) + "plugin.match: required option is missing"],
    ),
    (
        CANARY.replace("plugin.header = X-Canary\n", ""),
        [at(20) + "plugin.header: expected plugin.header or plugin.cookie (or both)"],
    ),
    (
        CANARY.replace("X-Canary", "X Canary"),
        [at(26) + "plugin.header: expected a header name, got 'X Canary'"],
    ),
    (
        CANARY.replace("plugin.backendHttpSettings = s1\n", ""),
        [at(28) + "plugin.backendAddressPool: needs plugin.backendHttpSettings as well"],
    ),
    (
        CANARY + "plugin.redirectConfiguration = away",
        [
            at(30) + "plugin.redirectConfiguration: expected either "
            "plugin.backendAddressPool and plugin.backendHttpSettings "
            "or plugin.redirectConfiguration, not both"
        ],
    ),
    (
        CANARY.replace("= canaryPool", "= canaryPol").replace("= s1", "= s2"),
        [
            at(28) + "plugin.backendAddressPool: "
            "refers to backendAddressPool 'canaryPol', which is not defined",
            at(29) + "plugin.backendHttpSettings: refers to backendHttpSettings 's2', which is not defined",
        ],
    ),
    (
        "\n".join(
            [
                "plugin = headerRoute",
                "plugin.cookie = c",
                "plugin.match = x",
                "plugin.redirectConfiguration = gone",
            ]
        ),
        [
            at(28) + "plugin.redirectConfiguration: "
            "refers to redirectConfiguration 'gone', which is not defined"
        ],
    ),
    ("plugin = weightedSplit\nplugin.targets = main/s1:90, canaryPool/s1:10", []),
    ("plugin = ipFilter\nplugin.allow = 10.0.0.0/8, 2001:db8::/32\nplugin.deny = 10.6.0.0/16", []),
    (
        "plugin = ipFilter\nplugin.allow = 10.0.0.0/33",
        [
            at(26) + "plugin.allow: expected an IPv4 or IPv6 address range (CIDR, e.g. 10.0.0.0/8), "
            "got '10.0.0.0/33'"
        ],
    ),
    (
        "plugin = ipFilter\nplugin.deny = 2001:db8::1/32",
        [
            at(26)
            + "plugin.deny: expected an address range in CIDR form with no host bits set, got '2001:db8::1/32'"
        ],
    ),
    (
        "plugin = ipFilter\nplugin.deny = 10.0.0.0/8\nplugin.status = 401",
        [at(27) + "plugin.status: expected 403 or 404, got '401'"],
    ),
    ("plugin = ipFilter", [at(20) + "plugin.allow: expected plugin.allow or plugin.deny (or both)"]),
    (
        "plugin = weightedSplit\nplugin.targets = main/s1:90, canaryPool:10",
        [
            at(26) + "plugin.targets: expected POOL/SETTINGS:WEIGHT items "
            "separated by commas, got 'canaryPool:10'"
        ],
    ),
    (
        "plugin = weightedSplit\nplugin.targets = main/s1:0, canaryPool/s1:0",
        [at(26) + "plugin.targets: expected at least one target with a weight above 0"],
    ),
    (
        "plugin = weightedSplit\nplugin.targets = main/s1:1, MAIN/S1:2",
        [at(26) + "plugin.targets: MAIN/S1 is listed twice"],
    ),
    (
        "plugin = weightedSplit\nplugin.targets = main/s1:10001",
        [at(26) + "plugin.targets: expected a weight of 0..10000, got 10001 in 'main/s1:10001'"],
    ),
    (
        "plugin = weightedSplit\nplugin.targets = main/s1:1, nope/s1:1",
        [at(26) + "plugin.targets: refers to backendAddressPool 'nope', which is not defined"],
    ),
    (
        "plugin = weightedSplit\nplugin.targets = main/s1:1\nplugin.sticky = maybe",
        [at(27) + "plugin.sticky: expected true or false, got 'maybe'"],
    ),
    (
        "plugin = weightedSplit\nplugin.targets = main/s1:1\nplugin.cookieName = a;b",
        [at(27) + "plugin.cookieName: expected a cookie name, got 'a;b'"],
    ),
    (
        "plugin = weightedSplit",
        [at(20) + "plugin.targets: required option is missing"],
    ),
]


@pytest.mark.parametrize("options,expected", CONFIG_ERRORS)
def test_plugin_config_errors(tmp_path: Path, options: str, expected: list[str]) -> None:
    assert pluginErrors(tmp_path, options) == expected


def test_plugin_config_errors_stop_the_routing_table_too(tmp_path: Path) -> None:
    path = tmp_path / "gw.ini"
    path.write_text(PLUGIN_INI.format(port=8080, options="plugin = nothing"))
    with pytest.raises(ConfigError) as e:
        buildRouters(loadConfig(path), {})
    message = "unknown routing plugin 'nothing'; available: headerRoute, ipFilter, weightedSplit"
    assert e.value.errors == [f"{path}:25: [requestRoutingRule:r1] plugin: {message}"]


def test_config_without_plugin_rules_does_not_discover(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(refresh: bool = False) -> Any:
        raise AssertionError("discovered")

    monkeypatch.setattr(pluginModule, "availablePlugins", fail)
    assert checkPluginConfig(routingConfig()) == []


# ---------------------------------------------------------------------------
# Plugin targets: decisions, fallback, failures
# ---------------------------------------------------------------------------


def pluginConfig(
    plugin: str,
    options: tuple[tuple[str, str], ...],
    fallback: bool = True,
    secret: bytes | None = None,
) -> GatewayConfig:
    from agwtx.config.model import GatewaySettings

    return GatewayConfig(
        path="plugin.ini",
        gateway=GatewaySettings(affinitySecrets=(secret,) if secret else ()),
        frontendPorts={"fp": FrontendPort("fp", "tcp:80", 80)},
        httpListeners={"l1": HttpListener("l1", "fp")},
        backendAddressPools={p: pool(p) for p in ("main", "canary", "a", "b")},
        backendHttpSettings={"s": BackendHttpSettings("s")},
        redirectConfigurations={"away": RedirectConfiguration("away", targetUrl="https://away.example")},
        requestRoutingRules={
            "r": RequestRoutingRule(
                "r",
                "l1",
                "Plugin",
                backendAddressPool="main" if fallback else None,
                backendHttpSettings="s" if fallback else None,
                plugin=plugin,
                pluginOptions=options,
            )
        },
    )


def pluginTargetFor(config: GatewayConfig) -> PluginTarget:
    target = buildRouters(config, {})["fp"].routes[0].target
    assert isinstance(target, PluginTarget)
    return target


def chosenPool(target: PluginTarget, request: FakeRequest) -> str:
    chosen = target.resolve(request)  # type: ignore[arg-type]
    if chosen is None:
        return "-"
    if isinstance(chosen, BackendTarget):
        return chosen.state.name
    return (
        f"redirect:{chosen.target.config.name}"
        if hasattr(chosen, "target")
        else f"redirect:{chosen.config.name}"
    )


CANARY_OPTIONS = (
    ("header", "X-Canary"),
    ("cookie", "canary"),
    ("match", "^1$"),
    ("backendAddressPool", "canary"),
    ("backendHttpSettings", "s"),
)


@pytest.mark.parametrize(
    "headers,cookies,expected",
    [
        ((), {}, "main"),
        (((b"X-Canary", b"1"),), {}, "canary"),
        (((b"x-canary", b"1"),), {}, "canary"),
        (((b"X-Canary", b"0"), (b"X-Canary", b"1")), {}, "canary"),  # any value
        (((b"X-Canary", b"10"),), {}, "main"),
        ((), {b"canary": b"1"}, "canary"),
        ((), {b"Canary": b"1"}, "main"),  # cookie names are case-sensitive
        (((b"X-Canary", b"0"),), {b"canary": b"1"}, "canary"),
    ],
)
def test_header_route(headers: Any, cookies: Any, expected: str) -> None:
    target = pluginTargetFor(pluginConfig("headerRoute", CANARY_OPTIONS))
    assert chosenPool(target, FakeRequest(headers=headers, cookies=cookies)) == expected


def test_header_route_to_a_redirect_and_no_fallback_is_404() -> None:
    options = (
        ("header", "X-Go"),
        ("match", "away"),
        ("ignoreCase", "yes"),
        ("redirectConfiguration", "away"),
    )
    target = pluginTargetFor(pluginConfig("headerRoute", options, fallback=False))
    assert chosenPool(target, FakeRequest(headers=((b"X-Go", b"AWAY"),))) == "redirect:away"
    request = FakeRequest()
    target.render(request)  # type: ignore[arg-type]
    assert (request.code, b"".join(request.written)) == (
        404,
        b"404 Not Found: the routing plugin chose no target\n",
    )


def test_weighted_split_distribution_and_stickiness(monkeypatch: pytest.MonkeyPatch) -> None:
    options = (("targets", "a/s:90, b/s:10"),)
    target = pluginTargetFor(pluginConfig("weightedSplit", options, secret=b"0123456789abcdef"))
    monkeypatch.setattr(findPlugin("weightedSplit"), "random", random.Random(7))
    counts = {"a": 0, "b": 0}
    cookies: dict[str, bytes] = {}
    for _ in range(2000):
        request = FakeRequest()
        pool = chosenPool(target, request)
        counts[pool] += 1
        chosen = request.agwPluginChoice  # type: ignore[attr-defined]
        headers = chosen.rewrite.applyResponseHeaders(request, [])
        ((name, cookie),) = headers
        assert (
            name == b"Set-Cookie"
            and cookie.startswith(b"AGWSplit=")
            and cookie.endswith(b"; Path=/; HttpOnly")
        )
        cookies[pool] = cookie.split(b";")[0].split(b"=", 1)[1]
    assert 1700 < counts["a"] < 1900, counts
    # a client with a cookie stays where it is, and is not re-cookied
    for pool, value in cookies.items():
        for _ in range(20):
            request = FakeRequest(cookies={b"AGWSplit": value})
            assert chosenPool(target, request) == pool
            assert request.agwPluginChoice.rewrite is None  # type: ignore[attr-defined]
    # a forged or foreign cookie is ignored: split again, cookie replaced
    other = AffinityCodec(b"another secret!!").encode("weightedSplit:r", "b/s")
    request = FakeRequest(cookies={b"AGWSplit": other})
    chosenPool(target, request)
    assert request.agwPluginChoice.rewrite is not None  # type: ignore[attr-defined]


def test_weighted_split_zero_weight_keeps_pinned_clients() -> None:
    secret = b"0123456789abcdef"
    value = AffinityCodec(secret).encode("weightedSplit:r", "b/s")
    target = pluginTargetFor(pluginConfig("weightedSplit", (("targets", "a/s:1, b/s:0"),), secret=secret))
    assert chosenPool(target, FakeRequest(cookies={b"AGWSplit": value})) == "b"
    assert {chosenPool(target, FakeRequest()) for _ in range(50)} == {"a"}


def test_weighted_split_not_sticky_sets_no_cookie() -> None:
    target = pluginTargetFor(pluginConfig("weightedSplit", (("targets", "a/s:1"), ("sticky", "false"))))
    request = FakeRequest()
    assert chosenPool(target, request) == "a"
    assert request.agwPluginChoice.rewrite is None  # type: ignore[attr-defined]


def test_plugin_decision_headers_go_with_the_rules_rewrite() -> None:
    config = pluginConfig("weightedSplit", (("targets", "a/s:1"),))
    rs = RewriteRuleSet("rw", (RewriteRule("x", responseHeaders=(("Server", None),)),))
    rule = dataclasses.replace(config.requestRoutingRules["r"], rewriteRuleSet="rw")
    config = dataclasses.replace(config, rewriteRuleSets={"rw": rs}, requestRoutingRules={"r": rule})
    target = buildRouters(config, {}, rewriteFor=rewriteCompiler(config))["fp"].routes[0].target
    request = FakeRequest()
    chosen = target.resolve(request)
    headers = chosen.rewrite.applyResponseHeaders(request, [(b"Server", b"x"), (b"A", b"1")])
    # the rule's rewrite removed Server; the plugin's Decision added its sticky cookie
    assert [name for name, _ in headers] == [b"A", b"Set-Cookie"]
    assert headers[1][1].startswith(b"AGWSplit=")
    # the shared target itself is untouched: the cookie belongs to this request only
    plain = target.candidates.backend("a", "s")
    assert plain is not chosen and plain.rewrite.applyResponseHeaders(request, [(b"Server", b"x")]) == []


class _Raises:
    name = "raises"

    def configure(self, options: Mapping[str, str], section: str) -> PluginRuleConfig:
        return PluginRuleConfig()

    def route(self, request: RoutingRequest, candidates: Candidates) -> Any:
        if request.path == "/stray":
            return object()
        if request.path == "/decision":
            return Decision(None, ((b"X-Why", b"fallback\r\nInjected: 1"),))
        raise RuntimeError("kaboom")


def test_plugin_failure_is_502_and_logged() -> None:
    candidates = Candidates(rule="r", options=None, fallback=None, codec=AffinityCodec())
    target = PluginTarget("r", _Raises(), candidates)  # type: ignore[arg-type]
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    try:
        for path in (b"/boom", b"/stray"):
            request = FakeRequest(uri=path)
            target.render(request)  # type: ignore[arg-type]
            assert request.code == 502
            assert b"".join(request.written) == b"502 Bad Gateway: the routing plugin failed\n"
    finally:
        globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]
    failures = [e for e in events if e.get("log_namespace") == "agw.plugin"]
    assert failures[0]["log_failure"].value.args == ("kaboom",)
    assert (failures[0]["plugin"], failures[0]["rule"]) == ("raises", "r")
    assert "not one of its targets" in failures[1]["log_format"]


def test_plugin_decision_headers_are_sanitised() -> None:
    fallback = RedirectTarget(
        rule="r", config=RedirectConfiguration("x", "Found", targetUrl="https://x.example")
    )
    candidates = Candidates(rule="r", options=None, fallback=fallback, codec=AffinityCodec())
    target = PluginTarget("r", _Raises(), candidates)  # type: ignore[arg-type]
    request = FakeRequest(uri=b"/decision")
    target.render(request)  # type: ignore[arg-type]
    assert request.code == 302
    assert request.responseHeaders.getRawHeaders(b"x-why") == [b"fallback  Injected: 1"]


def test_plugin_undecodable_path_is_400_without_asking() -> None:
    candidates = Candidates(rule="r", options=None, codec=AffinityCodec())
    target = PluginTarget("r", _Raises(), candidates)  # type: ignore[arg-type]
    request = FakeRequest(uri=b"/%ff")
    target.render(request)  # type: ignore[arg-type]
    assert request.code == 400


def test_plugin_runs_once_per_request() -> None:
    calls: list[str] = []

    class Counting(_Raises):
        def route(self, request: RoutingRequest, candidates: Candidates) -> Any:
            calls.append(request.path)
            return None

    fallback = BackendTarget(
        rule="r",
        state=SimpleNamespace(name="main"),  # type: ignore[arg-type]
        settings=BackendHttpSettings("s"),
        scope="main/s",
    )
    target = PluginTarget("r", Counting(), Candidates(rule="r", options=None, fallback=fallback))  # type: ignore[arg-type]
    request = FakeRequest(uri=b"/up")
    assert target.resolve(request) is fallback  # type: ignore[arg-type]
    assert target.resolve(request) is fallback  # type: ignore[arg-type]
    assert calls == ["/up"]


def test_streamed_uploads_resolve_plugin_and_path_map_targets_early(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GatewaySite.startStreaming asks the rule's target for the concrete one, headers in hand."""
    import agwtx.http.site

    started: list[str] = []

    def startStreaming(ctx: Any, request: Any, target: Any, length: int | None) -> bool:
        started.append(target.state.name)
        return True

    monkeypatch.setattr(agwtx.http.site, "startStreaming", startStreaming)  # the proxy's, as web calls it
    ctx: Any = SimpleNamespace()
    site = GatewaySite(ctx, buildRouters(pluginConfig("headerRoute", CANARY_OPTIONS), {})["fp"], 80)
    canary = FakeRequest(uri=b"/up", method=b"POST", headers=((b"X-Canary", b"1"),))
    assert site.startStreaming(canary, 10)  # type: ignore[arg-type]
    assert site.startStreaming(FakeRequest(uri=b"/up", method=b"POST"), 10)  # type: ignore[arg-type]
    # a path map the same way
    pathSite = GatewaySite(ctx, buildRouters(routingConfig(), {})["fp1"], 80)
    assert pathSite.startStreaming(FakeRequest(uri=b"/images/up", method=b"POST"), None)  # type: ignore[arg-type]
    assert started == ["canary", "main", "images"]
    # a redirect cannot take a body early: the request is spooled and answered as usual
    assert not pathSite.startStreaming(FakeRequest(uri=b"/old/x", method=b"POST"), 10)  # type: ignore[arg-type]


def test_plugin_config_error_text() -> None:
    e = PluginConfigError("match", "expected a pattern")
    assert (e.key, e.message, str(e)) == (
        "match",
        "expected a pattern",
        "plugin.match: expected a pattern",
    )


# ---------------------------------------------------------------------------
# End to end: the real gateway, two demo backends
# ---------------------------------------------------------------------------


GATEWAY_INI = """\
[frontendPort:main]
port = {p1}
interface = 127.0.0.1

[frontendPort:multi]
port = {p2}
interface = 127.0.0.1

[httpListener:basic]
frontendPort = main

[httpListener:shop]
frontendPort = main
hostNames = shop.test

[httpListener:canary]
frontendPort = main
hostNames = canary.test

[httpListener:office]
frontendPort = main
hostNames = office.test

[httpListener:public]
frontendPort = main
hostNames = public.test

[httpListener:boom]
frontendPort = main
hostNames = boom.test

[httpListener:res]
frontendPort = main
hostNames = res.test

[httpListener:split]
frontendPort = main
hostNames = split.test

[httpListener:siteA]
frontendPort = multi
hostNames = a.test

[httpListener:siteB]
frontendPort = multi
hostNames = *.b.test

[backendAddressPool:A]
backendAddresses = 127.0.0.1:{a}

[backendAddressPool:B]
backendAddresses = 127.0.0.1:{b}

[backendHttpSettings:s]
port = 80

[urlPathMap:shopMap]
defaultBackendAddressPool = A
defaultBackendHttpSettings = s
pathRule.images = /images/* -> B, s

[rewriteRuleSet:rw]
rule.client.requestHeader.X-Client-Ip = {{var_client_ip}}
rule.client.requestHeader.X-Original-Uri = {{var_request_uri}}
rule.hide.responseHeader.X-Demo-Backend =
rule.debug.condition = {{http_req_X-Debug}} ~ ^1$
rule.debug.responseHeader.X-Debug-Path = on:{{var_uri_path}}
rule.json.condition = {{http_resp_Content-Type}} ~* ^application/json
rule.json.responseHeader.X-Json = yes

[requestRoutingRule:rBasic]
ruleType = Basic
priority = 500
httpListener = basic
backendAddressPool = A
backendHttpSettings = s

[requestRoutingRule:rShop]
ruleType = PathBasedRouting
priority = 100
httpListener = shop
urlPathMap = shopMap
rewriteRuleSet = rw

[requestRoutingRule:rCanary]
ruleType = Plugin
priority = 110
httpListener = canary
plugin = headerRoute
plugin.header = X-Canary
plugin.match = ^1$
plugin.backendAddressPool = B
plugin.backendHttpSettings = s
backendAddressPool = A
backendHttpSettings = s

[requestRoutingRule:rOffice]
ruleType = Plugin
priority = 120
httpListener = office
plugin = sourceNetwork
plugin.networks = 127.0.0.0/8
plugin.backendAddressPool = B
plugin.backendHttpSettings = s
backendAddressPool = A
backendHttpSettings = s

[requestRoutingRule:rPublic]
ruleType = Plugin
priority = 130
httpListener = public
plugin = sourceNetwork
plugin.networks = 10.0.0.0/8
plugin.backendAddressPool = B
plugin.backendHttpSettings = s
backendAddressPool = A
backendHttpSettings = s

[requestRoutingRule:rBoom]
ruleType = Plugin
priority = 140
httpListener = boom
plugin = boom
backendAddressPool = A
backendHttpSettings = s

[requestRoutingRule:rRes]
ruleType = Plugin
priority = 145
httpListener = res
plugin = resources
plugin.root = {static}
backendAddressPool = A
backendHttpSettings = s

[requestRoutingRule:rSplit]
ruleType = Plugin
priority = 150
httpListener = split
plugin = weightedSplit
plugin.targets = A/s:0, B/s:100

[requestRoutingRule:rA]
ruleType = Basic
priority = 200
httpListener = siteA
backendAddressPool = A
backendHttpSettings = s

[requestRoutingRule:rB]
ruleType = Basic
priority = 210
httpListener = siteB
backendAddressPool = B
backendHttpSettings = s
"""


def startGatewayWith(tmp: Path, ini: str, port: int, env: Mapping[str, str]) -> Proc:
    """Like L{tests.support.startGateway}, with extra environment (PYTHONPATH for drop-ins)."""
    cfg = tmp / f"gw-{port}.ini"
    cfg.write_text(ini)
    proc = Proc(
        [TWISTD, "-n", "--pidfile=", "agw", "--config", str(cfg)],
        tmp / f"gw-{port}.log",
        env=dict(env),
    )
    try:
        waitForPort(port, proc.proc)
    except Exception:
        proc.stop()
        raise RuntimeError("gateway did not start:\n" + proc.output()) from None
    return proc


class Gateway:
    def __init__(self, proc: Proc, p1: int, p2: int) -> None:
        self.proc = proc
        self.p1 = p1
        self.p2 = p2

    def request(
        self,
        host: str,
        path: str = "/",
        port: int | None = None,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, list[str]], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port or self.p1, timeout=20)
        conn.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        out: dict[str, list[str]] = {}
        for name, value in resp.getheaders():
            out.setdefault(name.lower(), []).append(value)
        return resp.status, out, data


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("routing")
    dropins = tmp / "dropins"
    writeDropIn(
        dropins, {"sourcenetwork": docsExample(), "boomplugin": BOOM_PLUGIN, "resources": RESOURCES_PLUGIN}
    )
    static = tmp / "www"
    (static / "static" / "sub").mkdir(parents=True)
    (static / "static" / "sub" / "page.html").write_text("<p>maintenance</p>\n")
    a, pa = startBackend(tmp, "A")
    b, pb = startBackend(tmp, "B")
    p1, p2 = freePort(), freePort()
    gw = None
    try:
        gw = startGatewayWith(
            tmp,
            GATEWAY_INI.format(p1=p1, p2=p2, a=pa, b=pb, static=static),
            p1,
            {"PYTHONPATH": str(dropins)},
        )
        waitForPort(p2, gw.proc)
        yield Gateway(gw, p1, p2)
    finally:
        if gw is not None:
            gw.stop()
        a.stop()
        b.stop()


def backendOf(body: bytes) -> str:
    if body.startswith(b"{"):
        return str(json.loads(body)["backend"])
    assert body.startswith(b"Hello from agw demo backend "), body
    return body.decode().rsplit(" ", 1)[1].strip()


E2E_TABLE = [
    # host, port (1 main, 2 multi), path, headers, expected backend or status
    ("anything.test", 1, "/", {}, "A"),
    ("shop.test", 1, "/", {}, "A"),
    ("shop.test", 1, "/images/a.png", {}, "B"),
    ("SHOP.test:80", 1, "/IMAGES/a.png", {}, "B"),
    ("shop.test", 1, "/other/../images/a.png", {}, "B"),
    ("shop.test", 1, "/images/%2e%2e/x", {}, "A"),
    ("shop.test", 1, "/images", {}, "A"),
    ("canary.test", 1, "/", {}, "A"),
    ("canary.test", 1, "/", {"X-Canary": "1"}, "B"),
    ("canary.test", 1, "/", {"X-Canary": "2"}, "A"),
    ("office.test", 1, "/", {}, "B"),  # the documented example plugin: 127.0.0.1 is in 127/8
    ("public.test", 1, "/", {}, "A"),  # ...and not in 10/8: fallback
    ("split.test", 1, "/", {}, "B"),
    ("a.test", 2, "/", {}, "A"),
    ("x.b.test", 2, "/", {}, "B"),
    ("b.test", 2, "/", {}, 404),  # no basic listener on this port
    ("nobody.test", 2, "/", {}, 404),
]


@pytest.mark.parametrize("host,port,path,headers,expected", E2E_TABLE)
def test_gateway_routes(
    gateway: Gateway, host: str, port: int, path: str, headers: dict[str, str], expected: Any
) -> None:
    status, _, body = gateway.request(
        host, path, port=gateway.p1 if port == 1 else gateway.p2, headers=headers
    )
    if isinstance(expected, int):
        assert status == expected
        if expected == 404:
            assert body == b"404 Not Found: no listener on this port serves that host name\n"
    else:
        assert status == 200, body
        assert backendOf(body) == expected


def test_gateway_rewrites(gateway: Gateway) -> None:
    status, headers, body = gateway.request("shop.test", "/headers?x=1", headers={"X-Client-Ip": "6.6.6.6"})
    assert status == 200
    doc = json.loads(body)
    sent = [(k.lower(), v) for k, v in doc["headers"]]
    assert (
        "x-client-ip",
        "127.0.0.1",
    ) in sent  # set from {var_client_ip}, the client's own replaced
    assert ("x-client-ip", "6.6.6.6") not in sent
    assert ("x-original-uri", "/headers?x=1") in sent
    assert "x-demo-backend" not in headers  # response header removed
    assert headers["x-json"] == ["yes"]  # response condition on Content-Type
    assert "x-debug-path" not in headers
    status, headers, body = gateway.request("shop.test", "/images/x", headers={"X-Debug": "1"})
    assert backendOf(body) == "B"  # the rewrite set applies to every path rule's target
    assert headers["x-debug-path"] == ["on:/images/x"]
    assert "x-json" not in headers and "x-demo-backend" not in headers
    # rules without the rewrite set are untouched
    _, headers, _ = gateway.request("anything.test", "/")
    assert headers["x-demo-backend"] == ["A"]


def test_gateway_weighted_split_cookie(gateway: Gateway) -> None:
    _, headers, _ = gateway.request("split.test", "/")
    (cookie,) = headers["set-cookie"]
    assert cookie.startswith("AGWSplit=") and cookie.endswith("; Path=/; HttpOnly")
    value = cookie.split(";")[0]
    _, again, body = gateway.request("split.test", "/", headers={"Cookie": value})
    assert backendOf(body) == "B" and "set-cookie" not in again


def test_gateway_plugin_failure_is_502_and_gateway_lives_on(gateway: Gateway) -> None:
    status, _, body = gateway.request("boom.test", "/boom")
    assert (status, body) == (502, b"502 Bad Gateway: the routing plugin failed\n")
    status, _, body = gateway.request("boom.test", "/stray")
    assert status == 502
    status, _, body = gateway.request("boom.test", "/fine")
    assert status == 200 and backendOf(body) == "A"
    assert gateway.request("anything.test", "/")[0] == 200
    out = gateway.proc.output()
    assert "routing plugin boom failed on rule rBoom" in out
    assert "RuntimeError: the plugin blew up" in out
    assert gateway.proc.proc.poll() is None


def test_gateway_serves_any_twisted_web_resource_a_plugin_returns(gateway: Gateway) -> None:
    """
    A routing plugin may answer with any IResource: a twisted.web.static.File
    (traversed from the request's path, as twisted.web does) and a plain
    Resource subclass are both served through the real gateway; None still
    means the rule's fallback.
    """
    status, headers, body = gateway.request("res.test", "/static/sub/page.html")
    assert (status, body) == (200, b"<p>maintenance</p>\n")
    assert headers["content-type"] == ["text/html"]
    assert gateway.request("res.test", "/static/sub/missing.html")[0] == 404
    status, headers, body = gateway.request("res.test", "/hello/a/b")
    assert (status, body) == (200, b"hello from a plain Resource, postpath hello/a/b\n")
    assert headers["content-type"] == ["text/plain"]
    status, _, body = gateway.request("res.test", "/other")
    assert status == 200 and backendOf(body) == "A"
    assert gateway.proc.proc.poll() is None


def test_gateway_streamed_upload_through_a_plugin(gateway: Gateway) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, streamed as it arrives
    status, headers, echoed = gateway.request(
        "canary.test", "/echo", method="POST", headers={"X-Canary": "1"}, body=body
    )
    assert status == 200 and echoed == body and headers["x-demo-backend"] == ["B"]
    status, headers, echoed = gateway.request("canary.test", "/echo", method="POST", body=body[:1000])
    assert status == 200 and echoed == body[:1000] and headers["x-demo-backend"] == ["A"]


def test_client_certificate_headers_never_come_from_the_client() -> None:
    """A header a rule fills from a client-certificate variable is removed even when the rule does not act."""
    rs = ruleSet(
        RewriteRule(
            "cert",
            conditions=(("var_uri_path", "^/never$", False, False),),
            requestHeaders=(("X-Client-Cert-Fingerprint", "{var_client_certificate_fingerprint}"),),
        ),
        RewriteRule("other", requestHeaders=(("X-Other", "{var_host}"),)),
    )
    fwd = FWD + [(b"x-client-cert-fingerprint", b"forged"), (b"X-Kept", b"1")]
    out = rs.applyRequest(FakeRequest(host=b"app.test"), fwd)
    assert out == FWD + [(b"X-Kept", b"1"), (b"X-Other", b"app.test")]

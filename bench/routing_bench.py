#!/usr/bin/env python3
"""Routing decision microbenchmark (not a test): what choosing a target costs.

Usage::

    .venv/bin/python bench/routing_bench.py            # default: 5 repeats
    .venv/bin/python bench/routing_bench.py --repeat 9 --json /tmp/routing.json

Every row times the gateway's own decision functions on fake request
objects, in process, without sockets: ``GatewaySite.resolve`` (Host header
-> listener -> rule) and then, where the rule has one, the target's own
``resolve`` (``PathMapTarget.resolve``: normalise the path, first matching
path rule; ``PluginTarget.resolve``: build the plugin's request view, ask the
plugin).  That is all routing adds to a request before proxying starts.

Rows:

``basic``             one Basic rule on a basic listener (the baseline)
``multisite-400``     400 multi-site listeners with one rule each on one
                      port (half exact names, half wildcards), plus a basic
                      listener; requests for the first (site0), a middle
                      (site200, the 101st of the 200 exact names) and the
                      last exact name (site398), a wildcard match near the
                      end and an unknown host (falls through all 400 to the
                      basic one)
``pathmap-100``       one PathBasedRouting rule with 100 path rules
                      (``/svcN/*``); paths for the first, the last, and no
                      rule (the default), plus a ``..`` traversal and
                      percent-encoding
``plugin-headerRoute``  a Plugin rule with the shipped ``headerRoute``
``policy-ALGORITHM``  a Basic rule with a ``loadDistributionPolicy`` over two
                      pools of 5 members each (weights 3 and 1): the rule,
                      then the policy's member choice (``LeastConnections``:
                      the least loaded of 10 members; ``IpHash``: 10
                      rendezvous hashes of the client address)
``rewrite``           applying a 3-rule rewrite set to the request headers
``url-rewrite``       the whole decision (``GatewaySite.decide``) of the
                      100-rule path map whose rewrite set has a rule with a
                      condition capturing two groups of the path, a
                      ``modifiedPath`` and ``modifiedQueryString`` made of
                      them, and ``reroute``: the path map is looked up again
                      with the new path; and the same set when its condition
                      does not hold

For each row it prints microseconds per decision (best of ``--repeat``
runs, each long enough to take ~0.2 s) and the cost added over ``basic``
(for ``rewrite``, which comes on top of any routing, its whole cost); the
goal is less than 50 us added for every row (exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet.address import IPv4Address
from twisted.web.http_headers import Headers

from agwtx.config.model import (
    BackendAddress,
    BackendAddressPool,
    BackendHttpSettings,
    FrontendPort,
    GatewayConfig,
    HttpListener,
    LoadDistributionPolicy,
    LoadDistributionTarget,
    PathRule,
    RequestRoutingRule,
    RewriteRule,
    RewriteRuleSet,
    UrlPathMap,
)
from agwtx.routing.rewrite import compileRewriteSet, rewriteCompiler
from agwtx.routing.router import buildRouters
from agwtx.http.site import GatewaySite

GOAL_US = 50.0


class FakeRequest:
    """The attributes routing reads; agwListener/agwRule are written."""

    def __init__(self, host: bytes, uri: bytes = b"/", headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.requestHeaders = Headers({b"host": [host]})
        for name, value in headers:
            self.requestHeaders.addRawHeader(name, value)
        self.uri = uri
        self.path = uri.split(b"?", 1)[0]
        self.method = b"GET"
        self.clientproto = b"HTTP/1.1"
        self.clientIP = "192.0.2.10"
        self.received_cookies: dict[bytes, bytes] = {}
        self.agwListener: str | None = None
        self.agwRule: str | None = None
        self.agwDecision: Any = None
        self.agwUri: bytes | None = None
        self.client = IPv4Address("TCP", self.clientIP, 40000)

    def getClientAddress(self) -> IPv4Address:
        return self.client  # as twisted.web's Request does

    def isSecure(self) -> bool:
        return False


def _pool(name: str) -> BackendAddressPool:
    return BackendAddressPool(name, (BackendAddress("127.0.0.1", 9),))


def _config(listeners: list[HttpListener], rules: list[RequestRoutingRule], **extra: Any) -> GatewayConfig:
    pools = {r.backendAddressPool for r in rules if r.backendAddressPool} | extra.pop("pools", set())
    return GatewayConfig(
        path="bench.ini",
        frontendPorts={"fp": FrontendPort("fp", "tcp:80", 80)},
        httpListeners={lst.name: lst for lst in listeners},
        backendAddressPools={p: _pool(p) for p in pools},
        backendHttpSettings={"s": BackendHttpSettings("s")},
        requestRoutingRules={r.name: r for r in rules},
        **extra,
    )


def _site(config: GatewayConfig) -> GatewaySite:
    router = buildRouters(config, {}, rewriteFor=rewriteCompiler(config))["fp"]
    return GatewaySite(SimpleNamespace(), router, 80)  # type: ignore[arg-type]


def basicSite() -> GatewaySite:
    return _site(
        _config(
            [HttpListener("l", "fp")],
            [RequestRoutingRule("r", "l", "Basic", 100, "p", "s")],
        )
    )


def multiSite(n: int = 400) -> GatewaySite:
    listeners = [HttpListener("basic", "fp")]
    rules = [RequestRoutingRule("rbasic", "basic", "Basic", 20000, "p", "s")]
    for i in range(n):
        host = f"site{i}.example.com" if i % 2 == 0 else f"*.wild{i}.example.net"
        listeners.append(HttpListener(f"l{i}", "fp", hostNames=(host,)))
        rules.append(RequestRoutingRule(f"r{i}", f"l{i}", "Basic", 100 + i, f"p{i % 10}", "s"))
    return _site(_config(listeners, rules))


def pathMapSite(n: int = 100, rewrite: RewriteRuleSet | None = None) -> GatewaySite:
    pm = UrlPathMap(
        "pm",
        defaultBackendAddressPool="p",
        defaultBackendHttpSettings="s",
        pathRules=tuple(PathRule(f"pr{i}", (f"/svc{i}/*",), f"p{i % 10}", "s") for i in range(n)),
    )
    return _site(
        _config(
            [HttpListener("l", "fp")],
            [
                RequestRoutingRule(
                    "r",
                    "l",
                    "PathBasedRouting",
                    100,
                    urlPathMap="pm",
                    rewriteRuleSet=rewrite.name if rewrite else None,
                )
            ],
            urlPathMaps={"pm": pm},
            pools={"p"} | {f"p{i}" for i in range(10)},
            rewriteRuleSets={rewrite.name: rewrite} if rewrite else {},
        )
    )


def urlRewriteSite() -> GatewaySite:
    """L{pathMapSite} with a rewrite set: path and query from two captures of the path, and reroute."""
    rewrite = RewriteRuleSet(
        "rw",
        (
            RewriteRule(
                "shop",
                conditions=(("var_uri_path", r"^/shop/([0-9]+)/([^/]+)$", True, False),),
                modifiedPath="/svc{var_uri_path_1}/buy",
                modifiedQueryString="product={var_uri_path_2}",
                reroute=True,
            ),
        ),
    )
    return pathMapSite(rewrite=rewrite)


def pluginSite() -> GatewaySite:
    options = (
        ("header", "X-Canary"),
        ("match", "^1$"),
        ("backendAddressPool", "canary"),
        ("backendHttpSettings", "s"),
    )
    rule = RequestRoutingRule("r", "l", "Plugin", 100, "p", "s", plugin="headerRoute", pluginOptions=options)
    return _site(_config([HttpListener("l", "fp")], [rule], pools={"canary"}))


def policySite(algorithm: str, members: int = 5) -> GatewaySite:
    policy = LoadDistributionPolicy(
        "ld",
        algorithm,  # type: ignore[arg-type]
        (LoadDistributionTarget("a", "pa", 3), LoadDistributionTarget("b", "pb", 1)),
    )
    rule = RequestRoutingRule("r", "l", "Basic", 100, backendHttpSettings="s", loadDistributionPolicy="ld")
    config = _config([HttpListener("l", "fp")], [rule], loadDistributionPolicies={"ld": policy})
    pools = {
        name: BackendAddressPool(name, tuple(BackendAddress(f"10.0.{n}.{i + 1}", 80) for i in range(members)))
        for n, name in enumerate(("pa", "pb"))
    }
    site = _site(GatewayConfig(**{**config.__dict__, "backendAddressPools": pools}))
    for target in site.router.routes[0].target.backends:  # some load to compare
        for i, member in enumerate(target.state.members):
            member.inflight = (i * 7) % 5
    return site


def decision(site: GatewaySite) -> Callable[[FakeRequest], Any]:
    """What routing does per request: the rule, then the rule target's own choice."""
    resolveSite = site.resolve

    def decide(request: FakeRequest) -> Any:
        target, _, _ = resolveSite(request)  # type: ignore[arg-type]
        resolve = getattr(target, "resolve", None)
        if resolve is not None:
            request.__dict__.pop("agwPluginChoice", None)  # a new request each time
            target = resolve(request)
        return target

    return decide


def wholeDecision(site: GatewaySite) -> Callable[[FakeRequest], Any]:
    """C{GatewaySite.decide}: the rule, the target's own choice and the rule's URL rewrite."""
    decide = site.decide

    def once(request: FakeRequest) -> Any:
        request.agwDecision = request.agwUri = None  # a new request each time
        return decide(request)[0]  # type: ignore[arg-type]

    return once


def timeUs(fn: Callable[[FakeRequest], Any], request: FakeRequest, repeat: int) -> float:
    """Best-of-C{repeat} microseconds per call, each run ~0.2 s."""
    fn(request)
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn(request)
        elapsed = time.perf_counter() - start
        if elapsed > 0.2:
            break
        loops *= 2
    best = elapsed / loops
    for _ in range(repeat - 1):
        start = time.perf_counter()
        for _ in range(loops):
            fn(request)
        best = min(best, (time.perf_counter() - start) / loops)
    return best * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)

    basic = decision(basicSite())
    multi = decision(multiSite())
    paths = decision(pathMapSite())
    plugin = decision(pluginSite())
    urlRewrite = wholeDecision(urlRewriteSite())
    leastConnections = decision(policySite("LeastConnections"))
    ipHash = decision(policySite("IpHash"))
    rewrite = compileRewriteSet(
        RewriteRuleSet(
            "rw",
            (
                RewriteRule("a", requestHeaders=(("X-Client-Ip", "{var_client_ip}:{var_client_port}"),)),
                RewriteRule(
                    "b",
                    conditions=(("var_uri_path", "^/admin", True, True),),
                    requestHeaders=(("X-Path", "{var_uri_path}"), ("Cookie", None)),
                ),
                RewriteRule("c", responseHeaders=(("Server", None),)),
            ),
        )
    )
    fwd = [
        (b"Host", b"x"),
        (b"Accept", b"*/*"),
        (b"Cookie", b"a=1"),
        (b"X-Forwarded-For", b"192.0.2.10"),
    ]

    def applyRewrite(request: FakeRequest) -> Any:
        return rewrite.applyRequest(request, fwd)  # type: ignore[arg-type]

    rows: list[tuple[str, Callable[[FakeRequest], Any], FakeRequest]] = [
        ("basic", basic, FakeRequest(b"www.example.com", b"/index.html")),
        ("multisite-400: first exact host", multi, FakeRequest(b"site0.example.com")),
        ("multisite-400: middle exact host (site200)", multi, FakeRequest(b"site200.example.com")),
        ("multisite-400: last exact host", multi, FakeRequest(b"site398.example.com")),
        ("multisite-400: wildcard near the end", multi, FakeRequest(b"a.wild397.example.net")),
        ("multisite-400: unknown host -> basic", multi, FakeRequest(b"nobody.example.org")),
        ("pathmap-100: first path rule", paths, FakeRequest(b"x", b"/svc0/a/b")),
        ("pathmap-100: last path rule", paths, FakeRequest(b"x", b"/svc99/a/b?q=1")),
        ("pathmap-100: default", paths, FakeRequest(b"x", b"/none/a/b")),
        (
            "pathmap-100: traversal + %-encoding",
            paths,
            FakeRequest(b"x", b"/svc0/%2e%2e/svc98/%61"),
        ),
        ("plugin-headerRoute: match", plugin, FakeRequest(b"x", b"/a", ((b"X-Canary", b"1"),))),
        ("plugin-headerRoute: fallback", plugin, FakeRequest(b"x", b"/a")),
        ("policy-LeastConnections: 2 pools x 5", leastConnections, FakeRequest(b"x", b"/a")),
        ("policy-IpHash: 2 pools x 5", ipHash, FakeRequest(b"x", b"/a")),
        ("rewrite: 3 rules on request headers", applyRewrite, FakeRequest(b"x", b"/a")),
        ("url-rewrite: 2 captures, path+query, reroute", urlRewrite, FakeRequest(b"x", b"/shop/42/shirts")),
        ("url-rewrite: condition does not hold", urlRewrite, FakeRequest(b"x", b"/svc7/a")),
    ]
    results: list[dict[str, object]] = []
    added_costs: list[float] = []
    baseline = 0.0
    print(f"{'row':44} {'us/decision':>12} {'added us':>10}")
    for label, fn, request in rows:
        us = timeUs(fn, request, args.repeat)
        if label == "basic":
            baseline = us
        added = us if label.startswith("rewrite") else us - baseline
        results.append({"row": label, "us": round(us, 3), "added_us": round(added, 3)})
        added_costs.append(added)
        flag = "" if added < GOAL_US else f"   over the {GOAL_US:.0f} us goal"
        print(f"{label:44} {us:12.2f} {added:10.2f}{flag}")
    worst = max(added_costs)
    print(f"\nworst added cost: {worst:.2f} us (goal < {GOAL_US:.0f} us)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if worst < GOAL_US else 1


if __name__ == "__main__":
    sys.exit(main())

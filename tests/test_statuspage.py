"""
The admin status page (issue 7.6): C{/status}, C{/status.json} and the
browser redirect on C{/}.

The document, the HTML and the health-change history are tested
deterministically (L{Clock}, L{StubTreq}, a private L{LogPublisher}); the
last test runs the real gateway, two demo backends and headless Chromium
(driven over the DevTools protocol) and watches a member turn red in the
page as the page's own script refreshes it.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher

from agwtx.ops.admin import adminResource
from agwtx.proxy.affinity import AffinityCodec
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
    UrlPathMap,
)
from agwtx.proxy.pool import HEALTHY, UNHEALTHY, UNKNOWN, PoolState
from agwtx.context import GatewayContext
from agwtx.ops.statuspage import (
    CONTENT_SECURITY_POLICY,
    HISTORY,
    HealthHistory,
    recordHealthChanges,
    renderStatusPage,
    statusDocument,
)
from tests.support import Proc, basicIni, freePort, startBackend, startGateway, stubResult, waitForPort

EVIL = "<script>alert('x')</script>&\""

# -- deterministic ----------------------------------------------------------------------


def makeConfig(name: str = "l1", host: str = "app.example") -> GatewayConfig:
    pool = BackendAddressPool("pool", (BackendAddress("127.0.0.1", 8081), BackendAddress("127.0.0.1", 8082)))
    return GatewayConfig(
        path="etc/gw.ini",
        frontendPorts={
            "fp": FrontendPort("fp", "tcp:8080", 8080),
            "sd": FrontendPort("sd", "systemd:domain=INET:index=0"),
        },
        httpListeners={
            name: HttpListener(name, "fp", "Http", (host, "*.example")),
            "l2": HttpListener("l2", "sd"),
        },
        backendAddressPools={"pool": pool},
        backendHttpSettings={"s1": BackendHttpSettings("s1", probe="p1")},
        redirectConfigurations={"toL1": RedirectConfiguration("toL1", "Found", targetListener=name)},
        urlPathMaps={
            "paths": UrlPathMap(
                "paths",
                defaultBackendAddressPool="pool",
                defaultBackendHttpSettings="s1",
                pathRules=(PathRule("api", ("/api/*",), "pool", "s1"),),
            )
        },
        requestRoutingRules={
            "late": RequestRoutingRule("late", "l2", "Basic", None, redirectConfiguration="toL1"),
            "r1": RequestRoutingRule("r1", name, "Basic", 200, "pool", "s1"),
            "r0": RequestRoutingRule("r0", name, "PathBasedRouting", 100, urlPathMap="paths"),
        },
    )


def makeWorld(
    config: GatewayConfig | None = None,
) -> tuple[Clock, GatewayContext, PoolState, GatewayConfig]:
    config = config or makeConfig()
    clock = Clock()
    clock.advance(1_700_000_000)
    ctx = GatewayContext(clock, None, AffinityCodec(b"k" * 32))
    state = PoolState(config.backendAddressPools["pool"], config.backendHttpSettings["s1"])
    ctx.pools[("pool", "s1")] = state
    return clock, ctx, state, config


@pytest.fixture
def history() -> Iterator[list[HealthHistory]]:
    """Histories on the global publisher, removed after the test."""
    made: list[HealthHistory] = []
    yield made
    for h in made:
        globalLogPublisher.removeObserver(h)


def test_documentListsListenersRulesPoolsAndCounters(history: list[HealthHistory]) -> None:
    clock, ctx, state, config = makeWorld()
    history.append(recordHealthChanges(ctx, clock))
    a, b = state.members
    state.setHealth(a, HEALTHY, "200 OK", clock.seconds())
    clock.advance(30)
    state.setHealth(b, UNHEALTHY, "connection refused", clock.seconds())
    b.inflight = 2
    b.active, b.connects, b.queueFull = 2, 7, 1
    b.noteWait(0.5)
    ctx.metrics.request("l1", "r1", "pool", 200, 0.01)
    ctx.metrics.request("l1", "r1", "pool", 204, 0.01)
    ctx.metrics.request("l1", "r0", "pool", 502, 0.01)
    ctx.activeRequests = 3
    ctx.openWebSockets.add(object())
    clock.advance(5)

    doc = statusDocument(ctx, config, clock.seconds())

    assert doc["listeners"] == [
        {
            "name": "l1",
            "frontendPort": "fp",
            "port": 8080,
            "protocol": "Http",
            "hostNames": ["app.example", "*.example"],
        },
        {
            "name": "l2",
            "frontendPort": "sd",
            "port": "systemd:domain=INET:index=0",
            "protocol": "Http",
            "hostNames": [],
        },
    ]
    # priority order; rules without one last
    assert [(r["name"], r["priority"], r["listener"], r["target"]) for r in doc["rules"]] == [
        ("r0", 100, "l1", "path map paths: /api/* \u2192 pool / s1; otherwise \u2192 pool / s1"),
        ("r1", 200, "l1", "pool / s1"),
        ("late", None, "l2", "redirect toL1 (Found) to listener l1"),
    ]
    [pool] = doc["pools"]
    assert (pool["pool"], pool["settings"], pool["probe"]) == ("pool", "s1", "p1")
    assert [
        (m["address"], m["status"], m["label"], m["reason"], m["lastChangeAge"], m["inflight"])
        for m in pool["members"]
    ] == [
        ("127.0.0.1:8081", "healthy", "Healthy", "200 OK", 35.0, 0),
        ("127.0.0.1:8082", "unhealthy", "Unhealthy", "connection refused", 5.0, 2),
    ]
    assert pool["members"][1]["lastChange"] == "2023-11-14T22:13:50.000Z"
    assert [
        (m["activeConnections"], m["idleConnections"], m["connects"], m["queued"], m["queueRejected"])
        for m in pool["members"]
    ] == [(0, 0, 0, 0, {"full": 0, "timeout": 0}), (2, 0, 7, 0, {"full": 1, "timeout": 0})]
    assert (pool["members"][1]["queueWaits"], pool["members"][1]["queueWaitSeconds"]) == (1, 0.5)
    # newest first, with the time of the change
    assert [(c["member"], c["old"], c["new"], c["status"], c["age"]) for c in doc["healthChanges"]] == [
        ("127.0.0.1:8082", UNKNOWN, UNHEALTHY, "unhealthy", 5.0),
        ("127.0.0.1:8081", UNKNOWN, HEALTHY, "healthy", 35.0),
    ]
    assert doc["counters"] == {
        "requests": {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 0, "5xx": 1},
        "activeRequests": 3,
        "activeWebSockets": 1,
    }
    assert doc["generatedAt"] == "2023-11-14T22:13:55.000Z"
    json.dumps(doc)  # it is the /status.json body


@pytest.mark.parametrize(
    "health, draining, status, label",
    [
        (HEALTHY, False, "healthy", "Healthy"),
        (UNHEALTHY, False, "unhealthy", "Unhealthy"),
        (UNKNOWN, False, "unknown", "Unknown"),
        (HEALTHY, True, "draining", "Draining (Healthy)"),
        (UNKNOWN, True, "draining", "Draining (Unknown)"),
    ],
)
def test_memberColourHasATextLabel(health: str, draining: bool, status: str, label: str) -> None:
    clock, ctx, state, config = makeWorld()
    state.members[0].health = health
    state.members[0].draining = draining
    doc = statusDocument(ctx, config, clock.seconds())
    page = renderStatusPage(doc)
    assert f'<tr class="{status}">' in page
    assert f'<span class="badge {status}">{label}</span>' in page


class Cells(HTMLParser):
    """Text of each table's body cells, and the text of every <script>."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.scripts: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._inScript = False
        self._inBody = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = dict(attrs)["id"]
            self.tables[self._table or ""] = []
        elif tag == "tbody":
            self._inBody = True
        elif tag == "tr" and self._inBody and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._inBody:
            self._cell = []
        elif tag == "script":
            self._inScript = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "tbody":
            self._inBody = False
        elif tag == "script":
            self._inScript = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._inScript:
            self.scripts[-1] += data


def test_everyConfigValueIsEscaped() -> None:
    clock, ctx, state, config = makeWorld(makeConfig(name=EVIL, host=EVIL))
    state.members[0].lastReason = EVIL
    page = renderStatusPage(statusDocument(ctx, config, clock.seconds()))
    assert "<script>alert" not in page and "'x'" not in page
    assert page.count("<script>") == 1  # the page's own
    cells = Cells()
    cells.feed(page)
    assert cells.tables["listeners"][0] == [EVIL, "fp (8080)", "Http", f"{EVIL}, *.example"]
    assert cells.tables["rules"][0][3].startswith(f"{EVIL} \u2192 path map")
    assert cells.tables["members"][0][4] == EVIL
    assert cells.tables["counters"] == [
        ["Requests 1xx", "0"],
        ["Requests 2xx", "0"],
        ["Requests 3xx", "0"],
        ["Requests 4xx", "0"],
        ["Requests 5xx", "0"],
        ["Active requests", "0"],
        ["Active WebSockets", "0"],
    ]
    assert cells.tables["changes"] == [["No health changes yet."]]


def test_pageIsSelfContainedAndAccessible() -> None:
    clock, ctx, _state, config = makeWorld()
    page = renderStatusPage(statusDocument(ctx, config, clock.seconds()))
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no external assets"
    assert '<html lang="en">' in page
    assert '<noscript><meta http-equiv="refresh" content="5"></noscript>' in page
    assert page.count("<caption>") == page.count("<table") == 5
    assert page.count('<th scope="col">') == 4 + 4 + 11 + 7 + 2
    assert 'role="status"' in page
    assert "innerHTML" not in page  # the script sets text only
    # The policy allows exactly the page's own inline script and style.
    cells = Cells()
    cells.feed(page)
    [script] = cells.scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in CONTENT_SECURITY_POLICY
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}';" in CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "connect-src 'self'" in CONTENT_SECURITY_POLICY


def test_historyKeepsTheLast50OfThisGatewayOnly(history: list[HealthHistory]) -> None:
    clock, ctx, state, config = makeWorld()
    _, otherCtx, otherState, _ = makeWorld()
    history.append(recordHealthChanges(ctx, clock))
    history.append(recordHealthChanges(otherCtx, clock))
    assert recordHealthChanges(ctx, clock) is history[0]  # once per context
    member = state.members[0]
    for i in range(HISTORY + 10):
        clock.advance(1)
        state.setHealth(member, UNHEALTHY if i % 2 == 0 else HEALTHY, f"probe {i}", clock.seconds())
    otherState.setHealth(otherState.members[0], HEALTHY, "other", clock.seconds())
    state.setHealth(member, member.health, "no change", clock.seconds())
    assert len(ctx.healthChanges) == HISTORY  # type: ignore[attr-defined]
    assert ctx.healthChanges[0]["reason"] == "probe 10"  # type: ignore[attr-defined]
    assert ctx.healthChanges[-1]["reason"] == f"probe {HISTORY + 9}"  # type: ignore[attr-defined]
    assert [e["reason"] for e in otherCtx.healthChanges] == ["other"]  # type: ignore[attr-defined]
    doc = statusDocument(ctx, config, clock.seconds())
    assert doc["healthChanges"][0]["reason"] == f"probe {HISTORY + 9}"
    assert len(doc["healthChanges"]) == HISTORY


def test_historyFollowsReloadedPoolStates(history: list[HealthHistory]) -> None:
    clock, ctx, old, config = makeWorld()
    history.append(recordHealthChanges(ctx, clock))
    new = PoolState(config.backendAddressPools["pool"], config.backendHttpSettings["s1"])
    new.inherit(old, drain=True)
    ctx.pools = {("pool", "s1"): new}  # what a reload does
    new.setHealth(new.members[0], HEALTHY, "new state", clock.seconds())
    old.setHealth(old.members[1], UNHEALTHY, "old state, draining", clock.seconds())
    assert [e["reason"] for e in ctx.healthChanges] == ["new state", "old state, draining"]  # type: ignore[attr-defined]


def test_historyLetsItsGatewayGo() -> None:
    clock, ctx, state, _config = makeWorld()
    publisher = LogPublisher()
    recordHealthChanges(ctx, clock, publisher)
    seen: list[Any] = []
    publisher.addObserver(cast(ILogObserver, seen.append))
    del ctx, state
    gc.collect()
    event = {"event": "health_change", "member": "x"}
    publisher(event)
    assert seen == [event]  # the others still got it
    clock.advance(0)
    publisher(event)
    assert seen == [event, event] and len(publisher._observers) == 1


def test_adminRoutes() -> None:
    from treq.testing import StubTreq

    clock, ctx, _state, config = makeWorld()
    root = adminResource(ctx, config, clock)
    try:
        treq: Any = StubTreq(root)  # its verbs are added at runtime

        page = stubResult(treq, treq.get("http://admin/status"))
        assert page.code == 200
        assert page.headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
        assert page.headers.getRawHeaders(b"content-security-policy") == [CONTENT_SECURITY_POLICY.encode()]
        assert page.headers.getRawHeaders(b"cache-control") == [b"no-store"]
        assert b"<h1>agw status</h1>" in stubResult(treq, page.content())

        js = stubResult(treq, treq.get("http://admin/status.json"))
        assert js.headers.getRawHeaders(b"content-type") == [b"application/json"]
        assert json.loads(stubResult(treq, js.content())) == json.loads(
            json.dumps(statusDocument(ctx, config, clock.seconds()))
        )

        browser = stubResult(
            treq, treq.get("http://admin/", headers={b"accept": [b"text/html,*/*"]}, allow_redirects=False)
        )
        assert (browser.code, browser.headers.getRawHeaders(b"location")) == (302, [b"status"])
        assert browser.headers.getRawHeaders(b"vary") == [b"accept"]
        plain = stubResult(treq, treq.get("http://admin/"))
        assert plain.code == 200
        listing = stubResult(treq, plain.content()).decode()
        assert "/status\n" in listing and "/status.json\n" in listing and "/health\n" in listing

        slash = stubResult(treq, treq.get("http://admin/status/", allow_redirects=False))
        assert (slash.code, slash.headers.getRawHeaders(b"location")) == (302, [b"../status"])
        assert stubResult(treq, treq.get("http://admin/status/x")).code == 404
        assert stubResult(treq, treq.get("http://admin/status.json/x")).code == 404
    finally:
        globalLogPublisher.removeObserver(ctx.healthHistory)  # type: ignore[attr-defined]


# -- real processes and headless Chromium ------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


def waitFor(what: str, predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except (OSError, ValueError, LookupError, RuntimeError) as e:  # not ready yet
            result, last = None, e
        if result:
            return result
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout}s (last error: {last!r})")


def getJson(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    def __init__(self, tmp: Path) -> None:
        from websockets.sync.client import connect

        self.profile = Path(tempfile.mkdtemp(prefix="agw-chromium-", dir=tmp))
        with open(tmp / "chromium.log", "wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [
                    CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={self.profile}",
                    "--remote-debugging-address=127.0.0.1",
                    "--remote-debugging-port=0",
                    "--window-size=1200,900",
                    "about:blank",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.ws: Any = None
        try:
            active = self.profile / "DevToolsActivePort"
            port = waitFor("Chromium's DevTools port", lambda: active.read_text().split()[0], 30)
            pages = waitFor(
                "Chromium's page",
                lambda: [t for t in getJson(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page"],
            )
            url = pages[0]["webSocketDebuggerUrl"]
            self.ws = connect(url, max_size=None, open_timeout=10).__enter__()
        except BaseException:
            self.close()
            raise
        self._id = 0

    def call(self, method: str, timeout: float = 15.0, **params: Any) -> Any:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)


# Recorded in the page before its own scripts run: script errors and
# Content-Security-Policy violations (a wrong hash would block the page's
# script or style).
RECORD_PROBLEMS = """
window.__agwProblems = [];
window.addEventListener("error", function (e) { window.__agwProblems.push("error: " + e.message); });
document.addEventListener("securitypolicyviolation", function (e) {
  window.__agwProblems.push("csp: " + e.violatedDirective + " " + e.blockedURI);
});
"""

MEMBERS = """JSON.stringify(Array.from(document.querySelectorAll("#members tbody tr")).map(function (tr) {
  var badge = tr.querySelector(".badge");
  return {row: tr.className, member: tr.cells[2].textContent, badge: badge.className,
          label: badge.textContent, colour: getComputedStyle(badge).backgroundColor};
}))"""

GREEN, RED = "rgb(26, 127, 55)", "rgb(207, 34, 46)"


def test_statusPageInChromium(tmp_path: Path) -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI must install chromium and chromium-driver")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium chromium-driver)")
    procs: list[Proc] = []
    browser: Chromium | None = None
    try:
        a, pa = startBackend(tmp_path, "A")
        procs.append(a)
        b, pb = startBackend(tmp_path, "B")
        procs.append(b)
        port, admin = freePort(), freePort()
        ini = basicIni(
            port,
            [pa, pb],
            settings="probe = p1",
            probe="protocol = Http\nhost = 127.0.0.1\npath = /\ninterval = 1\ntimeout = 1\nunhealthyThreshold = 1",
            gateway=f"admin = tcp:{admin}:interface=127.0.0.1",
        )
        gw = startGateway(tmp_path, ini, port)
        procs.append(gw)
        waitForPort(admin, gw.proc)
        base = f"http://127.0.0.1:{admin}"

        def labels() -> dict[str, str]:
            doc = getJson(f"{base}/status.json")
            return {m["address"]: m["label"] for p in doc["pools"] for m in p["members"]}

        keyA, keyB = f"127.0.0.1:{pa}", f"127.0.0.1:{pb}"
        waitFor("both members Healthy", lambda: labels() == {keyA: "Healthy", keyB: "Healthy"})
        for _ in range(4):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                assert r.status == 200

        browser = Chromium(tmp_path)
        browser.call("Page.enable")
        browser.call("Page.addScriptToEvaluateOnNewDocument", source=RECORD_PROBLEMS)
        browser.call("Page.navigate", url=f"{base}/")  # a browser on / lands on /status
        waitFor("the status page", lambda: browser.evaluate("document.title") == "agw status")
        assert browser.evaluate("location.pathname") == "/status"
        browser.evaluate("window.__agwSamePage = true")

        def members() -> dict[str, dict[str, str]]:
            assert browser is not None
            return {m["member"]: m for m in json.loads(browser.evaluate(MEMBERS))}

        first = members()
        assert set(first) == {keyA, keyB}
        for m in first.values():
            assert (m["row"], m["badge"], m["label"], m["colour"]) == (
                "healthy",
                "badge healthy",
                "Healthy",
                GREEN,
            )
        counters = json.loads(
            browser.evaluate(
                'JSON.stringify(Array.from(document.querySelectorAll("#counters tbody tr"))'
                ".map(function (tr) { return [tr.cells[0].textContent, tr.cells[1].textContent]; }))"
            )
        )
        assert ["Requests 2xx", "4"] in counters
        browser.screenshot(tmp_path / "healthy.png")

        b.proc.kill()
        b.proc.wait(5)
        # Only the page's script can change the DOM: the page is never reloaded.
        turned = waitFor(
            "member B red in the page",
            lambda: members()[keyB]["label"] == "Unhealthy" and members(),
        )
        assert (turned[keyB]["row"], turned[keyB]["badge"], turned[keyB]["colour"]) == (
            "unhealthy",
            "badge unhealthy",
            RED,
        )
        assert (turned[keyA]["label"], turned[keyA]["colour"]) == ("Healthy", GREEN)
        assert browser.evaluate("window.__agwSamePage") is True
        changes = browser.evaluate(
            'Array.from(document.querySelectorAll("#changes tbody tr"))'
            '.map(function (tr) { return tr.cells[3].textContent + " " + tr.cells[5].textContent; }).join("\\n")'
        )
        assert changes.splitlines()[0] == f"{keyB} Unhealthy"
        assert f"{keyA} Healthy" in changes.splitlines()
        assert browser.evaluate("document.getElementById('conn').textContent") == ""
        browser.screenshot(tmp_path / "unhealthy.png")
        assert browser.evaluate("JSON.stringify(window.__agwProblems)") == "[]"
    finally:
        if browser is not None:
            browser.close()
        for p in reversed(procs):
            p.stop()

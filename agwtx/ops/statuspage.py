"""
A human status page on the admin endpoint (issue 7.6).

  - C{GET /status}: one self-contained HTML page (inline CSS and JS, no
    external assets) with the listeners, the rules, every pool member's
    health, the last L{HISTORY} health changes and live counters.  It is
    rendered completely on the server, so it works without JavaScript (a
    C{<noscript>} meta refresh reloads it); with JavaScript a small poller
    fetches C{/status.json} every two seconds and rebuilds the tables in
    place with C{textContent}, never C{innerHTML}.
  - C{GET /status.json}: the same data as JSON (L{statusDocument}).
  - C{GET /} from a browser (C{Accept: text/html}) redirects to C{/status};
    other clients still get the plain listing of L{agwtx.ops.admin.AdminRoot}.

Names and host names come from the config file, so every value is escaped
on the server (C{html.escape}) and set as text in the browser; a
Content-Security-Policy that allows only the page's own inline script and
style (by hash) backs that up.

Health changes are recorded from the C{health_change} log events that
L{PoolState.setHealth} emits, into C{ctx.healthChanges}, a bounded deque.
"""

from __future__ import annotations

import base64
import hashlib
import html
import weakref
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from twisted.logger import ILogObserver, LogPublisher, globalLogPublisher
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from twisted.web.util import Redirect, redirectTo
from zope.interface import implementer

from agwtx.ops.answers import isoTime, jsonBody
from agwtx.config.model import GatewayConfig, RequestRoutingRule
from agwtx.ops.metrics import idleConnections
from agwtx.proxy.pool import HEALTHY, UNHEALTHY, Member, PoolState

__all__ = [
    "HISTORY",
    "REFRESH_SECONDS",
    "HealthHistory",
    "StatusIndex",
    "StatusJsonResource",
    "StatusPageResource",
    "installStatusPage",
    "recordHealthChanges",
    "renderStatusPage",
    "statusDocument",
]

HISTORY = 50
"""How many health changes the page keeps (oldest dropped first)."""

REFRESH_SECONDS = 2
"""How often the page's script fetches C{/status.json}."""

NOSCRIPT_REFRESH_SECONDS = 5
"""How often the page reloads itself when scripts are off."""

STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


# -- health-change history ------------------------------------------------


@implementer(ILogObserver)
class HealthHistory:
    """
    A log observer keeping the last C{maxlen} health changes of one
    gateway's pools.

    It holds the context weakly so that a gateway built and dropped in a
    test does not stay alive through the global log publisher, and it only
    records events whose source is a pool state of that gateway, so that
    several gateways in one process keep separate histories.
    """

    def __init__(self, ctx: Any, clock: Any, publisher: LogPublisher, maxlen: int = HISTORY) -> None:
        self._ctx = weakref.ref(ctx)
        self._clock = clock
        self._publisher = publisher
        self._removing = False
        self.events: deque[dict[str, Any]] = deque(maxlen=maxlen)
        # Every pool state this gateway has had: a state replaced by a reload
        # can still report a change while its removed members drain.
        self._known: weakref.WeakSet[PoolState] = weakref.WeakSet()

    def __call__(self, event: Mapping[str, Any]) -> None:
        if event.get("event") != "health_change":
            return
        ctx = self._ctx()
        if ctx is None:
            # Removing an observer while the publisher iterates its list
            # would skip the next one for this event: do it afterwards.
            if not self._removing:
                self._removing = True
                self._clock.callLater(0, self._publisher.removeObserver, self)
            return
        self.notice(ctx.pools.values())
        source = event.get("log_source")
        if not isinstance(source, PoolState) or source not in self._known:
            return
        member = source.member(str(event.get("member", "")))
        when = member.lastChange if member is not None else None
        self.events.append(
            {
                "time": self._clock.seconds() if when is None else when,
                "pool": str(event.get("pool", source.name)),
                "settings": str(event.get("settings", source.settings.name)),
                "member": str(event.get("member", "")),
                "old": str(event.get("old", "")),
                "new": str(event.get("new", "")),
                "reason": str(event.get("reason", "")),
            }
        )

    def notice(self, states: Iterable[PoolState]) -> None:
        """Remember pool states as this gateway's."""
        self._known.update(states)


def recordHealthChanges(ctx: Any, clock: Any, publisher: LogPublisher = globalLogPublisher) -> HealthHistory:
    """
    Start recording C{ctx}'s health changes into C{ctx.healthChanges} (a
    deque of the last L{HISTORY}, oldest first); idempotent per context.
    """
    history = getattr(ctx, "healthHistory", None)
    if isinstance(history, HealthHistory):
        return history
    history = HealthHistory(ctx, clock, publisher)
    history.notice(ctx.pools.values())
    ctx.healthHistory = history
    ctx.healthChanges = history.events
    publisher.addObserver(history)
    return history


# -- the document -----------------------------------------------------------


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 1)


def memberStatus(member: Member) -> tuple[str, str]:
    """The CSS class and the text label of a member's state: draining wins."""
    if member.draining:
        return "draining", f"Draining ({member.health})"
    return healthClass(member.health), member.health


def healthClass(health: str) -> str:
    """The CSS class of a health state."""
    return {HEALTHY: "healthy", UNHEALTHY: "unhealthy"}.get(health, "unknown")


def _ruleTarget(config: GatewayConfig, rule: RequestRoutingRule) -> str:
    if rule.ruleType == "Plugin":
        return f"plugin {rule.plugin}"
    if rule.redirectConfiguration is not None:
        return _redirect(config, rule.redirectConfiguration)
    if rule.ruleType == "PathBasedRouting" and rule.urlPathMap is not None:
        upm = config.urlPathMaps.get(rule.urlPathMap)
        if upm is None:
            return f"path map {rule.urlPathMap}"
        parts = []
        for pr in upm.pathRules:
            to = (
                _redirect(config, pr.redirectConfiguration)
                if pr.redirectConfiguration is not None
                else f"{_pools(config, pr.backendAddressPool, pr.loadDistributionPolicy)} / {pr.backendHttpSettings}"
            )
            parts.append(f"{', '.join(pr.paths)} \u2192 {to}")
        if upm.defaultRedirectConfiguration is not None:
            default = _redirect(config, upm.defaultRedirectConfiguration)
        else:
            pools = _pools(config, upm.defaultBackendAddressPool, upm.defaultLoadDistributionPolicy)
            default = f"{pools} / {upm.defaultBackendHttpSettings}"
        parts.append(f"otherwise \u2192 {default}")
        return f"path map {upm.name}: " + "; ".join(parts)
    return (
        f"{_pools(config, rule.backendAddressPool, rule.loadDistributionPolicy)} / {rule.backendHttpSettings}"
    )


def _pools(config: GatewayConfig, pool: str | None, policy: str | None) -> str:
    """A pool, or a load distribution policy with its algorithm and weighted pools."""
    if policy is None:
        return str(pool)
    spec = config.loadDistributionPolicies.get(policy)
    if spec is None:
        return f"policy {policy}"
    targets = ", ".join(f"{t.backendAddressPool}×{t.weightPerServer}" for t in spec.targets)
    return f"policy {policy} ({spec.loadDistributionAlgorithm}: {targets})"


def _redirect(config: GatewayConfig, name: str) -> str:
    rc = config.redirectConfigurations.get(name)
    if rc is None:
        return f"redirect {name}"
    to = f"listener {rc.targetListener}" if rc.targetListener is not None else str(rc.targetUrl)
    return f"redirect {name} ({rc.redirectType}) to {to}"


def _ruleOrder(item: tuple[int, RequestRoutingRule]) -> tuple[bool, int, int]:
    index, rule = item
    return (rule.priority is None, rule.priority or 0, index)


def _requestsByClass(metrics: Any) -> dict[str, int]:
    counts = dict.fromkeys(STATUS_CLASSES, 0)
    if metrics is None:
        return counts
    for cls, count in metrics.requestsByStatusClass().items():
        counts[cls] = counts.get(cls, 0) + count
    return counts


def statusDocument(ctx: Any, config: GatewayConfig, now: float) -> dict[str, Any]:
    """
    Everything the page shows, as plain data (the C{/status.json} body).
    Pools come from the live C{ctx.pools}; listeners and rules from
    C{config}.
    """
    listeners = []
    for lst in config.httpListeners.values():
        fp = config.frontendPorts.get(lst.frontendPort)
        port: int | str | None = None
        if fp is not None:
            port = fp.port if fp.port is not None else fp.endpoint
        listeners.append(
            {
                "name": lst.name,
                "frontendPort": lst.frontendPort,
                "port": port,
                "protocol": lst.protocol,
                "hostNames": list(lst.hostNames),
            }
        )
    rules = [
        {
            "name": rule.name,
            "ruleType": rule.ruleType,
            "priority": rule.priority,
            "listener": rule.httpListener,
            "target": _ruleTarget(config, rule),
        }
        for _, rule in sorted(enumerate(config.requestRoutingRules.values()), key=_ruleOrder)
    ]
    pools = []
    for (poolName, settingsName), state in list(ctx.pools.items()):
        members = []
        for m in state.members:
            status, label = memberStatus(m)
            members.append(
                {
                    "address": m.key,
                    "health": m.health,
                    "status": status,
                    "label": label,
                    "draining": m.draining,
                    "inflight": m.inflight,
                    "activeConnections": m.active,
                    "idleConnections": idleConnections(ctx.upstream, m.host, m.port),
                    "connects": m.connects,
                    "queued": len(m.queue),
                    "queueRejected": {"full": m.queueFull, "timeout": m.queueTimeouts},
                    "queueWaits": sum(m.waitCounts),
                    "queueWaitSeconds": round(m.waitSum, 6),
                    "reason": m.lastReason,
                    "lastChange": isoTime(m.lastChange),
                    "lastChangeAge": _age(now, m.lastChange),
                }
            )
        pools.append(
            {
                "pool": poolName,
                "settings": settingsName,
                "probe": state.settings.probe,
                "members": members,
            }
        )
    history = getattr(ctx, "healthHistory", None)
    if isinstance(history, HealthHistory):
        history.notice(ctx.pools.values())
    changes = [
        {
            **{k: v for k, v in e.items() if k != "time"},
            "time": isoTime(e["time"]),
            "age": _age(now, e["time"]),
            "status": healthClass(e["new"]),
        }
        for e in reversed(list(getattr(ctx, "healthChanges", ())))
    ]
    return {
        "generatedAt": isoTime(now),
        "configPath": config.path,
        "refreshSeconds": REFRESH_SECONDS,
        "listeners": listeners,
        "rules": rules,
        "pools": pools,
        "healthChanges": changes,
        "counters": {
            "requests": _requestsByClass(getattr(ctx, "metrics", None)),
            "activeRequests": int(getattr(ctx, "activeRequests", 0)),
            "activeWebSockets": len(getattr(ctx, "openWebSockets", ())),
        },
    }


# -- HTML -----------------------------------------------------------------

_CSS = """
:root { color-scheme: light; font-family: system-ui, sans-serif; color: #1f2328; background: #fff; }
body { margin: 0 auto; max-width: 80rem; padding: 1rem 1.5rem 3rem; }
h1 { font-size: 1.6rem; margin: 0.2rem 0; }
h2 { font-size: 1.2rem; margin: 1.8rem 0 0.5rem; }
.meta { color: #57606a; margin: 0; }
.conn { min-height: 1.4em; margin: 0.3rem 0 0; font-weight: 600; color: #9a3412; }
table { border-collapse: collapse; width: 100%; font-size: 0.95rem; }
caption { text-align: left; color: #57606a; padding-bottom: 0.3rem; }
th, td { text-align: left; vertical-align: top; padding: 0.35rem 0.6rem; border-bottom: 1px solid #d0d7de; }
thead th { background: #f6f8fa; border-bottom: 2px solid #d0d7de; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.empty { color: #57606a; font-style: italic; }
.badge { display: inline-block; padding: 0.05rem 0.55rem; border-radius: 1rem; color: #fff;
  font-weight: 600; white-space: nowrap; }
.badge::before { content: "\\25CF\\00A0"; content: "\\25CF\\00A0" / ""; }
.badge.healthy { background: #1a7f37; }
.badge.unhealthy { background: #cf222e; }
.badge.unknown { background: #57606a; }
.badge.draining { background: #9a6700; }
tr.unhealthy > * { background: #fff5f5; }
tr.draining > * { background: #fff8e6; }
#counters { width: auto; min-width: 22rem; }
code { font-family: ui-monospace, monospace; font-size: 0.9em; }
body.stale main { opacity: 0.6; }
"""

_JS = """
(function () {
  "use strict";
  var every = REFRESH * 1000;
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function ago(s) {
    if (s === null || s === undefined) { return ""; }
    if (s < 120) { return Math.round(s) + " s ago"; }
    if (s < 7200) { return Math.round(s / 60) + " min ago"; }
    if (s < 172800) { return Math.round(s / 3600) + " h ago"; }
    return Math.round(s / 86400) + " d ago";
  }
  function when(iso, age) { return iso ? iso + " (" + ago(age) + ")" : "never"; }
  function badge(cls, label) {
    var td = el("td");
    td.appendChild(el("span", label, "badge " + cls));
    return td;
  }
  function num(n) { return el("td", n, "num"); }
  function row(cells, cls) {
    var tr = el("tr", null, cls);
    cells.forEach(function (c) { tr.appendChild(typeof c === "object" ? c : el("td", c)); });
    return tr;
  }
  function fill(id, rows, none) {
    var table = document.getElementById(id);
    var body = table.tBodies[0];
    if (!rows.length) {
      var td = el("td", none, "empty");
      td.colSpan = table.tHead.rows[0].cells.length;
      rows = [row([td])];
    }
    body.replaceChildren.apply(body, rows);
  }
  function render(d) {
    fill("listeners", d.listeners.map(function (l) {
      return row([el("th", l.name), l.frontendPort + " (" + l.port + ")", l.protocol,
        l.hostNames.length ? l.hostNames.join(", ") : "any host"]);
    }), "No listeners.");
    fill("rules", d.rules.map(function (r) {
      return row([el("th", r.name), r.ruleType, num(r.priority === null ? "none" : r.priority),
        r.listener + " \\u2192 " + r.target]);
    }), "No rules.");
    var members = [];
    d.pools.forEach(function (p) {
      p.members.forEach(function (m) {
        var tr = row([p.pool, p.settings, el("th", m.address), badge(m.status, m.label), m.reason,
          when(m.lastChange, m.lastChangeAge), num(m.inflight), num(m.activeConnections),
          num(m.idleConnections), num(m.queued), num(m.connects)], m.status);
        members.push(tr);
      });
    });
    fill("members", members, "No pools in use.");
    fill("changes", d.healthChanges.map(function (c) {
      return row([when(c.time, c.age), c.pool, c.settings, c.member, c.old,
        badge(c.status, c.new), c.reason]);
    }), "No health changes yet.");
    var k = d.counters, counts = [];
    Object.keys(k.requests).forEach(function (cls) {
      counts.push(row([el("th", "Requests " + cls), num(k.requests[cls])]));
    });
    counts.push(row([el("th", "Active requests"), num(k.activeRequests)]));
    counts.push(row([el("th", "Active WebSockets"), num(k.activeWebSockets)]));
    fill("counters", counts, "");
    document.querySelectorAll("tbody th").forEach(function (th) { th.scope = "row"; });
    document.getElementById("generated").textContent = d.generatedAt;
    document.getElementById("generated").dateTime = d.generatedAt;
  }
  function status(text) {
    var s = document.getElementById("conn");
    if (s.textContent !== text) { s.textContent = text; }
    document.body.classList.toggle("stale", text !== "");
  }
  function tick() {
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, every * 2);
    fetch("status.json", { cache: "no-store", signal: ctl.signal })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      })
      .then(function (d) { render(d); status(""); })
      .catch(function (e) { status("Could not refresh (" + (e.message || e) + "); retrying."); })
      .finally(function () { clearTimeout(timer); setTimeout(tick, every); });
  }
  setTimeout(tick, every);
})();
""".replace("REFRESH", str(REFRESH_SECONDS))


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_hash(_JS)}; style-src {_hash(_CSS)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Only this page's own inline script and style run; it may only fetch from its origin."""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{round(seconds)} s ago"
    if seconds < 7200:
        return f"{round(seconds / 60)} min ago"
    if seconds < 172800:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} d ago"


def _when(iso: str | None, age: float | None) -> str:
    return f"{iso} ({_ago(age)})" if iso else "never"


def _td(value: object, cls: str | None = None) -> str:
    attr = f' class="{_e(cls)}"' if cls else ""
    return f"<td{attr}>{_e(value)}</td>"


def _th(value: object) -> str:
    return f'<th scope="row">{_e(value)}</th>'


def _badge(cls: str, label: str) -> str:
    return f'<td><span class="badge {_e(cls)}">{_e(label)}</span></td>'


def _table(tableId: str, caption: str, headers: Sequence[str], rows: Sequence[str], none: str) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    body = "\n".join(rows) or f'<tr><td class="empty" colspan="{len(headers)}">{_e(none)}</td></tr>'
    return (
        f'<table id="{_e(tableId)}">\n<caption>{_e(caption)}</caption>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"
    )


def renderStatusPage(doc: Mapping[str, Any]) -> str:
    """The whole page for a L{statusDocument}; every value escaped."""
    listeners = [
        "<tr>"
        + _th(lst["name"])
        + _td(f"{lst['frontendPort']} ({lst['port']})")
        + _td(lst["protocol"])
        + _td(", ".join(lst["hostNames"]) if lst["hostNames"] else "any host")
        + "</tr>"
        for lst in doc["listeners"]
    ]
    rules = [
        "<tr>"
        + _th(r["name"])
        + _td(r["ruleType"])
        + (_td("none", "num") if r["priority"] is None else _td(r["priority"], "num"))
        + _td(f"{r['listener']} \u2192 {r['target']}")
        + "</tr>"
        for r in doc["rules"]
    ]
    members = [
        f'<tr class="{_e(m["status"])}">'
        + _td(p["pool"])
        + _td(p["settings"])
        + _th(m["address"])
        + _badge(m["status"], m["label"])
        + _td(m["reason"])
        + _td(_when(m["lastChange"], m["lastChangeAge"]))
        + _td(m["inflight"], "num")
        + _td(m["activeConnections"], "num")
        + _td(m["idleConnections"], "num")
        + _td(m["queued"], "num")
        + _td(m["connects"], "num")
        + "</tr>"
        for p in doc["pools"]
        for m in p["members"]
    ]
    changes = [
        "<tr>"
        + _td(_when(c["time"], c["age"]))
        + _td(c["pool"])
        + _td(c["settings"])
        + _td(c["member"])
        + _td(c["old"])
        + _badge(c["status"], c["new"])
        + _td(c["reason"])
        + "</tr>"
        for c in doc["healthChanges"]
    ]
    k = doc["counters"]
    counters = [f"<tr>{_th('Requests ' + cls)}{_td(n, 'num')}</tr>" for cls, n in k["requests"].items()] + [
        f"<tr>{_th('Active requests')}{_td(k['activeRequests'], 'num')}</tr>",
        f"<tr>{_th('Active WebSockets')}{_td(k['activeWebSockets'], 'num')}</tr>",
    ]
    sections = [
        (
            "Backend health",
            _table(
                "members",
                "Every member of every pool in use, per backend HTTP settings.",
                [
                    "Pool",
                    "Settings",
                    "Member",
                    "Health",
                    "Reason",
                    "Last change",
                    "In flight",
                    "Active connections",
                    "Idle connections",
                    "Queued",
                    "Connects",
                ],
                members,
                "No pools in use.",
            ),
        ),
        (
            "Live counters",
            _table("counters", "Since the gateway started.", ["Counter", "Value"], counters, ""),
        ),
        (
            f"Recent health changes (last {HISTORY})",
            _table(
                "changes",
                "Newest first.",
                ["When", "Pool", "Settings", "Member", "From", "To", "Reason"],
                changes,
                "No health changes yet.",
            ),
        ),
        (
            "Listeners",
            _table(
                "listeners",
                "HTTP listeners and the frontend port (and port number) each one uses.",
                ["Listener", "Frontend port", "Protocol", "Host names"],
                listeners,
                "No listeners.",
            ),
        ),
        (
            "Rules",
            _table(
                "rules",
                "Request routing rules in priority order.",
                ["Rule", "Type", "Priority", "Listener \u2192 target"],
                rules,
                "No rules.",
            ),
        ),
    ]
    body = "\n".join(
        f'<section aria-labelledby="h{i}">\n<h2 id="h{i}">{_e(title)}</h2>\n{table}\n</section>'
        for i, (title, table) in enumerate(sections)
    )
    generated = _e(doc["generatedAt"])
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH_SECONDS}"></noscript>
<title>agw status</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>agw status</h1>
<p class="meta">Updated <time id="generated" datetime="{generated}">{generated}</time>
from <code>{_e(doc["configPath"])}</code>; refreshes every {REFRESH_SECONDS} s.
Also as <a href="status.json">JSON</a>, <a href="health">/health</a>, <a href="metrics">/metrics</a>.</p>
<p id="conn" class="conn" role="status"></p>
</header>
<main>
{body}
</main>
<script>{_JS}</script>
</body>
</html>
"""


# -- resources ------------------------------------------------------------


class _StatusBase(Resource):
    def __init__(self, ctx: Any, config: GatewayConfig, reactor: Any) -> None:
        super().__init__()
        self.ctx = ctx
        self.config = config
        self.reactor = reactor

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()

    def document(self) -> dict[str, Any]:
        # A reload replaces the config; a service that publishes it as
        # ctx.config is followed, otherwise the startup config is shown.
        config = getattr(self.ctx, "config", None)
        if not isinstance(config, GatewayConfig):
            config = self.config
        return statusDocument(self.ctx, config, self.reactor.seconds())


class StatusPageResource(_StatusBase):
    """C{GET /status}: see the module docstring."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            # /status/ would resolve "status.json" to /status/status.json.
            return Redirect(b"../status")
        return notFound()

    def render_GET(self, request: Request) -> bytes:
        return self.page(request, self.document())

    def page(self, request: Request, doc: Mapping[str, Any]) -> bytes:
        """The page of C{doc} (also for a document combined from several processes)."""
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii"))
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return renderStatusPage(doc).encode("utf-8")


class StatusJsonResource(_StatusBase):
    """C{GET /status.json}: L{statusDocument}."""

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"x-content-type-options", b"nosniff")
        return jsonBody(request, self.document())


class StatusIndex(Resource):
    """
    C{/}: browsers go to C{/status}; anything else gets the admin root's
    own plain listing, so C{curl /} still explains the endpoint.
    """

    isLeaf = True

    def __init__(self, root: Resource) -> None:
        super().__init__()
        self.root = root

    def render(self, request: Request) -> bytes:
        request.setHeader(b"vary", b"accept")
        accept = request.getHeader(b"accept") or b""
        if request.method in (b"GET", b"HEAD") and b"text/html" in accept.lower():
            request.setHeader(b"cache-control", b"no-store")
            return redirectTo(b"status", request)
        return self.root.render(request)  # type: ignore[no-any-return]


def installStatusPage(root: Resource, ctx: Any, config: GatewayConfig, reactor: Any) -> None:
    """
    Add C{/status}, C{/status.json} and the browser redirect on C{/} to the
    admin root, and start recording C{ctx}'s health changes.
    """
    recordHealthChanges(ctx, reactor)
    root.putChild(b"status", StatusPageResource(ctx, config, reactor))
    root.putChild(b"status.json", StatusJsonResource(ctx, config, reactor))
    # An explicit child for the empty segment answers "/" before
    # AdminRoot.getChild (which would return the root itself) is asked.
    root.putChild(b"", StatusIndex(root))

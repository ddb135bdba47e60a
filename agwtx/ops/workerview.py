"""
One view of a multi-process instance (C{[gateway] workers = N}): the admin
endpoint's C{/metrics}, C{/health}, C{/status} and C{/status.json} report
every process, not only the one that serves them.

How: each worker serves a private admin site on a UNIX socket in a
directory only the instance's user can enter (L{WORKER_ADMIN_ENV} names
it); the supervisor's admin endpoint asks every worker at request time and
combines the answers with its own.  prometheus-client's multiprocess mode
was the alternative and is not used: it aggregates only its own
Counter/Gauge/Histogram objects through per-process mmap files, while the
gateway's hottest figures (requests, latency) and member health are custom
collectors read at scrape time, which that mode cannot see; it also needs
its directory set before the first metric exists and cleaned when a worker
restarts.  Asking the workers needs neither, and a worker that does not
answer within L{WORKER_TIMEOUT} seconds is reported as unreachable instead
of stalling the scrape.

Combining follows Prometheus convention: counters and histograms are
summed, and so are gauges that count things (open WebSockets, requests in
flight); a gauge that is a per-process state (member health: each process
probes its backends itself) gets a C{worker} label per process instead.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Generic, TypeVar

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import Logger
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from agwtx.ops import admin, answers
from agwtx.compat.twistedprivate import HTTP11ClientFactory, clientGone, setPoolFactory
from agwtx.config.model import GatewayConfig

__all__ = [
    "PER_PROCESS",
    "WORKER_ADMIN_ENV",
    "WORKER_TIMEOUT",
    "WorkerView",
    "adminService",
    "installWorkerView",
    "mergeHealth",
    "mergeMetrics",
    "mergeStatus",
]

log = Logger(namespace="agw.workers")

WORKER_ADMIN_ENV = "AGW_WORKER_ADMIN"
"""The UNIX socket path a worker serves its private admin site on."""

WORKER_TIMEOUT = 5.0
"""Seconds the supervisor waits for a worker's answer."""

PER_PROCESS = frozenset({"agw_backend_health"})
"""Metric families reported per process (a C{worker} label), not summed."""

Answers = list[tuple[int, Any]]
"""(worker index, its parsed answer or None when it did not answer)."""

T = TypeVar("T")


@implementer(IAgentEndpointFactory)
class _WorkerSockets:
    def __init__(self, reactor: Any, sockets: dict[int, str]) -> None:
        self.reactor = reactor
        self.sockets = sockets

    def endpointForURI(self, uri: Any) -> Any:
        index = int(uri.host.decode("ascii").rpartition("-")[2])
        return UNIXClientEndpoint(self.reactor, self.sockets[index], timeout=WORKER_TIMEOUT)


class _QuietClientFactory(HTTP11ClientFactory):
    noisy = False


class WorkerView:
    """The supervisor's window onto its workers' private admin sites."""

    def __init__(self, reactor: Any, sockets: dict[int, str]) -> None:
        self.reactor = reactor
        self.sockets = sockets
        pool = HTTPConnectionPool(reactor, persistent=False)
        setPoolFactory(pool, _QuietClientFactory)  # no "Starting factory" line per scrape
        self.agent = Agent.usingEndpointFactory(reactor, _WorkerSockets(reactor, sockets), pool=pool)

    def fetch(self, path: bytes, parse: Callable[[bytes], Any]) -> defer.Deferred[Answers]:
        """GET C{path} from every worker; each answer C{parse}d, None for a worker that did not answer."""

        def one(index: int) -> defer.Deferred[tuple[int, Any]]:
            d = self.agent.request(b"GET", b"http://worker-%d%s" % (index, path))
            d.addCallback(lambda response: readBody(response) if response.code == 200 else None)
            d.addCallback(lambda body: None if body is None else parse(body))
            d.addTimeout(WORKER_TIMEOUT, self.reactor)

            def failed(reason: Any) -> None:
                log.warn(
                    "worker {index} did not answer {path}: {reason}",
                    index=index,
                    path=path.decode("ascii"),
                    reason=reason.getErrorMessage(),
                )
                return None

            d.addErrback(failed)
            return d.addCallback(lambda answer: (index, answer))

        everyone = defer.gatherResults([one(i) for i in sorted(self.sockets)])
        return everyone  # type: ignore[return-value]


# -- combining ---------------------------------------------------------------


def mergeMetrics(own: bytes, workers: Answers) -> bytes:
    """The exposition text of every process's metrics together (see the module docstring)."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for index, text in [(0, own)] + [(i, t) for i, t in workers if t is not None]:
        for family in text_string_to_metric_families(text.decode("utf-8")):
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                values[family.name] = {}
            into = values[family.name]
            for sample in family.samples:
                labels = dict(sample.labels)
                if family.name in PER_PROCESS:
                    labels["worker"] = str(index)
                key = (sample.name, tuple(sorted(labels.items())))
                if key not in into:
                    into[key] = sample.value
                elif sample.name.endswith("_created"):
                    into[key] = min(into[key], sample.value)  # the earliest start
                else:
                    into[key] += sample.value
    for name, family in families.items():
        for (sampleName, labels), value in values[name].items():
            family.add_sample(sampleName, dict(labels), value)

    class _Merged:
        def collect(self) -> list[Metric]:
            return list(families.values())

    return generate_latest(_Merged())  # type: ignore[arg-type]


def mergeHealth(own: dict[str, Any], workers: Answers) -> dict[str, Any]:
    """
    C{/health}: the serving process's document as it was (Azure's shape,
    so jq filters keep working), plus C{workers}: each other process's
    document (each probes its backends itself), None for one that did not
    answer.
    """
    return {
        **own,
        "workers": [{"worker": index, **(doc or {"unreachable": True})} for index, doc in workers],
    }


def _sumCounters(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict):
            _sumCounters(into.setdefault(key, {}), value)
        elif isinstance(value, (int, float)):
            into[key] = into.get(key, 0) + value


def mergeStatus(own: dict[str, Any], workers: Answers) -> dict[str, Any]:
    """
    C{/status}: the serving process's document with C{counters} summed over
    every process, and C{processes}: each process's own counters.
    """
    counters = json.loads(json.dumps(own.get("counters", {})))
    processes = [{"worker": 0, "reachable": True, "counters": own.get("counters", {})}]
    for index, doc in workers:
        if doc is None:
            processes.append({"worker": index, "reachable": False, "counters": {}})
            continue
        _sumCounters(counters, doc.get("counters", {}))
        processes.append({"worker": index, "reachable": True, "counters": doc.get("counters", {})})
    return {**own, "counters": counters, "processes": processes}


# -- resources ---------------------------------------------------------------


class _Combined(Resource, Generic[T]):
    """
    An admin page that, in a supervisor with workers, combines its own
    answer with every worker's; otherwise the page as it was.
    """

    def __init__(
        self,
        ctx: Any,
        local: Resource,
        path: bytes,
        own: Callable[[], T],
        parse: Callable[[bytes], T],
        combine: Callable[[T, Answers], T],
        render: Callable[[Request, T], bytes],
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.local = local
        self.path = path
        self.own = own
        self.parse = parse
        self.combine = combine
        self.renderer = render

    def getChildWithDefault(self, path: bytes, request: Request) -> Any:
        # Paths below the page are the page's own business, as before.
        if getattr(self.local, "isLeaf", False):
            return self.local
        return self.local.getChildWithDefault(path, request)

    def render(self, request: Request) -> Any:
        view: WorkerView | None = getattr(self.ctx, "workerView", None)
        if view is None and getattr(self.ctx, "workerAdmin", False) and request.method == b"GET":
            # A worker's private site: plain answers (prometheus-client's
            # WSGI page cannot serve a UNIX socket's peer).
            return self.renderer(request, self.own())
        if view is None or request.method not in (b"GET", b"HEAD"):
            return self.local.render(request)
        own = self.own()
        d = view.fetch(self.path, self.parse)

        def done(answers: Answers) -> None:
            if clientGone(request):
                return
            request.write(self.renderer(request, self.combine(own, answers)))
            request.finish()

        d.addCallback(done)
        d.addErrback(lambda f: log.failure("combining the workers' {path}", f, path=self.path))
        return NOT_DONE_YET


def adminService(ctx: Any, config: GatewayConfig, reactor: Any, endpoint: str | None = None) -> Any:
    """
    L{agwtx.ops.admin.adminService} whose pages report every process when the
    instance has workers (see the module docstring).
    """
    svc = admin.adminService(ctx, config, reactor, endpoint)
    installWorkerView(svc.factory.resource, ctx)
    return svc


def installWorkerView(root: Resource, ctx: Any) -> None:
    """Put combining versions of C{/metrics}, C{/health}, C{/status}, C{/status.json} under C{root}."""
    backendHealth, jsonBody = admin.backendHealth, answers.jsonBody
    children = dict(root.children)  # the pages as they are, before they are wrapped

    def statusDoc() -> dict[str, Any]:
        return children[b"status.json"].document()  # type: ignore[attr-defined, no-any-return]

    def metricsText(request: Request, text: bytes) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return text

    def statusPage(request: Request, doc: dict[str, Any]) -> bytes:
        return children[b"status"].page(request, doc)  # type: ignore[attr-defined, no-any-return]

    pages: list[tuple[bytes, bytes, Callable[[], Any], Callable[[bytes], Any], Any, Any]] = [
        (b"health", b"/health", lambda: backendHealth(ctx.pools), json.loads, mergeHealth, jsonBody),
        (b"status.json", b"/status.json", statusDoc, json.loads, mergeStatus, jsonBody),
        (b"status", b"/status.json", statusDoc, json.loads, mergeStatus, statusPage),
    ]
    if b"metrics" in children:
        pages.append(
            (
                b"metrics",
                b"/metrics",
                lambda: generate_latest(ctx.metrics.registry),
                lambda body: body,
                mergeMetrics,
                metricsText,
            )
        )
    for name, path, own, parse, combine, render in pages:
        local = children.get(name)
        if local is not None:
            root.putChild(name, _Combined(ctx, local, path, own, parse, combine, render))

"""
Prometheus metrics, served as text at C{/metrics} on the admin endpoint.

Per-request figures (the request counter and the latency histogram) are
plain Python numbers updated in place and turned into metric families at
scrape time by a custom collector: prometheus-client's own Counter and
Histogram take a lock per update, which was 2 % of the gateway's CPU time
under load.  Member health is read from the live pool state at scrape time
the same way.  Rare events (upstream errors, reloads) and the WebSocket
figures (flushed in batches by the bridge) use prometheus-client's types.
Each gateway service has its own registry (tests run several in one
process).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.twisted import MetricsResource

from agwtx.proxy.pool import HEALTHY, QUEUE_WAIT_BUCKETS, UNHEALTHY


__all__ = ["GatewayMetrics", "metricsResource"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)


class _HealthCollector(Collector):
    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        labels = ["pool", "settings", "member"]
        health = GaugeMetricFamily(
            "agw_backend_health",
            "Member health: 1 healthy, 0 unhealthy, -1 not yet probed.",
            labels=["pool", "settings", "member"],
        )
        inflight = GaugeMetricFamily(
            "agw_backend_inflight_requests",
            "Requests and WebSockets open to the member now.",
            labels=["pool", "settings", "member"],
        )
        active = GaugeMetricFamily(
            "agw_backend_active_connections",
            "HTTP requests holding one of the member's connection slots (connecting or in use).",
            labels=labels,
        )
        idle = GaugeMetricFamily(
            "agw_backend_idle_connections",
            "Idle keep-alive connections to the member's address (shared by settings that use it).",
            labels=labels,
        )
        connects = CounterMetricFamily(
            "agw_backend_connects",
            "Backend connections opened for HTTP requests (rate() gives connects per second).",
            labels=labels,
        )
        queued = GaugeMetricFamily(
            "agw_backend_queue_length",
            "Requests waiting for one of the member's connection slots.",
            labels=labels,
        )
        rejected = CounterMetricFamily(
            "agw_backend_queue_rejections",
            "Requests answered 503 by the member's queue: full, or the wait timed out.",
            labels=labels + ["reason"],
        )
        wait = HistogramMetricFamily(
            "agw_backend_queue_wait_seconds",
            "Time requests waited in the member's queue (granted or timed out).",
            labels=labels,
        )
        bounds = [repr(float(b)) for b in QUEUE_WAIT_BUCKETS] + ["+Inf"]
        upstream = self.ctx.upstream
        for (pool, settings), state in sorted(self.ctx.pools.items()):
            for m in state.members:
                key = [pool, settings, m.key]
                value = 1.0 if m.health == HEALTHY else 0.0 if m.health == UNHEALTHY else -1.0
                health.add_metric(key, value)
                inflight.add_metric(key, float(m.inflight))
                active.add_metric(key, float(m.active))
                idle.add_metric(key, float(idleConnections(upstream, m.host, m.port)))
                connects.add_metric(key, float(m.connects))
                queued.add_metric(key, float(len(m.queue)))
                rejected.add_metric(key + ["full"], float(m.queueFull))
                rejected.add_metric(key + ["timeout"], float(m.queueTimeouts))
                wait.add_metric(key, _cumulative(bounds, m.waitCounts), sum_value=m.waitSum)
        yield health
        yield inflight
        yield active
        yield idle
        yield connects
        yield queued
        yield rejected
        yield wait


def idleConnections(upstream: Any, host: str, port: int) -> int:
    """Idle keep-alive connections to C{host}:C{port} (0 for an upstream pool that cannot say)."""
    count = getattr(upstream, "idleCount", None)
    return int(count(host, port, None)) if count is not None else 0


def _cumulative(bounds: list[str], counts: list[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (one per bound, the last +Inf) as Prometheus's cumulative buckets."""
    out, running = [], 0
    for bound, n in zip(bounds, counts):  # one count per bound, by construction
        running += n
        out.append((bound, float(running)))
    return out


class _RequestCollector(Collector):
    """C{agw_requests_total} and C{agw_request_duration_seconds} from plain counts."""

    def __init__(self, metrics: "GatewayMetrics") -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        m = self.metrics
        requests = CounterMetricFamily(
            "agw_requests",
            "HTTP requests answered, by listener, rule, pool and status class.",
            labels=["listener", "rule", "pool", "status"],
        )
        for key, count in sorted(m.requestCounts.items()):
            requests.add_metric(list(key), float(count[0]))
        yield requests
        latency = HistogramMetricFamily(
            "agw_request_duration_seconds",
            "Time from the request's headers to the end of the response.",
            labels=["listener", "rule"],
        )
        bounds = [repr(float(b)) for b in LATENCY_BUCKETS] + ["+Inf"]
        for key, (counts, total) in sorted(m.latencyCounts.items()):
            latency.add_metric(list(key), _cumulative(bounds, counts), sum_value=total[0])
        yield latency


class GatewayMetrics:
    """The gateway's metrics and the hooks that update them."""

    def __init__(self, ctx: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # (listener, rule, pool, "2xx") -> [count]
        self.requestCounts: dict[tuple[str, str, str, str], list[int]] = {}
        # (listener, rule) -> (per-bucket counts, the last one +Inf; [sum of seconds])
        self.latencyCounts: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        r.register(_RequestCollector(self))
        self.upstreamErrors = Counter(
            "agw_upstream_errors",
            "Failures talking to backends (connect refused, reset, timeout...).",
            ["pool", "member", "kind"],
            registry=r,
        )
        self.webSocketsActive = Gauge("agw_websockets_active", "WebSockets open now.", registry=r)
        self.webSocketsTotal = Counter("agw_websockets", "WebSockets opened.", registry=r)
        self.webSocketMessages = Counter(
            "agw_websocket_messages",
            "WebSocket messages relayed, by direction (upstream = client to backend).",
            ["direction"],
            registry=r,
        )
        self.webSocketBytes = Counter(
            "agw_websocket_bytes",
            "WebSocket payload bytes relayed, by direction.",
            ["direction"],
            registry=r,
        )
        self.connectionsRefused = Counter(
            "agw_connections_refused",
            "Client connections closed on accept, by the limit reached "
            "(maxConnections, maxConnectionsPerClient).",
            ["reason"],
            registry=r,
        )
        self.reloads = Counter(
            "agw_config_reloads", "Configuration reloads, by result.", ["result"], registry=r
        )
        r.register(_HealthCollector(ctx))
        self.messagesUp = self.webSocketMessages.labels("upstream")
        self.messagesDown = self.webSocketMessages.labels("downstream")
        self.bytesUp = self.webSocketBytes.labels("upstream")
        self.bytesDown = self.webSocketBytes.labels("downstream")

    def request(self, listener: str, rule: str, pool: str, status: int, duration: float) -> None:
        """One answered request (called from the access log)."""
        key = (listener, rule, pool, f"{status // 100}xx")
        count = self.requestCounts.get(key)
        if count is None:
            count = self.requestCounts[key] = [0]
        count[0] += 1
        lkey = (listener, rule)
        entry = self.latencyCounts.get(lkey)
        if entry is None:
            entry = self.latencyCounts[lkey] = ([0] * (len(LATENCY_BUCKETS) + 1), [0.0])
        entry[0][bisect_left(LATENCY_BUCKETS, duration)] += 1
        entry[1][0] += duration

    def requestsByStatusClass(self) -> dict[str, int]:
        """Requests answered so far, summed per status class ("2xx": n, ...)."""
        totals: dict[str, int] = {}
        for (_, _, _, cls), count in self.requestCounts.items():
            totals[cls] = totals.get(cls, 0) + count[0]
        return totals

    def upstreamError(self, pool: str, member: str, kind: str) -> None:
        self.upstreamErrors.labels(pool, member, kind).inc()

    def webSocketOpened(self) -> None:
        self.webSocketsActive.inc()
        self.webSocketsTotal.inc()

    def webSocketClosed(self) -> None:
        self.webSocketsActive.dec()

    def webSocketMessage(self, upstream: bool, size: int) -> None:
        if upstream:
            self.messagesUp.inc()
            self.bytesUp.inc(size)
        else:
            self.messagesDown.inc()
            self.bytesDown.inc(size)


def metricsResource(metrics: GatewayMetrics) -> MetricsResource:
    """The twisted.web resource prometheus-client ships, on our registry."""
    return MetricsResource(registry=metrics.registry)

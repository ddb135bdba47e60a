"""
Prometheus metrics, served as text at C{/metrics} on the admin endpoint.

Counters that change per request or per message are updated where the event
happens; member health is read from the live pool state at scrape time by a
custom collector, so it costs nothing per request and is never stale.  Each
gateway service has its own registry (tests run several in one process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.twisted import MetricsResource

from agwtx.pool import HEALTHY, UNHEALTHY

if TYPE_CHECKING:
    from agwtx.routing import GatewayContext

__all__ = ["GatewayMetrics", "metricsResource"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)


class _HealthCollector(Collector):
    def __init__(self, ctx: "GatewayContext") -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
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
        for (pool, settings), state in sorted(self.ctx.pools.items()):
            for m in state.members:
                value = 1.0 if m.health == HEALTHY else 0.0 if m.health == UNHEALTHY else -1.0
                health.add_metric([pool, settings, m.key], value)
                inflight.add_metric([pool, settings, m.key], float(m.inflight))
        yield health
        yield inflight


class GatewayMetrics:
    """The gateway's metrics and the hooks that update them."""

    def __init__(self, ctx: "GatewayContext") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "agw_requests",
            "HTTP requests answered, by listener, rule, pool and status class.",
            ["listener", "rule", "pool", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "agw_request_duration_seconds",
            "Time from the request's headers to the end of the response.",
            ["listener", "rule"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
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
        self.reloads = Counter(
            "agw_config_reloads", "Configuration reloads, by result.", ["result"], registry=r
        )
        r.register(_HealthCollector(ctx))
        self._requestChildren: dict[tuple[str, str, str, str], Any] = {}
        self._latencyChildren: dict[tuple[str, str], Any] = {}
        self.messagesUp = self.webSocketMessages.labels("upstream")
        self.messagesDown = self.webSocketMessages.labels("downstream")
        self.bytesUp = self.webSocketBytes.labels("upstream")
        self.bytesDown = self.webSocketBytes.labels("downstream")

    def request(self, listener: str, rule: str, pool: str, status: int, duration: float) -> None:
        """One answered request (called from the access log)."""
        key = (listener, rule, pool, f"{status // 100}xx")
        child = self._requestChildren.get(key)
        if child is None:
            child = self._requestChildren[key] = self.requests.labels(*key)
        child.inc()
        lkey = (listener, rule)
        lchild = self._latencyChildren.get(lkey)
        if lchild is None:
            lchild = self._latencyChildren[lkey] = self.latency.labels(*lkey)
        lchild.observe(duration)

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

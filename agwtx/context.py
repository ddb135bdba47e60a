"""
The runtime context of one gateway process (L{GatewayContext}): the
collaborators request handling needs (upstream pool, pool states, error
pages, request ids, metrics, access log, deadlines, connection limits, the
WebSocket bridge, open WebSockets), built by the gateway service and handed
to every listener's site.  It sits above operations in the layers
(docs/development.rst): it composes the metrics and the access log with the
protocol pieces; protocol code refers to it only in type annotations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from twisted.logger import Logger, globalLogPublisher

from agwtx.proxy.affinity import AffinityCodec
from agwtx.runtime.limits import ConnectionLimits
from agwtx.runtime.errorpages import ErrorPages
from agwtx.config.model import (
    GatewaySettings,
)
from agwtx.proxy.pool import Member, PoolState
from agwtx.runtime.answers import errorPage
from agwtx.runtime.requestid import RequestTagger
from agwtx.ops.accesslog import AccessEvents
from agwtx.runtime.deadlines import Deadlines
from agwtx.ops.metrics import GatewayMetrics
from agwtx.routing.router import BackendTarget

if TYPE_CHECKING:
    from agwtx.http.request import GatewayRequest


log = Logger(namespace="agw.routing")


class OpenWebSockets(set):  # type: ignore[type-arg]
    """
    The registry of open WebSocket bridges (objects with C{member} and
    C{close(code, reason)}): counted by the status page, closed by a drain
    or a stop.
    """

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self.clock = clock

    def close(self, code: int, reason: str, members: Sequence[Member] | None = None) -> Any:
        """
        Close open WebSockets (all, or those to C{members}) on both legs with
        C{code}; the Deferred fires when they are gone, or after 5 s.
        """
        from twisted.internet.defer import Deferred

        chosen = [ws for ws in list(self) if members is None or getattr(ws, "member", None) in members]
        for ws in chosen:
            try:
                ws.close(code, reason)
            except Exception:
                log.failure("closing a WebSocket")
        done: Deferred[None] = Deferred()
        deadline = self.clock.seconds() + 5.0

        def poll() -> None:
            if any(ws in self for ws in chosen) and self.clock.seconds() < deadline:
                self.clock.callLater(0.05, poll)
            else:
                done.callback(None)

        poll()
        return done


class GatewayContext:
    """
    What request handling needs at runtime, made of collaborators the
    gateway service builds and hands over at construction: the reactor, the
    upstream pool, the affinity codec, the configuration in force with its
    pool states, request tagger and error pages, the access log's
    observer, the reload hook, the WebSocket bridge (a factory, given the
    context), the worker view.  Built here from those: the metrics, the
    request deadlines, the connection limits, the access events
    (L{agwtx.ops.accesslog.AccessEvents}) and the open WebSockets' registry.

    After construction only L{switch} (a reload's commit) replaces the
    configuration-dependent collaborators, all in one step; the rest is
    runtime state (counters, C{stopping}).
    """

    def __init__(
        self,
        reactor: Any,
        upstream: Any,
        affinity: AffinityCodec,
        *,
        config: Any = None,
        pools: dict[tuple[str, str], PoolState] | None = None,
        tagger: RequestTagger | None = None,
        errorPages: ErrorPages | None = None,
        accessObserver: Callable[[dict[str, Any]], None] = globalLogPublisher,
        instanceId: str = "",
        reloadHandler: Callable[[], list[str]] | None = None,
        webSocketFactory: Callable[["GatewayContext"], Any] | None = None,
        workerView: Any = None,
        workerAdmin: bool = False,
        metrics: Any = None,
        deadlines: Any = None,
    ) -> None:
        self.reactor = reactor
        self.upstream = upstream
        self.affinity = affinity
        self.config: Any = config
        """The configuration in force (swapped by L{switch})."""
        self.pools: dict[tuple[str, str], PoolState] = pools if pools is not None else {}
        self.tagger = tagger if tagger is not None else RequestTagger(GatewaySettings())
        """Request IDs and trace context by the settings in force."""
        self.errorPages = errorPages if errorPages is not None else ErrorPages(None)
        """Custom error pages of the configuration in force."""
        self.instanceId = instanceId
        """This process in the JSON access log's instanceId (host name and worker)."""
        self.reloadHandler = reloadHandler
        """Re-read the configuration (C{POST /reload}, SIGHUP): returns the errors."""
        self.workerView = workerView
        """With C{workers} > 1, in the supervisor: its L{agwtx.ops.workerview.WorkerView}."""
        self.workerAdmin = workerAdmin
        """In a worker: its admin site is the private one the supervisor asks."""
        self.passiveListeners: list[Callable[[PoolState, Member, str, str], None]] = []
        self.metrics = metrics if metrics is not None else GatewayMetrics(self)
        self.deadlines = deadlines if deadlines is not None else Deadlines(reactor)
        """Request timeouts (a sweep, not a timer per request)."""
        self.connections = ConnectionLimits(self)
        """Client connections held now, against C{[gateway] maxConnections*}."""
        self.access = AccessEvents(reactor, accessObserver, self.metrics, instanceId)
        # The access events' entry points, bound once (they are on every request's path).
        self.accessLog = self.access.accessLog
        self.webSocketClosed = self.access.webSocketClosed
        self.refusedLog = self.access.refusedLog
        self.openWebSockets = OpenWebSockets(reactor)
        """Open WebSocket bridges: objects with C{member} and C{close(code, reason)}."""
        self.closeWebSockets = self.openWebSockets.close
        self.activeRequests = 0
        """HTTP requests being answered now (graceful stop waits for them)."""
        self.stopping = False
        """A stop has begun (lame duck, then drain): the admin C{/ready} answers 503."""
        self.webSocketHandler: Callable[["GatewayRequest", BackendTarget], Any] | None = (
            webSocketFactory(self) if webSocketFactory is not None else None
        )

    def switch(
        self,
        config: Any,
        pools: dict[tuple[str, str], PoolState],
        tagger: RequestTagger,
        errorPages: ErrorPages,
        affinity: AffinityCodec,
        accessObserver: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """A reload's commit: the new configuration's collaborators, all at once."""
        self.config = config
        self.pools = pools
        self.tagger = tagger
        self.errorPages = errorPages
        self.affinity = affinity
        if accessObserver is not None:
            self.access.observer = accessObserver

    @property
    def accessObserver(self) -> Callable[[dict[str, Any]], None]:
        """Where access events go (the access log)."""
        return self.access.observer

    def webSocket(self, request: "GatewayRequest", target: BackendTarget) -> Any:
        if self.webSocketHandler is None:
            return errorPage(request, 501, "Not Implemented: WebSocket bridge not available")
        return self.webSocketHandler(request, target)

    def passiveFailure(self, state: PoolState, member: Member, kind: str, detail: str) -> None:
        self.metrics.upstreamError(state.name, member.key, kind)
        for listener in self.passiveListeners:
            listener(state, member, kind, detail)

"""
The site of a frontend port: twisted.web's HTTP/1.1 server (parsing, limits,
pipelining, request-smuggling defences) whose C{getResourceFor} routes
instead of traversing one resource tree: the port's routing table picks the
rule, and the rule's target, a twisted.web resource, renders the request
(L{agwtx.routing.resource}).  The request and the channel are in
L{agwtx.http.request} and L{agwtx.http.channel}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import IResource, Resource
from zope.interface import implementer

from agwtx.runtime.answers import errorPage
from agwtx.runtime.ratelog import RateLimitedLog
from agwtx.proxy.reverse import startStreaming
from agwtx.routing.match import isWebSocketUpgrade, requestHost
from agwtx.routing.resource import GatewayResource, resourceFor
from agwtx.routing.router import BackendTarget, PortRouter, rewriteUrl

from agwtx.http.h2 import NegotiatingChannel
from agwtx.http.request import GatewayRequest, hostProblem

if TYPE_CHECKING:
    from agwtx.context import GatewayContext


__all__ = ["GatewaySite"]

log = Logger(namespace="agw.web")


class _Unused(Resource):
    isLeaf = True


@implementer(IResource)
class _ErrorAnswer(GatewayResource):
    """A request routing refuses (400, 404, 421...): the gateway's own error page."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message

    def render(self, request: GatewayRequest) -> Any:
        if self.code == 400 and request.channel is not None:
            # A malformed request (Host, target): nothing more is read
            # from the connection, as nginx does, so what follows it is
            # never taken as requests.
            request.channel.closeAfterResponse()
        return errorPage(request, self.code, self.message)


class GatewaySite(server.Site):
    """One frontend port: its listeners' routing table and the shared context."""

    requestFactory = GatewayRequest
    protocol = NegotiatingChannel
    displayTracebacks = False
    noisy = False

    def __init__(
        self,
        ctx: "GatewayContext",
        router: PortRouter,
        listenerPort: int | None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(_Unused(), timeout=timeout)
        self.ctx = ctx
        self.router = router
        self.listenerPort = listenerPort or 0
        self.secure = False
        """Set by the gateway service when this port is wrapped in TLS."""
        self.droppedFieldsLog = RateLimitedLog()
        """Paces the log lines about header fields dropped for an C{_} (L{agwtx.http.channel.GatewayChannel})."""

    def acceptableProtocols(self) -> list[bytes]:
        # None to hand to Twisted's TLS wrapper: ALPN is answered by the
        # listener's own context (tls._selectHttp11: http/1.1, or no protocol
        # when the client offers only others). Twisted before 26 would put its
        # own selection on that context, which answers an h2-only client with
        # an internal_error alert instead of no protocol.
        return []

    def soleListener(self) -> str | None:
        """The port's listener when it has only one (a request not yet read can only be for it)."""
        return self.router.soleListener if self.router is not None else None

    @property
    def allowUnderscores(self) -> bool:
        """C{[gateway] allowUnderscoresInHeaders} of the configuration in force."""
        return self.ctx.config.gateway.allowUnderscoresInHeaders  # type: ignore[no-any-return]

    @property
    def headerTimeout(self) -> float:
        """C{[gateway] requestHeaderTimeout} of the configuration in force."""
        return self.ctx.config.gateway.requestHeaderTimeout  # type: ignore[no-any-return]

    @property
    def bodyTimeout(self) -> float:
        """C{[gateway] requestBodyTimeout} of the configuration in force."""
        return self.ctx.config.gateway.requestBodyTimeout  # type: ignore[no-any-return]

    def decide(self, request: GatewayRequest) -> tuple[Any, int, str]:
        """
        The request's routing decision, the concrete target (a path map's or
        plugin rule's choice) or the refusal, made once, when its head is complete
        (L{GatewayRequest.gotLength} for a request with a body, else
        L{GatewayRequest.process}), and kept on the request: everything
        after (the proxy, the WebSocket bridge, a redirect, the access log)
        uses it, so a reload that swaps this port's table meanwhile never
        changes a request in flight.
        """
        decision = request.agwDecision
        if decision is None:
            decision = self.resolve(request)
            ruleTarget = decision[0]
            decision = _concrete(decision, request)
            if getattr(ruleTarget, "urlRewrite", None) is not None and decision[0] is not None:
                # The rule's URL rewrite (and reroute), part of this one
                # decision; a rerouted path rule may name a policy in turn.
                decision = _concrete(rewriteUrl(ruleTarget, decision[0], request), request)
            request.agwDecision = decision
        return decision

    def resolve(self, request: GatewayRequest) -> tuple[Any, int, str]:
        """(target, 0, "") for a routable request, else (None, status, message), by the table in force."""
        hosts = request.requestHeaders.getRawHeaders(b"host")
        problem = hostProblem(hosts, request.clientproto)
        if problem is not None:
            return None, 400, problem
        if not request.uri.startswith(b"/") and not (request.uri == b"*" and request.method == b"OPTIONS"):
            return None, 400, "Bad Request: the request target must be a path"
        route = self.router.route(requestHost(hosts[0] if hosts else None))
        if route is None:
            return None, 404, "Not Found: no listener on this port serves that host name"
        request.agwListener = route.listener.name
        request.agwRule = route.rule.name
        if self.secure:
            refusal = request.clientAuthRefusal(route.listener.name)
            if refusal is not None:
                return None, refusal[0], refusal[1]
        return route.target, 0, ""

    def getResourceFor(self, request: GatewayRequest) -> Any:  # type: ignore[override]
        """
        The twisted.web resource that answers C{request}, by the request's
        routing decision (L{decide}): the rule's target (a path map's or
        plugin rule's concrete target once chosen), any resource a routing
        plugin answered with (traversed from the request's path, see
        L{agwtx.routing.resource}), or the gateway's own error answer.
        """
        target, code, message = self.decide(request)
        if target is None:
            return _ErrorAnswer(code, message)
        return resourceFor(target, request)

    def startStreaming(self, request: GatewayRequest, length: int | None) -> bool:
        """
        Begin a backend exchange for a request whose body is still arriving,
        if it has one.  True also when the head is refused at once (a 400
        needs no body: the client is not kept waiting to send it).
        """
        target, code, message = self.decide(request)
        if target is None and code == 400 and request.channel is not None:
            request.channel.refuseRequest(message)
            return True
        if not isinstance(target, BackendTarget) or isWebSocketUpgrade(request):
            return False
        request.agwPool = target.state.name
        request.agwSettings = target.settings.name
        return startStreaming(self.ctx, request, target, length)

    def log(self, request: Any) -> None:
        self.ctx.accessLog(request)


def _concrete(decision: Any, request: Any) -> Any:
    """
    The concrete target of a routing decision: a path map's, plugin rule's
    or load distribution policy's choice, made here once (a path rule may
    name a policy); a target that resolves to None answers with its own
    error page.
    """
    resolve = getattr(decision[0], "resolve", None)
    while resolve is not None:
        chosen = resolve(request)
        if chosen is None:
            break
        decision = (chosen, 0, "")
        resolve = getattr(chosen, "resolve", None) if getattr(chosen, "agwTarget", False) else None
    return decision

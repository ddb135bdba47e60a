"""
The WebSocket bridge: a client's WebSocket relayed to a backend member, with
autobahn speaking the protocol on both legs.

A handshake goes through routing like any request.  The bridge validates it
(RFC 6455 4.2.1), picks a member like the proxy does (affinity, then round
robin), and dials the backend with an autobahn client *before* answering the
client: only when the backend has answered 101 (autobahn checks the status
and C{Sec-WebSocket-Accept}) does the client leg take over the listener's
transport, as autobahn's C{WebSocketResource.render} does, and complete its
own handshake with exactly the subprotocol the backend chose.  A backend that
refuses gets its status passed to the client; one that cannot be reached is a
502; one slower than C{requestTimeout} a 504.

Relaying works on autobahn's frame-level API.  Each leg is an endpoint of its
own: masking, ping/pong and permessage-deflate are per leg (payloads are
decompressed on one leg and compressed again on the other, never copied as
compressed bytes).  Frame boundaries are kept where that is cheap and safe:

  - a frame of up to L{BUFFER_FRAME} bytes is relayed as one frame, and a
    message of a single such frame (the usual case) as one frame;
    a fragmented message keeps its frames and ends with an empty final
    frame (autobahn's streaming API has no "last frame with data");
  - a bigger frame is streamed in pieces of at least L{PIECE} bytes, each a
    frame of its own, so a 100 MB message is never assembled in memory.
    Every frame the gateway writes is complete when written, so autobahn's
    own control frames (pongs, pings, a close) never land inside one.

The common case skips autobahn's frame machinery (L{_Leg._relayWhole}): when
neither leg compresses, complete unfragmented data frames under 64 KiB at
the start of a read are relayed directly (byte for byte towards the client;
re-masked in one pass with a fresh key towards the backend).  Everything else
(control frames, fragments, big, partial or malformed frames) goes through
autobahn, which validates it.  Small payloads are (un)masked with Python
integers, several times cheaper than setting up autobahn's NVX masker per
frame; bigger ones use NVX.  Measured on loopback, the bridge relays 64 B
round trips at about 0.9x the rate of a bare Twisted byte relay
(C{twisted.protocols.portforward}): what is left is the reactor's own cost.

Backpressure: each leg's transport has the other leg registered as its push
producer; when a leg's send buffer fills, Twisted pauses the producer and so
stops reading from the other socket.  Memory per direction stays at about the
transport's buffer plus one read.

Closing: a close frame from either peer is passed on with its code and
reason, and the answer to that peer waits for the other peer's answer (so
data still in flight towards the closing peer is delivered and the code it
gets back is the one the far end chose).  A leg lost without a closing
handshake (or failed by protocol errors) closes the other leg with 1011 when
the backend was lost and 1001 when the client was.  The gateway closes both
legs itself with 1001 on idle timeout (C{webSocketIdleTimeout}, reset by data
frames and pings in either direction) and on L{WebSocketBridge.closeAll};
a message over C{webSocketMaxMessageSize} closes its sender's leg with 1009
and the other leg as if that one was lost.

Autobahn options and why:
  - C{utf8validateIncoming=False}: the gateway never interprets text; the
    endpoints validate it (and a streamed message could not be recalled
    anyway).
  - C{applyMask=False} on the client leg only: autobahn hands over payloads
    still masked and the leg unmasks them itself (see above); the backend
    leg masks what it sends.
  - C{tcpNoDelay}: set on each protocol before it connects; autobahn reads
    it in C{connectionMade} before copying it from the factory, so without
    that the backend leg would run with Nagle's algorithm.
  - C{autoFragmentSize=0}: never re-fragment what the bridge sends.
  - C{failByDrop=False}: protocol errors are answered with a close frame
    (1002/1007/1009) so peers learn why.
  - C{echoCloseCodeReason=True}: where autobahn answers a close itself, it
    echoes the code instead of forcing 1000.
  - C{openHandshakeTimeout=0}: the bridge times the backend handshake itself
    on the injected clock; the client handshake is replayed synchronously.
  - C{autoPingInterval}/C{autoPingTimeout}: C{webSocketPingInterval} on both
    legs when it is set.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import (
    WebSocketServerFactory,
)
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from agwtx.proxy.pool import Lease, Member
from agwtx.runtime.answers import errorPage
from agwtx.proxy.reverse import chooseMember

from agwtx.websocket.frames import BUFFER_FRAME, DEFLATE, PIECE, frameHead, xorMask
from agwtx.websocket.handshake import ClientHandshake, HandshakeError, checkHandshake, parseExtensionOffers
from agwtx.websocket.legs import (
    _BackendFactory,
    _COMMON_OPTIONS,
    _ClientLeg,
    _acceptDeflate,
    _acceptDeflateResponse,
)
from agwtx.websocket.session import DIALING, WebSocketSession

if TYPE_CHECKING:
    from agwtx.context import GatewayContext
    from agwtx.routing.router import BackendTarget
    from agwtx.http.request import GatewayRequest


__all__ = [
    "BUFFER_FRAME",
    "DEFLATE",
    "PIECE",
    "ClientHandshake",
    "HandshakeError",
    "WebSocketBridge",
    "WebSocketSession",
    "checkHandshake",
    "frameHead",
    "parseExtensionOffers",
    "xorMask",
]

log = Logger(namespace="agw.websocket")


class WebSocketBridge:
    """
    C{GatewayContext.webSocketHandler}: handles every C{Upgrade: websocket}
    request routed to a backend target, and keeps the open ones so a
    graceful shutdown can close them (L{abortHandshakes} for those still dialing).
    """

    metricsInterval = 5.0
    """Seconds between flushes of relay counters to the metrics (not per message)."""

    def __init__(self, ctx: GatewayContext) -> None:
        self.ctx = ctx
        self.sessions: set[WebSocketSession] = set()
        """Every session, handshakes in progress included."""
        self.open: set[WebSocketSession] = ctx.openWebSockets
        """Open WebSockets: the context's registry, for drains and graceful stop."""
        self._metricsCall: IDelayedCall | None = None
        if not DEFLATE:
            log.warn(
                "permessage-deflate is not negotiated: this autobahn cannot bound a compressed "
                "message's inflation (advisory GHSA-hxp9-w8x3-p566); WebSockets run uncompressed"
            )
        factory = WebSocketServerFactory(reactor=ctx.reactor, server=None)
        factory.protocol = _ClientLeg
        factory.noisy = False
        factory.setProtocolOptions(
            perMessageCompressionAccept=_acceptDeflate,
            webStatus=False,
            applyMask=False,  # the client leg unmasks in onFrameData
            **_COMMON_OPTIONS,
        )
        self.serverFactory = factory
        self._clientFactories: dict[bool, _BackendFactory] = {}

    def opened(self, session: WebSocketSession) -> None:
        self.open.add(session)
        self.ctx.metrics.webSocketOpened()
        if self._metricsCall is None:
            self._metricsCall = self.ctx.reactor.callLater(self.metricsInterval, self._flushMetrics)

    def ended(self, session: WebSocketSession) -> None:
        self.sessions.discard(session)
        if session in self.open:
            self.open.discard(session)
            session.flushMetrics()
            self.ctx.metrics.webSocketClosed()
        if not self.open and self._metricsCall is not None:
            if self._metricsCall.active():
                self._metricsCall.cancel()
            self._metricsCall = None

    def _flushMetrics(self) -> None:
        self._metricsCall = None
        for session in list(self.open):
            try:
                session.flushMetrics()
            except Exception:
                log.failure("flushing WebSocket metrics")
        if self.open:
            self._metricsCall = self.ctx.reactor.callLater(self.metricsInterval, self._flushMetrics)

    def backendFactory(self, session: WebSocketSession, member: Member) -> _BackendFactory:
        """
        A factory for one dial.  Shallow copies of a prepared factory: making
        a new autobahn factory re-seeds the RNG and builds a timer wheel.
        """
        deflate = bool(session.handshake.deflateOffers)
        base = self._clientFactories.get(deflate)
        if base is None:
            base = _BackendFactory(reactor=self.ctx.reactor, useragent=None)
            base.setProtocolOptions(
                perMessageCompressionOffers=[PerMessageDeflateOffer()] if deflate else [],
                perMessageCompressionAccept=_acceptDeflateResponse,
                serverConnectionDropTimeout=5,
                **_COMMON_OPTIONS,
            )
            self._clientFactories[deflate] = base
        factory = copy.copy(base)
        factory.protocols = session.handshake.subprotocols
        factory.session = session  # type: ignore[attr-defined]
        factory.member = member  # type: ignore[attr-defined]
        return factory

    def __call__(self, request: GatewayRequest, target: BackendTarget) -> Any:
        try:
            # An HTTP/2 extended CONNECT (RFC 8441) arrives as the HTTP/1.1
            # handshake it stands for (agwtx.http.h2), with its own version.
            tunnel = getattr(getattr(request, "channel", None), "agwProtocol", None)
            version = b"HTTP/1.1" if tunnel else request.clientproto
            handshake = checkHandshake(request.method, version, request.requestHeaders)
        except HandshakeError as e:
            return errorPage(request, e.code, e.message, e.headers)
        lease = Lease(self.ctx.reactor, slotted=False, state=target.state)
        member, pinned = chooseMember(self.ctx, request, target, lease)
        if member is None:
            return errorPage(request, 502, "Bad Gateway: no healthy backend is available")
        WebSocketSession(self, request, target, handshake, member, pinned, lease).start()
        return NOT_DONE_YET

    def abortHandshakes(self) -> int:
        """
        Answer every handshake still dialing its backend with 503 (graceful
        stop, at the end of the grace period; the open WebSockets are closed
        through C{GatewayContext.closeWebSockets}). Returns how many.
        """
        dialing = [s for s in self.sessions if s.phase == DIALING]
        for s in dialing:
            s.close()
        return len(dialing)

"""
One bridged WebSocket (L{WebSocketSession}): the backend dialled before the
client is answered, the client's handshake completed with the backend's
choice, timeouts, closing and the access log.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from agwtx.proxy.affinity import affinityCookies
from agwtx.compat.twistedprivate import bufferedInput, clientGone
from agwtx.proxy.pool import Lease, Member, PoolState
from agwtx.proxy.client import relayableHead
from agwtx.runtime.answers import errorPage, reasonPhrase
from agwtx.proxy.reverse import backendRequestHeaders, connectFailureKind

from agwtx.websocket.frames import GOING_AWAY, INTERNAL_ERROR, _CLOSED, _CONNECTING, _OPEN, _Throttle
from agwtx.websocket.handshake import ClientHandshake, _NOT_FORWARDED, _REFUSAL_HEADERS, _returnedHeaders
from agwtx.websocket.legs import _BackendFactory, _BackendLeg, _ClientLeg, _Leg

if TYPE_CHECKING:
    from agwtx.routing.router import BackendTarget
    from agwtx.http.request import GatewayRequest


log = Logger(namespace="agw.websocket")

# -- one bridged WebSocket ------------------------------------------------------


DIALING, OPEN, ENDED = "dialing", "open", "ended"


class WebSocketSession:
    """
    One client WebSocket and its backend: the dial, the handshake on both
    legs, the relay's bookkeeping and the ending.
    """

    backendLeg: _BackendLeg | None = None
    clientLeg: _ClientLeg | None = None
    subprotocol: str | None = None
    clientHeaders: dict[str, list[str]]

    def __init__(
        self,
        bridge: Any,
        request: GatewayRequest,
        target: BackendTarget,
        handshake: ClientHandshake,
        member: Member,
        pinned: Member | None,
        lease: Lease,
    ) -> None:
        self.bridge = bridge
        self.ctx = bridge.ctx
        self.clock = bridge.ctx.reactor
        self.request = request
        self.target = target
        self.settings = target.settings
        self.state: PoolState = target.state
        self.handshake = handshake
        self.member = member
        self.pinned = pinned
        self.phase = DIALING
        self.timer: IDelayedCall | None = None
        self.idleTimer: IDelayedCall | None = None
        self.connector: Any = None
        self.factory: _BackendFactory | None = None
        self.lastActivity = 0.0
        self.openedAt = 0.0
        self.dialedAt = 0.0
        self.closedBy: str | None = None
        self.clientHeaders = {}
        self.lease = lease
        """Counts the session in flight on its member; no connection slot (see L{Lease})."""
        self._flushed = (0, 0, 0, 0)
        self.throttles: list[_Throttle] = []

    # -- dialing

    def start(self) -> None:
        self.bridge.sessions.add(self)
        self.timer = self.clock.callLater(self.settings.requestTimeout, self._handshakeTimedOut)
        # The request's hook, as the proxy's (no Deferred per handshake):
        # called if the client leaves before its answer (see L{_clientGone}).
        self.request.agwOnLost = self._clientGone
        self._dial(self.member)

    def _dial(self, member: Member) -> None:
        self.member = member
        self.request.agwMember = member.key
        self.lease.hold(member)
        factory = self.bridge.backendFactory(self, member)
        self.factory = factory
        self.backendLeg = None
        self.dialedAt = self.clock.seconds()
        timeout = min(self.settings.requestTimeout, self.settings.connectTimeout)
        try:
            if self.target.connector is not None:
                self.connector = self.target.connector(member.host, member.port, factory, timeout)
            else:
                self.connector = self.clock.connectTCP(member.host, member.port, factory, timeout=timeout)
        except Exception:
            log.failure("WebSocket: dialing {member} failed", member=member.key)
            self.clock.callLater(0, self._fail, 502, "Bad Gateway: the backend could not be reached")

    def backendHead(self, member: Member) -> tuple[bytes, bytes]:
        """
        The backend handshake around the key line: the request line, Host
        and the WebSocket headers, then the client's forwarded headers.
        """
        request = self.request
        target = self.target
        fwd = backendRequestHeaders(request, target, member, _NOT_FORWARDED)
        host = b""
        rest = []
        for name, value in fwd:
            if not host and name.lower() == b"host":
                host = value
            else:
                rest.append(name + b": " + value + b"\r\n")
        if not host:
            port = member.port
            host = member.hostHeader + (b"" if port == 80 else b":%d" % port)
        lines = [
            b"GET " + target.backendPath(request) + b" HTTP/1.1\r\n",
            b"Host: " + host + b"\r\n",
            b"Upgrade: websocket\r\n",
            b"Connection: Upgrade\r\n",
            b"Sec-WebSocket-Version: 13\r\n",
        ]
        if self.handshake.subprotocols:
            lines.append(
                b"Sec-WebSocket-Protocol: " + ", ".join(self.handshake.subprotocols).encode("ascii") + b"\r\n"
            )
        return b"".join(lines), b"".join(rest)

    def configureLeg(self, leg: _Leg) -> None:
        """Per-connection protocol options (autobahn copies the rest from the factory)."""
        settings = self.settings
        # autobahn sets TCP_NODELAY in connectionMade from an attribute it only
        # copies from the factory later: without this the backend leg keeps
        # Nagle's algorithm (the listener's socket has it off already).
        leg.tcpNoDelay = True  # type: ignore[attr-defined]
        leg.maxMessagePayloadSize = settings.webSocketMaxMessageSize  # type: ignore[attr-defined]
        ping = settings.webSocketPingInterval
        if ping > 0:
            leg.autoPingInterval = ping  # type: ignore[attr-defined]
            leg.autoPingTimeout = ping  # type: ignore[attr-defined]

    def backendConnectFailed(self, factory: _BackendFactory, reason: Failure) -> None:
        if factory is not self.factory or self.phase != DIALING:
            return
        detail = str(reason.value)
        self.ctx.passiveFailure(self.state, self.member, connectFailureKind(reason), detail)
        other = self.lease.failover()
        if other is not None:
            self._dial(other)
            return
        log.warn(
            "request={requestId}: WebSocket backend {member} unreachable: {error}",
            requestId=self.request.agwRequestId,
            member=self.member.key,
            error=detail,
        )
        self._fail(502, "Bad Gateway: the backend could not be reached")

    def _handshakeTimedOut(self) -> None:
        self.timer = None
        if self.phase != DIALING:
            return
        log.warn(
            "request={requestId}: WebSocket backend {member} did not complete the handshake in {timeout}s",
            requestId=self.request.agwRequestId,
            member=self.member.key,
            timeout=self.settings.requestTimeout,
        )
        self._abortDial()
        self._fail(504, "Gateway Timeout: the backend did not answer the WebSocket handshake in time")

    def _abortDial(self) -> None:
        self.factory = None
        leg, self.backendLeg = self.backendLeg, None
        if leg is not None and leg.state != _CLOSED:
            leg.dropConnection(abort=True)
        elif self.connector is not None:
            try:
                self.connector.disconnect()
            except Exception:
                pass
        self.connector = None

    def _clientGone(self, reason: Failure) -> None:
        if self.phase != DIALING:
            return
        self.request.agwError = "client went away"
        self._abortDial()
        self._end()
        self.ctx.accessLog(self.request, aborted=True)

    def _fail(self, code: int, message: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> None:
        if self.phase == ENDED:
            return
        self._end()
        errorPage(self.request, code, message, extra)

    # -- the backend answered

    def _backendFailed(self, leg: _BackendLeg, code: int | None, reason: str | None) -> None:
        """The backend leg closed before it opened: refused, invalid or dropped."""
        if self.phase != DIALING or leg is not self.backendLeg:
            return
        if leg.refusal is not None:
            status, head = leg.refusal
            if not relayableHead(head.partition(b"\r\n\r\n")[0]):
                leg.handshakeError = "malformed response head"  # answered as invalid below
            elif 200 <= status <= 599:
                extra = [
                    (name, value)
                    for name, values in _returnedHeaders(head).getAllRawHeaders()
                    if name.lower() in _REFUSAL_HEADERS
                    for value in values
                ]
                log.info(
                    "request={requestId}: WebSocket backend {member} refused the handshake with {status}",
                    requestId=self.request.agwRequestId,
                    member=self.member.key,
                    status=status,
                )
                phrase = reasonPhrase(status).decode("ascii") or "Error"
                self._fail(status, f"{phrase}: the backend refused the WebSocket handshake", extra)
                return
        if leg.handshakeError is not None:
            log.warn(
                "request={requestId}: WebSocket backend {member} gave an invalid handshake: {error}",
                requestId=self.request.agwRequestId,
                member=self.member.key,
                error=leg.handshakeError,
            )
            self._fail(502, "Bad Gateway: the backend's WebSocket handshake was invalid")
            return
        self.ctx.passiveFailure(self.state, self.member, "reset", reason or "closed during the handshake")
        self._fail(502, "Bad Gateway: the backend closed the connection during the WebSocket handshake")

    def backendOpened(self, leg: _BackendLeg) -> None:
        if self.phase != DIALING or leg is not self.backendLeg:
            leg.sendCloseFrame(code=GOING_AWAY, reasonUtf8=b"client went away")
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        head = (getattr(leg, "http_response_data", b"") or b"").partition(b"\r\n\r\n")[0]
        if not relayableHead(head):
            # The proxy's rule for a response head it cannot pass on (NUL, a
            # stray CR or LF, a field name that is not a token): 502.
            log.warn(
                "request={requestId}: WebSocket backend {member} gave an invalid handshake: malformed response head",
                requestId=self.request.agwRequestId,
                member=self.member.key,
            )
            leg.sendCloseFrame(code=GOING_AWAY, reasonUtf8=b"invalid handshake response")
            self._fail(502, "Bad Gateway: the backend's WebSocket handshake was invalid")
            return
        request = self.request
        self.subprotocol = leg.websocket_protocol_in_use
        headers: dict[str, list[str]] = {}
        returned = _returnedHeaders(head)
        settings = self.settings
        if settings.cookieBasedAffinity and self.pinned is not self.member:
            value = self.ctx.affinity.memberToken(self.target.scope, self.member.key)
            for cookie in affinityCookies(settings.affinityCookieName, value, request.isSecure()):
                returned.addRawHeader(b"Set-Cookie", cookie)
        if self.target.rewrite is not None:
            self.target.rewrite.applyResponse(request, returned)
        if request.agwRequestId is not None:
            # The 101 carries the request ID like every other answer (the backend's own is replaced).
            returned.setRawHeaders(request.agwIdHeader, [request.agwRequestId.encode("ascii")])
        for name, values in returned.getAllRawHeaders():
            headers[name.decode("latin-1")] = [v.decode("latin-1") for v in values]
        self.clientHeaders = headers
        request.agwServerLatency = self.clock.seconds() - self.dialedAt
        if not self._takeOver():
            leg.sendCloseFrame(code=GOING_AWAY, reasonUtf8=b"client went away")
            return

    def _takeOver(self) -> bool:
        """
        Move the listener's transport from twisted.web to the client leg and
        replay a canonical handshake into it (autobahn's WebSocketResource
        does the same); the client leg answers 101 at once.
        """
        request = self.request
        channel = request.channel
        transport = channel.transport if channel is not None else None
        if transport is None or clientGone(request):
            return False
        proto = _ClientLeg()
        proto.factory = self.bridge.serverFactory
        proto.session = self
        proto._now = self.clock.seconds
        self.configureLeg(proto)
        self.clientLeg = proto
        # An HTTP/2 stream (RFC 8441 extended CONNECT) is the client leg's
        # byte stream itself (agwtx.http.h2tunnel); a connection is taken over.
        tunnel = getattr(channel, "openTunnel", None)
        if tunnel is not None:
            transport = tunnel()
        else:
            channel.transport = None
        request.agwOnLost = None  # the client leg sees the client leave from now on
        proto.agwSlot, channel.agwSlot = getattr(channel, "agwSlot", None), None
        # HTTPChannel registered itself as the transport's producer; the
        # bridge registers its own once both legs are open.
        try:
            transport.unregisterProducer()
        except Exception:
            pass
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = proto
        elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
            transport.protocol.wrappedProtocol = proto
        else:
            transport.protocol = proto
        request.setResponseCode(101 if tunnel is None else 200)
        request.agwStatus = request.code
        proto.makeConnection(transport)
        transport.resumeProducing()
        hs = self.handshake
        lines = [
            b"GET / HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + hs.key + b"\r\n",
        ]
        if hs.subprotocols:
            lines.append(b"Sec-WebSocket-Protocol: " + ", ".join(hs.subprotocols).encode("ascii") + b"\r\n")
        if hs.deflateOffers:
            lines.append(
                b"Sec-WebSocket-Extensions: " + ", ".join(hs.deflateOffers).encode("latin-1") + b"\r\n"
            )
        lines.append(b"\r\n")
        # Bytes the client sent after its handshake, buffered by HTTPChannel
        # (an HTTP/2 stream holds its own until the tunnel opens).
        proto.dataReceived(b"".join(lines) + (bufferedInput(channel) if tunnel is None else b""))
        return True

    def clientOpened(self, leg: _ClientLeg) -> None:
        backend = self.backendLeg
        if backend is None or backend.state != _OPEN:
            leg.failedByMe = True  # nothing to relay to
            self.closeLeg(leg, GOING_AWAY, "backend went away")
            return
        self.phase = OPEN
        leg.peerLeg = backend
        backend.peerLeg = leg
        leg.fast = backend.fast = not leg.compressed and not backend.compressed
        for writer, reader in ((leg, backend), (backend, leg)):
            transport = writer.transport
            if transport is not None:
                try:
                    throttle = _Throttle(reader)
                    transport.registerProducer(throttle, True)
                    self.throttles.append(throttle)
                except RuntimeError:
                    log.warn(
                        "WebSocket: could not register flow control on {side}",
                        side=type(writer).__name__,
                    )
        now = self.clock.seconds()
        self.openedAt = self.lastActivity = now
        idle = self.settings.webSocketIdleTimeout
        if idle > 0:
            self.idleTimer = self.clock.callLater(idle, self._idleCheck)
        request = self.request
        log.info(
            "request={requestId}: WebSocket open {client} -> {member} {path} subprotocol={subprotocol}",
            requestId=request.agwRequestId,
            client=request.clientIP,
            member=self.member.key,
            path=request.path.decode("latin-1"),
            subprotocol=self.subprotocol or "-",
            pool=self.state.name,
            rule=request.agwRule,
            event="websocket_open",
        )
        handedOver = getattr(request, "handedOver", None)
        if handedOver is not None:
            handedOver()
        self.ctx.accessLog(request)
        self.bridge.opened(self)

    # -- closing

    def relayClose(self, leg: _Leg, code: int | None, reasonRaw: bytes | None) -> None:
        """C{leg}'s peer sent a close: send it on the other leg as it was."""
        if self.closedBy is None:
            self.closedBy = "backend" if leg.isBackend else "client"
        self._closing()
        leg.peerLeg.sendCloseFrame(code=code, reasonUtf8=reasonRaw, isReply=False)

    def answerHeld(self, leg: _Leg, code: int | None, reasonRaw: bytes | None) -> None:
        """Answer the close C{leg}'s peer sent, now that the other side has answered."""
        if not leg.closeHeld:
            return
        leg.closeHeld = False
        if leg.state != _OPEN:  # type: ignore[attr-defined]
            return
        leg.sendCloseFrame(code=code, reasonUtf8=reasonRaw, isReply=True)  # type: ignore[attr-defined]
        if leg.isBackend:
            # The server drops the TCP connection; autobahn's own timer
            # drops it if the backend does not.
            if leg.serverConnectionDropTimeout > 0:  # type: ignore[attr-defined]
                leg.serverConnectionDropTimeoutCall = self.clock.callLater(  # type: ignore[attr-defined]
                    leg.serverConnectionDropTimeout,  # type: ignore[attr-defined]
                    leg.onServerConnectionDropTimeout,  # type: ignore[attr-defined]
                )
        else:
            leg.dropConnection(abort=False)  # type: ignore[attr-defined]

    def _closing(self) -> None:
        """A closing handshake started: no idle timer, no more flow control."""
        self._stopIdle()
        for throttle in self.throttles:
            throttle.release()

    def closeLeg(self, leg: _Leg, code: int, reason: str) -> None:
        """The gateway closes C{leg} (shutdown, idle, a failed other leg)."""
        self._closing()
        state = leg.state  # type: ignore[attr-defined]
        if leg.closeHeld:
            self.answerHeld(leg, code, reason.encode("utf-8"))
        elif state == _OPEN:
            leg.gatewayClose = code
            leg.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8"), isReply=False)  # type: ignore[attr-defined]
        elif state == _CONNECTING:
            leg.dropConnection(abort=True)  # type: ignore[attr-defined]

    def _lostCode(self, leg: _Leg) -> tuple[int, str]:
        if leg.isBackend:
            return INTERNAL_ERROR, "backend connection lost"
        return GOING_AWAY, "client connection lost"

    def legFailed(self, leg: _Leg) -> None:
        """The gateway failed C{leg} (e.g. 1009): the other leg goes as if it was lost."""
        if self.closedBy is None:
            self.closedBy = "gateway"
        self._stopIdle()
        other = leg.peerLeg
        if other is not None:
            code, reason = self._lostCode(leg)
            self.closeLeg(other, code, reason)

    def legClosed(self, leg: _Leg, wasClean: bool, code: int | None, reason: str | None) -> None:
        leg.closeInfo = (wasClean, code)  # type: ignore[attr-defined]
        self._closing()
        if self.phase == DIALING:
            if leg.isBackend:
                if not leg.opened:
                    self._backendFailed(leg, code, reason)  # type: ignore[arg-type]
                    return
                # Opened, but the client leg never did.
                self._maybeEnd()
                return
            # The client leg failed its own handshake (autobahn answered it).
            self.request.agwError = f"client handshake failed: {reason}"
            self.request.setResponseCode(400)
            self.ctx.accessLog(self.request)
            backend = self.backendLeg
            if backend is not None:
                self.closeLeg(backend, GOING_AWAY, "client handshake failed")
            self._maybeEnd()
            return
        if self.phase == ENDED:
            return
        other = leg.peerLeg
        if other is not None:
            if other.closeHeld:
                # The other peer's close never got its answer from this side.
                reasonRaw = other.remoteCloseReason
                self.answerHeld(
                    other, other.remoteCloseCode, reasonRaw.encode("utf-8") if reasonRaw else None
                )
            elif other.state == _OPEN:
                self._stopIdle()
                if wasClean and not leg.failedByMe and not leg.closedByMe:  # type: ignore[attr-defined]
                    # A close we did not hold (autobahn answered it): pass it on.
                    if self.closedBy is None:
                        self.closedBy = "backend" if leg.isBackend else "client"
                    other.sendCloseFrame(
                        code=code,
                        reasonUtf8=reason.encode("utf-8") if reason else None,
                        isReply=False,
                    )
                else:
                    if self.closedBy is None:
                        self.closedBy = "backend" if leg.isBackend else "client"
                    lost, why = self._lostCode(leg)
                    self.closeLeg(other, lost, why)
        self._maybeEnd()

    def _maybeEnd(self) -> None:
        for leg in (self.clientLeg, self.backendLeg):
            if leg is not None and leg.state != _CLOSED:
                return
        if self.phase == OPEN:
            self._logClose()
        self._end()

    def _logClose(self) -> None:
        client, backend = self.clientLeg, self.backendLeg
        assert client is not None and backend is not None
        cClean, cCode = getattr(client, "closeInfo", (False, None))
        bClean, bCode = getattr(backend, "closeInfo", (False, None))
        fields = {
            "closedBy": self.closedBy or "-",
            "clientCode": cCode,
            "backendCode": bCode,
            "wsDuration": self.clock.seconds() - self.openedAt,
            "upMessages": client.rxMessages,
            "upBytes": client.rxBytes,
            "downMessages": backend.rxMessages,
            "downBytes": backend.rxBytes,
        }
        log.info(
            "request={requestId}: WebSocket closed {client} -> {member} by {closedBy}: client {clientCode} "
            "backend {backendCode}, {wsDuration:.1f}s, up {upMessages} msgs/{upBytes} B, "
            "down {downMessages} msgs/{downBytes} B",
            requestId=self.request.agwRequestId,
            client=self.request.clientIP,
            member=self.member.key,
            path=self.request.path.decode("latin-1"),
            clientClean=cClean,
            backendClean=bClean,
            duration=fields["wsDuration"],
            event="websocket_close",
            **fields,
        )
        self.ctx.webSocketClosed(self.request, fields)

    def _end(self) -> None:
        if self.phase == ENDED:
            return
        self.phase = ENDED
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self._stopIdle()
        self.lease.release()
        self.bridge.ended(self)

    # -- idle timeout and shutdown

    def _stopIdle(self) -> None:
        if self.idleTimer is not None and self.idleTimer.active():
            self.idleTimer.cancel()
        self.idleTimer = None

    def _idleCheck(self) -> None:
        self.idleTimer = None
        if self.phase != OPEN:
            return
        timeout = self.settings.webSocketIdleTimeout
        idle = self.clock.seconds() - self.lastActivity
        if idle < timeout:
            self.idleTimer = self.clock.callLater(timeout - idle, self._idleCheck)
            return
        log.info(
            "request={requestId}: WebSocket {client} -> {member} idle for {idle:.0f}s: closing with 1001",
            requestId=self.request.agwRequestId,
            client=self.request.clientIP,
            member=self.member.key,
            idle=idle,
        )
        self.closedBy = "idle timeout"
        self.closeBoth(GOING_AWAY, "idle timeout")

    def closeBoth(self, code: int, reason: str) -> None:
        self._stopIdle()
        for leg in (self.clientLeg, self.backendLeg):
            if leg is not None:
                self.closeLeg(leg, code, reason)

    def flushMetrics(self) -> None:
        """Add the messages and bytes relayed since the last flush to the metrics."""
        client, backend = self.clientLeg, self.backendLeg
        if client is None or backend is None:
            return
        counts = (client.rxMessages, client.rxBytes, backend.rxMessages, backend.rxBytes)
        last, self._flushed = self._flushed, counts
        metrics = self.ctx.metrics
        for counter, now, before in zip(  # noqa: B905 (equal lengths by construction)
            (metrics.messagesUp, metrics.bytesUp, metrics.messagesDown, metrics.bytesDown),
            counts,
            last,
        ):
            if now > before:
                counter.inc(now - before)

    def close(self, code: int = GOING_AWAY, reason: str = "gateway shutting down") -> None:
        """
        Graceful stop (C{GatewayContext.closeWebSockets}, L{WebSocketBridge.abortHandshakes}):
        both legs of an open one get C{code}, a handshake in progress a 503.
        """
        if self.phase == DIALING:
            self._abortDial()
            self._fail(503, "Service Unavailable: the gateway is shutting down")
        elif self.phase == OPEN:
            if self.closedBy is None:
                self.closedBy = "gateway"
            self.closeBoth(code, reason)

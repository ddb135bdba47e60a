"""
The two legs of a bridged WebSocket: autobahn protocols (server towards the
client, client towards the backend) that relay frames to each other with
backpressure, and the backend factory that dials the member.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from autobahn.websocket.types import ConnectionRequest
from twisted.logger import Logger
from twisted.python.failure import Failure

from agwtx.compat.autobahnprivate import feedFrames, isMessageCompressed

from agwtx.websocket.frames import (
    BUFFER_FRAME,
    MESSAGE_TOO_BIG,
    PIECE,
    SMALL_MASK,
    _ALLOWED_CLOSE,
    _CLOSING,
    _OPEN,
    _getrandbits,
    frameHead,
    xorMask,
)
from agwtx.websocket.handshake import _statusOf


log = Logger(namespace="agw.websocket")

# -- the legs ----------------------------------------------------------------


class _Leg:
    """
    Relaying, shared by both legs: what this leg receives is sent on
    C{peerLeg}.  Mixed into autobahn's Twisted protocols, so the attributes
    used here (C{state}, C{current_frame}, C{failedByMe}, ...) are theirs.
    """

    session: Any
    """The L{agwtx.websocket.session.WebSocketSession} (that module imports this one)."""
    peerLeg: Any = None
    isBackend = False
    closeHeld = False
    """The peer sent a close that this leg answers once the other peer has."""
    gatewayClose: int | None = None
    """The code of a close the gateway itself started on this leg."""
    rxMessages = 0
    rxBytes = 0
    opened = False
    _binary = False
    _begun = False
    _frameLength = 0
    _fin = True
    _parts: list[bytes]
    _partsLength = 0
    _piecesSent = False
    _consumed = 0
    _now: Callable[[], float]

    # -- cheaper I/O paths (autobahn's formats debug strings on every call)

    fast = False
    """Set by the session when neither leg compresses: see L{_relayWhole}."""
    compressed = False
    """Whether permessage-deflate runs on this leg (known once its handshake is done, L{opening}, before
    any frame is read); without it no message is compressed, which the frame paths check first."""

    def opening(self) -> None:
        """The leg's handshake is done: note what it negotiated."""
        self.opened = True
        self.compressed = bool(self.websocket_extensions_in_use)  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if (
            self.fast
            and self.state == _OPEN  # type: ignore[attr-defined]
            and self.current_frame is None  # type: ignore[attr-defined]
            and not self.inside_message  # type: ignore[attr-defined]
            and not self.data  # type: ignore[attr-defined]
            and self.autoPingTimeoutCall is None  # type: ignore[attr-defined]
        ):
            data = self._relayWhole(data)
            if not data:
                return
        feedFrames(self, data)

    def _relayWhole(self, data: bytes) -> bytes:
        """
        The common case, without autobahn's frame machinery: complete,
        unfragmented text or binary frames under 64 KiB with no extension
        bits, at the start of a read while autobahn holds no partial frame.
        Returns what is left for autobahn, from the first frame that is
        anything else (control frames, fragments, big or partial frames,
        malformed ones: autobahn validates and handles those).

        Backend to client, such frames go out byte for byte.  Client to
        backend, the payload is re-masked with a fresh key in one pass (the
        XOR of the client's key and the new one).
        """
        peer = self.peerLeg
        fromClient = not self.isBackend
        limit = self.maxMessagePayloadSize  # type: ignore[attr-defined]
        n = len(data)
        pos = 0
        count = 0
        total = 0
        out: list[bytes] = []
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            if b0 != 0x82 and b0 != 0x81:
                break
            length = b1 & 0x7F
            p = pos + 2
            if length == 126:
                if n - p < 2:
                    break
                length = (data[p] << 8) | data[p + 1]
                if length < 126:
                    break
                p += 2
            elif length == 127:
                break
            if limit and length > limit:
                break
            if fromClient:
                if not b1 & 0x80 or n - p < 4:
                    break
                end = p + 4 + length
                if end > n:
                    break
                r = _getrandbits(32)
                key = (int.from_bytes(data[p : p + 4], "big") ^ r).to_bytes(4, "big")
                payload = data[p + 4 : end]
                if length <= SMALL_MASK:
                    payload = (
                        int.from_bytes(payload, "little")
                        ^ int.from_bytes((key * ((length >> 2) + 1))[:length], "little")
                    ).to_bytes(length, "little")
                else:
                    payload = xorMask(key, 0, payload)
                out.append(data[pos:p] + r.to_bytes(4, "big") + payload)
            else:
                if b1 & 0x80:
                    break
                end = p + length
                if end > n:
                    break
            count += 1
            total += length
            pos = end
        if not count:
            return data
        if peer.state == _OPEN:
            if fromClient:
                peer.transport.write(b"".join(out))
            else:
                peer.transport.write(data[:pos] if pos < n else data)
        self.rxMessages += count
        self.rxBytes += total
        self.session.lastActivity = self._now()
        return data[pos:]

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if sync or chopsize or self.send_queue:  # type: ignore[attr-defined]
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
        else:
            self.transport.write(data)  # type: ignore[attr-defined]

    # -- frame-level receive -> send on the other leg

    def onMessageBegin(self, isBinary: bool) -> None:
        self._binary = isBinary
        self._begun = False
        self.message_data_total_length = 0

    def onMessageFrameBegin(self, length: int) -> None:
        if self.failedByMe:  # type: ignore[attr-defined]
            return
        if self.compressed and isMessageCompressed(self):
            # A compressed frame's length says nothing about the message's:
            # counted as it inflates (onMessageFrameData).
            self._consumed = 0
        else:
            total = self.message_data_total_length + length
            self.message_data_total_length = total
            limit = self.maxMessagePayloadSize  # type: ignore[attr-defined]
            if limit and total > limit:
                self._tooBig(total, limit)
                return
        self._frameLength = length
        self._fin = self.current_frame.fin  # type: ignore[attr-defined]
        self._parts = []
        self._partsLength = 0
        self._piecesSent = False
        self.session.lastActivity = self._now()

    def onMessageFrameData(self, payload: bytes) -> None:
        if self.failedByMe:  # type: ignore[attr-defined]
            return
        if self.compressed and isMessageCompressed(self):
            # autobahn has added (inflated - compressed) for this chunk to
            # message_data_total_length and bounded the inflation by it;
            # adding the compressed bytes consumed makes it the inflated
            # total, whatever the reads that delivered the frame.
            consumed = self.current_frame_masker.pointer()  # type: ignore[attr-defined]
            total = self.message_data_total_length + consumed - self._consumed
            self._consumed = consumed
            self.message_data_total_length = total
            limit = self.maxMessagePayloadSize  # type: ignore[attr-defined]
            if limit and total > limit:
                self._tooBig(total, limit)
                return
        self._parts.append(payload)
        if self._frameLength > BUFFER_FRAME:
            self._partsLength += len(payload)
            if self._partsLength >= PIECE:
                self._sendPiece()

    def _sendPiece(self) -> None:
        parts = self._parts
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        self._partsLength = 0
        self._piecesSent = True
        self.rxBytes += len(data)
        self.session.lastActivity = self._now()
        self._sendFrame(data)

    def _sendFrame(self, data: bytes) -> None:
        """A frame of the current message on the other leg, which begins it there first."""
        other = self.peerLeg
        if not self._begun:
            self._begun = True
            other.beginMessage(self._binary)
        other.sendMessageFrame(data)

    def onMessageFrameEnd(self) -> None:
        if self.failedByMe:  # type: ignore[attr-defined]
            return
        parts = self._parts
        if not parts and self._piecesSent:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._parts = []
        self.rxBytes += len(data)
        other = self.peerLeg
        if self._fin and not self._begun:
            # A whole message in one frame: one frame out, exactly.
            if other.state != _OPEN:
                return
            if not other.compressed:
                other.sendWhole(data, self._binary)
                return
            if not other.maxMessagePayloadSize:
                other.sendMessage(data, self._binary)
                return
            # With a limit, autobahn's sendMessage refuses compressed output
            # a few bytes over it (after compressing, so the deflate context
            # would already be ahead of the peer's): stream it instead.
        self._sendFrame(data)

    def onMessageEnd(self) -> None:
        if self.failedByMe:  # type: ignore[attr-defined]
            return
        self.rxMessages += 1
        if self._begun:
            self._begun = False
            self.peerLeg.endMessage()

    def sendWhole(self, data: bytes, binary: bool) -> None:
        """
        One uncompressed message in one frame: what autobahn's C{sendMessage}
        writes, without its per-call checks and with cheaper masking.
        """
        if self.isBackend:
            mask = _getrandbits(32).to_bytes(4, "big")
            frame = frameHead(2 if binary else 1, len(data), mask) + xorMask(mask, 0, data)
        else:
            frame = frameHead(2 if binary else 1, len(data), None) + data
        self.transport.write(frame)  # type: ignore[attr-defined]

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: str) -> None:
        # autobahn's own checks (a compressed frame inflating past the limit)
        # end here too: same close, and the other leg goes at once.
        self._tooBig(msg_size, max_msg_size)

    def _tooBig(self, total: int, limit: int) -> None:
        self.wasMaxMessagePayloadSizeExceeded = True
        self.failedByMe = True
        log.info(
            "WebSocket message from the {side} exceeds {limit} bytes: closing with 1009",
            side="backend" if self.isBackend else "client",
            limit=limit,
        )
        self.gatewayClose = MESSAGE_TOO_BIG
        self.sendCloseFrame(code=MESSAGE_TOO_BIG, reasonUtf8=b"message too big", isReply=False)  # type: ignore[attr-defined]
        self.session.legFailed(self)

    # -- control frames

    def onPing(self, payload: bytes) -> None:
        if self.closeHeld:
            # The peer already sent its close: nothing it sends may be
            # answered any more (RFC 6455 5.5.1; Autobahn case 7.1.3).
            return
        self.session.lastActivity = self._now()
        super().onPing(payload)  # type: ignore[misc]

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        other = self.peerLeg
        if (
            self.state == _OPEN  # type: ignore[attr-defined]
            and other is not None
            and other.state == _OPEN
            and not other.closeHeld
            and _validClose(code, reasonRaw)
        ):
            # The peer starts the closing handshake: pass it on, and answer
            # it when the other peer has answered (or is gone).
            self.remoteCloseCode = code
            self.remoteCloseReason = reasonRaw.decode("utf-8") if reasonRaw else None
            self.wasClean = True
            self.closeHeld = True
            self.session.relayClose(self, code, reasonRaw)
            return None
        wasRelayed = self.state == _CLOSING and self.closedByMe and self.gatewayClose is None  # type: ignore[attr-defined]
        result = super().onCloseFrame(code, reasonRaw)  # type: ignore[misc]
        if wasRelayed and other is not None and other.closeHeld:
            reason = self.remoteCloseReason  # type: ignore[attr-defined]
            self.session.answerHeld(
                other,
                self.remoteCloseCode,
                reason.encode("utf-8") if reason else None,  # type: ignore[attr-defined]
            )
        return result

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.session.legClosed(self, wasClean, code, reason)


def _validClose(code: int | None, reasonRaw: bytes | None) -> bool:
    """A close frame autobahn would accept without a protocol error."""
    if code is not None and not (code in _ALLOWED_CLOSE or 3000 <= code <= 4999):
        return False
    if reasonRaw:
        try:
            reasonRaw.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


class _ClientLeg(_Leg, WebSocketServerProtocol):  # type: ignore[misc]
    """The browser side: an autobahn server on the listener's transport."""

    isBackend = False

    agwSlot: Any = None
    """The connection-limit slot taken over from the HTTP channel (L{agwtx.runtime.limits})."""

    def connectionLost(self, reason: Any) -> None:
        slot, self.agwSlot = self.agwSlot, None
        if slot is not None:
            slot.release()
        super().connectionLost(reason)

    def onConnect(self, request: ConnectionRequest) -> Any:
        session = self.session
        return session.subprotocol, session.clientHeaders

    def onFrameData(self, payload: bytes) -> bool | None:
        # The factory sets applyMask=False, so autobahn hands over the payload
        # still masked; unmask it here, where small frames are cheaper.
        frame = self.current_frame
        mask: Any = frame.mask
        if mask is not None and payload and not self.applyMask:  # type: ignore[attr-defined]
            offset = self.current_frame_masker.pointer() - len(payload)
            payload = xorMask(mask, offset, payload)
        result: bool | None = super().onFrameData(payload)
        return result

    def onOpen(self) -> None:
        self.opening()
        self.session.clientOpened(self)


class _BackendLeg(_Leg, WebSocketClientProtocol):  # type: ignore[misc]
    """The backend side: an autobahn client that writes the forwarded handshake."""

    isBackend = True
    refusal: tuple[int, bytes] | None = None
    handshakeError: str | None = None

    def startHandshake(self) -> None:
        # autobahn's own handshake always writes "Host: host:port" and its
        # User-Agent; the gateway forwards the client's Host (or the
        # configured override) and the client's headers instead.
        key = base64.b64encode(os.urandom(16))
        self.websocket_key = key
        head = self.session.backendHead(self.factory.member)  # type: ignore[attr-defined]
        offers = self.perMessageCompressionOffers  # type: ignore[attr-defined]
        ext = b""
        if offers:
            ext = (
                b"Sec-WebSocket-Extensions: "
                + ", ".join(o.get_extension_string() for o in offers).encode("ascii")
                + b"\r\n"
            )
        data = head[0] + b"Sec-WebSocket-Key: " + key + b"\r\n" + ext + head[1] + b"\r\n"
        self.http_request_data = data
        self.sendData(data)

    def failHandshake(self, reason: str) -> None:
        status = _statusOf(getattr(self, "http_status_line", None))
        if status is not None and status != 101:
            self.refusal = (status, getattr(self, "http_response_data", b"") or b"")
        self.handshakeError = reason
        super().failHandshake(reason)

    def onOpen(self) -> None:
        self.opening()
        self.session.backendOpened(self)


class _BackendFactory(WebSocketClientFactory):
    """Per dial: carries the session, the member and the client's offer."""

    noisy = False

    def buildProtocol(self, addr: Any) -> _BackendLeg:
        session = self.session  # type: ignore[attr-defined]
        proto = _BackendLeg()
        proto.factory = self
        proto.session = session
        proto._now = session.clock.seconds
        session.configureLeg(proto)
        session.backendLeg = proto
        return proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.session.backendConnectFailed(self, reason)  # type: ignore[attr-defined]


def _acceptDeflate(offers: list[Any]) -> Any:
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


def _acceptDeflateResponse(response: Any) -> Any:
    if isinstance(response, PerMessageDeflateResponse):
        return PerMessageDeflateResponseAccept(response)
    return None


_COMMON_OPTIONS: dict[str, Any] = {
    "utf8validateIncoming": False,
    "maxFramePayloadSize": 0,
    "maxMessagePayloadSize": 0,
    "autoFragmentSize": 0,
    "failByDrop": False,
    "echoCloseCodeReason": True,
    "openHandshakeTimeout": 0,
    "closeHandshakeTimeout": 5,
    "tcpNoDelay": True,
}

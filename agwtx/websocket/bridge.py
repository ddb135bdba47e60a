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

import base64
import copy
import binascii
import inspect
import os
import random
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionRequest
from autobahn.websocket import protocol as _autobahnProtocol
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from agwtx.websocket import xormask
from agwtx.proxy.affinity import affinityCookies
from agwtx.compat.autobahnprivate import feedFrames, isMessageCompressed
from agwtx.compat.twistedprivate import bufferedInput, clientGone
from agwtx.proxy.pool import Lease, Member, PoolState
from agwtx.proxy.client import relayableHead
from agwtx.proxy.reverse import (
    chooseMember,
    backendRequestHeaders,
    connectFailureKind,
    connectionTokens,
    errorPage,
    responseHeaders,
)

if TYPE_CHECKING:
    from agwtx.context import GatewayContext
    from agwtx.routing.router import BackendTarget
    from agwtx.http.site import GatewayRequest

DEFLATE = "max_output_len" in inspect.signature(PerMessageDeflate.decompress_message_data).parameters
"""
Whether permessage-deflate is negotiated: only with an autobahn that bounds a
compressed frame's inflation by the message limit (the fix for advisory
GHSA-hxp9-w8x3-p566, 2026). Older releases (24.4, the last for Python 3.9 and
so for Debian's PyPy) inflate a whole frame first and do not count what it
inflates to, so the gateway declines every offer there and both legs run
uncompressed, which RFC 7692 allows.
"""

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

BUFFER_FRAME = 64 * 1024
"""Frames up to this size are relayed whole (one frame in, one frame out)."""
PIECE = 32 * 1024
"""Bigger frames go out in pieces of at least this size as they arrive."""

_OPEN = WebSocketProtocol.STATE_OPEN
_CLOSING = WebSocketProtocol.STATE_CLOSING
_CLOSED = WebSocketProtocol.STATE_CLOSED
_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_ALLOWED_CLOSE = frozenset(WebSocketProtocol.CLOSE_STATUS_CODES_ALLOWED)

GOING_AWAY = 1001
INTERNAL_ERROR = 1011
MESSAGE_TOO_BIG = 1009

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Request headers the backend handshake never copies: autobahn's client
# writes its own key, version, subprotocol offer and extension offer.
_NOT_FORWARDED = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"sec-websocket-accept",
        b"content-length",
    }
)

# Backend 101 headers that are not the backend's to pass on (besides
# hop-by-hop ones): the client leg's handshake writes its own.
_NOT_RETURNED = frozenset(
    {
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"sec-websocket-version",
        b"content-length",
        b"server",
        b"date",
    }
)

# Refusal headers passed on with a backend's non-101 status.
_REFUSAL_HEADERS = frozenset({b"location", b"www-authenticate", b"retry-after", b"set-cookie"})


# -- pure helpers ---------------------------------------------------------


def _isToken(value: bytes) -> bool:
    return bool(value) and all(c in _TCHAR for c in value)


def parseExtensionOffers(header: str) -> list[tuple[str, str, dict[str, list[Any]]]]:
    """
    C{Sec-WebSocket-Extensions} as (name, original text, params), params in
    the shape autobahn's offer parsers take (quotes removed, bare names True).
    """
    out: list[tuple[str, str, dict[str, list[Any]]]] = []
    for element in header.split(","):
        element = element.strip()
        if not element:
            continue
        parts = [p.strip() for p in element.split(";")]
        params: dict[str, list[Any]] = {}
        for p in parts[1:]:
            key, eq, value = p.partition("=")
            key = key.strip().lower()
            v: Any = True
            if eq:
                v = value.strip()
                if v[:1] == '"':
                    v = v[1:]
                if v[-1:] == '"':
                    v = v[:-1]
            params.setdefault(key, []).append(v)
        out.append((parts[0].lower(), element, params))
    return out


def _deflateOffers(header: str | None) -> list[str]:
    """
    The client's permessage-deflate offers that parse.  RFC 7692 5: a server
    declines (ignores) an offer with bad parameters; it does not fail.
    """
    if not header:
        return []
    good = []
    for name, text, params in parseExtensionOffers(header):
        if name != PerMessageDeflateOffer.EXTENSION_NAME:
            continue
        try:
            PerMessageDeflateOffer.parse(params)
        except Exception:
            continue
        good.append(text)
    return good


class HandshakeError(Exception):
    """A handshake the gateway answers itself, with a status and a short message."""

    def __init__(self, code: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.headers = list(headers)


class ClientHandshake:
    """What the bridge needs from a valid client handshake."""

    __slots__ = ("deflateOffers", "key", "subprotocols")

    def __init__(self, key: bytes, subprotocols: list[str], deflateOffers: list[str]) -> None:
        self.key = key
        self.subprotocols = subprotocols
        self.deflateOffers = deflateOffers


def checkHandshake(method: bytes, version: bytes, headers: Headers) -> ClientHandshake:
    """
    Validate an opening handshake (RFC 6455 4.2.1); raise L{HandshakeError}
    with the status to answer.  An unsupported or missing version is 426 with
    C{Sec-WebSocket-Version: 13}; anything else malformed is 400.
    """
    if method != b"GET":
        raise HandshakeError(400, "Bad Request: a WebSocket handshake must use GET")
    if version != b"HTTP/1.1":
        raise HandshakeError(400, "Bad Request: a WebSocket handshake must use HTTP/1.1")
    if b"upgrade" not in connectionTokens(list(headers.getRawHeaders(b"connection") or ())):
        raise HandshakeError(400, "Bad Request: Connection must include the upgrade token")
    versions = headers.getRawHeaders(b"sec-websocket-version") or []
    if len(versions) != 1 or versions[0].strip() != b"13":
        raise HandshakeError(
            426,
            "Upgrade Required: only WebSocket version 13 is supported",
            [(b"Sec-WebSocket-Version", b"13"), (b"Upgrade", b"websocket")],
        )
    keys = headers.getRawHeaders(b"sec-websocket-key") or []
    if len(keys) != 1:
        raise HandshakeError(400, "Bad Request: exactly one Sec-WebSocket-Key is required")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Bad Request: Sec-WebSocket-Key must be 16 bytes in base64")
    subprotocols: list[str] = []
    offered = headers.getRawHeaders(b"sec-websocket-protocol")
    if offered:
        for token in b",".join(offered).split(b","):
            token = token.strip()
            if not _isToken(token):
                raise HandshakeError(400, "Bad Request: malformed Sec-WebSocket-Protocol")
            name = token.decode("ascii")
            if name in subprotocols:
                raise HandshakeError(400, "Bad Request: a subprotocol is offered twice")
            subprotocols.append(name)
    origins = headers.getRawHeaders(b"origin")
    if origins is not None and len(origins) > 1:
        raise HandshakeError(400, "Bad Request: more than one Origin header")
    extensions = headers.getRawHeaders(b"sec-websocket-extensions")
    deflate = (
        _deflateOffers(b", ".join(extensions).decode("latin-1") if extensions else None) if DEFLATE else []
    )
    return ClientHandshake(key, subprotocols, deflate)


def _returnedHeaders(head: bytes) -> Headers:
    """The end-to-end headers of a backend's response head that are the backend's to pass on."""
    pairs: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name and name[-1:] not in (b" ", b"\t"):
            pairs.append((name, value.strip(b" \t")))
    headers = responseHeaders(pairs)
    for name in _NOT_RETURNED:
        headers.removeHeader(name)
    return headers


def _statusOf(statusLine: str | None) -> int | None:
    if not statusLine:
        return None
    parts = statusLine.split()
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit() and len(parts[1]) == 3:
        return int(parts[1])
    return None


# -- masking ------------------------------------------------------------------

SMALL_MASK = 2048
"""Payloads up to this size are (un)masked with Python's big integers: for
small frames that is several times cheaper than setting up autobahn's NVX
masker, which wins for bigger ones."""

_getrandbits = random.getrandbits
xormask.install()  # PyPy with an autobahn before 26 (see agwtx.websocket.xormask)


def xorMask(mask: bytes, offset: int, data: bytes) -> bytes:
    """C{data} (un)masked with C{mask}, starting C{offset} bytes into the frame."""
    n = len(data)
    if not n:
        return data
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    if n <= SMALL_MASK:
        key = (mask * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    # autobahn's masker, whichever it is (xormask.install may have replaced it).
    result: bytes = _autobahnProtocol.create_xor_masker(mask, n).process(data)
    return result


def frameHead(opcode: int, length: int, mask: bytes | None) -> bytes:
    """A final frame's header (RFC 6455 5.2)."""
    m = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes((0x80 | opcode, m | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, m | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, m | 127)) + length.to_bytes(8, "big")
    return head + mask if mask is not None else head


# -- flow control -----------------------------------------------------------


@implementer(IPushProducer)
class _Throttle:
    """
    Registered on one leg's transport to pause reading on the other leg
    while this one's send buffer is full.
    """

    __slots__ = ("leg", "paused", "released")

    def __init__(self, leg: Any) -> None:
        self.leg = leg
        self.paused = False
        self.released = False

    def pauseProducing(self) -> None:
        transport = self.leg.transport
        if not self.paused and not self.released and transport is not None:
            self.paused = True
            transport.pauseProducing()

    def release(self) -> None:
        """Closing: the reader must read its peer's close, whatever the writer's buffer."""
        self.released = True
        self.resumeProducing()

    def resumeProducing(self) -> None:
        transport = self.leg.transport
        if self.paused and transport is not None:
            self.paused = False
            transport.resumeProducing()

    def stopProducing(self) -> None:
        # The writing side is gone: the reader must read on, if only its close.
        self.resumeProducing()


# -- the legs ----------------------------------------------------------------


class _Leg:
    """
    Relaying, shared by both legs: what this leg receives is sent on
    C{peerLeg}.  Mixed into autobahn's Twisted protocols, so the attributes
    used here (C{state}, C{current_frame}, C{failedByMe}, ...) are theirs.
    """

    session: WebSocketSession
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
    """Whether permessage-deflate runs on this leg (known once its handshake is done, L{opening})."""

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
        if isMessageCompressed(self):
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
        if isMessageCompressed(self):
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
        session: WebSocketSession = self.session  # type: ignore[attr-defined]
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
        bridge: WebSocketBridge,
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
        self.request.notifyFinish().addErrback(self._clientGone)
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
                phrase = RESPONSES.get(status, b"Error").decode("latin-1")
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
        channel.transport = None
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
        request.setResponseCode(101)
        request.agwStatus = 101
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
        # Bytes the client sent after its handshake, buffered by HTTPChannel.
        proto.dataReceived(b"".join(lines) + bufferedInput(channel))
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
            handshake = checkHandshake(request.method, request.clientproto, request.requestHeaders)
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

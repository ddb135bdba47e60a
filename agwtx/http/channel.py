"""
The HTTP/1.1 connection of a listener (L{GatewayChannel}): twisted.web's
channel with bounded chunked bodies, head and body timeouts, refusals of
unreadable heads and pipelining limits.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.logger import Logger
from twisted.web import http

from agwtx.compat.twistedprivate import (
    ChunkedTransferDecoder,
    MalformedChunkedDataError,
)
from agwtx.config.values import HEADER_TOKEN_RE
from agwtx.runtime.headers import connectionTokens

from agwtx.http.refusal import (
    LINGER_BYTES,
    LINGER_TIMEOUT,
    _400,
    _400_CTL,
    _400_LF,
    _400_TARGET,
    _408,
    _501_TE,
    _Refusal,
    _canned,
    bodyTooLarge,
    headersTooLarge,
    lineTooLong,
    sendRefusal,
    tooManyHeaders,
)


log = Logger(namespace="agw.web")

MAX_CONTENT_LENGTH = 2**63 - 1
"""The largest request Content-Length taken (a signed 64-bit length)."""

_TCHAR = bytes(c for c in range(128) if HEADER_TOKEN_RE.fullmatch(chr(c)))
"""The bytes of a field name (RFC 9110 token characters), as a deletion set for C{bytes.translate}."""
_CTL = bytes(c for c in range(32) if c != 9) + b"\x7f"
"""Control characters a header field value may not hold (RFC 9110 section 5.5:
NUL, CR and LF must be refused; the others may be, and a proxy refuses them
rather than pass a byte a backend may read as white space or a line end)."""

MAX_DROPPED_NAMES_LOGGED = 4
"""Header names with C{_} named in a log line about dropped fields (each cut
to 64 bytes): enough to diagnose, too little to flood."""

_HUGE_CHUNK = re.compile(b"0*[1-9A-Fa-f][0-9A-Fa-f]{15}")
"""A chunk size of 16 or more significant hex digits: 2**60 bytes or more,
larger than any real body; see L{_BoundedChunkedDecoder}."""


class _BoundedChunkedDecoder(ChunkedTransferDecoder):
    """
    twisted.web's chunked decoder, refusing a chunk size no body reaches as
    soon as its digits are in, before the line even ends: taken, the gateway
    would wait for a body that never comes, and a backend that reads the
    size into 64 bits would wrap it (as nginx, which refuses sizes that do
    not fit its off_t).  Trailer lines must be field lines.
    """

    def _dataReceived_CHUNK_LENGTH(self) -> bool:
        if _HUGE_CHUNK.match(self._buffer):
            raise MalformedChunkedDataError("chunk size of 16 or more hex digits")
        return bool(super()._dataReceived_CHUNK_LENGTH())

    def _dataReceived_TRAILER(self) -> bool:
        # twisted.web keeps trailer lines unchecked; a line that is not a
        # field line makes the message malformed (the trailers themselves are
        # not forwarded).  Found by the fuzzer.
        end = self._buffer.find(b"\r\n", self._start)
        if end > 0:
            name, colon, value = bytes(self._buffer[:end]).partition(b":")
            if (
                not (colon and name)
                or name.translate(None, _TCHAR)
                or len(value.translate(None, _CTL)) != len(value)
            ):
                raise MalformedChunkedDataError("malformed trailer field line")
        return bool(super()._dataReceived_TRAILER())


def _dropped(data: bytes) -> None:
    """What a body cut short still delivers: dropped."""


class GatewayChannel(http.HTTPChannel):
    """
    twisted.web's HTTP/1.1 channel, used directly rather than through the
    HTTP/2-negotiating wrapper (listeners offer only http/1.1 in ALPN).
    The peer and local addresses are looked up once per connection, not
    once per request (twisted.web's Request asks for both every time).
    """

    _peer: Any = None
    _local: Any = None
    _idleCall: Any = None
    _headCall: Any = None
    _lingerCall: Any = None
    _lingerBytes = 0
    agwSlot: Any = None
    """The L{agwtx.runtime.limits.ConnectionSlot} this connection holds (handed to a WebSocket bridge)."""
    _gone = False
    _revocationAsked = False
    _held: list[bytes] | None = None
    """What the client sent while its certificate's revocation check runs (the transport is paused)."""
    _dropped: list[bytes] | None = None
    """Names of the current request head's fields dropped for an C{_}."""

    def connectionMade(self) -> None:
        """
        Take a connection slot (L{agwtx.runtime.limits}) for the client, or
        close at once, unread, over C{[gateway] maxConnections} or
        C{maxConnectionsPerClient}.  Here rather than when the listener
        accepts: behind the PROXY protocol wrapper the transport's peer is
        the client its header named (not the balancer), and plain, TLS and
        PROXY ports count the same way.
        """
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        slot = self.site.ctx.connections.acquire(getattr(peer, "host", None))
        if slot is None:
            self.dataReceived = self._ignore  # type: ignore[method-assign]
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.agwSlot = slot
        self._peer = peer
        self._applyLimits()
        super().connectionMade()

    # The request head limits ([gateway] maxRequestLineSize,
    # maxRequestHeaderSize, maxRequestHeaderCount) of the configuration in
    # force, taken when the connection opens and again at each request line
    # and head end, so a reload applies to the next request.  twisted.web's
    # line limit (MAX_LENGTH) bounds the request line until it is in, then
    # each header line; its head budget (totalHeadersSize) counts the request
    # line too, so it is set per request to the request line's length plus
    # the header budget.

    def _applyLimits(self) -> Any:
        settings = self.site.ctx.config.gateway
        self.MAX_LENGTH = settings.maxRequestLineSize
        self.maxHeaders = settings.maxRequestHeaderCount
        self.totalHeadersSize = settings.maxRequestLineSize + settings.maxRequestHeaderSize
        return settings

    def _ignore(self, data: bytes) -> None:
        """What a connection closed over a limit still delivers (the rest of a read): dropped."""

    # A deadline for the request head, against clients that send it a byte at
    # a time (the idle timer restarts on every byte, so alone it never fires).
    # It is armed only when a read leaves a head begun but unfinished, which
    # a request arriving whole never does, and it ends at the blank line.

    def dataReceived(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
            return
        pending = None
        if not self._revocationAsked:
            self._revocationAsked = True
            check = getattr(self.transport, "revocationCheck", None)
            pending = check() if check is not None else None
        if pending is not None:
            # Requests wait for the TLS client certificate's OCSP answer (bounded
            # by the checker's timeout); the transport stops reading meanwhile.
            self._held = [data]
            self.transport.pauseProducing()
            pending.addBoth(self._revocationChecked)
            return
        self._received(data)

    def _revocationChecked(self, result: object) -> None:
        held, self._held = self._held or [], None
        if self._gone or self.transport is None:
            return
        self.transport.resumeProducing()
        self._received(b"".join(held))

    def _received(self, data: bytes) -> None:
        super().dataReceived(data)
        if not self._handlingRequest and self.line_mode and b"\n" in self._buffer:
            # A bare LF in a head line (the parser splits at CRLF only, so the
            # line would wait for the deadline): refused at once (RFC 9112
            # section 2.2 lets a server take or refuse it; nginx takes it).
            self._refuse(_400_LF)
            return
        if (
            not self._handlingRequest
            and self.line_mode
            and self._headCall is None
            and self._lingerCall is None
            and (self._buffer or not self._HTTPChannel__first_line)  # type: ignore[attr-defined]
            and self.transport is not None
            and not self.transport.disconnecting
        ):
            self._headCall = self.callLater(self.site.headerTimeout, self._headTimedOut)

    def allHeadersReceived(self) -> None:
        call, self._headCall = self._headCall, None
        if call is not None and call.active():
            call.cancel()
        if self.requests:
            # The head as received: its lines, with CRLF after each and the blank line.
            self.requests[-1].agwHeadBytes = self._receivedHeaderSize + 2 * (self._receivedHeaderCount + 2)
        dropped, self._dropped = self._dropped, None
        if dropped is not None:
            # At most one line per LOG_INTERVAL for the port, with a bounded
            # part of what was dropped: a client cannot flood the log.
            held = self.site.droppedFieldsLog.due(self.site.ctx.reactor.seconds())
            if held is not None:
                log.info(
                    "Dropped {count} request header field(s) with '_' in the name from {peer}"
                    " ([gateway] allowUnderscoresInHeaders): {names}"
                    " ({held} more such requests since the last such line)",
                    count=len(dropped),
                    peer=str(self.getPeer()),
                    names=", ".join(
                        n[:64].decode("ascii", "replace") for n in dropped[:MAX_DROPPED_NAMES_LOGGED]
                    ),
                    held=held,
                )
        self._applyLimits()
        super().allHeadersReceived()

    _tlsInfo: Any = False

    def tlsInfo(self) -> tuple[str, str] | None:
        """(cipher, protocol) of this connection's TLS session, or None on plain TCP."""
        info = self._tlsInfo
        if info is False:
            info = None
            handle = getattr(self.transport, "getHandle", None)
            connection = handle() if handle is not None else None
            cipher = getattr(connection, "get_cipher_name", None)
            if cipher is not None:
                try:
                    info = (cipher() or "", connection.get_protocol_version_name() or "")  # type: ignore[union-attr]
                except Exception:
                    info = None
            self._tlsInfo = info
        return info  # type: ignore[no-any-return]

    def _headTimedOut(self) -> None:
        self._headCall = None
        if self._handlingRequest or not self.line_mode:
            return
        log.info(
            "Request head from {peer} not received within {seconds} s: 408",
            peer=str(self.getPeer()),
            seconds=self.site.headerTimeout,
        )
        self._refuse(_408)

    # Requests refused while their head is read get a complete answer (414 for
    # a request line over MAX_LENGTH, 431 for a head over the line, size or
    # field-count limits, 400 for the rest), then the connection is closed the
    # way nginx does it: the write side first where the transport can (TCP),
    # then whatever the client is still sending is read and dropped until it
    # closes, LINGER_BYTES or LINGER_TIMEOUT.  twisted.web closes at once,
    # which loses the answer when input is left unread (the kernel resets the
    # connection) and says nothing at all for an over-long line.
    # A malformed body (raw mode: the request may already be streaming to a
    # backend) keeps twisted.web's immediate close.

    def lineLengthExceeded(self, line: bytes) -> None:
        settings = self.site.ctx.config.gateway
        if b"\n" in line.partition(b"\r\n")[0]:  # not one long line: bare LFs
            self._refuse(_400_LF)
        elif self._HTTPChannel__first_line:  # type: ignore[attr-defined]
            self._refuse(lineTooLong(settings.maxRequestLineSize))
        else:
            self._refuse(headersTooLarge(settings.maxRequestHeaderSize))

    def _respondToBadRequestAndDisconnect(self) -> None:
        if not self.line_mode or self._handlingRequest:
            super()._respondToBadRequestAndDisconnect()
            return
        settings = self.site.ctx.config.gateway
        if self._receivedHeaderCount > self.maxHeaders:
            self._refuse(tooManyHeaders(settings.maxRequestHeaderCount))
        elif self._receivedHeaderSize > self.totalHeadersSize:
            self._refuse(headersTooLarge(settings.maxRequestHeaderSize))
        else:
            self._refuse(_400)

    def refuseRequest(self, message: str) -> None:
        """
        Refuse the request whose head was just read with C{400} and
        C{message} (C{"Bad Request: ..."}), and read nothing more from the
        connection: its body, if any, is not waited for (found by the fuzzer:
        a refused request with a body the client never sent held the
        connection until the idle timeout).
        """
        phrase, _, text = message.partition(": ")
        self._refuse(_canned(400, phrase.encode("ascii"), text.encode("ascii")), self.requests[-1])

    def dropBody(self) -> None:
        """
        Read nothing more from this connection, the rest of the read being
        parsed included: the request's body was cut short (408, 413) and
        its answer ends the connection.
        """
        self.dataReceived = self.rawDataReceived = self._discard  # type: ignore[method-assign]
        decoder = self._transferDecoder
        if decoder is not None:
            decoder.dataCallback = decoder.finishCallback = _dropped

    def refuseBodyTooLarge(self, limit: int, request: Any) -> None:
        """
        Refuse C{request}, whose head was just read, with 413: its
        Content-Length is over C{[gateway] maxRequestBodySize} (C{limit}).
        Its body is not read, nor anything more from the connection.
        """
        self._refuse(bodyTooLarge(limit), request)

    def _refuse(self, refusal: _Refusal, request: Any = None) -> None:
        """
        Answer with C{refusal} and read nothing more.  C{request}: the
        request whose head was read (its ID goes on the answer, its body
        deadline is stopped: the body is not waited for).
        """
        transport = self.transport
        if self._lingerCall is not None or transport is None or transport.disconnecting:
            return
        call, self._headCall = self._headCall, None
        if call is not None and call.active():
            call.cancel()
        # The parser reads nothing more: instance attributes shadow its methods,
        # including for the rest of the read being parsed now.
        self.dataReceived = self.rawDataReceived = self._discard  # type: ignore[method-assign]
        self.lineReceived = self._discard  # type: ignore[method-assign]
        self._lingerCall = self.callLater(LINGER_TIMEOUT, self._lingerEnd)
        requestId = None
        if request is not None:
            request.stopBodyTimer()
            requestId = request.agwRequestId
        sendRefusal(self.site.ctx, transport, refusal, self.site.soleListener(), requestId)

    def _discard(self, data: bytes) -> None:
        self._lingerBytes += len(data)
        if self._lingerBytes > LINGER_BYTES:
            self._lingerEnd()

    def _lingerEnd(self) -> None:
        # _lingerCall stays set: it marks the connection as refused.
        self.loseConnection()

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        # A Content-Length past 2**63 - 1 is refused with 400, as nginx does:
        # the gateway forwards the length it was given, and a backend that
        # parses it into 64 bits would wrap it and read the body as requests.
        if (
            header == b"Content-Length"
            and len(data) > 18
            and data.isdigit()
            and int(data) > MAX_CONTENT_LENGTH
        ):
            return bool(self._failChooseTransferDecoder())
        if header == b"Transfer-Encoding":
            # Only "chunked" alone (RFC 9112 section 6.1: a server answers a
            # coding it does not know with 501; nginx does).  twisted.web
            # would take "identity" as no coding at all and read the body
            # that follows as the next request.
            if data.lower() != b"chunked":
                self._refuse(_501_TE)
                self.length = None
                return False
            if self._transferDecoder is not None:
                return bool(self._failChooseTransferDecoder())
            self.length = None
            self._transferDecoder = _BoundedChunkedDecoder(
                self.requests[-1].handleContentChunk, self._finishRequestBody
            )
            return True
        return bool(super()._maybeChooseTransferDecoder(header, data))

    def lineReceived(self, line: bytes) -> None:
        # twisted.web checks request-target bytes against 176 where it means
        # 126: DEL and bytes 0x80-0xb0 would pass to the backend.
        if self._HTTPChannel__first_line:  # type: ignore[attr-defined]
            if not line.isascii() or b"\x7f" in line:
                self._refuse(_400_TARGET)
                return
            settings = self._applyLimits()
            if len(line) > settings.maxRequestLineSize:
                self._refuse(lineTooLong(settings.maxRequestLineSize))
                return
            if line:  # not the empty line a client may send after a body
                self.totalHeadersSize = len(line) + settings.maxRequestHeaderSize
                self.MAX_LENGTH = settings.maxRequestHeaderSize
        super().lineReceived(line)

    def headerReceived(self, line: bytes) -> bool:
        name, colon, value = line.partition(b":")
        if len(value.translate(None, _CTL)) != len(value):
            self._refuse(_400_CTL)
            return False
        if colon and b"_" in name and not name.translate(None, _TCHAR) and not self.site.allowUnderscores:
            # Dropped, as nginx does (underscores_in_headers off): a backend
            # that folds "_" into "-" (CGI, WSGI, PHP) would take
            # Transfer_Encoding or X_Forwarded_For for the real thing.  It
            # still counts against the header limit.
            self._receivedHeaderCount += 1
            if self._dropped is None:
                self._dropped = []
            self._dropped.append(name)
            if self._receivedHeaderCount > self.maxHeaders:
                self._respondToBadRequestAndDisconnect()
                return False
            return True
        return bool(super().headerReceived(line))

    # Persistence.  twisted.web's rule, with three changes: every Connection
    # header and comma-separated token counts (it reads the first header's
    # space-separated words, so "close,TE" kept the connection); the
    # "Connection: close" it puts on the response survives the proxy, which
    # replaces the response headers with the backend's; and HTTP/1.0
    # keep-alive (RFC 9112 appendix C.2.2), which it never grants, is granted
    # as nginx and HAProxy do when the response has a length (Content-Length,
    # or no body); a response delimited by the close still closes.  Only
    # such connections get the writeHeaders hook: the common one pays nothing.

    _closing = False

    def closeAfterResponse(self) -> None:
        """
        Close the connection after the response being answered, and say so
        on it (C{Connection: close}, if its head is not written yet): the
        one way the gateway decides to close after an answer (a stalled
        body, a malformed request, an answer before the body was read).
        It holds even if the request's body completes afterwards.
        """
        self._closing = True
        self.persistent = False
        self.writeHeaders = self._writeConnectionHeader  # type: ignore[method-assign]

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        if self._closing:
            return False
        if self.site.ctx.stopping:
            # A stopping gateway (lame duck, drain) closes each connection
            # after its answer, so clients reconnect through the balancer to
            # an instance that stays.
            self.writeHeaders = self._writeConnectionHeader  # type: ignore[method-assign]
            return False
        connection = request.requestHeaders.getRawHeaders(b"connection")
        if version == b"HTTP/1.1":
            if connection and b"close" in connectionTokens(connection):
                self.writeHeaders = self._writeConnectionHeader  # type: ignore[method-assign]
                return False
            return True
        if version == b"HTTP/1.0" and connection:
            tokens = connectionTokens(connection)
            if b"keep-alive" in tokens and b"close" not in tokens:  # close wins (found by the fuzzer)
                self.writeHeaders = self._writeConnectionHeader  # type: ignore[method-assign]
                return True
        return False

    def _writeConnectionHeader(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        if version != b"HTTP/1.0":
            if not self.persistent:
                headers.setRawHeaders(b"Connection", [b"close"])
        elif self.persistent:
            request = self.requests[0] if self.requests else None
            if (
                headers.hasHeader(b"content-length")
                or int(code) in http.NO_BODY_CODES
                or (request is not None and request.method == b"HEAD")
            ):
                headers.setRawHeaders(b"Connection", [b"keep-alive"])
            else:
                self.persistent = False
        http.HTTPChannel.writeHeaders(self, version, code, reason, headers)

    # TimeoutMixin's API with the same behaviour, cheaper per request:
    # twisted.web suspends the idle timeout while each request is handled
    # (setTimeout(None)) and restores it afterwards, which with TimeoutMixin
    # cancels one DelayedCall and schedules a new one per request.  Here the
    # call stays scheduled and is re-armed with reset(); if it fires while
    # suspended (timeOut None) it does nothing, and the restore schedules a
    # new one.

    def setTimeout(self, period: float | None) -> float | None:
        previous = self.timeOut
        self.timeOut = period
        if period is None:
            return previous
        call = self._idleCall
        if call is not None and call.active():
            call.reset(period)
        else:
            self._idleCall = self.callLater(period, self._idleTimedOut)
        return previous

    def resetTimeout(self) -> None:
        call = self._idleCall
        if call is not None and self.timeOut is not None:
            call.reset(self.timeOut)

    def _idleTimedOut(self) -> None:
        self._idleCall = None
        if self.timeOut is not None:
            self.timeoutConnection()

    def connectionLost(self, reason: Any) -> None:
        slot, self.agwSlot = self.agwSlot, None
        if slot is not None:
            slot.release()
        self._gone = True
        self._held = None
        for name in ("_idleCall", "_headCall", "_lingerCall"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None and call.active():
                call.cancel()
        super().connectionLost(reason)

    def getPeer(self) -> Any:
        peer = self._peer
        if peer is None:
            peer = self._peer = self.transport.getPeer()  # type: ignore[union-attr]
        return peer

    def getHost(self) -> Any:
        local = self._local
        if local is None:
            local = self._local = self.transport.getHost()  # type: ignore[union-attr]
        return local

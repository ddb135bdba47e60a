"""
The front of a listener: twisted.web's HTTP/1.1 server (parsing, limits,
pipelining, request-smuggling defences) with a request class that routes
instead of traversing a resource tree.
"""

from __future__ import annotations

import io
import ipaddress
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import Resource

from agwtx.config.model import GatewaySettings
from agwtx.compat.twistedprivate import (
    ChunkedTransferDecoder,
    MalformedChunkedDataError,
    clientGone,
    requestLine,
)
from agwtx.proxy.reverse import connectionTokens, errorPage, httpDate, startStreaming
from agwtx.runtime.requestid import newRequestId
from agwtx.routing.match import isWebSocketUpgrade, requestHost, validHost
from agwtx.routing.router import BackendTarget, PortRouter

if TYPE_CHECKING:
    from agwtx.context import GatewayContext

__all__ = [
    "PLAIN_HTTP_ON_HTTPS",
    "GatewayRequest",
    "GatewaySite",
    "clientAddress",
    "forwardedAddress",
    "rightmostUntrusted",
    "sendRefusal",
]

log = Logger(namespace="agw.web")


class _NoBody:
    """The body of a request without one: read as empty, shared by all such requests."""

    def seek(self, offset: int, whence: int = 0) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def read(self, size: int = -1) -> bytes:
        return b""

    def close(self) -> None:
        pass


_NO_BODY = _NoBody()


class _Discarded(_NoBody):
    """
    The body of a request no backend will receive (a redirect, an unknown
    host, no healthy member, any answer of the gateway's own): read from the
    client and dropped as it arrives, never spooled to memory or a file.
    """

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes) -> None:
        self.size += len(data)


MAX_CONTENT_LENGTH = 2**63 - 1
"""The largest request Content-Length taken (a signed 64-bit length)."""

LINGER_TIMEOUT = 5.0
"""Seconds a connection refused in its request head stays open, reading and
discarding what the client still sends, after the answer (nginx's
lingering_timeout): closing at once with unread input would reset the
connection, and the client could lose the answer."""

LINGER_BYTES = 1 << 20
"""At most this much is read and discarded after such an answer."""


class _Refusal(NamedTuple):
    """A canned answer to a request head that cannot be read."""

    status: int
    message: str
    """For the access log's error field."""
    head: bytes
    """Status line and headers, without Date and the blank line."""
    body: bytes

    def response(self, extra: bytes = b"") -> bytes:
        """The answer, with C{extra} header lines (each ending in CRLF) after the canned ones."""
        return self.head + extra + b"Date: " + httpDate() + b"\r\n\r\n" + self.body

    def branded(self, ctx: GatewayContext, listener: str | None) -> _Refusal:
        """
        This refusal as the configuration in force answers it: the custom
        page for its status (C{listener}'s or the gateway's) instead of the
        plain-text line, when there is one.
        """
        page = ctx.errorPages.page(listener, self.status)
        if page is None:
            return self
        phrase = self.head.split(b"\r\n", 1)[0].split(b" ", 2)[2]
        return _cannedBody(self.status, phrase, b"text/html; charset=utf-8", page, self.message)


def _canned(status: int, phrase: bytes, text: bytes) -> _Refusal:
    """A complete response that closes the connection, for a request that cannot be read."""
    body = b"%d %s: %s\n" % (status, phrase, text)
    message = (phrase + b": " + text).decode("ascii")
    return _cannedBody(status, phrase, b"text/plain; charset=utf-8", body, message)


def _cannedBody(status: int, phrase: bytes, contentType: bytes, body: bytes, message: str) -> _Refusal:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n" % (
        status,
        phrase,
        contentType,
        len(body),
    )
    return _Refusal(status, message, head, body)


_400 = _canned(400, b"Bad Request", b"the request could not be parsed")
_400_LF = _canned(400, b"Bad Request", b"request head lines must end with CRLF")
_408 = _canned(408, b"Request Timeout", b"the request head was not received in time")
_414 = _canned(414, b"URI Too Long", b"the request line is longer than 16384 bytes")
_431 = _canned(
    431,
    b"Request Header Fields Too Large",
    b"the request head is over 16384 bytes or 500 header fields",
)
_400_TARGET = _canned(400, b"Bad Request", b"the request line has a byte outside printable ASCII")
_400_CTL = _canned(400, b"Bad Request", b"a header field value has a control character")
_501_TE = _canned(501, b"Not Implemented", b"the only transfer coding supported is chunked")
PLAIN_HTTP_ON_HTTPS = _canned(400, b"Bad Request", b"a plain HTTP request was sent to an HTTPS port")


_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_CTL = bytes(c for c in range(32) if c != 9) + b"\x7f"
"""Control characters a header field value may not hold (RFC 9110 section 5.5:
NUL, CR and LF must be refused; the others may be, and a proxy refuses them
rather than pass a byte a backend may read as white space or a line end)."""

MAX_DROPPED_NAMES_LOGGED = 4
"""Header names with C{_} named in the one log event per request that drops
them (each cut to 64 bytes): enough to diagnose, too little to flood."""

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


def sendRefusal(ctx: GatewayContext, transport: Any, refusal: _Refusal, listener: str | None = None) -> None:
    """
    Log and send C{refusal} on a connection whose request could not be read,
    then shut the write side where the transport has one of its own (plain
    TCP; a TLS wrapper would pass the call on to the TCP socket under it and
    cut the TLS stream).  The caller drops what the client still sends.

    The answer gets a new request ID (logged with it) and the custom page
    for its status: C{listener}'s when the port has only that listener,
    else the gateway's.
    """
    requestId = newRequestId()
    refusal = refusal.branded(ctx, listener)
    peer = transport.getPeer()
    ctx.refusedLog(
        getattr(peer, "host", "-"),
        refusal.status,
        len(refusal.body),
        refusal.message,
        requestId=requestId,
        clientPort=getattr(peer, "port", 0),
    )
    header = ctx.tagger.header
    transport.write(refusal.response(header + b": " + requestId.encode("ascii") + b"\r\n"))
    if hasattr(type(transport), "loseWriteConnection"):
        transport.loseWriteConnection()


def clientAddress(peer: Any, headers: Any, settings: GatewaySettings) -> tuple[str, str, int | None]:
    """
    C{(peerIP, clientIP, clientPort)} of a request: the one place the client
    address is decided, for X-Forwarded-For, the access log, rewrite
    variables, plugins and WebSocket logs.

    C{peer} is the channel's peer: the TCP peer, or on a port with the PROXY
    protocol the client its header named.  When that peer is a trusted
    forwarder (C{[gateway] trustedProxies}), the client is the right-most
    X-Forwarded-For entry not itself trusted (nginx's real_ip_recursive,
    Caddy's trusted_proxies); its port is unknown.  Otherwise the header is
    not believed.
    """
    peerIP = getattr(peer, "host", "-")
    port = getattr(peer, "port", None)
    if settings.trustedProxies and settings.isTrustedProxy(peerIP):
        chain = headers.getRawHeaders(b"x-forwarded-for")
        if chain:
            client = rightmostUntrusted(chain, settings)
            if client is not None:
                return peerIP, client, None
    return peerIP, peerIP, port


def rightmostUntrusted(chain: list[bytes], settings: GatewaySettings) -> str | None:
    """
    The right-most address in the X-Forwarded-For values C{chain} that is not
    a trusted proxy (the left-most when all are); the walk stops at an entry
    that is not an address (the hops to its right are the last believed).
    None when the right-most entry is already not an address.
    """
    found: str | None = None
    for item in reversed(b",".join(chain).split(b",")):
        item = item.strip()
        if not item:
            continue
        ip = forwardedAddress(item)
        if ip is None:
            break
        found = ip
        if not settings.isTrustedProxy(ip):
            break
    return found


def forwardedAddress(item: bytes) -> str | None:
    """
    One X-Forwarded-For entry as an IP address: C{192.0.2.1},
    C{192.0.2.1:443}, C{2001:db8::1} or C{[2001:db8::1]:443} (Azure adds the
    port); None for anything else.
    """
    try:
        text = item.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class GatewayRequest(server.Request):
    """A request on a gateway listener; carries what the access log reports."""

    defaultContentType = None
    agwListener: str | None = None
    agwRule: str | None = None
    agwPool: str | None = None
    agwMember: str | None = None
    agwError: str | None = None
    agwStatus: int | None = None
    agwStart: float = 0.0
    agwSettings: str | None = None
    agwRequestId: str | None = None
    """Set with the trace context (L{agwtx.runtime.requestid.RequestTagger.tag}) when the request is prepared."""
    agwIdHeader: bytes = b"X-Request-ID"
    agwTrace: Any = None
    agwServerLatency: float | None = None
    """Seconds from the backend request's head written to the backend's response head."""
    agwHeadBytes = 0
    agwBodyBytes = 0
    clientIP: str = "-"
    """The client's address, from the one place that decides it (L{clientAddress})."""
    clientPort: int | None = None
    """The client's port; None when a trusted forwarder named the client."""
    peerIP: str = "-"
    """The connection's peer: the TCP peer, or the PROXY protocol's client."""
    listenerPort: int = 0
    agwStream: Any = None
    agwDecision: tuple[Any, int, str] | None = None
    """The routing decision (L{GatewaySite.decide}): made once, when the head is complete."""
    agwDiscarded = False
    """The body was read and dropped (see L{_Discarded}): no backend may get this request."""
    _prepared = False
    _bodyCall: Any = None
    _bodyLast = 0.0

    def _prepare(self) -> None:
        if self._prepared:
            return
        self._prepared = True
        site: GatewaySite = self.channel.site
        self.site = site
        site.ctx.activeRequests += 1
        self._counted = True
        self.agwStart = site.ctx.reactor.seconds()
        self.peerIP, self.clientIP, self.clientPort = clientAddress(
            self.client, self.requestHeaders, site.ctx.config.gateway
        )
        self.listenerPort = site.listenerPort or getattr(self.host, "port", 0)
        tagger = site.ctx.tagger
        self.agwIdHeader = tagger.header
        tagger.tag(self)

    def write(self, data: bytes) -> None:
        if not self.startedWriting and self.agwRequestId is not None:
            # Every answer carries the request ID: proxied, redirected, the gateway's own.
            self.responseHeaders.setRawHeaders(self.agwIdHeader, [self.agwRequestId.encode("ascii")])
        super().write(data)

    def tlsInfo(self) -> tuple[str, str] | None:
        """(cipher, protocol) of the client's TLS connection, looked up once per connection."""
        channel = self.channel
        if channel is None:
            return None
        return channel.tlsInfo()  # type: ignore[no-any-return]

    _counted = False

    def _done(self, result: Any) -> None:
        """Stop counting this request as in flight (idempotent)."""
        if self._counted:
            self._counted = False
            self.site.ctx.activeRequests -= 1

    agwOnLost: Any = None
    """Called with the reason when the client goes away before the response
    is finished (the proxy aborts its backend request).  A plain hook rather
    than C{notifyFinish}: two Deferreds per request are measurable here."""

    def connectionLost(self, reason: Any) -> None:
        self._stopBodyTimer()
        super().connectionLost(reason)
        self._done(None)
        hook, self.agwOnLost = self.agwOnLost, None
        if hook is not None:
            hook(reason)

    def _cleanup(self) -> None:
        self._stopBodyTimer()
        self.agwOnLost = None
        super()._cleanup()
        self._done(None)

    def handedOver(self) -> None:
        """
        The connection now belongs to someone else (a WebSocket bridge took
        over the transport): it is no longer an HTTP request in flight.
        """
        self._done(None)

    agwClientCert: Any = None
    """The TLS client certificate (L{agwtx.tls.clientauth.ClientCertificate}) on HTTPS listeners."""
    _agwClientAuth: Any = ()

    def clientAuthRefusal(self, listener: str) -> tuple[int, str] | None:
        """
        The TLS connection's verdict on this request's client certificate for
        C{listener} (mutual TLS): None to go on, else (status, message).  Asked
        once per request however often the request is resolved.
        """
        if self._agwClientAuth == ():
            transport = self.channel.transport if self.channel is not None else None
            check = getattr(transport, "clientAuthRefusal", None)
            self._agwClientAuth = check(listener) if check is not None else None
            if check is not None:
                self.agwClientCert = transport.clientCertificate()  # type: ignore[union-attr]
        return self._agwClientAuth  # type: ignore[no-any-return]

    def isSecure(self) -> bool:
        """Whether the listener is HTTPS: known per port, no interface lookup per request."""
        if self._prepared:
            return self.site.secure
        return bool(super().isSecure())

    def gotLength(self, length: int | None) -> None:
        """
        The headers are complete.  A request with a body that routes to a
        backend starts its backend exchange now and streams the body as it
        arrives, instead of spooling it first.
        """
        if length == 0:
            # No body (every GET): a shared empty stand-in, not a new BytesIO per request.
            self.content = _NO_BODY
            return
        self.method, self.uri, self.clientproto = requestLine(self.channel)
        self.path = self.uri.split(b"?", 1)[0]
        if self.uri[:1] != b"/":
            self._originForm()
        self._prepare()
        self._startBodyTimer()
        try:
            if self.site.startStreaming(self, length):
                self.content = io.BytesIO()
                return
        except Exception:
            log.failure("error routing {method} {uri}", method=self.method, uri=self.uri)
        self.agwDiscarded = True
        self.content = _Discarded()

    def handleContentChunk(self, data: bytes) -> None:
        if self._bodyCall is not None:
            self._bodyLast = self.site.ctx.reactor.seconds()
        self.agwBodyBytes += len(data)
        stream = self.agwStream
        if stream is not None:
            stream.data(data)
        else:
            self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self._stopBodyTimer()
        super().requestReceived(command, path, version)

    # The request body deadline ([gateway] requestBodyTimeout, nginx's
    # client_body_timeout): the longest pause between two reads of a body.
    # One timer per body, re-armed only when it fires after data came in.

    def _startBodyTimer(self) -> None:
        reactor = self.site.ctx.reactor
        self._bodyLast = reactor.seconds()
        self._bodyCall = reactor.callLater(self.site.bodyTimeout, self._bodyTimerFired)

    def _stopBodyTimer(self) -> None:
        call, self._bodyCall = self._bodyCall, None
        if call is not None and call.active():
            call.cancel()

    def _bodyTimerFired(self) -> None:
        reactor = self.site.ctx.reactor
        timeout = self.site.bodyTimeout
        idle = reactor.seconds() - self._bodyLast
        if idle < timeout:
            self._bodyCall = reactor.callLater(timeout - idle, self._bodyTimerFired)
            return
        self._bodyCall = None
        channel = self.channel
        if channel is None or clientGone(self):
            return
        log.info(
            "Request body from {client} stalled for {seconds} s: 408",
            client=self.clientIP,
            seconds=timeout,
        )
        # Nothing more is read from this connection: it closes after the answer.
        channel.persistent = False
        channel.dataReceived = channel._discard  # type: ignore[method-assign]
        message = f"Request Timeout: the request body stalled for more than {timeout:g} s"
        stream = self.agwStream
        exchange = getattr(stream, "exchange", None)
        if exchange is not None:
            exchange.bodyTimedOut()
        if not self.finished:
            errorPage(self, 408, message)
        elif channel.transport is not None:
            channel.transport.loseConnection()

    def _originForm(self) -> None:
        """
        Accept the absolute-form of request target (C{GET http://host/path},
        what clients send to a proxy), as RFC 9112 section 3.2.2 requires of
        every server: its authority replaces any Host header and the target
        becomes the path and query.  Anything else that is not a path (and an
        authority that is empty or has user information) is left for
        L{GatewaySite.resolve} to answer with 400.
        """
        uri = self.uri
        scheme = uri[:8].lower()
        if scheme.startswith(b"http://"):
            start = 7
        elif scheme.startswith(b"https://"):
            start = 8
        else:
            return
        end = len(uri)
        for separator in (b"/", b"?"):
            found = uri.find(separator, start)
            if 0 <= found < end:
                end = found
        authority = uri[start:end]
        if not authority or b"@" in authority:
            return
        hosts = self.requestHeaders.getRawHeaders(b"host")
        if (hosts is None and self.clientproto != b"HTTP/1.0") or (
            hosts is not None and (len(hosts) > 1 or not validHost(hosts[0]))
        ):
            # HTTP/1.1 without Host, two Host lines, or an invalid one: 400
            # whatever the target says (RFC 9112 section 3.2), as nginx.
            return
        target = uri[end:]
        if not target.startswith(b"/"):
            target = b"/" + target
        self.uri = target
        self.path = target.split(b"?", 1)[0]
        self.requestHeaders.setRawHeaders(b"host", [authority])

    def process(self) -> None:
        if self.uri[:1] != b"/":
            self._originForm()
        self._prepare()
        site: GatewaySite = self.site
        self.prepath = []
        self.postpath = []
        try:
            site.dispatch(self)
        except Exception:
            log.failure("error routing {method} {uri}", method=self.method, uri=self.uri)
            if not self.finished and not clientGone(self):
                errorPage(self, 500, "Internal Server Error")


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
            # One event per request, with a bounded part of what was dropped.
            log.info(
                "Dropped {count} request header field(s) with '_' in the name from {peer}"
                " ([gateway] allowUnderscoresInHeaders): {names}",
                count=len(dropped),
                peer=str(self.getPeer()),
                names=", ".join(
                    n[:64].decode("ascii", "replace") for n in dropped[:MAX_DROPPED_NAMES_LOGGED]
                ),
            )
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
        if b"\n" in line.partition(b"\r\n")[0]:  # not one long line: bare LFs
            self._refuse(_400_LF)
        elif self._HTTPChannel__first_line:  # type: ignore[attr-defined]
            self._refuse(_414)
        else:
            self._refuse(_431)

    def _respondToBadRequestAndDisconnect(self) -> None:
        if not self.line_mode or self._handlingRequest:
            super()._respondToBadRequestAndDisconnect()
            return
        tooLarge = (
            self._receivedHeaderSize > self.totalHeadersSize or self._receivedHeaderCount > self.maxHeaders
        )
        self._refuse(_431 if tooLarge else _400)

    def refuseRequest(self, message: str) -> None:
        """
        Refuse the request whose head was just read with C{400} and
        C{message} (C{"Bad Request: ..."}), and read nothing more from the
        connection: its body, if any, is not waited for (found by the fuzzer:
        a refused request with a body the client never sent held the
        connection until the idle timeout).
        """
        phrase, _, text = message.partition(": ")
        self._refuse(_canned(400, phrase.encode("ascii"), text.encode("ascii")))

    def _refuse(self, refusal: _Refusal) -> None:
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
        sendRefusal(self.site.ctx, transport, refusal, self.site.soleListener())

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
        if self._HTTPChannel__first_line and (not line.isascii() or b"\x7f" in line):  # type: ignore[attr-defined]
            self._refuse(_400_TARGET)
            return
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

    def checkPersistence(self, request: Any, version: bytes) -> bool:
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


class _Unused(Resource):
    isLeaf = True


class GatewaySite(server.Site):
    """One frontend port: its listeners' routing table and the shared context."""

    requestFactory = GatewayRequest
    protocol = GatewayChannel
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

    def buildProtocol(self, addr: Any) -> Any:
        """
        A channel for a new connection, or None (the listener closes the
        socket at once, unread) when C{[gateway] maxConnections} or
        C{maxConnectionsPerClient} is reached: see L{agwtx.runtime.limits}.
        """
        slot = self.ctx.connections.acquire(getattr(addr, "host", None))
        if slot is None:
            return None
        channel = super().buildProtocol(addr)
        channel.agwSlot = slot
        return channel

    def acceptableProtocols(self) -> list[bytes]:
        # None to hand to Twisted's TLS wrapper: ALPN is answered by the
        # listener's own context (tls._selectHttp11: http/1.1, or no protocol
        # when the client offers only others). Twisted before 26 would put its
        # own selection on that context, which answers an h2-only client with
        # an internal_error alert instead of no protocol.
        return []

    def soleListener(self) -> str | None:
        """The port's listener when it has only one (a request not yet read can only be for it)."""
        routes = self.router.routes if self.router is not None else ()
        names = {route.listener.name for route in routes}
        return names.pop() if len(names) == 1 else None

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
        The request's routing decision, made once, when its head is complete
        (L{GatewayRequest.gotLength} for a request with a body, else
        L{GatewayRequest.process}), and kept on the request: everything
        after (the proxy, the WebSocket bridge, a redirect, the access log)
        uses it, so a reload that swaps this port's table meanwhile never
        changes a request in flight.
        """
        decision = request.agwDecision
        if decision is None:
            decision = request.agwDecision = self.resolve(request)
        return decision

    def resolve(self, request: GatewayRequest) -> tuple[Any, int, str]:
        """(target, 0, "") for a routable request, else (None, status, message), by the table in force."""
        hosts = request.requestHeaders.getRawHeaders(b"host")
        if hosts is None and request.clientproto == b"HTTP/1.1":
            return None, 400, "Bad Request: missing Host header"
        if hosts is not None and len(hosts) > 1:
            return None, 400, "Bad Request: more than one Host header"
        if hosts and not validHost(hosts[0]):
            return None, 400, "Bad Request: invalid Host header"
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

    def dispatch(self, request: GatewayRequest) -> Any:
        target, code, message = self.decide(request)
        if target is None:
            if code == 400 and request.channel is not None:
                # A malformed request (Host, target): nothing more is read
                # from the connection, as nginx does, so what follows it is
                # never taken as requests.
                request.channel.persistent = False
                return errorPage(request, code, message, [(b"Connection", b"close")])
            return errorPage(request, code, message)
        return target.render(self.ctx, request)

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
        resolveTarget = getattr(target, "resolve", None)  # PathMapTarget, PluginTarget: the concrete target
        if resolveTarget is not None:
            target = resolveTarget(request)
        if not isinstance(target, BackendTarget) or isWebSocketUpgrade(request):
            return False
        request.agwPool = target.state.name
        request.agwSettings = target.settings.name
        return startStreaming(self.ctx, request, target, length)

    def log(self, request: Any) -> None:
        self.ctx.accessLog(request)

"""
The request of a listener (L{GatewayRequest}): twisted.web's request with
the head checks, absolute-form targets, header hygiene and the routing
hand-over of the gateway.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.logger import Logger
from twisted.web import server

from agwtx.compat.twistedprivate import (
    clientGone,
    requestLine,
)
from agwtx.runtime.answers import errorPage, reasonPhrase
from agwtx.routing.match import validHost

from agwtx.http.forwarded import clientAddress


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
    Shared by all such requests.
    """

    def write(self, data: bytes) -> None:
        pass


_DISCARDED = _Discarded()


def hostProblem(hosts: list[bytes] | None, clientproto: bytes) -> str | None:
    """
    Why a request with these Host lines is refused (a 400's message), or
    None: HTTP/1.1 without Host, two Host lines, or an invalid one (RFC 9112
    section 3.2, as nginx).  The one place both routing and the
    absolute-form target look.
    """
    if hosts is None:
        return "Bad Request: missing Host header" if clientproto == b"HTTP/1.1" else None
    if len(hosts) > 1:
        return "Bad Request: more than one Host header"
    if not validHost(hosts[0]):
        return "Bad Request: invalid Host header"
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
    peerTrusted = False
    """Whether L{peerIP} is in C{[gateway] trustedProxies}: looked up once, when the request is prepared."""
    listenerPort: int = 0
    agwStream: Any = None
    agwPreferred: Any = None
    """The member a load distribution policy chose for this request (L{agwtx.routing.router.PolicyTarget})."""
    agwDecision: tuple[Any, int, str] | None = None
    """The routing decision (L{GatewaySite.decide}): made once, when the head is complete."""
    agwUri: bytes | None = None
    """The path and query a URL rewrite gave the request (sent to the backend instead of L{uri}); None: unchanged."""
    agwDiscarded = False
    """The body was read and dropped (see L{_Discarded}): no backend may get this request."""
    _prepared = False
    _bodyTimed = False
    _bodyLast = 0.0

    def _prepare(self) -> None:
        if self._prepared:
            return
        self._prepared = True
        site: Any = self.channel.site  # the GatewaySite (agwtx.http.site imports this module)
        self.site = site
        site.ctx.activeRequests += 1
        self._counted = True
        self.agwStart = site.ctx.reactor.seconds()
        settings = site.ctx.config.gateway
        peer = self.client
        trusted = self.peerTrusted = settings.isTrustedProxy(getattr(peer, "host", "-"))
        self.peerIP, self.clientIP, self.clientPort = clientAddress(
            peer, self.requestHeaders, settings, trusted
        )
        self.listenerPort = site.listenerPort or getattr(self.host, "port", 0)
        tagger = site.ctx.tagger
        self.agwIdHeader = tagger.header
        tagger.tag(self, trusted)

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
        self.stopBodyTimer()
        super().connectionLost(reason)
        self._done(None)
        hook, self.agwOnLost = self.agwOnLost, None
        if hook is not None:
            hook(reason)

    def _cleanup(self) -> None:
        self.stopBodyTimer()
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
        limit = self.site.ctx.config.gateway.maxRequestBodySize
        if limit:
            if length is not None and length > limit:
                # Refused before anything is routed or forwarded: no backend
                # sees a byte, and the body is not read.
                self.agwDiscarded = True
                self.content = _DISCARDED
                self.channel.refuseBodyTooLarge(limit, self)
                return
            if length is None:
                self._bodyLimit = limit
        self._startBodyTimer()
        try:
            if self.site.startStreaming(self, length):
                self.content = io.BytesIO()
                return
        except Exception:
            log.failure("error routing {method} {uri}", method=self.method, uri=self.uri)
        self.agwDiscarded = True
        self.content = _DISCARDED

    _bodyLimit = 0
    """C{[gateway] maxRequestBodySize} for a chunked body (0: none), which may
    grow past it; -1 once it has (the rest of the read is dropped)."""

    def handleContentChunk(self, data: bytes) -> None:
        if self._bodyTimed:
            self._bodyLast = self.site.ctx.reactor.seconds()
        if self._bodyLimit and (self._bodyLimit < 0 or self.agwBodyBytes + len(data) > self._bodyLimit):
            if self._bodyLimit < 0:
                return
            limit, self._bodyLimit = self._bodyLimit, -1
            log.info(
                "Request body from {client} grew past {limit} bytes ([gateway] maxRequestBodySize): 413",
                client=self.clientIP,
                limit=limit,
            )
            self.stopBodyTimer()
            self._cutBody(
                413, f"{reasonPhrase(413).decode('ascii')}: the request body is larger than {limit} bytes"
            )
            return
        self.agwBodyBytes += len(data)
        stream = self.agwStream
        if stream is not None:
            stream.data(data)
        else:
            self.content.write(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.stopBodyTimer()
        super().requestReceived(command, path, version)

    # The request body deadline ([gateway] requestBodyTimeout, nginx's
    # client_body_timeout): the longest pause between two reads of a body.
    # One entry in the context's deadline sweep per body (no DelayedCall),
    # re-armed only when it comes due after data came in.

    def _startBodyTimer(self) -> None:
        ctx = self.site.ctx
        self._bodyLast = ctx.reactor.seconds()
        self._bodyTimed = True
        ctx.deadlines.add(self, self.site.bodyTimeout, self._bodyTimerFired)

    def stopBodyTimer(self) -> None:
        """No more body is waited for (it is complete, or the request was refused)."""
        if self._bodyTimed:
            self._bodyTimed = False
            self.site.ctx.deadlines.remove(self)

    def _bodyTimerFired(self) -> None:
        ctx = self.site.ctx
        timeout = self.site.bodyTimeout
        idle = ctx.reactor.seconds() - self._bodyLast
        if idle < timeout:
            ctx.deadlines.add(self, timeout - idle, self._bodyTimerFired)
            return
        self._bodyTimed = False
        if self.channel is None or clientGone(self):
            return
        log.info(
            "Request body from {client} stalled for {seconds} s: 408",
            client=self.clientIP,
            seconds=timeout,
        )
        self._cutBody(408, f"Request Timeout: the request body stalled for more than {timeout:g} s")

    def _cutBody(self, code: int, message: str) -> None:
        """
        Stop reading the body and answer C{code} (408, 413): the backend
        exchange, if one started, is aborted; a response already begun is cut
        (the connection aborted) instead.  Nothing more is read from the
        connection, which closes after the answer.
        """
        channel = self.channel
        if channel is None:
            return
        channel.closeAfterResponse()
        channel.dropBody()
        self.content = _DISCARDED
        self.agwDiscarded = True
        stream = self.agwStream
        exchange = stream.exchange if stream is not None else None
        if exchange is not None:
            exchange.bodyTimedOut()
        if not self.finished:
            errorPage(self, code, message)
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
        if hostProblem(self.requestHeaders.getRawHeaders(b"host"), self.clientproto) is not None:
            return  # 400 whatever the target says
        target = uri[end:]
        if not target.startswith(b"/"):
            target = b"/" + target
        self._originTarget = target
        self.uri = target
        self.path = target.split(b"?", 1)[0]
        self.requestHeaders.setRawHeaders(b"host", [authority])

    _originTarget: bytes | None = None
    """The path and query an absolute-form target became (L{_originForm})."""

    def process(self) -> None:
        target = self._originTarget
        if target is not None:
            # A request with a body, its target taken when its head was
            # complete: twisted.web set the request line's target again.
            self.uri = target
            self.path = target.split(b"?", 1)[0]
        elif not self._prepared and self.uri[:1] != b"/":
            self._originForm()
        self._prepare()
        site: Any = self.site
        self.prepath = []
        self.postpath = []
        try:
            self.render(site.getResourceFor(self))
        except Exception:
            log.failure("error routing {method} {uri}", method=self.method, uri=self.uri)
            if not self.finished and not clientGone(self):
                errorPage(self, 500, "Internal Server Error")

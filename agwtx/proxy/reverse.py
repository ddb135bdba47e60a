"""
The reverse proxy: one client request relayed to one backend member.

Semantics follow Synapse's C{synapse/http/proxy.py} and RFC 9110/9112:
hop-by-hop headers (and those named in Connection) are dropped both ways,
repeated headers keep their order, the X-Forwarded-* set is added, bodies
stream with flow control in both directions, a backend that cannot be
reached is a 502 and one that does not answer within C{requestTimeout} a
504, and a client that leaves aborts the backend request.

The context (L{agwtx.context.GatewayContext}) and the target
(L{agwtx.routing.router.BackendTarget}) are typed C{Any} here: both modules
sit above this one (they import it), and a type-only import back would
be an import cycle.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any, Callable

from twisted.internet.error import ConnectBindError, ConnectionRefusedError
from twisted.internet.interfaces import IPullProducer, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from agwtx.proxy.affinity import affinityCookies
from agwtx.compat.twistedprivate import clientGone
from agwtx.proxy.pool import Lease, Member, PoolState
from agwtx.proxy.client import UpstreamConnection, UpstreamError

from agwtx.runtime.answers import errorPage, reasonPhrase
from agwtx.runtime.headers import HOP_BY_HOP, connectionTokens, responseHeaders

if TYPE_CHECKING:
    from agwtx.http.request import GatewayRequest

__all__ = ["chooseMember", "forwardedRequestHeaders", "proxy", "startStreaming"]

_NEVER_NAMED = frozenset({b"host"})
SPOOFABLE = frozenset({b"forwarded", b"x-forwarded-host", b"x-real-ip"})
"""Forwarding headers believed only from C{[gateway] trustedProxies}."""
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})
SAFE_RETRY = frozenset({b"GET", b"HEAD", b"OPTIONS"})
INLINE_BODY = 64 * 1024
STREAM_BUFFER = 256 * 1024
BODY_BLOCK = 64 * 1024

log = Logger(namespace="agw.proxy")


def connectFailureKind(reason: Failure | None) -> str:
    """
    The passive-health kind of a failed backend connect: C{"refused"} when
    the member actively refused it (it is down: out of rotation at once),
    C{"local"} when the gateway could not make a socket at all (out of file
    descriptors or buffers: no fault of the member, which keeps its health),
    C{"connect"} for anything else (counts towards the probe threshold).
    """
    if reason is not None:
        if reason.check(ConnectionRefusedError):
            return "refused"
        if reason.check(ConnectBindError):
            return "local"
    return "connect"


def forwardedRequestHeaders(
    raw: Headers,
    peerIP: str,
    proto: bytes,
    port: int,
    host: bytes | None,
    dropExtra: frozenset[bytes] = frozenset(),
    trusted: bool = False,
) -> list[tuple[bytes, bytes]]:
    """
    The headers a backend receives: end-to-end ones in order, Host replaced
    when C{host} is given, and the X-Forwarded-* set.  A pure function so that
    the proxy and the WebSocket bridge forward exactly the same set.

    C{Forwarded}, C{X-Forwarded-Host} and C{X-Real-IP} pass only when the
    sender is C{trusted} (in C{[gateway] trustedProxies}); from anyone else
    they are dropped, so a backend framework that believes them cannot be
    lied to.  C{X-Forwarded-Host} is then the client's Host (as Caddy and
    Traefik set it), what frameworks read to build absolute URLs when
    C{hostName} rewrites Host.
    C{peerIP} is the connection's peer (the PROXY protocol's client when the
    port has it): the hop X-Forwarded-For gains.  The client address a
    trusted forwarder named is already in the list it sent.
    """
    # Host is never hop-by-hop: a client that names it in Connection must not
    # make the backend request lose it (HTTP/1.1 requires it).
    named = connectionTokens(raw.getRawHeaders(b"connection"))
    if b"host" in named:
        named = named - _NEVER_NAMED
    out: list[tuple[bytes, bytes]] = []
    xff: list[bytes] = []
    originalHost: bytes | None = None
    forwardedHost = False
    for name, values in raw.getAllRawHeaders():
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in named or lname in dropExtra:
            continue
        if lname in SPOOFABLE:
            if not trusted:
                continue
            forwardedHost = forwardedHost or lname == b"x-forwarded-host"
        if lname == b"host":
            originalHost = values[0]
            if host is None:
                out.append((b"Host", values[0]))
            continue
        if lname == b"x-forwarded-for":
            xff.extend(values)
            continue
        if lname in (b"x-forwarded-proto", b"x-forwarded-port", b"x-original-host", b"expect"):
            continue
        for v in values:
            out.append((name, v))
    if host is not None:
        out.insert(0, (b"Host", host))
    ip = peerIP.encode("ascii")
    out.append((b"X-Forwarded-For", b", ".join(xff + [ip]) if xff else ip))
    out.append((b"X-Forwarded-Proto", proto))
    out.append((b"X-Forwarded-Port", b"%d" % port))
    if originalHost is not None:
        out.append((b"X-Original-Host", originalHost))
        if not forwardedHost:
            out.append((b"X-Forwarded-Host", originalHost))
    return out


@implementer(IPullProducer)
class _BodyPump:
    """Feeds a spooled request body to the backend as fast as it reads it."""

    def __init__(self, content: IO[bytes], conn: UpstreamConnection, done: Callable[[], None]) -> None:
        self.content = content
        self.conn = conn
        self.done = done
        self.stopped = False

    def resumeProducing(self) -> None:
        if self.stopped:
            return
        block = self.content.read(BODY_BLOCK)
        if block:
            self.conn.writeBody(block)
        else:
            self.stopProducing()
            self.done()

    def stopProducing(self) -> None:
        if not self.stopped:
            self.stopped = True
            transport = self.conn.transport
            if transport is not None and not self.conn.lost:
                transport.unregisterProducer()  # type: ignore[attr-defined]


@implementer(IPushProducer)
class _StreamedBody:
    """
    A request body relayed as it arrives from the client (no spooling).

    Until the backend connection is up, up to L{STREAM_BUFFER} bytes wait in
    memory and the client socket is paused beyond that; afterwards the
    backend socket's own flow control pauses and resumes the client socket.
    """

    def __init__(self, request: "GatewayRequest", length: int | None) -> None:
        self.request = request
        self.chunked = length is None
        self.pending: list[bytes] = []
        self.pendingSize = 0
        self.conn: UpstreamConnection | None = None
        self.ended = False
        self.clientPaused = False
        self.onEnd: Callable[[], None] | None = None
        self.exchange: _Exchange | None = None

    def _encode(self, data: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data

    def data(self, data: bytes) -> None:
        if not data:
            return
        conn = self.conn
        if conn is not None:
            conn.writeBody(self._encode(data))
            return
        self.pending.append(data)
        self.pendingSize += len(data)
        if self.pendingSize > STREAM_BUFFER:
            self._pauseClient()

    def attach(self, conn: UpstreamConnection) -> None:
        """The backend is connected and the head written: flush and follow its flow control."""
        self.conn = conn
        for block in self.pending:
            conn.writeBody(self._encode(block))
        self.pending = []
        self.pendingSize = 0
        if self.ended:
            self._finishBody()
        else:
            conn.transport.registerProducer(self, True)  # type: ignore[union-attr]
            self._resumeClient()

    def end(self) -> None:
        """The client's body is complete."""
        self.ended = True
        if self.conn is not None:
            self.conn.transport.unregisterProducer()  # type: ignore[union-attr]
            self._finishBody()
        if self.onEnd is not None:
            self.onEnd()

    def _finishBody(self) -> None:
        self._resumeClient()
        if self.chunked and self.conn is not None:
            self.conn.writeBody(b"0\r\n\r\n")

    def detach(self) -> None:
        """The exchange is over (failed or answered early)."""
        conn, self.conn = self.conn, None
        if conn is not None and not self.ended and not conn.lost and conn.transport is not None:
            conn.transport.unregisterProducer()  # type: ignore[attr-defined]
        self.pending = []
        self._resumeClient()

    def _pauseClient(self) -> None:
        transport = self.request.channel.transport if self.request.channel else None
        if not self.clientPaused and transport is not None:
            self.clientPaused = True
            transport.pauseProducing()

    def _resumeClient(self) -> None:
        transport = self.request.channel.transport if self.request.channel else None
        if self.clientPaused and transport is not None:
            self.clientPaused = False
            transport.resumeProducing()

    # IPushProducer, registered on the backend socket while the body flows
    def pauseProducing(self) -> None:
        self._pauseClient()

    def resumeProducing(self) -> None:
        self._resumeClient()

    def stopProducing(self) -> None:
        pass


class _Exchange:
    """One proxied request: choose, connect, send, relay, finish."""

    def __init__(
        self,
        ctx: Any,
        request: "GatewayRequest",
        target: Any,
        head: Callable[[Member], bytes],
        bodyLength: int,
        lease: Lease,
    ) -> None:
        self.ctx = ctx
        self.request = request
        self.target = target
        self.state: PoolState = target.state
        self.makeHead = head
        self.bodyLength = bodyLength
        self.member: Member | None = None
        self.conn: UpstreamConnection | None = None
        self.cancelConnect: Callable[[], None] | None = None
        self.timing = False
        self.lastActivity = 0.0
        self.headSent = False
        self.producerConn: UpstreamConnection | None = None
        self.done = False
        self.attempts = 0
        self.pinned: Member | None = None
        self.setAffinity = False
        self.pump: _BodyPump | None = None
        self.stream: _StreamedBody | None = None
        self.sentAt = 0.0
        self.lease = lease
        """The hold on C{member}: counted in flight, one of its connection slots (or waiting for one)."""

    # -- start

    def start(self, member: Member) -> None:
        if self.stream is not None:
            # A streamed upload may take long: the backend's time starts when the body is complete.
            self.stream.onEnd = self._startTimer
        self.request.agwOnLost = self._clientGone
        self._connect(member)

    def _startTimer(self) -> None:
        # Not while waiting in the member's queue: queueTimeout bounds that wait.
        if not self.done and not self.timing and self.lease.counted:
            if self.stream is None or self.stream.ended:
                self.timing = True
                self.ctx.deadlines.add(self, self.target.settings.requestTimeout, self._timedOut)

    def _connect(self, member: Member) -> None:
        self.member = member
        self.request.agwMember = member.key
        self.attempts += 1
        if self.lease.counted and self.lease.member is member:
            self._dial()  # a retry on the same member keeps its slot
        else:
            self.lease.take(member, self._dial, self._refused)

    def _dial(self) -> None:
        member = self.member
        assert member is not None
        self._startTimer()
        settings = self.target.settings
        self.cancelConnect = self.ctx.upstream.getConnection(
            member.host,
            member.port,
            self._connected,
            connectTimeout=min(settings.requestTimeout, settings.connectTimeout),
            connector=self.target.connector,
            tlsKey=self.target.tlsKey,
            maxIdle=settings.maxIdleConnectionsPerServer,
            idleTimeout=settings.idleConnectionTimeout,
        )

    def _refused(self, message: str) -> None:
        """The member's queue is full or the wait timed out (counted on the member, see L{Lease})."""
        self._finishWithError(503, message)

    def _connected(self, conn: UpstreamConnection | None, reason: Failure | None) -> None:
        self.cancelConnect = None
        if self.done:
            if conn is not None:
                conn.abort()
            return
        if conn is None:
            self._memberFailed(connectFailureKind(reason), reason)
            return
        self.conn = conn
        assert self.member is not None
        if not conn.reused:
            self.member.connects += 1
        body = self.bodyLength
        request = self.request
        head = self.makeHead(self.member)
        self.sentAt = self.ctx.reactor.seconds()
        if self.stream is not None:
            # A HEAD with a body too: its answer has none (found by the fuzzer).
            conn.send(head, self, request.method == b"HEAD", True)
            self.stream.attach(conn)
        elif 0 < body <= INLINE_BODY:
            request.content.seek(0)
            conn.send(head + request.content.read(), self, request.method == b"HEAD", True)
        elif body > INLINE_BODY:
            request.content.seek(0)
            conn.send(head, self, request.method == b"HEAD", True)
            self.pump = _BodyPump(request.content, conn, self._bodySent)
            conn.transport.registerProducer(self.pump, False)  # type: ignore[union-attr]
        else:
            conn.send(head, self, request.method == b"HEAD", False)

    def _bodySent(self) -> None:
        self.pump = None

    def _memberFailed(self, kind: str, reason: Failure | str | None) -> None:
        """Connecting failed: passive health, then one retry elsewhere for safe requests."""
        member = self.member
        detail = str(reason.value if isinstance(reason, Failure) else reason)
        if member is not None:
            self.ctx.passiveFailure(self.state, member, kind, detail)
        if self._failover():
            return
        log.warn(
            "request={requestId}: backend {member} could not be reached: {error}",
            requestId=self.request.agwRequestId,
            member=member.key if member else "-",
            error=detail,
        )
        self._finishWithError(502, "Bad Gateway: the backend could not be reached")

    def _failover(self) -> bool:
        """
        Try one other member for a request that is safe to repeat (GET, HEAD,
        OPTIONS, nothing streamed): so a member that dies costs clients nothing.
        """
        if self.request.method not in SAFE_RETRY or self.stream is not None:
            return False
        other = self.lease.failover()
        if other is None:
            return False
        log.info(
            "request={requestId}: retrying {method} on {other} after {member} failed",
            requestId=self.request.agwRequestId,
            method=self.request.method.decode("latin-1"),
            member=self.member.key if self.member else "-",
            other=other.key,
        )
        self.setAffinity = self.setAffinity or self.pinned is not None
        self.conn = None
        self._connect(other)
        return True

    # -- ResponseHandler

    def responseHead(
        self, conn: UpstreamConnection, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        request = self.request
        if self.done:
            return
        self.headSent = True
        self._closeIfUploading()
        self.lastActivity = now = self.ctx.reactor.seconds()
        request.agwServerLatency = now - self.sentAt
        request.setResponseCode(status, reason or reasonPhrase(status))
        out = responseHeaders(headers)
        if self.setAffinity or (self.target.settings.cookieBasedAffinity and self.pinned is not self.member):
            assert self.member is not None
            settings = self.target.settings
            value = self.ctx.affinity.memberToken(self.target.scope, self.member.key)
            for cookie in affinityCookies(settings.affinityCookieName, value, request.isSecure()):
                out.addRawHeader(b"Set-Cookie", cookie)
        if self.target.rewrite is not None:
            self.target.rewrite.applyResponse(request, out)
        request.responseHeaders = out
        request.agwStatus = status
        if request.method == b"HEAD" or status in (204, 304):
            return
        # The backend socket becomes the client's producer (a slow client
        # pauses it) with the first body bytes, unless those complete the
        # body: a small response is written and finished without it.
        self.producerConn = conn

    def responseData(self, data: bytes) -> None:
        self.lastActivity = self.ctx.reactor.seconds()
        conn = self.producerConn
        if conn is not None:
            self.producerConn = None
            if not conn.bodyComplete():
                self.request.registerProducer(conn, True)
        self.request.write(data)

    def responseDone(self) -> None:
        if self.done:
            return
        self._cleanup()
        request = self.request
        if request.producer is not None:
            request.unregisterProducer()
        if not clientGone(request) and not request.finished:
            request.finish()

    def responseFailed(self, err: UpstreamError, retryable: bool) -> None:
        if self.done:
            return
        request = self.request
        if request.producer is not None:
            request.unregisterProducer()
        if not self.headSent:
            if retryable and self.attempts < 3 and self.member is not None and self.stream is None:
                # A reused keep-alive connection the backend had closed: try a fresh one.
                log.debug(
                    "request={requestId}: backend {member} closed a reused connection: retrying",
                    requestId=request.agwRequestId,
                    member=self.member.key,
                )
                self._connect(self.member)
                return
            if err.kind == "reset" and self.member is not None:
                self.ctx.passiveFailure(self.state, self.member, "reset", err.detail)
                if self._failover():
                    return
        log.warn(
            "request={requestId}: backend {member} failed: {error}",
            requestId=request.agwRequestId,
            member=self.member.key if self.member else "-",
            error=str(err),
        )
        self._finishWithError(502, "Bad Gateway: the backend response failed")

    # -- endings

    def _cleanup(self) -> None:
        self.done = True
        if self.stream is not None:
            self.stream.detach()
        if self.timing:
            self.timing = False
            self.ctx.deadlines.remove(self)
        self.lease.release()

    def _closeIfUploading(self) -> None:
        """Answered before the client finished sending its body: the connection closes after this response."""
        if self.stream is not None and not self.stream.ended and self.request.channel is not None:
            self.request.channel.closeAfterResponse()

    def _finishWithError(self, code: int, message: str) -> None:
        self._closeIfUploading()
        self._cleanup()
        errorPage(self.request, code, message)

    def _timedOut(self) -> None:
        self.timing = False
        if self.done:
            return
        if self.headSent:
            # Waiting between body reads: reschedule while data keeps flowing.
            now = self.ctx.reactor.seconds()
            timeout = self.target.settings.requestTimeout
            if self.lastActivity and now - self.lastActivity < timeout:
                self.timing = True
                self.ctx.deadlines.add(self, timeout - (now - self.lastActivity), self._timedOut)
                return
        self._abortUpstream()
        if self.member is not None:
            self.ctx.metrics.upstreamError(self.state.name, self.member.key, "timeout")
        log.warn(
            "request={requestId}: backend {member} timed out after {timeout}s",
            requestId=self.request.agwRequestId,
            member=self.member.key if self.member else "-",
            timeout=self.target.settings.requestTimeout,
        )
        self._finishWithError(504, "Gateway Timeout: the backend did not answer in time")

    def _abortUpstream(self) -> None:
        if self.cancelConnect is not None:
            self.cancelConnect()
            self.cancelConnect = None
        if self.pump is not None:
            self.pump.stopProducing()
            self.pump = None
        if self.conn is not None:
            self.conn.abort()

    def bodyTimedOut(self) -> None:
        """
        The client's body stalled past C{requestBodyTimeout}: the backend
        exchange is aborted (its connection closed, not reused); the caller
        answers the client.
        """
        if self.done:
            return
        self._abortUpstream()
        self._cleanup()

    def _clientGone(self, reason: Failure) -> None:
        if self.done:
            return
        self.request.agwError = "client went away"
        self._abortUpstream()
        self._cleanup()
        self.ctx.accessLog(self.request, aborted=True)


def chooseMember(
    ctx: Any, request: "GatewayRequest", target: Any, lease: Lease
) -> tuple[Member | None, Member | None]:
    """
    (member, pinned) for a new request or WebSocket handshake, by
    L{Lease.first}: the affinity cookie's member when genuine and available,
    else the member a load distribution policy chose (C{request.agwPreferred}),
    else the pool's pick.  C{pinned} is that member when the cookie needs no
    renewal (signed with the current key), else None (a new cookie is set).
    """
    state = target.state
    settings = target.settings
    if settings.cookieBasedAffinity:
        raw = request.received_cookies.get(settings.affinityCookieName.encode("ascii"))
        if raw:
            found = ctx.affinity.findMember(target.scope, raw, (m.key for m in state.members))
            if found is not None:
                candidate = state.member(found[0])
                member = lease.first(candidate)
                if member is candidate:
                    # Pinned by a former key: served by the same member, and
                    # (pinned None) given a cookie of the signing key.
                    return member, member if found[1] else None
                return member, None
    # A load distribution policy's choice (agwtx.routing.router.PolicyTarget), else the pool's.
    return lease.first(request.agwPreferred), None


def _picksHost(target: Any, request: "GatewayRequest") -> bool:
    """
    Whether the Host line is each member's own name: C{pickHostNameFromBackendAddress}
    without C{hostName}, or no C{hostName} and a client request without Host
    (HTTP/1.0 allows that; the backend request is HTTP/1.1, which must have
    one, and nginx sends the upstream's name too).
    """
    if target.hostHeader is not None:
        return False
    return bool(target.settings.pickHostNameFromBackendAddress) or not request.requestHeaders.hasHeader(
        b"host"
    )


def backendRequestHeaders(
    request: "GatewayRequest",
    target: Any,
    member: Member | None,
    dropExtra: frozenset[bytes],
) -> list[tuple[bytes, bytes]]:
    """
    The headers a backend request (or WebSocket handshake) carries: the
    forwarded set, Host as the settings decide, the request ID and trace
    context (L{agwtx.runtime.requestid}), then the rule's rewrites.

    Host is the settings' C{hostName}; else, with
    C{pickHostNameFromBackendAddress}, C{member}'s name (C{member} None: no
    Host line, the caller writes one per member); else the client's.
    """
    pickHost = _picksHost(target, request)
    host = target.hostHeader
    if pickHost:
        host = member.hostHeader if member is not None else b""
    tagger = request.site.ctx.tagger
    fwd = forwardedRequestHeaders(
        request.requestHeaders,
        request.peerIP,
        b"https" if request.isSecure() else b"http",
        request.listenerPort,
        host,
        dropExtra=tagger.dropping(dropExtra),
        trusted=request.peerTrusted,
    )
    if pickHost and member is None:
        del fwd[0]
    fwd.extend(tagger.backendHeaders(request))
    if target.rewrite is not None:
        fwd = target.rewrite.applyRequest(request, fwd)
    return fwd


def _begin(
    ctx: Any,
    request: "GatewayRequest",
    target: Any,
    member: Member,
    pinned: Member | None,
    framing: tuple[bytes, bytes] | None,
    bodyLength: int,
    stream: _StreamedBody | None,
    lease: Lease,
) -> None:
    pickHost = _picksHost(target, request)  # then head() writes each member's Host line
    fwd = backendRequestHeaders(request, target, None, _CONTENT_LENGTH)
    if framing is not None:
        fwd.append(framing)
    prefix = request.method + b" " + target.backendPath(request) + b" HTTP/1.1\r\n"
    lines = b"".join(n + b": " + v + b"\r\n" for n, v in fwd)

    def head(m: Member) -> bytes:
        if pickHost:
            return prefix + b"Host: " + m.hostHeader + b"\r\n" + lines + b"\r\n"
        return prefix + lines + b"\r\n"

    exchange = _Exchange(ctx, request, target, head, bodyLength, lease)
    exchange.pinned = pinned
    exchange.stream = stream
    if stream is not None:
        stream.exchange = exchange
    exchange.start(member)


def proxy(ctx: Any, request: "GatewayRequest", target: Any) -> Any:
    """Relay C{request} to a member of the target pool."""
    stream = request.agwStream
    if stream is not None:
        # Already under way since the headers arrived (see L{startStreaming}).
        stream.end()
        return NOT_DONE_YET
    lease = Lease(ctx.reactor, state=target.state)
    member, pinned = chooseMember(ctx, request, target, lease)
    if member is None or request.agwDiscarded:
        # Discarded: no member when the body began, so it was not kept to send.
        return errorPage(request, 502, "Bad Gateway: no healthy backend is available")
    content = request.content
    bodyLength = 0
    if content is not None:
        content.seek(0, 2)
        bodyLength = content.tell()
        content.seek(0)
    framing = None
    if bodyLength > 0 or request.method in (b"POST", b"PUT", b"PATCH"):
        framing = (b"Content-Length", b"%d" % bodyLength)
    _begin(ctx, request, target, member, pinned, framing, bodyLength, None, lease)
    return NOT_DONE_YET


def startStreaming(ctx: Any, request: "GatewayRequest", target: Any, length: int | None) -> bool:
    """
    Start relaying a request whose body is still arriving: called when its
    headers are complete.  False when no member is available (the body is
    then received as usual and answered with the 502 afterwards).
    """
    lease = Lease(ctx.reactor, state=target.state)
    member, pinned = chooseMember(ctx, request, target, lease)
    if member is None:
        return False
    stream = _StreamedBody(request, length)
    request.agwStream = stream
    framing = (b"Transfer-Encoding", b"chunked") if length is None else (b"Content-Length", b"%d" % length)
    _begin(ctx, request, target, member, pinned, framing, length or 0, stream, lease)
    return True


_CONTENT_LENGTH = frozenset({b"content-length"})

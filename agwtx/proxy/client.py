"""
The upstream (backend) side of the proxy: a lean HTTP/1.1 client with a
bounded keep-alive connection pool per backend member.

Why not L{twisted.web.client.Agent}: measured on the target machine, an
Agent-based streaming proxy reached 0.04x nginx's throughput; the cost is in
the layers (endpoint per request, L{Request}/L{Response} objects, the
line-based parser, the Deferred chain per response).  This client writes the
request head in one C{write}, parses the response head with one C{find} and
a split, and hands body bytes straight to the consumer.  Chunked bodies use
Twisted's own chunked decoder.

Flow control: the response consumer gets this connection as an
L{IPushProducer} (pausing it pauses the backend socket); a request body is
written by the caller with L{UpstreamConnection.writeBody}, which respects the
backend socket's own producer interface.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Protocol as TypingProtocol

from twisted.internet import error as ierror
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTCP, IReactorTime
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from agwtx.compat.twistedprivate import ChunkedTransferDecoder, MalformedChunkedDataError
from agwtx.config.values import HEADER_TOKEN_RE

__all__ = [
    "relayableHead",
    "ResponseHandler",
    "UpstreamConnection",
    "UpstreamPool",
    "UpstreamError",
]

MAX_HEAD_SIZE = 64 * 1024
_RELAYABLE_HEAD = re.compile(rb"[^\x00\r\n]*(?:\r\n(?:%s):[^\x00\r\n]*)*" % HEADER_TOKEN_RE.pattern.encode())
"""A response head the gateway relays: a status line, then fields whose name
is a token (RFC 9110 section 5.6.2), with no NUL and no CR or LF but the line
ends anywhere (section 5.5): relayed, those would corrupt or split the
response to the client."""
NO_BODY_STATUS = frozenset((204, 304))


def relayableHead(head: bytes, end: int | None = None) -> bool:
    """Whether a backend's response head (C{head[:end]}, without its blank line) may be passed on."""
    return _RELAYABLE_HEAD.fullmatch(head, 0, len(head) if end is None else end) is not None


class UpstreamError(Exception):
    """The backend did not give a usable response."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(kind, detail)
        self.kind = kind
        """One of C{connect}, C{reset}, C{protocol}, C{timeout}."""
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


class ResponseHandler(TypingProtocol):
    """What receives a backend response; the proxy implements it."""

    def responseHead(
        self,
        conn: "UpstreamConnection",
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]],
    ) -> None: ...

    def responseData(self, data: bytes) -> None: ...

    def responseDone(self) -> None: ...

    def responseFailed(self, err: UpstreamError, retryable: bool) -> None: ...


# parser states
_IDLE, _HEAD, _BODY_LENGTH, _BODY_CHUNKED, _BODY_CLOSE, _DONE = range(6)


@implementer(IPushProducer)
class UpstreamConnection(Protocol):
    """One keep-alive connection to a backend member; one request at a time."""

    _log = Logger()

    def __init__(self, pool: "UpstreamPool", key: tuple[str, int, str]) -> None:
        self.pool = pool
        self.key = key
        self.handler: ResponseHandler | None = None
        self.state = _IDLE
        self.buffer = b""
        self.remaining = 0
        self.decoder: ChunkedTransferDecoder | None = None
        self.keepAlive = True
        self.reused = False
        self.gotBytes = False
        self.bodySent = False
        self.headRequest = False
        self.idleSince = 0.0
        self.maxIdle = pool.maxIdlePerMember
        self.idleTimeout = pool.idleTimeout
        """The idle limits of the settings this connection last served a request for."""
        self.lost = False
        self.paused = False
        self.onMade: Callable[[UpstreamConnection], None] | None = None

    # -- connection lifecycle

    def connectionMade(self) -> None:
        transport: Any = self.transport
        try:
            transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        if self.onMade is not None:
            onMade, self.onMade = self.onMade, None
            onMade(self)

    def connectionLost(self, reason: Failure = Failure(ierror.ConnectionDone())) -> None:
        self.lost = True
        self.pool._forget(self)
        handler, self.handler = self.handler, None
        if handler is None:
            return
        if self.state == _BODY_CLOSE:
            self.state = _DONE
            handler.responseDone()
            return
        retryable = self.reused and not self.gotBytes and not self.bodySent
        if self.state in (_BODY_LENGTH, _BODY_CHUNKED):
            err = UpstreamError("reset", "backend closed the connection mid-body")
        else:
            err = UpstreamError("reset", "backend closed the connection before responding")
        handler.responseFailed(err, retryable)

    # -- sending

    def send(self, head: bytes, handler: ResponseHandler, isHead: bool, bodyFollows: bool) -> None:
        """Write a request head; the response goes to C{handler}."""
        self.handler = handler
        self.state = _HEAD
        self.gotBytes = False
        self.bodySent = bodyFollows
        self.headRequest = isHead
        self.buffer = b""
        self.transport.write(head)  # type: ignore[union-attr]

    def writeBody(self, data: bytes) -> None:
        if not self.lost:
            self.transport.write(data)  # type: ignore[union-attr]

    def abort(self) -> None:
        """Drop the connection (the client went away, or a timeout)."""
        self.handler = None
        self.keepAlive = False
        if not self.lost and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    # -- IPushProducer: the response consumer pauses the backend socket

    def pauseProducing(self) -> None:
        if not self.lost and not self.paused:
            self.paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        if not self.lost and self.paused:
            self.paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def stopProducing(self) -> None:
        self.abort()

    def bodyComplete(self) -> bool:
        """Whether the bytes being delivered end a Content-Length response body."""
        return self.state == _BODY_LENGTH and self.remaining == 0

    # -- parsing

    def dataReceived(self, data: bytes) -> None:
        self.gotBytes = True
        state = self.state
        if state == _BODY_LENGTH:
            self._bodyLength(data)
        elif state == _HEAD:
            self._head(data)
        elif state == _BODY_CHUNKED:
            self._bodyChunked(data)
        elif state == _BODY_CLOSE:
            if self.handler is not None:
                self.handler.responseData(data)
        else:
            # Bytes while idle (or after an abort): the backend is confused.
            self.keepAlive = False
            self.pool._forget(self)
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _fail(self, detail: str) -> None:
        handler, self.handler = self.handler, None
        self.keepAlive = False
        self.state = _DONE
        self.transport.abortConnection()  # type: ignore[union-attr]
        if handler is not None:
            handler.responseFailed(UpstreamError("protocol", detail), False)

    def _head(self, data: bytes) -> None:
        buf = self.buffer + data if self.buffer else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_SIZE:
                    self._fail("response head too large")
                else:
                    self.buffer = buf
                return
            lines = buf[:end].split(b"\r\n")
            rest = buf[end + 4 :]
            statusLine = lines[0].split(b" ", 2)
            try:
                if not statusLine[0].startswith(b"HTTP/1."):
                    raise ValueError(statusLine[0])
                status = int(statusLine[1])
                if not 100 <= status <= 599:
                    raise ValueError(status)
            except (ValueError, IndexError):
                self._fail("malformed status line")
                return
            if 100 <= status < 200:
                # 100 Continue, 103 Early Hints: informational, not relayed.
                buf = rest
                continue
            break
        self.buffer = b""
        if not relayableHead(buf, end):
            self._fail("malformed header line")
            return
        reason = statusLine[2] if len(statusLine) > 2 else b""
        headers: list[tuple[bytes, bytes]] = []
        length = -1
        chunked = False
        keepAlive = statusLine[0] == b"HTTP/1.1"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            value = value.strip(b" \t")
            lname = name.lower()
            if lname == b"content-length":
                # Digits only: int() would also take "+5", " 5" and "1_0".
                if not value.isdigit() or (length >= 0 and int(value) != length):
                    self._fail("bad Content-Length")
                    return
                length = int(value)
            elif lname == b"transfer-encoding":
                # Only "chunked", once: another coding would reach the client
                # still encoded with nothing saying so.
                if chunked or value.lower() != b"chunked":
                    self._fail("unsupported Transfer-Encoding")
                    return
                chunked = True
            elif lname == b"connection":
                tokens = value.lower()
                if b"close" in tokens:
                    keepAlive = False
                elif b"keep-alive" in tokens:
                    keepAlive = True
            headers.append((name, value))
        if chunked and length >= 0:
            # RFC 9112 section 6.3: "ought to be handled as an error" (a
            # smuggling or splitting attempt); relaying either length is wrong.
            self._fail("both Content-Length and Transfer-Encoding")
            return
        self.keepAlive = keepAlive
        handler = self.handler
        if handler is None:
            return
        if self.headRequest or status in NO_BODY_STATUS:
            self.state = _DONE
            handler.responseHead(self, status, reason, headers)
            self._finished()
            if rest:
                self.keepAlive = False
            return
        if chunked:
            self.state = _BODY_CHUNKED
            self.decoder = ChunkedTransferDecoder(self._chunk, self._chunkedDone)
            handler.responseHead(self, status, reason, headers)
            if rest:
                self._bodyChunked(rest)
        elif length >= 0:
            self.state = _BODY_LENGTH
            self.remaining = length
            handler.responseHead(self, status, reason, headers)
            if length == 0:
                self._finished()
            elif rest:
                self._bodyLength(rest)
        else:
            self.state = _BODY_CLOSE
            self.keepAlive = False
            handler.responseHead(self, status, reason, headers)
            if rest and self.handler is not None:
                self.handler.responseData(rest)

    def _bodyLength(self, data: bytes) -> None:
        remaining = self.remaining
        if len(data) >= remaining:
            extra = data[remaining:]
            if extra:
                # Data past the response: never reuse this connection.
                self.keepAlive = False
            data = data[:remaining]
            self.remaining = 0
            if self.handler is not None and data:
                self.handler.responseData(data)
            self._finished()
        else:
            self.remaining = remaining - len(data)
            if self.handler is not None:
                self.handler.responseData(data)

    def _bodyChunked(self, data: bytes) -> None:
        assert self.decoder is not None
        try:
            self.decoder.dataReceived(data)
        except MalformedChunkedDataError:
            self._fail("malformed chunked body")

    def _chunk(self, data: bytes) -> None:
        if self.handler is not None:
            self.handler.responseData(data)

    def _chunkedDone(self, extra: bytes) -> None:
        if extra:
            self.keepAlive = False
        self.decoder = None
        self._finished()

    def _finished(self) -> None:
        self.state = _DONE
        handler, self.handler = self.handler, None
        if self.paused:
            self.paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]
        if self.keepAlive:
            self.state = _IDLE
            self.pool._release(self)
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]
        if handler is not None:
            handler.responseDone()


class _ConnFactory(ClientFactory):
    noisy = False

    def __init__(
        self,
        pool: "UpstreamPool",
        key: tuple[str, int, str],
        ready: Callable[[UpstreamConnection | None, Failure | None], None],
    ) -> None:
        self.pool = pool
        self.key = key
        self.ready = ready
        self.fired = False

    def buildProtocol(self, addr: Any) -> UpstreamConnection:
        conn = UpstreamConnection(self.pool, self.key)
        conn.onMade = self._made
        return conn

    def _made(self, conn: UpstreamConnection) -> None:
        if not self.fired:
            self.fired = True
            self.ready(conn, None)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.fired:
            self.fired = True
            self.ready(None, reason)


class UpstreamPool:
    """
    Keep-alive connections per backend member, kept while the load needs
    them and closed by age.

    A connection whose response is done goes back to its member's idle list
    (unless C{maxIdle} connections are idle there already) and is closed
    once it has been idle for C{idleTimeout}.  The list is a stack: the most
    recently used connection is reused first, so when the load falls the
    connections at the bottom stay unused and age out, and the pool shrinks
    to what was in use within the last idle period; under a steady load it
    holds what that load needs and no connection is opened per request.
    Both limits come with each request (its settings'
    C{maxIdleConnectionsPerServer} and C{idleConnectionTimeout}); the
    constructor's are the defaults.

    C{connectionFactory} lets end-to-end TLS wrap the plain factory
    (it receives the host, the port and the plain factory, and must start the
    connection); by default connections are plain TCP.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        maxIdlePerMember: int = 1024,
        idleTimeout: float = 60.0,
        connectTimeout: float = 10.0,
    ) -> None:
        self.reactor: IReactorTCP = reactor
        self.clock: IReactorTime = reactor
        self.maxIdlePerMember = maxIdlePerMember
        self.idleTimeout = idleTimeout
        self.connectTimeout = connectTimeout
        self.idle: dict[tuple[str, int, str], list[UpstreamConnection]] = {}
        self.active: set[UpstreamConnection] = set()
        self.reaper: IDelayedCall | None = None
        self.reapEvery = idleTimeout / 4

    def getConnection(
        self,
        host: str,
        port: int,
        callback: Callable[[UpstreamConnection | None, Failure | None], None],
        connectTimeout: float | None = None,
        connector: Callable[..., Any] | None = None,
        tlsKey: str = "",
        maxIdle: int | None = None,
        idleTimeout: float | None = None,
    ) -> Callable[[], None]:
        """
        Hand C{callback} an idle connection at once, or a new one when it is
        connected (or C{(None, failure)}).  Returns a canceller.
        """
        key = (host, port, tlsKey)
        maxIdle = self.maxIdlePerMember if maxIdle is None else maxIdle
        idleTimeout = self.idleTimeout if idleTimeout is None else idleTimeout
        idle = self.idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.lost:
                continue
            conn.reused = True
            conn.maxIdle, conn.idleTimeout = maxIdle, idleTimeout
            self.active.add(conn)
            callback(conn, None)
            return lambda: None
        cancelled = [False]

        def ready(conn: UpstreamConnection | None, reason: Failure | None) -> None:
            if cancelled[0]:
                if conn is not None:
                    conn.abort()
                return
            if conn is not None:
                conn.maxIdle, conn.idleTimeout = maxIdle, idleTimeout
                self.active.add(conn)
            callback(conn, reason)

        factory = _ConnFactory(self, key, ready)
        timeout = self.connectTimeout if connectTimeout is None else connectTimeout
        if connector is not None:
            connected = connector(host, port, factory, timeout)
        else:
            connected = self.reactor.connectTCP(host, port, factory, timeout=timeout)

        def cancel() -> None:
            cancelled[0] = True
            if not factory.fired:
                factory.fired = True
                try:
                    connected.disconnect()
                except Exception:
                    pass

        return cancel

    def _release(self, conn: UpstreamConnection) -> None:
        self.active.discard(conn)
        idle = self.idle.setdefault(conn.key, [])
        if len(idle) >= conn.maxIdle:
            conn.transport.loseConnection()  # type: ignore[union-attr]
            return
        conn.reused = True
        idle.append(conn)
        conn.idleSince = self.clock.seconds()
        every = conn.idleTimeout / 4
        if self.reaper is None:
            self.reapEvery = every
            self.reaper = self.clock.callLater(every, self._reap)
        elif every < self.reapEvery:
            self.reapEvery = every
            self.reaper.reset(every)

    def _reap(self) -> None:
        """
        Close connections idle for longer than their C{idleTimeout}.  One
        sweep every quarter of the shortest timeout instead of a timer per
        released connection keeps the per-request cost down.
        """
        self.reaper = None
        now = self.clock.seconds()
        shortest = None
        for key, idle in list(self.idle.items()):
            # idle lists are stacks: the oldest connections are at the bottom
            keep = []
            for conn in idle:
                if now - conn.idleSince >= conn.idleTimeout:
                    if not conn.lost and conn.transport is not None:
                        conn.transport.loseConnection()
                else:
                    keep.append(conn)
                    if shortest is None or conn.idleTimeout < shortest:
                        shortest = conn.idleTimeout
            if keep:
                if len(keep) != len(idle):
                    idle[:] = keep
            else:
                del self.idle[key]
        if shortest is not None:
            self.reapEvery = shortest / 4
            self.reaper = self.clock.callLater(self.reapEvery, self._reap)

    def _forget(self, conn: UpstreamConnection) -> None:
        self.active.discard(conn)
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def idleCount(self, host: str, port: int, tlsKey: str | None = "") -> int:
        """Idle connections to C{host}:C{port} (with C{tlsKey} None: whatever their TLS settings)."""
        if tlsKey is not None:
            return len(self.idle.get((host, port, tlsKey), ()))
        return sum(len(v) for (h, p, _), v in self.idle.items() if h == host and p == port)

    def closeAll(self) -> None:
        """Close every connection (service stop)."""
        if self.reaper is not None and self.reaper.active():
            self.reaper.cancel()
        self.reaper = None
        for idle in list(self.idle.values()):
            for conn in list(idle):
                if not conn.lost and conn.transport is not None:
                    conn.transport.loseConnection()
        self.idle.clear()
        for conn in list(self.active):
            conn.abort()
        self.active.clear()

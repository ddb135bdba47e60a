"""
HTTP/2 on HTTPS listeners (C{[gateway] enableHttp2}): Twisted's HTTP/2
server (C{twisted.web._http2}, on the C{h2} library) with agw's request
semantics per stream.

  - L{NegotiatingChannel}: the listener's connection.  When TLS negotiated
    C{h2} by ALPN (L{agwtx.tls.server}), it hands the connection to a
    L{GatewayH2Connection} on the first bytes; otherwise it is the HTTP/1.1
    L{agwtx.http.channel.GatewayChannel} it extends, unchanged.
  - L{GatewayH2Connection}: Twisted's connection, plus: streams built as
    L{GatewayH2Stream}; events for a stream Twisted already forgot (a client
    still sending after the answer, or resetting it) are acknowledged and
    dropped instead of raising; a Rapid Reset budget (CVE-2023-44487) that
    ends the connection with GOAWAY ENHANCE_YOUR_CALM, on every Twisted
    release (Twisted 26 has one too, 25.5 none).
  - L{GatewayH2Stream}: one request.  Its header block is translated as RFC
    9113 section 8 says (C{:authority} to Host, cookie crumbs joined with
    C{"; "}, C{_} names dropped as on HTTP/1.1) and handed over whole before
    the request learns its length (Twisted calls C{gotLength} in the middle
    of the block, before the rest of the fields, so routing would see half
    of them); control characters in a value make it malformed (RST_STREAM
    PROTOCOL_ERROR).  It is its request's "transport": pausing it stops
    reading that stream only (the client's window stays shut), so a slow
    backend holds back one upload, not the connection.  Hop-by-hop fields
    never go on an h2 response.

What the C{h2} library already enforces (its defaults, kept): at most 100
concurrent streams (SETTINGS_MAX_CONCURRENT_STREAMS), a 64 KiB header list
(an HPACK bomb is a GOAWAY ENHANCE_YOUR_CALM), at most 64 CONTINUATION
frames per header block, connection-specific request fields and C{TE} other
than C{trailers} (GOAWAY PROTOCOL_ERROR: the library makes these connection
errors).  Twisted bounds the control frames (SETTINGS and PING answers) a
client that does not read can make it buffer (17 KiB, then it drops the
connection).
"""

from __future__ import annotations

import base64
import os
from collections import OrderedDict, deque
from typing import Any

import priority
from h2.errors import ErrorCodes
from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, validate_headers
from h2.settings import SettingCodes, Settings
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

from agwtx.compat.twistedprivate import H2Connection, H2Stream, streamRequest
from agwtx.runtime.answers import errorPage
from agwtx.runtime.headers import HOP_BY_HOP

from agwtx.http.channel import _CTL, GatewayChannel
from agwtx.http.refusal import _Refusal, bodyTooLarge, headersTooLarge, tooManyHeaders
from agwtx.http.h2tunnel import H2Tunnel


__all__ = ["GatewayH2Connection", "GatewayH2Stream", "NegotiatingChannel"]

log = Logger(namespace="agw.web")

HTTP2_VERSION = b"HTTP/2.0"
"""The request's C{clientproto}: what the access log shows."""

RESET_BURST = 200
"""Streams a client may reset at once before the rate applies (Rapid Reset)."""
RESET_RATE = 50.0
"""Stream resets per second a client may go on making (the budget's refill)."""

MAX_CONCURRENT_STREAMS = 100
"""SETTINGS_MAX_CONCURRENT_STREAMS (h2's default, said here)."""
SEND_BATCH = 64
"""DATA frames (or stream ends) sent per reactor turn and per transport write."""
STREAM_QUEUE_LIMIT = 256 * 1024
"""Response bytes queued on one stream before its producer (the backend socket) is paused,
whatever window the client grants: a client advertising a 2 GiB window and reading slowly
would otherwise have the gateway hold up to that much per stream."""
MAX_HEADER_LIST_SIZE = 65536
"""SETTINGS_MAX_HEADER_LIST_SIZE (h2's default, said here): a bigger block is a GOAWAY."""

_H2_RESPONSE_DROPPED = HOP_BY_HOP | {b"proxy-connection"}
"""Response fields that never go on an HTTP/2 response (RFC 9113 section 8.2.2)."""


_REQUEST_BLOCK = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)
"""h2's header validation of a request's header block, as h2 runs it on receipt."""


class GatewayH2Stream(H2Stream):  # type: ignore[misc]
    """One HTTP/2 stream: a L{agwtx.http.request.GatewayRequest} with agw's semantics."""

    agwProtocol: bytes | None = None
    """The extended CONNECT's C{:protocol} (RFC 8441), if any."""
    agwMalformed = False
    """The header block is malformed: the connection resets the stream (PROTOCOL_ERROR)."""
    _discarding = False
    _version = HTTP2_VERSION
    """With C{_command} and C{_path}: the request line as an HTTPChannel holds it (read by
    L{agwtx.compat.twistedprivate.requestLine} when the request learns its length)."""

    @property
    def _command(self) -> bytes:
        return self.command  # type: ignore[no-any-return]

    @property
    def _path(self) -> bytes:
        return self.path  # type: ignore[no-any-return]

    def __init__(self, *args: Any, ended: bool = False, agwChannel: Any = None) -> None:
        self._ended = ended
        self.agwChannel = agwChannel
        super().__init__(*args)

    @property
    def transport(self) -> Any:
        """The stream itself: a request pausing its "transport" pauses this stream only."""
        return self

    def _convertHeaders(self, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            # h2's checks (pseudo-fields, connection-specific fields, TE,
            # upper case, ...): a malformed request resets its stream only.
            headers = list(validate_headers(headers, _REQUEST_BLOCK))
        except ProtocolError:
            self.agwMalformed = True
            return
        request = streamRequest(self)
        fields = request.requestHeaders
        cookies: list[bytes] = []
        authority = protocol = None
        length: bytes | None = None
        allowUnderscores = self.site.allowUnderscores
        size = 0
        count = fieldBytes = 0  # as [gateway] maxRequestHeaderCount and maxRequestHeaderSize count
        for name, value in headers:
            size += len(name) + len(value) + 32  # as SETTINGS_MAX_HEADER_LIST_SIZE counts
            if name[:1] != b":":
                count += 1
                fieldBytes += len(name) + 2 + len(value)  # "name: value", as on HTTP/1.1
            if len(value.translate(None, _CTL)) != len(value):
                # RFC 9113 section 8.2.1: malformed (NUL, CR, LF; the other
                # controls too, as on HTTP/1.1).
                self.agwMalformed = True
                return
            if name[:1] == b":":
                if name == b":method":
                    self.command = value
                elif name == b":path":
                    self.path = value
                elif name == b":authority":
                    authority = value
                elif name == b":protocol":
                    protocol = value
                continue
            if name == b"cookie":
                cookies.append(value)
                continue
            if b"_" in name and not allowUnderscores:
                continue  # dropped, as on HTTP/1.1 (GatewayChannel.headerReceived)
            if name == b"content-length":
                length = value
            fields.addRawHeader(name, value)
        gateway = self.site.ctx.config.gateway
        if count > gateway.maxRequestHeaderCount:
            self._refuse(tooManyHeaders(gateway.maxRequestHeaderCount))
            return
        if fieldBytes > gateway.maxRequestHeaderSize:
            self._refuse(headersTooLarge(gateway.maxRequestHeaderSize))
            return
        if cookies:
            fields.setRawHeaders(b"cookie", [b"; ".join(cookies)])
        if authority is not None:
            # h2 has checked that a Host field, if any, says the same.
            fields.setRawHeaders(b"host", [authority])
        if self.command == b"CONNECT":
            if protocol == b"websocket" and self.path:
                # RFC 8441: routed as the HTTP/1.1 handshake it stands for (a
                # GET to the same path), bridged by agwtx.websocket when the
                # backend has answered 101 (see agwtx.http.h2tunnel).
                self.agwProtocol = protocol
                self.command = b"GET"
                fields.setRawHeaders(b"upgrade", [b"websocket"])
                fields.setRawHeaders(b"connection", [b"Upgrade"])
                fields.setRawHeaders(b"sec-websocket-key", [base64.b64encode(os.urandom(16))])
                length = None
            else:
                # A plain CONNECT, or another protocol: its authority as the
                # target, which routing refuses (400) as on HTTP/1.1.
                self.path = authority or b""
        request.agwHeadBytes = size
        if length is not None:
            if not length.isdigit():
                self.agwMalformed = True
                return
            request.gotLength(int(length))
        elif self._ended or self.agwProtocol is not None:
            request.gotLength(0)
        else:
            request.gotLength(None)
        request.parseCookies()
        expect = fields.getRawHeaders(b"expect")
        if expect and expect[0].lower() == b"100-continue" and not self._discarding:
            self._send100Continue()

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Headers) -> None:
        fields = [
            (k, v)
            for (k, values) in headers.getAllRawHeaders()
            if k.lower() not in _H2_RESPONSE_DROPPED
            for v in values
        ]
        self._conn.writeHeaders(version, code, reason, fields, self.streamID)

    # Twisted's receiveDataChunk and resumeProducing, with the data going to
    # the WebSocket tunnel when there is one, or nowhere once discarded.

    def receiveDataChunk(self, data: bytes, flowControlledLength: int) -> None:
        if self._discarding:
            self._conn.openStreamWindow(self.streamID, flowControlledLength)
        elif not self.producing:
            self._inboundDataBuffer.append((data, flowControlledLength))
        else:
            self._deliver(data)
            self._conn.openStreamWindow(self.streamID, flowControlledLength)

    def resumeProducing(self) -> None:
        self.producing = True
        consumed = 0
        buffered = self._inboundDataBuffer
        while self.producing and buffered:
            chunk, flowControlledLength = buffered.popleft()
            if flowControlledLength is None:  # the end of the stream
                self.requestComplete()
            else:
                consumed += flowControlledLength
                self._deliver(chunk)
        if consumed and self.alive():
            self._conn.openStreamWindow(self.streamID, consumed)

    def _deliver(self, data: bytes) -> None:
        tunnel = self.agwTunnel
        if tunnel is not None:
            tunnel.received(data)
        elif not self._discarding:
            streamRequest(self).handleContentChunk(data)

    def requestComplete(self) -> None:
        if self._discarding:
            return
        if not self.producing:
            self._inboundDataBuffer.append((None, None))
        elif self.agwProtocol is not None:
            # The client ended its side of a WebSocket (a half-close: Chromium
            # does it with its close frame); the gateway's side stays open for
            # the closing handshake's answer, then ends (or the idle timeout).
            pass
        else:
            streamRequest(self).requestReceived(self.command, self.path, HTTP2_VERSION)

    def connectionLost(self, reason: Any) -> None:
        tunnel = self.agwTunnel
        if tunnel is not None:
            tunnel.lost(reason)
        super().connectionLost(reason)

    # WebSocket over HTTP/2 (agwtx.http.h2tunnel)

    agwTunnel: H2Tunnel | None = None

    def reset(self, code: int) -> None:
        """Reset this stream with C{code} (Twisted's abortConnection says NO_ERROR)."""
        self._conn.resetStream(self.streamID, code)

    def alive(self) -> bool:
        """Whether the connection still has this stream (Twisted forgets it once ended or reset)."""
        return self.streamID in self._conn.streams

    def startTunnelRequest(self) -> None:
        """An extended CONNECT's request is complete with its headers: process it now."""
        self.producing = False  # DATA waits for the WebSocket to open
        streamRequest(self).requestReceived(self.command, self.path, HTTP2_VERSION)

    def openTunnel(self) -> H2Tunnel:
        """This stream as the byte stream of a WebSocket's client leg (the bridge calls it)."""
        tunnel = self.agwTunnel = H2Tunnel(self)
        return tunnel

    def tunnelEnded(self, tunnel: H2Tunnel) -> None:
        if self.agwTunnel is tunnel:
            self.agwTunnel = None

    def streamDone(self, result: object = None) -> None:
        """Twisted forgot the stream (ended both ways, reset, or its connection lost)."""
        tunnel = self.agwTunnel
        if tunnel is not None:
            tunnel.lost(Failure(ConnectionDone()))

    # What agw's request and proxy ask of their channel (GatewayChannel's API).

    def closeAfterResponse(self) -> None:
        """The rest of the request body is read and dropped (the stream ends with the answer)."""
        self._discarding = True
        self.producing = True

    def _discard(self, data: bytes) -> None:
        """As L{GatewayChannel._discard}: nothing more is taken from this stream."""

    def dropBody(self) -> None:
        """The request's body was cut short (408, 413): the rest of this stream's DATA is dropped."""
        self.closeAfterResponse()

    _refusal: tuple[int, str] | None = None

    def refuseRequest(self, message: str) -> None:
        """Answer the request whose head was just read with 400, reading nothing more of it."""
        self._answer(400, message)

    def refuseBodyTooLarge(self, limit: int, request: Any) -> None:
        """
        Answer 413: the request's Content-Length is over C{[gateway]
        maxRequestBodySize} (C{limit}); its body is not read.
        """
        self._refuse(bodyTooLarge(limit))

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer with an HTTP/1.1 head refusal's status and text (through errorPage: branded alike)."""
        self._answer(refusal.status, refusal.message)

    def _answer(self, code: int, message: str) -> None:
        self.closeAfterResponse()
        self._refusal = (code, message)
        if self.alive():
            self.answerRefusal()
        # else: the head is still being read (the stream is not the
        # connection's yet); GatewayH2Connection._adopt answers it next.

    def answerRefusal(self) -> None:
        """The answer of L{refuseRequest} or L{refuseBodyTooLarge}."""
        refusal, self._refusal = self._refusal, None
        if refusal is None:
            return
        request = streamRequest(self)
        request.stopBodyTimer()
        request.method, request.uri, request.clientproto = self.command, self.path, HTTP2_VERSION
        errorPage(request, *refusal)

    def tlsInfo(self) -> Any:
        """The connection's (cipher, protocol)."""
        return self.agwChannel.tlsInfo() if self.agwChannel is not None else None

    def clientAuthRefusal(self, listener: str) -> Any:
        """The TLS connection's client-certificate verdict for C{listener} (mutual TLS)."""
        check = getattr(self._conn.transport, "clientAuthRefusal", None)
        return check(listener) if check is not None else None

    def clientCertificate(self) -> Any:
        """The TLS connection's client certificate."""
        return self._conn.transport.clientCertificate()


class _RoundRobin:
    """
    The order in which streams with data get to send: round robin over the
    ready ones, in place of Twisted's RFC 7540 priority tree (whose scheme RFC
    9113 section 5.3 deprecates, and which cost about a tenth of the CPU of a
    loaded connection).  The tree's interface, as Twisted uses it: PRIORITY
    frames are taken and ignored.
    """

    def __init__(self) -> None:
        self._known: set[int] = set()
        self._ready: OrderedDict[int, None] = OrderedDict()

    def insert_stream(
        self, stream_id: int, depends_on: Any = None, weight: int = 16, exclusive: bool = False
    ) -> None:
        if stream_id in self._known:
            raise priority.DuplicateStreamError(stream_id)
        self._known.add(stream_id)

    def reprioritize(
        self, stream_id: int, depends_on: Any = None, weight: int = 16, exclusive: bool = False
    ) -> None:
        if stream_id not in self._known:
            raise priority.MissingStreamError(stream_id)

    def remove_stream(self, stream_id: int) -> None:
        self._known.discard(stream_id)
        self._ready.pop(stream_id, None)

    def block(self, stream_id: int) -> None:
        self._ready.pop(stream_id, None)

    def unblock(self, stream_id: int) -> None:
        if stream_id in self._known and stream_id not in self._ready:
            self._ready[stream_id] = None

    def __iter__(self) -> "_RoundRobin":
        return self

    def __next__(self) -> int:
        ready = self._ready
        if not ready:
            raise priority.DeadlockError("no stream is ready")
        streamID = next(iter(ready))
        ready.move_to_end(streamID)
        return streamID


class GatewayH2Connection(H2Connection):  # type: ignore[misc]
    """Twisted's HTTP/2 connection with agw's streams and defences."""

    agwChannel: Any = None
    """The L{NegotiatingChannel} this connection took over (connection slot, TLS info)."""

    # One Rapid Reset budget: agw's (L{_requestAborted}: RESET_BURST, then
    # RESET_RATE a second, logged, counting streams already answered too),
    # which Twisted 25.5 lacks.  Twisted 26's own bucket (1000 at once, then
    # 33 a second, for streams it still knows) would cut in first with other
    # figures and no log line: it is given no limit here.
    _resetTokenBurst = float("inf")

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        # A malformed request (RFC 9113 section 8.1.1) is a stream error:
        # h2's own check of a received header block runs per stream, in
        # GatewayH2Stream._convertHeaders, instead of failing the connection.
        self.conn.config.validate_inbound_headers = False
        self.priority = _RoundRobin()
        self._resetBudget = float(RESET_BURST)
        self._resetStamp = reactor.seconds()
        self.agwResets = 0
        self.agwIdleTimeout: float | None = None
        self._queueFull: set[int] = set()

    def connectionMade(self) -> None:
        # The first SETTINGS frame: RFC 8441's extended CONNECT, and the limits said.
        self.conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
            },
        )
        self.agwIdleTimeout = self.timeOut
        super().connectionMade()

    # The idle timeout, as on HTTP/1.1: it runs only while no stream is open
    # (a request waiting for a slow backend, or a WebSocket, is not idle; the
    # request's and the WebSocket's own timeouts apply), from the end of the
    # last one.  Twisted's runs whatever is open and restarts on every frame
    # received, so a client sending PINGs held an idle connection forever,
    # and a request slower than the idle timeout was cut with a GOAWAY.

    def resetTimeout(self) -> None:
        """Frames do not restart the idle timer: only a stream ending does."""

    def _requestDone(self, streamID: int) -> None:
        super()._requestDone(streamID)
        if not self.streams and self._stillProducing:
            self.setTimeout(self.agwIdleTimeout)

    def _requestReceived(self, event: Any) -> None:
        stream = GatewayH2Stream(
            event.stream_id,
            self,
            event.headers,
            self.requestFactory,
            self.site,
            self.factory,
            ended=event.stream_ended is not None,
            agwChannel=self.agwChannel,
        )
        if stream.agwMalformed:
            self.conn.reset_stream(event.stream_id, error_code=ErrorCodes.PROTOCOL_ERROR)
            self._tryToWriteControlData()
            return
        self._adopt(event.stream_id, stream)

    def _requestDataReceived(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestDataReceived(event)
            return
        # A stream answered, refused or reset already: its data keeps the
        # connection's window open, and the client is told to stop sending.
        self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self._forget(event.stream_id)

    def _requestEnded(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestEnded(event)

    def _requestAborted(self, event: Any) -> None:
        if event.stream_id in self.streams:
            super()._requestAborted(event)
        if not self._stillProducing:
            return
        self.agwResets += 1
        now = self._reactor.seconds()
        self._resetBudget = min(
            float(RESET_BURST), self._resetBudget + max(0.0, now - self._resetStamp) * RESET_RATE
        )
        self._resetStamp = now
        self._resetBudget -= 1
        if self._resetBudget < 0:
            log.info(
                "HTTP/2 client {peer} reset streams faster than {rate}/s (Rapid Reset): GOAWAY",
                peer=str(self.getPeer()),
                rate=RESET_RATE,
            )
            self.goAway(ErrorCodes.ENHANCE_YOUR_CALM, "Too many stream resets")

    # Twisted pauses a stream's producer only when the client's window is
    # spent; agw also pauses it when the stream's queue passes
    # STREAM_QUEUE_LIMIT, and resumes it when the sending loop has taken it
    # below half of that.

    def writeDataToStream(self, streamID: int, data: bytes) -> None:
        super().writeDataToStream(streamID, data)
        if streamID in self.streams and self._queued(streamID) > STREAM_QUEUE_LIMIT:
            self._queueFull.add(streamID)
            self.streams[streamID].flowControlBlocked()

    # Twisted's sending loop, batched: it sends one DATA frame (or one end of
    # a stream) per reactor iteration, each its own transport write and TLS
    # record, which made a loaded connection of small responses take a
    # reactor turn per frame (agw over h2 answered a fifth of its HTTP/1.1
    # rate).  Here up to SEND_BATCH frames, in the same priority order, go
    # out in one write per turn.

    def _sendPrioritisedData(self, *args: Any) -> None:
        if not self._stillProducing:
            return
        conn = self.conn
        queues = self._outboundStreamQueues
        sent = 0
        while sent < SEND_BATCH:
            try:
                streamID = next(self.priority)
            except priority.DeadlockError:
                # Everything sendable is sent: wait for more (Twisted's wake-up Deferred).
                self._flushFrames()
                if self._sendingDeferred is None:
                    self._sendingDeferred = Deferred()
                    self._sendingDeferred.addCallback(self._sendPrioritisedData)
                return
            if self._consumerBlocked is not None:
                self._flushFrames()
                self._consumerBlocked.addCallback(self._sendPrioritisedData)
                return
            sent += 1
            frame = queues[streamID].popleft()
            if not isinstance(frame, bytes):  # the end of the stream
                conn.end_stream(streamID)
                self._flushFrames()
                self._requestDone(streamID)
                continue
            size = min(conn.max_outbound_frame_size, conn.local_flow_control_window(streamID))
            if len(frame) > size:
                queues[streamID].appendleft(frame[size:])
                frame = frame[:size]
            if frame:
                conn.send_data(streamID, frame)
            if not queues[streamID]:
                self.priority.block(streamID)
            if self.remainingOutboundWindow(streamID) <= 0:
                self.streams[streamID].flowControlBlocked()
        self.resetTimeout()
        self._flushFrames()
        self._reactor.callLater(0, self._sendPrioritisedData)

    def _flushFrames(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
        if self._queueFull:
            for streamID in list(self._queueFull):
                stream = self.streams.get(streamID)
                if stream is None:
                    self._queueFull.discard(streamID)
                elif self._queued(streamID) <= STREAM_QUEUE_LIMIT // 2:
                    self._queueFull.discard(streamID)
                    stream.windowUpdated()

    def _queued(self, streamID: int) -> int:
        return sum(len(chunk) for chunk in self._outboundStreamQueues[streamID] if isinstance(chunk, bytes))

    def resetStream(self, streamID: int, code: int) -> None:
        """Twisted's abortRequest with an error code."""
        self.conn.reset_stream(streamID, error_code=code)
        if self._tryToWriteControlData():
            self._requestDone(streamID)

    def goAway(self, code: int, why: str) -> None:
        """End the connection with a GOAWAY of C{code}, its streams with it."""
        self.conn.close_connection(error_code=code)
        if self._tryToWriteControlData() and self.transport is not None:
            self.transport.loseConnection()
            self.connectionLost(Failure(ConnectionLost(why)), _cancelTimeouts=False)

    # Twisted ends a connection (a protocol error, a GOAWAY, Rapid Reset, the
    # idle timeout) with transport.loseConnection() while it is still the TLS
    # transport's registered producer, and TLS waits for the producer to go
    # before it shuts down: the connection would stay open until the client
    # closes it.  Unregistering when the transport is closing lets it close.

    def connectionLost(self, reason: Any, _cancelTimeouts: bool = True) -> None:
        first = self._stillProducing
        super().connectionLost(reason, _cancelTimeouts)
        if first:
            self._letTransportClose()

    def timeoutConnection(self) -> None:
        super().timeoutConnection()
        self._letTransportClose()

    _letGo = False

    def _letTransportClose(self) -> None:
        transport = self.transport
        if transport is not None and transport.disconnecting and not self._letGo:
            self._letGo = True
            transport.unregisterProducer()

    def _forget(self, streamID: int) -> None:
        try:
            self.conn.reset_stream(streamID, error_code=ErrorCodes.NO_ERROR)
        except Exception:
            pass  # already closed both ways: nothing to say
        self._tryToWriteControlData()

    def _adopt(self, streamID: int, stream: GatewayH2Stream) -> None:
        # What Twisted's _requestReceived does once the stream is built.
        if not self.streams:
            self.setTimeout(None)  # a stream is open: not idle
        self.streams[streamID] = stream
        done: Deferred[int] = Deferred()
        done.addCallback(stream.streamDone)
        self._streamCleanupCallbacks[streamID] = done
        self._outboundStreamQueues[streamID] = deque()
        try:
            self.priority.insert_stream(streamID)
        except priority.DuplicateStreamError:
            pass  # a PRIORITY frame came first: Twisted's _handlePriorityUpdate inserted it
        else:
            self.priority.block(streamID)
        if stream.agwProtocol is not None:
            stream.startTunnelRequest()
        stream.answerRefusal()


class NegotiatingChannel(GatewayChannel):
    """
    The connection of a listener: HTTP/1.1 (L{GatewayChannel}), or HTTP/2
    when TLS negotiated C{h2}, decided once, on the first bytes.
    """

    agwH2: GatewayH2Connection | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.agwSlot is not None and self.site.secure:
            self.dataReceived = self._negotiate  # type: ignore[method-assign]

    def _negotiate(self, data: bytes) -> None:
        del self.dataReceived
        if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
            self._startH2()
        self.dataReceived(data)

    def _startH2(self) -> None:
        timeout = self.timeOut
        self.setTimeout(None)
        call, self._idleCall = self._idleCall, None
        if call is not None and call.active():
            call.cancel()
        transport = self.transport
        assert transport is not None
        transport.unregisterProducer()
        # TCP_NODELAY on the socket under TLS (Twisted's H2Connection sets it
        # only on a bare TCP transport): a response's HEADERS and DATA are
        # separate writes, which Nagle's algorithm would hold for the ACK.
        tcp = transport
        while tcp is not None and not ITCPTransport.providedBy(tcp):
            tcp = getattr(tcp, "transport", None)
        if tcp is not None:
            tcp.setTcpNoDelay(True)
        conn = self.agwH2 = GatewayH2Connection(self.site.ctx.reactor)
        conn.agwChannel = self
        conn.requestFactory = self.requestFactory
        conn.site = self.site
        conn.factory = self.factory
        conn.timeOut = timeout
        conn.callLater = self.callLater
        conn.makeConnection(transport)
        transport.registerProducer(conn, True)
        # GatewayChannel.dataReceived (the revocation hold) hands its bytes on here.
        self._received = conn.dataReceived  # type: ignore[method-assign]

    def connectionLost(self, reason: Any) -> None:
        conn, self.agwH2 = self.agwH2, None
        super().connectionLost(reason)
        if conn is not None:
            conn.connectionLost(reason)

"""
WebSocket over HTTP/2 (RFC 8441): an HTTP/2 stream opened by an extended
CONNECT (C{:protocol = websocket}) as the byte stream of the bridge's client
leg (L{agwtx.websocket}).

The stream's request is routed as the HTTP/1.1 handshake it stands for (a
GET with C{Upgrade: websocket}, see L{agwtx.http.h2.GatewayH2Stream}), and
the bridge dials the backend as for any WebSocket.  When the backend has
answered 101, the bridge hands the client leg an L{H2Tunnel} instead of a
TCP transport: the leg's HTTP/1.1 answer (its 101 head) goes out as the
stream's C{:status 200} HEADERS, with the backend's subprotocol, extensions
and fields (hop-by-hop ones and C{Sec-WebSocket-Accept} dropped), and
everything after it as DATA frames; DATA frames from the client are the
leg's input.  Flow control is the stream's: a paused leg stops reading
that stream only (its window stays shut), and a stream whose window is
spent pauses the backend leg's socket.  Ending the leg ends the stream
(END_STREAM); a reset stream, or the lost connection, is the leg's lost
connection.  A refusal before the 101 never gets here: the stream is
answered with the backend's status like any request.
"""

from __future__ import annotations

from typing import Any

from h2.errors import ErrorCodes
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers

__all__ = ["H2Tunnel"]

MAX_ANSWER_HEAD = 65536
"""The client leg's handshake answer is a few hundred bytes; more is a bug, and the stream is reset."""


class H2Tunnel:
    """The transport of a WebSocket's client leg on an HTTP/2 stream."""

    disconnecting = False
    protocol: Any = None
    """The client leg (set by the bridge, as on a TCP transport)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._head = b""
        self._opened = False
        self._lost = False

    # -- what the stream reports

    def received(self, data: bytes) -> None:
        """DATA from the client: the leg's input."""
        if self.protocol is not None and not self._lost:
            self.protocol.dataReceived(data)

    def lost(self, reason: Failure) -> None:
        """The stream is over (reset, ended both ways, or its connection lost): once."""
        if self._lost:
            return
        self._lost = True
        self.disconnecting = True
        self.stream.tunnelEnded(self)
        if self.protocol is not None:
            self.protocol.connectionLost(reason)

    # -- ITransport, for the leg

    def write(self, data: bytes) -> None:
        if self.disconnecting or not self.stream.alive():
            return
        if self._opened:
            self.stream.write(data)
            return
        self._head += data
        head, sep, rest = self._head.partition(b"\r\n\r\n")
        if not sep:
            if len(self._head) > MAX_ANSWER_HEAD:
                self.abortConnection()
            return
        self._head = b""
        self._opened = self._answer(head)
        if rest:
            self.stream.write(rest)
        if self._opened:
            self.stream.resumeProducing()  # what the client sent meanwhile, now to the open leg
        else:
            self.loseConnection()

    def writeSequence(self, data: Any) -> None:
        for chunk in data:
            self.write(chunk)

    def _answer(self, head: bytes) -> bool:
        """The leg's HTTP/1.1 answer as the stream's response HEADERS; whether it opened the WebSocket."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        status = parts[1] if len(parts) > 1 else b"500"
        fields = Headers()
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name and name != b"sec-websocket-accept":
                fields.addRawHeader(name, value.strip())
        opened = status == b"101"
        self.stream.writeHeaders(b"HTTP/2", b"200" if opened else status, b"", fields)
        return opened

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self.disconnecting = True
            if self.stream.alive():
                self.stream.loseConnection()  # END_STREAM once what is queued is sent
            else:
                self.lost(Failure(ConnectionDone()))

    def abortConnection(self) -> None:
        if getattr(self.protocol, "wasClean", False):
            # autobahn drops the connection at once after a clean closing
            # handshake: on a stream that is an END_STREAM, not a reset.
            self.loseConnection()
            return
        self.disconnecting = True
        if self.stream.alive():
            self.stream.reset(ErrorCodes.CANCEL)  # RFC 8441 section 6: a TCP reset
        self.lost(Failure(ConnectionDone("stream reset")))

    def getPeer(self) -> Any:
        return self.stream.getPeer()

    def getHost(self) -> Any:
        return self.stream.getHost()

    def setTcpNoDelay(self, enabled: bool) -> None:
        """The connection's own setting (L{agwtx.http.h2.NegotiatingChannel} sets TCP_NODELAY)."""

    # -- producer and consumer: the stream's flow control

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.stream.alive():
            self.stream.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self.stream.unregisterProducer()

    def pauseProducing(self) -> None:
        self.stream.pauseProducing()

    def resumeProducing(self) -> None:
        if self._opened:
            self.stream.resumeProducing()

    def stopProducing(self) -> None:
        self.abortConnection()

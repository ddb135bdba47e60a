"""
Every private Twisted name agw uses (see L{agwtx.compat}).

agw's code reaches these names through the accessors and re-exports below;
the exceptions are overrides of private methods in agw's own subclasses
(they must be defined where the subclass is) and attribute reads on the
per-byte path of the HTTP head parser in L{agwtx.http.site}, which are listed in
L{ITEMS} with the rest and checked the same way.

Private names replaced by public APIs (issue 23): C{StreamServerEndpointService._raiseSynchronously}
(L{agwtx.ops.listening.PortListener} binds synchronously and raises by itself)
and C{TLSMemoryBIOProtocol._tlsConnection} (C{getHandle()} returns it).
"""

from __future__ import annotations

from typing import Any

from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from twisted.web._http2 import H2Connection, H2Stream
from twisted.web.client import _HTTP11ClientFactory as HTTP11ClientFactory
from twisted.web.http import _ChunkedTransferDecoder as ChunkedTransferDecoder
from twisted.web.http import _MalformedChunkedDataError as MalformedChunkedDataError

from agwtx.compat import Private

__all__ = [
    "ITEMS",
    "ChunkedTransferDecoder",
    "H2Connection",
    "H2Stream",
    "HAProxyProtocolWrapper",
    "HAProxyWrappingFactory",
    "HTTP11ClientFactory",
    "MalformedChunkedDataError",
    "ProxyInfo",
    "V1Parser",
    "V2Parser",
    "bufferedInput",
    "clearExitSignal",
    "clientGone",
    "epollInternals",
    "requestLine",
    "setPoolFactory",
    "streamRequest",
    "tcpEndpointParts",
]


# -- accessors ---------------------------------------------------------------------


def requestLine(channel: Any) -> tuple[bytes, bytes, bytes]:
    """
    (method, target, version) of the request whose head just ended: an
    HTTPChannel knows them from the request line on, its Request only after
    the body (C{requestReceived}).  A body streamed to the backend as it
    arrives needs them when the head ends.
    """
    return channel._command, channel._path, channel._version


def clientGone(request: Any) -> bool:
    """Whether the client's connection was lost before the response ended (C{Request._disconnected})."""
    return bool(request._disconnected)


def bufferedInput(channel: Any) -> bytes:
    """
    Take the bytes an HTTPChannel received but has not parsed: what a client
    sent after its WebSocket handshake (pipelined data, C{_dataBuffer}, and
    the line parser's C{_buffer}), for the bridge to hand to the WebSocket.
    """
    pending = b"".join(getattr(channel, "_dataBuffer", ()) or ()) + (getattr(channel, "_buffer", b"") or b"")
    if hasattr(channel, "_dataBuffer"):
        channel._dataBuffer = []
    return pending


def epollInternals(reactor: Any) -> tuple[Any, dict[int, Any], dict[int, Any], Any, Any]:
    """(poller, selectables, writes, doReadOrWrite, disconnectSelectable) of an C{EPollReactor}."""
    return (
        reactor._poller,
        reactor._selectables,
        reactor._writes,
        reactor._doReadOrWrite,
        reactor._disconnectSelectable,
    )


def clearExitSignal(reactor: Any) -> None:
    """Forget the signal that stopped the reactor, so twistd exits 0 instead of re-raising it."""
    if getattr(reactor, "_exitSignal", None) is not None:
        reactor._exitSignal = None


def tcpEndpointParts(endpoint: Any) -> tuple[int, str, int]:
    """(port, interface, backlog) of a parsed C{tcp:}/C{tcp6:} server endpoint."""
    return endpoint._port, endpoint._interface, endpoint._backlog


def setPoolFactory(pool: Any, factory: type) -> None:
    """Make an C{HTTPConnectionPool} build its connections' factories from C{factory} (a quiet one)."""
    pool._factory = factory


def streamRequest(stream: Any) -> Any:
    """The request of an HTTP/2 stream (C{H2Stream._request})."""
    return stream._request


# -- the inventory -----------------------------------------------------------------

_CHANNEL = "twisted.web.http:HTTPChannel"
_H2C = "twisted.web._http2:H2Connection"
_H2S = "twisted.web._http2:H2Stream"
_H2_WHY = (
    "agwtx.http.h2 builds HTTP/2 on Twisted's server (issue 15: framing, HPACK and flow control "
    "are the libraries' job); it has no public API to subclass"
)
_WEB_HEAD = (
    "agwtx.http.site reads it while parsing a request head (deadline, refusals); the "
    "head parser's state has no public view"
)

ITEMS: tuple[Private, ...] = (
    Private(
        _CHANNEL,
        "_command",
        "attribute",
        "agwtx.http.site (requestLine)",
        "the request line's method when the head ends, to stream the body to a backend as it "
        "arrives instead of spooling it (the Request has it only after the body)",
    ),
    Private(_CHANNEL, "_path", "attribute", "agwtx.http.site (requestLine)", "the target, as for _command"),
    Private(
        _CHANNEL, "_version", "attribute", "agwtx.http.site (requestLine)", "the version, as for _command"
    ),
    Private(
        _CHANNEL,
        "_handlingRequest",
        "attribute",
        "agwtx.http.site",
        "whether a head is being read: arms the head deadline (408 for slow heads) and keeps "
        "the 400/431 answers to heads; " + _WEB_HEAD,
    ),
    Private(
        _CHANNEL,
        "_HTTPChannel__first_line",
        "attribute",
        "agwtx.http.site",
        "whether the request line is still awaited: 414 for a long request line vs 431 for a "
        "long header; " + _WEB_HEAD,
    ),
    Private(
        _CHANNEL,
        "_receivedHeaderSize",
        "attribute",
        "agwtx.http.site",
        "the head's size for the access log's receivedBytes, and 431 vs 400; " + _WEB_HEAD,
    ),
    Private(_CHANNEL, "_receivedHeaderCount", "attribute", "agwtx.http.site", "as _receivedHeaderSize"),
    Private(
        _CHANNEL,
        "_respondToBadRequestAndDisconnect",
        "method",
        "agwtx.http.site (override)",
        "twisted.web closes at once after a bare 400, which loses the answer when input is "
        "left unread; the override answers 400/431 with a body and lingers, as nginx does",
    ),
    Private(
        _CHANNEL,
        "_maybeChooseTransferDecoder",
        "method",
        "agwtx.http.site (override)",
        "refuses a Content-Length past 2**63-1 (a backend parsing it into 64 bits would wrap "
        "it: request smuggling); no public hook sees the framing headers",
        ("header", "data"),
    ),
    Private(
        _CHANNEL,
        "_failChooseTransferDecoder",
        "method",
        "agwtx.http.site",
        "twisted.web's own 400 for bad framing, used by the override above",
    ),
    Private(
        _CHANNEL,
        "_dataBuffer",
        "attribute",
        "agwtx.websocket (bufferedInput)",
        "bytes a client pipelined after its WebSocket handshake: the bridge takes over the "
        "transport and must not lose them",
    ),
    Private(
        "twisted.protocols.basic:LineReceiver",
        "_buffer",
        "attribute",
        "agwtx.http.site, agwtx.websocket (bufferedInput)",
        "the unparsed part of a head line: a bare LF in it is refused at once instead of at the "
        "head deadline; after a WebSocket handshake, bytes to hand over",
    ),
    Private(
        "twisted.web.http:Request",
        "_cleanup",
        "method",
        "agwtx.http.site (override)",
        "ends the request's bookkeeping (in-flight count, body timer) when the answer is done, "
        "without notifyFinish: two Deferreds per request were measurable on the request path",
    ),
    Private(
        "twisted.web.http:Request",
        "_disconnected",
        "attribute",
        "agwtx.proxy.reverse, agwtx.websocket.bridge, agwtx.ops.workerview, agwtx.http.site (clientGone)",
        "whether the client left; the public alternative, notifyFinish, costs a Deferred per request",
    ),
    Private(
        "twisted.web.http",
        "_ChunkedTransferDecoder",
        "class",
        "agwtx.proxy.client (ChunkedTransferDecoder), agwtx.http.site (_BoundedChunkedDecoder)",
        "decodes chunked bodies (backends' responses, clients' requests) with twisted.web's "
        "tested decoder (its size and extension limits included) instead of a second one",
    ),
    Private(
        "twisted.web.http",
        "_MalformedChunkedDataError",
        "class",
        "agwtx.proxy.client, agwtx.http.site",
        "its error",
    ),
    Private(
        "twisted.web.http:_ChunkedTransferDecoder",
        "_dataReceived_CHUNK_LENGTH",
        "method",
        "agwtx.http.site (override)",
        "refuses a chunk size of 16 or more hex digits as soon as the digits arrive (else the "
        "gateway waits for a body that never comes); the decoder has no public hook",
    ),
    Private(
        "twisted.web.http:_ChunkedTransferDecoder",
        "_dataReceived_TRAILER",
        "method",
        "agwtx.http.site (override)",
        "checks that trailer lines are field lines (twisted.web keeps them unchecked; found by the fuzzer)",
    ),
    Private(
        "twisted.web.http:_ChunkedTransferDecoder",
        "_buffer",
        "attribute",
        "agwtx.http.site (_BoundedChunkedDecoder)",
        "the undecoded input those two overrides inspect",
    ),
    Private(
        "twisted.web.http:_ChunkedTransferDecoder",
        "_start",
        "attribute",
        "agwtx.http.site (_BoundedChunkedDecoder)",
        "where the decoder resumes its search for a line end in _buffer",
    ),
    Private(
        "twisted.web.client",
        "_HTTP11ClientFactory",
        "class",
        "agwtx.ops.workerview (HTTP11ClientFactory)",
        "a quiet subclass (noisy = False): no 'Starting factory' log line per worker scrape",
    ),
    Private(
        "twisted.web.client:HTTPConnectionPool",
        "_factory",
        "attribute",
        "agwtx.ops.workerview (setPoolFactory)",
        "where the pool takes that factory from; no public parameter",
    ),
    Private(
        "twisted.protocols.haproxy",
        "_info",
        "module",
        "agwtx.http.proxyprotocol (ProxyInfo)",
        "the PROXY protocol's parsers and info: the public API (proxyEndpoint) wraps a whole "
        "endpoint without source checks or a header deadline, which agw adds",
    ),
    Private(
        "twisted.protocols.haproxy", "_v1parser", "module", "agwtx.http.proxyprotocol (V1Parser)", "as _info"
    ),
    Private(
        "twisted.protocols.haproxy", "_v2parser", "module", "agwtx.http.proxyprotocol (V2Parser)", "as _info"
    ),
    Private(
        "twisted.protocols.haproxy",
        "_wrapper",
        "module",
        "agwtx.http.proxyprotocol (HAProxyProtocolWrapper, HAProxyWrappingFactory)",
        "as _info",
    ),
    Private(
        "twisted.internet.epollreactor:EPollReactor",
        "_poller",
        "attribute",
        "agwtx.ops.reactorpoll (epollInternals)",
        "the lean epoll loop (see agwtx.ops.reactorpoll: about 14 % of CPU time was the legacy "
        "logging context per I/O event, and two epoll_ctl calls per short write)",
    ),
    Private(
        "twisted.internet.epollreactor:EPollReactor",
        "_selectables",
        "attribute",
        "agwtx.ops.reactorpoll",
        "as _poller",
    ),
    Private(
        "twisted.internet.epollreactor:EPollReactor",
        "_writes",
        "attribute",
        "agwtx.ops.reactorpoll",
        "as _poller",
    ),
    Private(
        "twisted.internet.epollreactor:EPollReactor",
        "_doReadOrWrite",
        "method",
        "agwtx.ops.reactorpoll",
        "as _poller",
        ("selectable", "fd", "event"),
    ),
    Private(
        "twisted.internet.epollreactor:EPollReactor",
        "_disconnectSelectable",
        "method",
        "agwtx.ops.reactorpoll",
        "as _poller",
        ("selectable", "why", "isRead"),
    ),
    Private(
        "twisted.web",
        "_http2",
        "module",
        "agwtx.http.h2 (H2Connection, H2Stream)",
        "Twisted's HTTP/2 server; " + _H2_WHY,
    ),
    Private(
        _H2C,
        "_requestReceived",
        "method",
        "agwtx.http.h2 (override)",
        "builds agw's stream (whole header block translated before the request learns its "
        "length, malformed blocks reset); " + _H2_WHY,
        ("event",),
    ),
    Private(
        _H2C,
        "_requestDataReceived",
        "method",
        "agwtx.http.h2 (override)",
        "data for a stream Twisted already forgot raises KeyError there; agw acknowledges and drops it",
        ("event",),
    ),
    Private(
        _H2C, "_requestEnded", "method", "agwtx.http.h2 (override)", "as _requestDataReceived", ("event",)
    ),
    Private(
        _H2C,
        "_requestAborted",
        "method",
        "agwtx.http.h2 (override)",
        "as _requestDataReceived, and the Rapid Reset budget (Twisted 25.5 has none)",
        ("event",),
    ),
    Private(
        _H2C,
        "_tryToWriteControlData",
        "method",
        "agwtx.http.h2",
        "sends what h2 queued (a RST_STREAM, a GOAWAY) within Twisted's control-frame bound",
    ),
    Private(
        _H2C,
        "_requestDone",
        "method",
        "agwtx.http.h2 (resetStream, override)",
        "forgets a stream, as Twisted's abortRequest does after a reset (which has no error code); "
        "overridden to start the idle timer when the last stream is done",
        ("streamID",),
    ),
    Private(
        _H2C,
        "_sendPrioritisedData",
        "method",
        "agwtx.http.h2 (override)",
        "the sending loop: after it, a stream paused for a full queue (STREAM_QUEUE_LIMIT) is "
        "resumed once drained; Twisted bounds a stream only by the client's window",
    ),
    Private(_H2C, "_stillProducing", "attribute", "agwtx.http.h2", "whether the connection was ended"),
    Private(_H2C, "_reactor", "attribute", "agwtx.http.h2", "the connection's clock, for the reset budget"),
    Private(
        _H2C,
        "_streamCleanupCallbacks",
        "attribute",
        "agwtx.http.h2 (_adopt)",
        "set up per stream as Twisted's _requestReceived does",
    ),
    Private(
        _H2C, "_outboundStreamQueues", "attribute", "agwtx.http.h2 (_adopt)", "as _streamCleanupCallbacks"
    ),
    Private(
        _H2S,
        "_convertHeaders",
        "method",
        "agwtx.http.h2 (override)",
        "RFC 9113 section 8 translation (cookie crumbs, :authority, malformed values) and the "
        "request's length once the whole block is in; " + _H2_WHY,
        ("headers",),
    ),
    Private(_H2S, "_conn", "attribute", "agwtx.http.h2", "the stream's connection, which writes its frames"),
    Private(_H2S, "_request", "attribute", "agwtx.http.h2 (streamRequest)", "the stream's request"),
    Private(
        _H2S,
        "_inboundDataBuffer",
        "attribute",
        "agwtx.http.h2",
        "what a paused stream received: its overrides of receiveDataChunk and resumeProducing "
        "hand it to a WebSocket tunnel (RFC 8441) instead of the request",
    ),
    Private(
        _H2S, "_send100Continue", "method", "agwtx.http.h2", "Twisted's 100 Continue, kept by the override"
    ),
    Private(
        "twisted.internet.base:ReactorBase",
        "_exitSignal",
        "attribute",
        "agwtx.service (clearExitSignal)",
        "an orderly SIGTERM stop exits 0: twistd re-raises the signal otherwise, and supervisors see a crash",
    ),
    Private(
        "twisted.internet.endpoints:TCP4ServerEndpoint",
        "_port",
        "attribute",
        "agwtx.ops.workers (tcpEndpointParts)",
        "workers listen on the same tcp: endpoint with SO_REUSEPORT, taken from the parsed "
        "description (no public accessor, and no public parser but serverFromString)",
    ),
    Private(
        "twisted.internet.endpoints:TCP4ServerEndpoint",
        "_interface",
        "attribute",
        "agwtx.ops.workers",
        "as _port",
    ),
    Private(
        "twisted.internet.endpoints:TCP4ServerEndpoint",
        "_backlog",
        "attribute",
        "agwtx.ops.workers",
        "as _port",
    ),
)
"""Every private Twisted name agw uses; C{tests/test_compat.py} checks each against the installed Twisted."""

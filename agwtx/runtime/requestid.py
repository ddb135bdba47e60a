"""
Request IDs and W3C trace context: what ties one request's lines in the
gateway's logs to the backend's.

Every request (and WebSocket handshake) gets an ID, sent to the backend and
returned to the client in C{[gateway] requestIdHeader} (C{X-Request-ID}).
An incoming ID is kept only from a trusted forwarder (C{[gateway]
trustedProxies}) or, with C{trustClientRequestId}, from anyone; otherwise a
new one is made, so a client cannot make its requests look like someone
else's in the logs.

Trace context (U{https://www.w3.org/TR/trace-context/}): a valid incoming
C{traceparent} keeps its trace id and flags and gets a new parent id, the
gateway's span, with its C{tracestate} passed on; a missing or invalid one
starts a new trace.  No spans are recorded or exported.

New IDs come from C{random.getrandbits} (a Mersenne Twister seeded from the
OS at start, separately in each worker process): unique enough to correlate
logs, much cheaper than a system call per request, not secrets.
"""

from __future__ import annotations

import re
from random import getrandbits
from typing import Any

from agwtx.config.model import GatewaySettings

__all__ = ["RequestTagger", "TraceContext", "newRequestId", "parseTraceparent"]

_ID_RE = re.compile(rb"[A-Za-z0-9._~:/+=@-]{1,200}\Z")
"""What an incoming request ID may look like to be kept (UUIDs, hex, Azure's trace ids)."""

_TRACEPARENT_RE = re.compile(rb"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = b"0" * 32
_ZERO_SPAN = b"0" * 16

NEW_TRACE_FLAGS = b"01"
"""Flags of a trace the gateway starts: sampled, so the backend's tracer records its part."""


def newRequestId() -> str:
    """32 lowercase hex digits (the shape of Azure's C{x-appgw-trace-id})."""
    return "%032x" % getrandbits(128)


def parseTraceparent(values: list[bytes] | None) -> tuple[bytes, bytes] | None:
    """
    (trace id, flags) of a valid C{traceparent}, else None.  Version 00 is
    exactly 55 characters; a later version may carry more after a dash
    (its first four fields are read as version 00's); version ff, upper
    case hex, an all-zero trace or parent id, or more than one header are
    invalid.
    """
    if not values or len(values) != 1:
        return None
    value = values[0].strip(b" \t")
    m = _TRACEPARENT_RE.match(value)
    if m is None:
        return None
    version, trace, parent, flags = m.groups()
    if version == b"ff" or trace == _ZERO_TRACE or parent == _ZERO_SPAN:
        return None
    if version == b"00":
        if len(value) != 55:
            return None
    elif len(value) > 55 and value[55:56] != b"-":
        return None
    return trace, flags


class TraceContext:
    """The trace context a request is forwarded with."""

    __slots__ = ("traceId", "spanId", "flags", "state")

    def __init__(self, traceId: bytes, spanId: bytes, flags: bytes, state: bytes | None) -> None:
        self.traceId = traceId
        self.spanId = spanId
        """The gateway's span: the parent id the backend sees."""
        self.flags = flags
        self.state = state
        """The incoming tracestate, passed on with a continued trace."""

    def traceparent(self) -> bytes:
        return b"00-" + self.traceId + b"-" + self.spanId + b"-" + self.flags


class RequestTagger:
    """
    Gives requests their ID and trace context, by the C{[gateway]} settings
    in force (one per configuration; the gateway service swaps it on reload).
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.header = settings.requestIdHeader.encode("ascii")
        self.lower = self.header.lower()
        self.trustClients = settings.trustClientRequestId
        self.replaced = frozenset({self.lower, b"traceparent", b"tracestate"})
        """Request headers the gateway writes itself (the incoming ones are not forwarded as they are)."""
        self._drops: dict[frozenset[bytes], frozenset[bytes]] = {}

    def dropping(self, extra: frozenset[bytes]) -> frozenset[bytes]:
        """L{replaced} plus C{extra}, made once per distinct C{extra}."""
        drop = self._drops.get(extra)
        if drop is None:
            drop = self._drops[extra] = self.replaced | extra
        return drop

    def requestId(self, headers: Any, trusted: bool) -> str:
        """The ID of a request with C{headers} (a twisted Headers) from a peer C{trusted} or not."""
        values = headers.getRawHeaders(self.lower)
        if values and len(values) == 1 and (self.trustClients or trusted):
            value = values[0].strip()
            if _ID_RE.match(value):
                return value.decode("ascii")
        return newRequestId()

    def traceContext(self, headers: Any) -> TraceContext:
        """Continue the incoming trace with a new parent id, or start a new one."""
        span = b"%016x" % getrandbits(64)
        while span == _ZERO_SPAN:  # pragma: no cover (one chance in 2**64)
            span = b"%016x" % getrandbits(64)
        found = parseTraceparent(headers.getRawHeaders(b"traceparent"))
        if found is not None:
            state = headers.getRawHeaders(b"tracestate")
            return TraceContext(found[0], span, found[1], b",".join(state) if state else None)
        return TraceContext(b"%032x" % getrandbits(128), span, NEW_TRACE_FLAGS, None)

    def tag(self, request: Any, trusted: bool | None = None) -> None:
        """
        Give C{request} (a GatewayRequest) its ID and trace context.
        C{trusted}: whether its peer is a trusted proxy, when the caller
        already knows (L{agwtx.http.request.GatewayRequest.peerTrusted});
        else looked up from its C{peerIP}.
        """
        if trusted is None:
            trusted = self.settings.isTrustedProxy(request.peerIP)
        headers = request.requestHeaders
        request.agwRequestId = self.requestId(headers, trusted)
        request.agwTrace = self.traceContext(headers)

    def backendHeaders(self, request: Any) -> list[tuple[bytes, bytes]]:
        """The ID and trace headers a backend request (or WebSocket handshake) carries."""
        trace: TraceContext = request.agwTrace
        out = [
            (self.header, request.agwRequestId.encode("ascii")),
            (b"traceparent", trace.traceparent()),
        ]
        if trace.state is not None:
            out.append((b"tracestate", trace.state))
        return out

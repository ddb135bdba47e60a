"""
Answers to requests whose head could not be read (400, 408, 414, 431, and a
plain HTTP request on an HTTPS port): a complete canned response, then the
connection closed the way nginx's C{lingering_close} does it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.logger import Logger

from agwtx.runtime.answers import reasonPhrase
from agwtx.runtime.headers import httpDate
from agwtx.runtime.requestid import newRequestId


if TYPE_CHECKING:
    from agwtx.context import GatewayContext


log = Logger(namespace="agw.web")

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


@lru_cache(maxsize=16)
def overLimit(status: int, text: bytes) -> _Refusal:
    """The refusal of a request over a configured limit: C{status} and C{text} (naming the limit), cached."""
    return _canned(status, _OVER_LIMIT_PHRASES[status], text)


_OVER_LIMIT_PHRASES = {
    413: reasonPhrase(413),
    414: b"URI Too Long",  # RFC 9110's phrases (twisted.web's table has older ones for these two)
    431: b"Request Header Fields Too Large",
}


def lineTooLong(limit: int) -> _Refusal:
    """The 414 for a request line over C{[gateway] maxRequestLineSize} (C{limit})."""
    return overLimit(414, b"the request line is longer than %d bytes" % limit)


def headersTooLarge(limit: int) -> _Refusal:
    """The 431 for header fields over C{[gateway] maxRequestHeaderSize} (C{limit})."""
    return overLimit(431, b"the request header fields are longer than %d bytes" % limit)


def tooManyHeaders(limit: int) -> _Refusal:
    """The 431 for more header fields than C{[gateway] maxRequestHeaderCount} (C{limit})."""
    return overLimit(431, b"the request has more than %d header fields" % limit)


def bodyTooLarge(limit: int) -> _Refusal:
    """The 413 for a Content-Length over C{[gateway] maxRequestBodySize} (C{limit})."""
    return overLimit(413, b"the request body is larger than %d bytes" % limit)


_400_TARGET = _canned(400, b"Bad Request", b"the request line has a byte outside printable ASCII")
_400_CTL = _canned(400, b"Bad Request", b"a header field value has a control character")
_501_TE = _canned(501, b"Not Implemented", b"the only transfer coding supported is chunked")
PLAIN_HTTP_ON_HTTPS = _canned(400, b"Bad Request", b"a plain HTTP request was sent to an HTTPS port")


def sendRefusal(
    ctx: GatewayContext,
    transport: Any,
    refusal: _Refusal,
    listener: str | None = None,
    requestId: str | None = None,
) -> None:
    """
    Log and send C{refusal} on a connection whose request could not be read,
    then shut the write side where the transport has one of its own (plain
    TCP; a TLS wrapper would pass the call on to the TCP socket under it and
    cut the TLS stream).  The caller drops what the client still sends.

    The answer carries C{requestId} (the refused request's, when its head
    was read), else a new one, logged with it, and the custom page for its
    status: C{listener}'s when the port has only that listener, else the
    gateway's.
    """
    if requestId is None:
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

"""
The gateway's own HTTP answers: the reason phrase of a status and
L{errorPage}, through which every error the gateway makes itself goes
(custom pages, JSON for clients that prefer it, plain text otherwise).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Iterable

from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from agwtx.compat.twistedprivate import clientGone
from agwtx.runtime.headers import httpDate
from agwtx.runtime.errorpages import ErrorPages

__all__ = ["bodyAnswer", "errorPage", "reasonPhrase"]


def _reasonPhrases() -> dict[int, bytes]:
    phrases = {int(status): status.phrase.encode("ascii") for status in HTTPStatus}
    phrases.update(RESPONSES)
    return phrases


_REASONS = _reasonPhrases()


def reasonPhrase(code: int) -> bytes:
    """
    The reason phrase for C{code}. Twisted's table lacks some registered
    codes (421, 426, 429, 431, 451, ...) and would write "Unknown Status";
    those get the standard phrase, and an unregistered code gets an empty
    one (RFC 9112 section 4 allows it).
    """
    return _REASONS.get(code, b"")


def _tooLate(request: Any) -> bool:
    """
    Whether C{request}'s response has begun, too late for a status of the
    gateway's own: then the connection is cut, so that the client sees a
    truncated response.
    """
    if not request.startedWriting:
        return False
    transport = request.channel.transport if request.channel else None
    if transport is not None:
        transport.abortConnection()
    return True


def errorPage(request: Any, code: int, message: str, extra: Iterable[tuple[bytes, bytes]] = ()) -> int:
    """
    The gateway's own error answer (plus C{extra} headers, e.g. a 426's
    Sec-WebSocket-Version): the listener's or the gateway's custom page for
    C{code} when one is configured, JSON for a client that prefers it, else
    a line of plain text (see L{agwtx.runtime.errorpages}).  The reason is also
    recorded for the access log; the request ID header is added on write.
    C{request} is a L{agwtx.http.request.GatewayRequest}, or the admin
    site's plain twisted.web request (no custom pages apply there).
    """
    request.agwError = message
    if _tooLate(request):
        return NOT_DONE_YET
    # The admin site's requests are plain twisted.web ones: no request ID,
    # listener or custom pages.
    requestId = getattr(request, "agwRequestId", None)
    if requestId is None:
        pages, listener = _NO_PAGES, None
    else:
        pages, listener = request.site.ctx.errorPages, request.agwListener
    contentType, body = pages.body(
        listener,
        code,
        message,
        requestId,
        request.requestHeaders.getRawHeaders(b"accept"),
    )
    request.setResponseCode(code, reasonPhrase(code))
    request.responseHeaders = Headers(
        {
            b"date": [httpDate()],
            b"content-type": [contentType],
            b"content-length": [b"%d" % len(body)],
            b"cache-control": [b"no-store"],
        }
    )
    for name, value in extra:
        request.responseHeaders.addRawHeader(name, value)
    if not clientGone(request):
        request.write(body)
        request.finish()
    return NOT_DONE_YET


def bodyAnswer(
    request: Any,
    code: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
    message: str | None = None,
) -> int:
    """
    An answer of the gateway's own with a given C{body} (a routing plugin's
    L{agwtx.interfaces.Answer}): C{headers} (C{Content-Type} among them,
    else plain text), then the body with its length.  C{message}, if any,
    is recorded for the access log's error field.  Like L{errorPage}, a
    response already begun is cut instead.
    """
    if message is not None:
        request.agwError = message
    if _tooLate(request):
        return NOT_DONE_YET
    request.setResponseCode(code, reasonPhrase(code))
    request.responseHeaders = Headers(
        {
            b"date": [httpDate()],
            b"cache-control": [b"no-store"],
        }
    )
    for name, value in headers:
        request.responseHeaders.addRawHeader(name, value)
    if not request.responseHeaders.hasHeader(b"content-type"):
        request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
    request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    if not clientGone(request):
        request.write(body)
        request.finish()
    return NOT_DONE_YET


_NO_PAGES = ErrorPages(None)

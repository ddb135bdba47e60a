"""
The listener channel's client timeouts, on a controlled clock: the idle
timeout (agwtx.http.channel.GatewayChannel keeps TimeoutMixin's behaviour with one
DelayedCall per connection; 60 s) and the request-head deadline
(C{[gateway] requestHeaderTimeout}, 60 s by default); and the answer to a
head that cannot be read (400, 408, 414, 431), followed by a lingering close.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import server

from agwtx.runtime.limits import ConnectionLimits
from agwtx.config.model import GatewaySettings
from agwtx.runtime.errorpages import ErrorPages
from agwtx.runtime.requestid import RequestTagger
from agwtx.http.channel import GatewayChannel
from agwtx.http.refusal import LINGER_BYTES, LINGER_TIMEOUT
from agwtx.http.site import GatewaySite

IDLE = 60.0
REFUSED: list[tuple[str, int, int, str]] = []
"""What the channel logged as refused: (client, status, body bytes, error)."""


class HeldRequest(server.Request):
    """A request whose response the test finishes when it wants to."""

    held: list["HeldRequest"] = []

    def process(self) -> None:
        HeldRequest.held.append(self)


def channel(
    headerTimeout: float | None = None, **limits: int
) -> tuple[Clock, GatewayChannel, StringTransport]:
    clock = Clock()
    REFUSED.clear()
    HeldRequest.held.clear()
    if headerTimeout is not None:
        limits["requestHeaderTimeout"] = headerTimeout  # type: ignore[assignment]
    gateway = GatewaySettings(**limits)  # type: ignore[arg-type]
    ctx = SimpleNamespace(
        accessLog=lambda request: None,
        refusedLog=lambda *event, **fields: REFUSED.append(event),
        config=SimpleNamespace(gateway=gateway),
        reactor=clock,
        errorPages=ErrorPages(None),
        tagger=RequestTagger(gateway),
        stopping=False,
    )
    ctx.connections = ConnectionLimits(ctx)
    site = GatewaySite(ctx, None, 8080, timeout=IDLE)  # type: ignore[arg-type]
    site.reactor = clock
    site.requestFactory = HeldRequest
    proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert isinstance(proto, GatewayChannel)
    transport = StringTransport()
    proto.makeConnection(transport)
    return clock, proto, transport


def answerHeld(body: bytes = b"") -> None:
    """Answer the oldest held request with C{body} (a Content-Length response)."""
    request = HeldRequest.held.pop(0)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def closesAfter(clock: Clock, transport: StringTransport, seconds: float) -> None:
    """The connection is still open a second before C{seconds} from now, closed a second after."""
    clock.advance(seconds - 1)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def refusedWith(clock: Clock, proto: GatewayChannel, transport: StringTransport, status: bytes) -> None:
    """
    The connection got one complete C{status} answer and reads nothing more:
    what the client still sends is dropped, and it closes LINGER_TIMEOUT
    after the answer.
    """
    answer = transport.value()
    head, _, body = answer.partition(b"\r\n\r\n")
    [(client, logged, sent, _)] = REFUSED  # one event for the one refusal
    assert (client, logged, sent) == (transport.getPeer().host, int(status), len(body))
    assert head.startswith(b"HTTP/1.1 " + status + b" "), answer
    assert b"\r\nConnection: close" in head
    assert b"\r\nContent-Length: %d" % len(body) in head
    assert re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT(\r\n|$)", head), head
    assert body.startswith(status + b" ")
    assert not transport.disconnecting
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # never parsed
    assert transport.value() == answer
    assert HeldRequest.held == []
    closesAfter(clock, transport, LINGER_TIMEOUT)


def test_idle_connection_is_closed_after_the_timeout() -> None:
    clock, _, transport = channel()
    closesAfter(clock, transport, IDLE)


def test_bytes_from_the_client_restart_the_idle_timer() -> None:
    clock, proto, transport = channel()
    clock.advance(IDLE - 10)
    proto.dataReceived(b"GET / HTTP/1.1\r\n")  # half a request
    closesAfter(clock, transport, IDLE)


def test_a_request_in_progress_is_not_timed_out_and_the_timer_restarts_after_it() -> None:
    clock, proto, transport = channel()
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(HeldRequest.held) == 1
    clock.advance(5 * IDLE)  # the response takes long: the idle timer must not fire
    assert not transport.disconnecting
    answerHeld(b"ok")
    assert b"200" in transport.value()
    closesAfter(clock, transport, IDLE)


def test_many_requests_reuse_one_timer_per_connection() -> None:
    clock, proto, transport = channel()
    [timer] = clock.getDelayedCalls()
    for _ in range(50):
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        answerHeld()
    # The same DelayedCall, re-armed: not one cancelled and one scheduled per
    # request as with TimeoutMixin (which would also leave exactly one).
    assert clock.getDelayedCalls() == [timer]
    assert not transport.disconnecting


def test_a_stopping_gateway_closes_each_connection_after_its_answer() -> None:
    """Lame duck and drain: clients reconnect (through the balancer) instead of reusing the connection."""
    clock, proto, transport = channel()
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    answerHeld(b"ok")
    assert b"Connection: close" not in transport.value() and not transport.disconnecting
    proto.site.ctx.stopping = True
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    answerHeld(b"ok")
    assert transport.value().count(b"Connection: close\r\n") == 1
    assert transport.disconnecting


def test_closed_connection_cancels_its_timer() -> None:
    clock, proto, transport = channel()
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    proto.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


HEAD_PIECES = [
    b"GET / HTTP/1.1\r\n",
    b"Host: a\r\n",
    b"X-A: 1\r\n",
    b"X-B: 2\r\n",
    b"X-C: 3\r\n",
    b"X-D: 4\r\n",
]


def test_a_head_sent_slowly_gets_408_at_the_deadline_though_bytes_keep_coming() -> None:
    clock, proto, transport = channel()
    clock.advance(30)  # idle before the head: not counted
    proto.dataReceived(HEAD_PIECES[0])
    for piece in HEAD_PIECES[1:]:  # a piece every 10 s: the idle timer alone never fires
        clock.advance(10)
        proto.dataReceived(piece)
    clock.advance(9)
    assert not transport.disconnecting  # 59 s after the first byte
    proto.dataReceived(b"X-E: 5\r\n")
    clock.advance(2)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    refusedWith(clock, proto, transport, b"408")


def test_the_head_deadline_is_the_configured_one_and_ends_with_the_head() -> None:
    clock, proto, transport = channel(headerTimeout=5)
    proto.dataReceived(HEAD_PIECES[0])
    clock.advance(4)
    proto.dataReceived(b"Host: a\r\n\r\n")  # the head ends in time
    assert len(HeldRequest.held) == 1
    clock.advance(30)  # a slow response is not the client's head
    assert not transport.disconnecting
    answerHeld()
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    # the next request's head starts its own deadline
    proto.dataReceived(HEAD_PIECES[0])
    clock.advance(4)
    assert transport.value().endswith(b"\r\n\r\n")  # only the 200 so far
    clock.advance(2)
    assert b"HTTP/1.1 408 Request Timeout\r\n" in transport.value()
    closesAfter(clock, transport, LINGER_TIMEOUT)


def test_a_request_arriving_whole_arms_no_head_deadline() -> None:
    clock, proto, transport = channel()
    [idle] = clock.getDelayedCalls()
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(HeldRequest.held) == 1
    assert clock.getDelayedCalls() == [idle]


def test_closing_mid_head_cancels_the_head_deadline() -> None:
    clock, proto, transport = channel()
    proto.dataReceived(b"GET / HT")
    assert len([c for c in clock.getDelayedCalls() if c.active()]) == 2
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    proto.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []


def test_a_request_line_over_the_line_limit_is_414() -> None:
    clock, proto, transport = channel()
    proto.dataReceived(b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert b"longer than 32768 bytes" in transport.value()
    refusedWith(clock, proto, transport, b"414")


def test_a_long_request_line_sent_slowly_is_414_too() -> None:
    clock, proto, transport = channel()
    for _ in range(40):  # 40 KB and still no line end
        proto.dataReceived(b"GET /" + b"a" * 1000)
    refusedWith(clock, proto, transport, b"414")


def test_a_header_line_over_the_line_limit_is_431() -> None:
    clock, proto, transport = channel()
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: " + b"c" * 40000 + b"\r\n\r\n")
    refusedWith(clock, proto, transport, b"431")


def test_a_head_over_the_size_or_field_limit_is_431() -> None:
    for extra, says in (
        (b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(40)), b"longer than 32768 bytes"),
        (b"".join(b"X-%d: 1\r\n" % i for i in range(501)), b"more than 500 header fields"),
    ):
        clock, proto, transport = channel()
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n" + extra + b"\r\n")
        assert says in transport.value()
        refusedWith(clock, proto, transport, b"431")


def test_the_head_limits_are_the_configured_ones() -> None:
    """[gateway] maxRequestLineSize, maxRequestHeaderSize and maxRequestHeaderCount, named in the answers."""
    line = b"GET /" + b"a" * 1995 + b" HTTP/1.1\r\n"  # 2009 bytes without the CRLF
    clock, proto, transport = channel(maxRequestLineSize=2009)
    proto.dataReceived(line + b"Host: a\r\n\r\n")
    assert len(HeldRequest.held) == 1  # at the limit: taken
    clock, proto, transport = channel(maxRequestLineSize=2008)
    proto.dataReceived(line + b"Host: a\r\n\r\n")
    assert b"the request line is longer than 2008 bytes" in transport.value()
    refusedWith(clock, proto, transport, b"414")
    # The header budget: the field lines without their line ends; the request line is not in it.
    fields = b"Host: a\r\nX: " + b"v" * 1990 + b"\r\n"  # 7 + 1993 = 2000 bytes
    clock, proto, transport = channel(maxRequestHeaderSize=2000)
    proto.dataReceived(line + fields + b"\r\n")
    assert len(HeldRequest.held) == 1
    clock, proto, transport = channel(maxRequestHeaderSize=1999)
    proto.dataReceived(line + fields + b"\r\n")
    assert b"the request header fields are longer than 1999 bytes" in transport.value()
    refusedWith(clock, proto, transport, b"431")
    many = b"Host: a\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(9))  # 10 fields
    clock, proto, transport = channel(maxRequestHeaderCount=10)
    proto.dataReceived(b"GET / HTTP/1.1\r\n" + many + b"\r\n")
    assert len(HeldRequest.held) == 1
    clock, proto, transport = channel(maxRequestHeaderCount=9)
    proto.dataReceived(b"GET / HTTP/1.1\r\n" + many + b"\r\n")
    assert b"the request has more than 9 header fields" in transport.value()
    refusedWith(clock, proto, transport, b"431")
    # A request line over its limit is refused before it ends, under a larger header limit.
    clock, proto, transport = channel(maxRequestLineSize=2000)
    proto.dataReceived(line[:2005])
    assert b"the request line is longer than 2000 bytes" in transport.value()
    refusedWith(clock, proto, transport, b"414")


def test_a_reload_changes_the_head_limits_of_an_open_connection() -> None:
    clock, proto, transport = channel()
    proto.dataReceived(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    answerHeld()
    proto.site.ctx.config = SimpleNamespace(gateway=GatewaySettings(maxRequestLineSize=16384))
    proto.dataReceived(b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert b"the request line is longer than 16384 bytes" in transport.value()


def test_a_malformed_head_is_400_with_a_body() -> None:
    for raw in (
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello",  # space before colon
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ):
        clock, proto, transport = channel()
        proto.dataReceived(raw)
        refusedWith(clock, proto, transport, b"400")


def test_a_bare_lf_head_is_400_at_once_not_at_the_deadline() -> None:
    clock, proto, transport = channel()
    proto.dataReceived(b"GET / HTTP/1.1\nHost: a\n\n")
    assert b"must end with CRLF" in transport.value()
    refusedWith(clock, proto, transport, b"400")


def test_a_cr_and_lf_split_across_reads_is_still_crlf() -> None:
    clock, proto, transport = channel()
    proto.dataReceived(b"GET / HTTP/1.1\r")
    proto.dataReceived(b"\nHost: a\r")
    proto.dataReceived(b"\n\r\n")
    assert len(HeldRequest.held) == 1
    assert transport.value() == b""


def test_lingering_ends_early_after_too_much_input() -> None:
    clock, proto, transport = channel()
    proto.dataReceived(b"GET /" + b"a" * 40000)
    assert transport.value().startswith(b"HTTP/1.1 414 ")
    for _ in range(LINGER_BYTES // 65536):
        proto.dataReceived(b"x" * 65536)
    assert not transport.disconnecting
    proto.dataReceived(b"x")
    assert transport.disconnecting


def test_a_malformed_body_still_closes_at_once() -> None:
    # The request may be streaming to a backend by then: twisted.web's
    # immediate close, which also tells the request it is gone.
    clock, proto, transport = channel()
    proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert transport.disconnecting


def test_dropped_underscore_fields_are_logged_at_most_once_per_interval() -> None:
    """
    Requests with header names holding C{_} (dropped): one log line, then
    none for LOG_INTERVAL seconds however many come, then one that counts
    those not logged.  A client sending them on every request cannot flood
    the log.
    """
    from twisted.logger import globalLogPublisher

    from agwtx.runtime.ratelog import LOG_INTERVAL

    seen: list[dict[str, object]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        clock, proto, transport = channel()
        for _ in range(5):
            proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX_Bad: 1\r\n\r\n")
            answerHeld()
        clock.advance(LOG_INTERVAL)
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\nX_Bad: 1\r\nY_Bad: 2\r\n\r\n")
        answerHeld()
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [e for e in seen if "Dropped" in str(e.get("log_format", ""))]
    assert [(e["count"], e["names"], e["held"]) for e in lines] == [(1, "X_Bad", 0), (2, "X_Bad, Y_Bad", 4)]

"""
The listener channel's client idle timeout (agwtx.web.GatewayChannel keeps
TimeoutMixin's behaviour with one DelayedCall per connection).  A controlled
clock: the timeout is 60 s.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web import server

from agwtx.web import GatewayChannel, GatewaySite

IDLE = 60.0


class HeldRequest(server.Request):
    """A request whose response the test finishes when it wants to."""

    held: list["HeldRequest"] = []

    def process(self) -> None:
        HeldRequest.held.append(self)


def channel() -> tuple[Clock, GatewayChannel, StringTransport]:
    clock = Clock()
    site = GatewaySite(SimpleNamespace(accessLog=lambda request: None), None, 8080, timeout=IDLE)  # type: ignore[arg-type]
    site.reactor = clock
    site.requestFactory = HeldRequest
    proto = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    assert isinstance(proto, GatewayChannel)
    transport = StringTransport()
    proto.makeConnection(transport)
    return clock, proto, transport


def closesAfter(clock: Clock, transport: StringTransport, seconds: float) -> None:
    """The connection is still open a second before C{seconds} from now, closed a second after."""
    clock.advance(seconds - 1)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_idle_connection_is_closed_after_the_timeout() -> None:
    clock, _, transport = channel()
    closesAfter(clock, transport, IDLE)


def test_bytes_from_the_client_restart_the_idle_timer() -> None:
    clock, proto, transport = channel()
    clock.advance(IDLE - 10)
    proto.dataReceived(b"GET / HTTP/1.1\r\n")  # half a request
    closesAfter(clock, transport, IDLE)


def test_a_request_in_progress_is_not_timed_out_and_the_timer_restarts_after_it() -> None:
    HeldRequest.held.clear()
    clock, proto, transport = channel()
    proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(HeldRequest.held) == 1
    clock.advance(5 * IDLE)  # the response takes long: the idle timer must not fire
    assert not transport.disconnecting
    request = HeldRequest.held[0]
    request.setHeader(b"content-length", b"2")
    request.write(b"ok")
    request.finish()
    assert b"200" in transport.value()
    closesAfter(clock, transport, IDLE)


def test_many_requests_reuse_one_timer_per_connection() -> None:
    HeldRequest.held.clear()
    clock, proto, transport = channel()
    [timer] = clock.getDelayedCalls()
    for _ in range(50):
        proto.dataReceived(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        request = HeldRequest.held.pop()
        request.setHeader(b"content-length", b"0")
        request.finish()
    # The same DelayedCall, re-armed: not one cancelled and one scheduled per
    # request as with TimeoutMixin (which would also leave exactly one).
    assert clock.getDelayedCalls() == [timer]
    assert not transport.disconnecting


def test_closed_connection_cancels_its_timer() -> None:
    clock, proto, transport = channel()
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure

    proto.connectionLost(Failure(ConnectionDone()))
    assert clock.getDelayedCalls() == []

"""
The upstream HTTP/1.1 client's parser and pool, driven deterministically
with MemoryReactorClock and StringTransport (no sockets, no sleeps).
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from agwtx.proxy.client import UpstreamConnection, UpstreamError, UpstreamPool


class Recorder:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.done = False
        self.failed: tuple[UpstreamError, bool] | None = None

    def responseHead(self, conn: Any, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        self.headers = headers

    def responseData(self, data: bytes) -> None:
        self.body += data

    def responseDone(self) -> None:
        self.done = True

    def responseFailed(self, err: UpstreamError, retryable: bool) -> None:
        self.failed = (err, retryable)


def connect(pool: UpstreamPool, reactor: MemoryReactorClock) -> tuple[UpstreamConnection, StringTransport]:
    got: list[UpstreamConnection | None] = []
    pool.getConnection("127.0.0.1", 8000, lambda c, f: got.append(c))
    host, port, factory, timeout, _ = reactor.tcpClients[-1]
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    assert got == [proto]
    return proto, transport


@pytest.fixture
def env() -> tuple[UpstreamPool, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    return UpstreamPool(reactor, idleTimeout=60), reactor


@pytest.mark.parametrize(
    "response, status, body, reusable",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 200, b"hello", True),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            200,
            b"hello",
            True,
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
            201,
            b"ok",
            True,
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b"", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, b"ok", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 200, b"ok", False),
    ],
)
def test_response_framing(env: Any, response: bytes, status: int, body: bytes, reusable: bool) -> None:
    pool, reactor = env
    conn, transport = connect(pool, reactor)
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", rec, False, False)
    # deliver byte by byte: the parser must not depend on packet boundaries
    for i in range(len(response)):
        conn.dataReceived(response[i : i + 1])
    assert rec.status == status
    assert rec.body == body
    assert rec.done
    assert (pool.idleCount("127.0.0.1", 8000) == 1) is reusable
    assert transport.disconnecting is (not reusable)


def test_close_delimited_body_ends_at_eof(env: Any) -> None:
    pool, reactor = env
    conn, transport = connect(pool, reactor)
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec, False, False)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\n\r\nsome")
    conn.dataReceived(b" body")
    assert not rec.done
    conn.connectionLost(Failure(Exception("eof")))
    assert rec.done and rec.body == b"some body"


def test_head_request_has_no_body(env: Any) -> None:
    pool, reactor = env
    conn, _ = connect(pool, reactor)
    rec = Recorder()
    conn.send(b"HEAD / HTTP/1.1\r\n\r\n", rec, True, False)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert rec.done and rec.body == b""
    assert pool.idleCount("127.0.0.1", 8000) == 1


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header : x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        # both framings: relaying either is wrong (RFC 9112 section 6.3)
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",  # NUL
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 2\r\n\r\nok",  # bare CR
        b"HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 2\r\n\r\nok",  # bare LF
        b"HTTP/1.1 200 OK\r\nX A: a\r\nContent-Length: 2\r\n\r\nok",  # space in a name
        b"HTTP/1.1 200 OK\r\n: a\r\nContent-Length: 2\r\n\r\nok",  # empty name
    ],
)
def test_malformed_responses_fail_cleanly(env: Any, response: bytes) -> None:
    pool, reactor = env
    conn, transport = connect(pool, reactor)
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec, False, False)
    conn.dataReceived(response)
    assert rec.failed is not None
    assert rec.failed[0].kind == "protocol"
    assert pool.idleCount("127.0.0.1", 8000) == 0


def test_oversized_head_fails(env: Any) -> None:
    pool, reactor = env
    conn, _ = connect(pool, reactor)
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec, False, False)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"a" * 70000)
    assert rec.failed is not None and "too large" in str(rec.failed[0])


def test_reused_connection_closed_by_backend_is_retryable(env: Any) -> None:
    pool, reactor = env
    conn, _ = connect(pool, reactor)
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec, False, False)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    got: list[Any] = []
    pool.getConnection("127.0.0.1", 8000, lambda c, f: got.append(c))
    assert got == [conn]  # reused, no new connect
    assert len(reactor.tcpClients) == 1
    rec2 = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec2, False, False)
    conn.connectionLost(Failure(Exception("reset")))
    assert rec2.failed is not None and rec2.failed[1] is True


def test_idle_connections_are_reaped(env: Any) -> None:
    pool, reactor = env
    conn, transport = connect(pool, reactor)
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec, False, False)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert pool.idleCount("127.0.0.1", 8000) == 1
    reactor.advance(30)
    assert pool.idleCount("127.0.0.1", 8000) == 1 and not transport.disconnecting
    reactor.advance(31)
    assert pool.idleCount("127.0.0.1", 8000) == 0 and transport.disconnecting
    assert not reactor.getDelayedCalls()  # nothing left scheduled once the pool is empty


def test_idle_pool_is_bounded(env: Any) -> None:
    reactor = MemoryReactorClock()
    pool = UpstreamPool(reactor, maxIdlePerMember=2)
    conns = []
    for _ in range(3):
        got: list[Any] = []
        pool.getConnection("127.0.0.1", 8000, lambda c, f, got=got: got.append(c))
        factory = reactor.tcpClients[-1][2]
        proto = factory.buildProtocol(None)
        t = StringTransport()
        proto.makeConnection(t)
        conns.append((proto, t))
    for proto, _ in conns:
        rec = Recorder()
        proto.send(b"GET / HTTP/1.1\r\n\r\n", rec, False, False)
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert pool.idleCount("127.0.0.1", 8000) == 2
    assert conns[2][1].disconnecting


def test_connect_failure_reported(env: Any) -> None:
    pool, reactor = env
    got: list[Any] = []
    pool.getConnection("127.0.0.1", 8000, lambda c, f: got.append((c, f)))
    connector = reactor.connectors[-1]
    factory = reactor.tcpClients[-1][2]
    from twisted.internet.error import ConnectionRefusedError

    factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
    assert got and got[0][0] is None and got[0][1].check(ConnectionRefusedError)


def test_backpressure_pauses_backend_socket(env: Any) -> None:
    pool, reactor = env
    conn, transport = connect(pool, reactor)
    rec = Recorder()
    conn.send(b"GET / HTTP/1.1\r\n\r\n", rec, False, False)
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    conn.pauseProducing()
    assert transport.producerState == "paused"
    conn.resumeProducing()
    assert transport.producerState == "producing"
    conn.pauseProducing()
    conn.dataReceived(b"67890")
    # finishing a response resumes the socket before it goes back to the pool
    assert rec.done and transport.producerState == "producing"


def test_deadlines_fire_overdue_only_and_stop_sweeping_when_empty() -> None:
    from twisted.internet.task import Clock

    from agwtx.runtime.deadlines import Deadlines

    clock = Clock()
    d = Deadlines(clock, resolution=0.25)
    fired: list[str] = []
    d.add("a", 1.0, lambda: fired.append("a"))
    d.add("b", 2.0, lambda: fired.append("b"))
    d.add("c", 1.0, lambda: fired.append("c"))
    d.remove("c")  # finished in time
    clock.advance(0.75)
    assert fired == []
    clock.advance(0.25)
    assert fired == ["a"]
    d.add("b", 0.5, lambda: fired.append("b2"))  # re-armed (activity): the later callback wins
    clock.advance(0.5)
    assert fired == ["a", "b2"]
    assert clock.getDelayedCalls() == []  # nothing left: no sweeping


def test_deadline_callback_error_does_not_stop_the_sweep() -> None:
    from twisted.internet.task import Clock

    from agwtx.runtime.deadlines import Deadlines

    clock = Clock()
    d = Deadlines(clock)
    fired: list[int] = []

    def boom() -> None:
        raise RuntimeError("x")

    d.add(1, 0.1, boom)
    d.add(2, 0.6, lambda: fired.append(2))
    clock.advance(0.25)
    clock.advance(0.5)
    assert fired == [2]


def useConnections(
    pool: UpstreamPool, reactor: MemoryReactorClock, count: int, **limits: Any
) -> list[tuple[UpstreamConnection, StringTransport]]:
    """C{count} connections at once (idle ones first, then new ones, connected here), each answered."""
    got: list[UpstreamConnection] = []
    dialled = len(reactor.tcpClients)
    for _ in range(count):
        pool.getConnection("127.0.0.1", 8000, lambda c, f: got.append(c), **limits)
    used = [(conn, conn.transport) for conn in got]
    for _, _, factory, _, _ in reactor.tcpClients[dialled:]:
        proto = factory.buildProtocol(None)
        t = StringTransport()
        proto.makeConnection(t)
        used.append((proto, t))
    for proto, _ in used:
        proto.send(b"GET / HTTP/1.1\r\n\r\n", Recorder(), False, False)
        proto.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    return used  # type: ignore[return-value]


def test_idle_pool_keeps_what_the_recent_load_used_and_closes_the_rest_by_age() -> None:
    """
    Ten connections were in use at a peak; afterwards two at a time are
    enough.  The two reused ones stay open however long it goes on, the
    eight left at the bottom of the stack close one idle timeout later, and
    the limits are the ones given with the request.
    """
    reactor = MemoryReactorClock()
    pool = UpstreamPool(reactor)
    conns = useConnections(pool, reactor, 10, maxIdle=100, idleTimeout=20)
    assert pool.idleCount("127.0.0.1", 8000) == 10  # more than any fixed small bound would keep
    for _ in range(8):  # 40 s of a load that needs two connections
        reactor.advance(5)
        useConnections(pool, reactor, 2, maxIdle=100, idleTimeout=20)
    assert len(reactor.tcpClients) == 10  # no new connection was made
    assert pool.idleCount("127.0.0.1", 8000) == 2
    closed = [t.disconnecting for _, t in conns]
    assert closed.count(True) == 8 and closed.count(False) == 2


def test_the_idle_bound_comes_with_the_request() -> None:
    reactor = MemoryReactorClock()
    pool = UpstreamPool(reactor)
    conns = useConnections(pool, reactor, 3, maxIdle=1, idleTimeout=5)
    assert pool.idleCount("127.0.0.1", 8000) == 1
    assert [t.disconnecting for _, t in conns] == [False, True, True]
    reactor.advance(4)
    assert not conns[0][1].disconnecting
    reactor.advance(2)
    assert conns[0][1].disconnecting and pool.idleCount("127.0.0.1", 8000) == 0

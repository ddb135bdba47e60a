"""
The lean epoll loop (agwtx.ops.reactorpoll) on a private EPollReactor, with real
TCP sockets on loopback: small writes are sent without registering for
EPOLLOUT, large ones fall back to epoll and flow control, close-after-write
delivers everything, and an exception in a protocol drops that connection
only.  (Every gateway test that starts ``twistd agw`` runs on this loop too.)
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.internet.selectreactor import SelectReactor
from twisted.python import log

from agwtx.ops.reactorpoll import installLeanPoll

epollreactor = pytest.importorskip("twisted.internet.epollreactor")

BIG = 32 * 1024 * 1024


def leanReactor() -> Any:
    reactor = epollreactor.EPollReactor()
    assert installLeanPoll(reactor) is True
    calls = {"epollWriters": 0}
    realAdd = reactor._add

    def countingAdd(xer: Any, primary: Any, *rest: Any) -> None:
        if primary is reactor._writes:
            calls["epollWriters"] += 1
        realAdd(xer, primary, *rest)

    reactor._add = countingAdd
    reactor.calls = calls
    return reactor


def runUntil(reactor: Any, done: Callable[[], bool], limit: float = 30.0) -> None:
    """Run the private reactor until done() is true (bounded in time)."""

    def check() -> None:
        if done():
            reactor.stop()
        else:
            reactor.callLater(0.01, check)

    timeout = reactor.callLater(limit, reactor.stop)
    reactor.callLater(0, check)
    reactor.run(installSignalHandlers=False)
    if timeout.active():
        timeout.cancel()
    assert done(), f"not finished within {limit}s"


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        if data.startswith(b"boom"):
            raise RuntimeError("application error")
        self.transport.write(data.upper())


class SendBigThenClose(Protocol):
    """Writes BIG bytes in 64 KiB pieces at once, then closes: Twisted buffers what the socket refuses."""

    def connectionMade(self) -> None:
        piece = b"x" * 65536
        for _ in range(BIG // len(piece)):
            self.transport.write(piece)
        self.transport.loseConnection()


class Collect(Protocol):
    def __init__(self, send: bytes = b"", pauseFirst: float = 0.0) -> None:
        self.size = 0
        self.got: list[bytes] = []
        self.send = send
        self.pauseFirst = pauseFirst
        self.lost: Any = None
        self.reactor: Any = None

    def connectionMade(self) -> None:
        if self.pauseFirst:
            # A slow reader: the sender's socket buffer fills and it must wait for EPOLLOUT.
            self.transport.pauseProducing()
            self.reactor.callLater(self.pauseFirst, self.transport.resumeProducing)
        if self.send:
            self.transport.write(self.send)

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if len(self.got) < 4:
            self.got.append(data)

    def connectionLost(self, reason: Any) -> None:
        self.lost = reason


def connect(reactor: Any, port: int, proto: Collect) -> None:
    proto.reactor = reactor
    factory = ClientFactory()
    factory.protocol = lambda: proto  # type: ignore[assignment]
    reactor.connectTCP("127.0.0.1", port, factory)


def listen(reactor: Any, protocol: Any) -> int:
    return int(reactor.listenTCP(0, Factory.forProtocol(protocol), interface="127.0.0.1").getHost().port)


def test_small_writes_are_sent_without_registering_for_epollout() -> None:
    reactor = leanReactor()
    port = listen(reactor, Echo)
    clients = [Collect(send=b"hello %d" % i) for i in range(20)]
    for client in clients:
        connect(reactor, port, client)
    runUntil(reactor, lambda: all(c.size == len(c.send) for c in clients))
    for client in clients:
        assert b"".join(client.got) == client.send.upper()
    # 40 writes (20 requests, 20 answers), none of which needed epoll's help.
    assert reactor.calls["epollWriters"] == 0


def test_large_write_to_slow_reader_falls_back_to_epoll_and_arrives_whole() -> None:
    reactor = leanReactor()
    port = listen(reactor, SendBigThenClose)
    client = Collect(pauseFirst=0.5)
    connect(reactor, port, client)
    runUntil(reactor, lambda: client.lost is not None)
    assert client.size == BIG
    assert client.got[0].startswith(b"xxxx")
    # The sender's socket filled up while the reader slept: it waited for EPOLLOUT.
    assert reactor.calls["epollWriters"] >= 1
    assert reactor.getWriters() == []


def test_application_error_drops_only_that_connection() -> None:
    reactor = leanReactor()
    port = listen(reactor, Echo)
    bad = Collect(send=b"boom")
    good = Collect(send=b"fine")
    errors: list[Any] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("isError"):
            errors.append(event)

    log.addObserver(observer)
    connect(reactor, port, bad)
    connect(reactor, port, good)
    try:
        runUntil(reactor, lambda: bad.lost is not None and good.size == 4)
    finally:
        log.removeObserver(observer)
    assert bad.size == 0
    assert b"".join(good.got) == b"FINE"
    assert any("application error" in str(e.get("failure", "")) for e in errors)


class FailTwice(Protocol):
    """Fails in dataReceived, then again in connectionLost."""

    def dataReceived(self, data: bytes) -> None:
        raise RuntimeError("application error")

    def connectionLost(self, reason: Any) -> None:
        raise RuntimeError("error while closing")


def test_error_while_disconnecting_is_logged_and_stays_in_the_loop() -> None:
    # Stock Twisted logs an exception from connectionLost (callWithLogger);
    # it must not escape the pass into the reactor's "Unexpected error in
    # main loop", which would skip the rest of that pass's events.
    reactor = leanReactor()
    badPort = listen(reactor, FailTwice)
    goodPort = listen(reactor, Echo)
    bad = Collect(send=b"anything")
    good = Collect(send=b"fine")
    events: list[dict[str, Any]] = []
    log.addObserver(events.append)
    connect(reactor, badPort, bad)
    connect(reactor, goodPort, good)
    try:
        runUntil(reactor, lambda: bad.lost is not None and good.size == 4)
    finally:
        log.removeObserver(events.append)
    failures = [str(e.get("failure", "")) for e in events if e.get("isError")]
    assert any("application error" in f for f in failures)
    assert any("error while closing" in f for f in failures)
    loopErrors = [e for e in events if "main loop" in str(e.get("log_format", "")) + str(e.get("why", ""))]
    assert loopErrors == []
    assert b"".join(good.got) == b"FINE"


def test_only_epoll_reactors_are_changed_and_only_once() -> None:
    assert installLeanPoll(SelectReactor()) is False
    reactor = epollreactor.EPollReactor()
    assert installLeanPoll(reactor) is True
    assert installLeanPoll(reactor) is False

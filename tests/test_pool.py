"""
Backend leases and member choice, on a controlled clock: the connection
cap, its FIFO queue and timeout, release exactly once, and a member choice
that sees the queues.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from agwtx.config.model import BackendAddress, BackendAddressPool, BackendHttpSettings
from agwtx.proxy.pool import UNHEALTHY, Lease, Member, PoolState


def poolState(n: int = 1, cap: int = 2, queue: int = 2, timeout: float = 5.0) -> PoolState:
    settings = BackendHttpSettings(
        name="s", maxConnectionsPerServer=cap, maxQueuedRequestsPerServer=queue, queueTimeout=timeout
    )
    pool = BackendAddressPool("p", tuple(BackendAddress("127.0.0.1", 8000 + i) for i in range(n)))
    return PoolState(pool, settings)


class Outcome:
    def __init__(self) -> None:
        self.granted = 0
        self.refused: list[str] = []

    def grant(self) -> None:
        self.granted += 1

    def refuse(self, message: str) -> None:
        self.refused.append(message)


def lease(clock: Clock, member: Member) -> tuple[Lease, Outcome]:
    lz, out = Lease(clock), Outcome()
    lz.take(member, out.grant, out.refuse)
    return lz, out


def test_beyond_the_cap_requests_wait_in_order_and_a_freed_slot_serves_the_queue_first() -> None:
    clock = Clock()
    [m] = poolState().members
    leases = [lease(clock, m) for _ in range(4)]
    assert [o.granted for _, o in leases] == [1, 1, 0, 0]
    assert (m.active, m.inflight, len(m.queue)) == (2, 2, 2)
    assert not m.hasRoom
    clock.advance(1.5)
    leases[0][0].release()
    assert [o.granted for _, o in leases] == [1, 1, 1, 0]  # the oldest waiter, before any newcomer
    assert (m.active, m.inflight, len(m.queue)) == (2, 2, 1)
    assert (sum(m.waitCounts), m.waitSum) == (1, 1.5)
    for lz, _ in leases:
        lz.release()
        lz.release()  # a second release changes nothing
    assert (m.active, m.inflight, len(m.queue)) == (0, 0, 0)
    assert [o.refused for _, o in leases] == [[]] * 4
    assert not clock.getDelayedCalls()


def test_a_full_queue_refuses_at_once() -> None:
    clock = Clock()
    [m] = poolState(cap=1, queue=1).members
    lease(clock, m)
    lease(clock, m)
    _, out = lease(clock, m)
    assert out.refused == [
        "Service Unavailable: the backend is at its connection limit and its queue is full"
    ]
    assert (m.queueFull, len(m.queue), m.active) == (1, 1, 1)


def test_a_wait_longer_than_the_queue_timeout_is_refused() -> None:
    clock = Clock()
    [m] = poolState(cap=1, timeout=5.0).members
    lease(clock, m)
    waiting, out = lease(clock, m)
    clock.advance(4.9)
    assert out.refused == []
    clock.advance(0.1)
    assert out.refused == ["Service Unavailable: no backend connection became free within the queue timeout"]
    assert (m.queueTimeouts, len(m.queue), m.inflight, sum(m.waitCounts)) == (1, 0, 1, 1)
    waiting.release()
    assert m.inflight == 1


def test_leaving_the_queue_frees_the_place_and_cancels_the_timer() -> None:
    clock = Clock()
    [m] = poolState(cap=1, queue=1).members
    first, _ = lease(clock, m)
    waiting, out = lease(clock, m)
    waiting.release()
    assert (len(m.queue), clock.getDelayedCalls()) == (0, [])
    _, later = lease(clock, m)
    assert later.refused == [] and len(m.queue) == 1
    first.release()
    assert later.granted == 1 and out.granted == 0


def test_moving_to_another_member_gives_the_first_one_back() -> None:
    clock = Clock()
    a, b = poolState(n=2, cap=1).members
    held, _ = lease(clock, a)
    _, waiter = lease(clock, a)
    held.take(b, lambda: None, lambda message: None)  # failover
    assert (a.active, a.inflight, b.active, b.inflight) == (1, 1, 1, 1)
    assert waiter.granted == 1  # a's slot went to its queue


def test_uncapped_leases_count_in_flight_only() -> None:
    clock = Clock()
    [m] = poolState(cap=1, queue=0).members
    leases = [Lease(clock, slotted=False) for _ in range(3)]
    for lz in leases:
        lz.hold(m)
    assert (m.inflight, m.active) == (3, 0)
    for lz in leases:
        lz.release()
    assert m.inflight == 0


def test_a_raised_cap_on_reload_serves_the_waiters() -> None:
    clock = Clock()
    [m] = poolState(cap=1).members
    lease(clock, m)
    _, waiter = lease(clock, m)
    m.limit(BackendHttpSettings(name="s", maxConnectionsPerServer=2))
    assert waiter.granted == 1 and m.active == 2


@pytest.mark.parametrize(
    "active, queued, health, picks",
    [
        # no member full: plain round robin
        ((0, 0, 0), (0, 0, 0), (None, None, None), [0, 1, 2, 0]),
        # a member at its cap is passed over while another has room
        ((2, 0, 0), (0, 0, 0), (None, None, None), [1, 2, 1, 2]),
        # all at their cap: the shortest queue, so the slow member's long one gets no more
        ((2, 2, 2), (2, 0, 1), (None, None, None), [1, 1, 1, 1]),
        # an unhealthy member is never chosen, even with room; equal queues take turns
        ((2, 2, 0), (0, 0, 0), (None, None, UNHEALTHY), [0, 1, 0, 1]),
    ],
)
def test_member_choice_sees_connections_and_queues(
    active: tuple[int, ...], queued: tuple[int, ...], health: tuple[str | None, ...], picks: list[int]
) -> None:
    state = poolState(n=3, cap=2, queue=10)
    for m, a, q, h in zip(state.members, active, queued, health):
        m.active = a
        m.queue.extend(Lease(Clock()) for _ in range(q))
        if h is not None:
            m.health = h
    assert [state.members.index(state.pick()) for _ in picks] == picks  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "description, listened",
    [
        ("tcp:80", "tcp:80:backlog=4096"),
        ("tcp:8080:interface=\\:\\:1", "tcp:8080:interface=\\:\\:1:backlog=4096"),
        ("tcp6:port=443", "tcp6:port=443:backlog=4096"),
        ("ssl:443:privateKey=k.pem", "ssl:443:privateKey=k.pem:backlog=4096"),
        ("tcp:80:backlog=10", "tcp:80:backlog=10"),  # the user's choice stays
        ("unix:/run/agw.sock", "unix:/run/agw.sock"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_frontend_ports_listen_with_a_backlog_for_thousands_of_clients(
    description: str, listened: str
) -> None:
    from agwtx.service import withBacklog

    assert withBacklog(description) == listened


def test_the_gateway_process_collects_young_garbage_rarely() -> None:
    """
    makeService's collector settings (agwtx.ops.gctune): with thousands of
    requests in flight the default threshold made full collections take a
    quarter of the gateway's CPU time.
    """
    import gc
    import platform

    from agwtx.ops.gctune import YOUNG_THRESHOLD, tuneGarbageCollector

    if platform.python_implementation() != "CPython":
        assert not tuneGarbageCollector()  # PyPy's collector is left alone
        return
    before = gc.get_threshold()
    try:
        assert tuneGarbageCollector()
        assert gc.get_threshold() == (YOUNG_THRESHOLD,) + before[1:]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_lease_chooses_first_and_fails_over_once() -> None:
    """
    The proxy's and the bridge's one member choice: a pinned member while
    pinnable, else round robin; one failover to another member, never a
    third; a retry on the same member is not a second member; in flight
    back to 0 whatever happened.
    """
    clock = Clock()
    state = poolState(n=3, cap=0)
    a, b, c = state.members
    lz = Lease(clock, state=state)
    assert lz.first(b) is b
    b.health = UNHEALTHY
    assert lz.first(b) is a  # not pinnable: the pool's pick
    lz.take(a, lambda: None, lambda m: None)
    lz.take(a, lambda: None, lambda m: None)  # a retry on the same member
    assert lz.tried == [a] and a.inflight == 1
    other = lz.failover()
    assert other is c  # b is unhealthy
    lz.take(other, lambda: None, lambda m: None)
    assert (a.inflight, c.inflight) == (0, 1)
    assert lz.failover() is None  # two members tried: no third
    lz.release()
    lz.release()
    assert [m.inflight for m in state.members] == [0, 0, 0]


@pytest.mark.parametrize(
    "host, key, hostHeader",
    [
        ("10.0.0.1", "10.0.0.1:8080", b"10.0.0.1"),
        ("2001:db8::1", "[2001:db8::1]:8080", b"[2001:db8::1]"),
        ("b\u00fccher.example", "b\u00fccher.example:8080", b"xn--bcher-kva.example"),
    ],
)
def test_a_members_key_and_host_value_are_worked_out_once(host: str, key: str, hostHeader: bytes) -> None:
    """Host and port never change: the key and the Host value are plain attributes, not recomputed per use."""
    m = Member(host, 8080)
    assert (m.key, m.hostHeader) == (key, hostHeader)
    assert (vars(m)["key"], vars(m)["hostHeader"]) == (key, hostHeader)

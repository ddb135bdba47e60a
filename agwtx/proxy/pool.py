"""
Runtime state of backend pools, shared by routing, the proxy, the WebSocket
bridge and the health prober.

A L{PoolState} exists per (backendAddressPool, backendHttpSettings) pair that
a rule uses, as in Azure's backend health view: the member's port and the
probe both come from the settings.  Config objects stay immutable; only
these objects change at runtime.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from agwtx.config.model import BackendAddressPool, BackendHttpSettings

__all__ = [
    "Lease",
    "Member",
    "hostForHeader",
    "PoolState",
    "UNKNOWN",
    "HEALTHY",
    "UNHEALTHY",
    "QUEUE_WAIT_BUCKETS",
]

UNKNOWN = "Unknown"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"

QUEUE_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (seconds) of the queue wait histogram's buckets."""


def hostForHeader(host: str) -> str:
    """C{host} as the host part of a Host header or URL: an IPv6 literal goes in brackets (RFC 3986 3.2.2)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


@dataclass(eq=False)
class Member:
    """One backend server as seen through one backendHttpSettings."""

    host: str
    port: int
    health: str = UNKNOWN
    draining: bool = False
    inflight: int = 0
    lastReason: str = "not probed yet"
    lastChange: float | None = None
    lastProbe: float | None = None
    consecutiveFailures: int = 0
    active: int = 0
    """HTTP exchanges holding one of the member's connection slots (connecting or in use)."""
    maxConnections: int = 0
    """The settings' C{maxConnectionsPerServer}; 0: no cap."""
    maxQueued: int = 0
    queueTimeout: float = 10.0
    queue: "deque[Lease]" = field(default_factory=deque)
    """Leases waiting for a slot, oldest first."""
    connects: int = 0
    """Backend connections opened for HTTP requests (a counter)."""
    queueFull: int = 0
    """Requests refused because the queue was full (a counter)."""
    queueTimeouts: int = 0
    """Requests that waited C{queueTimeout} in vain (a counter)."""
    waitCounts: list[int] = field(default_factory=lambda: [0] * (len(QUEUE_WAIT_BUCKETS) + 1))
    """Queue waits per L{QUEUE_WAIT_BUCKETS} bucket, the last one +Inf."""
    waitSum: float = 0.0

    key: str = field(init=False, default="")
    """The member's identity in affinity cookies and logs: C{host:port}, an IPv6 literal in brackets."""
    hostHeader: bytes = field(init=False, default=b"", repr=False)
    """The member's name as a Host value (no port): IPv6 literals in brackets, names in IDNA."""

    def __post_init__(self) -> None:
        # host and port never change after construction: both are worked out
        # once, not on every request head or affinity lookup.
        host = hostForHeader(self.host)
        self.key = f"{host}:{self.port}"
        self.hostHeader = host.encode("idna")

    @property
    def available(self) -> bool:
        """May new requests go here? Unknown counts: it is decided by its first probe."""
        return self.health != UNHEALTHY and not self.draining

    @property
    def pinnable(self) -> bool:
        """May an affinity cookie keep sending here? Yes while healthy or draining."""
        return self.health != UNHEALTHY

    @property
    def hasRoom(self) -> bool:
        """Would a new HTTP request get a connection slot at once (no cap, or a free slot nobody waits for)?"""
        return self.maxConnections == 0 or (self.active < self.maxConnections and not self.queue)

    def limit(self, settings: BackendHttpSettings) -> None:
        """Take the cap and queue limits of C{settings} (at start and on every reload)."""
        self.maxConnections = settings.maxConnectionsPerServer
        self.maxQueued = settings.maxQueuedRequestsPerServer
        self.queueTimeout = settings.queueTimeout
        self.serveQueue()

    def serveQueue(self) -> None:
        """Hand free slots to waiting leases, oldest first."""
        queue = self.queue
        while queue and (self.maxConnections == 0 or self.active < self.maxConnections):
            queue.popleft()._granted()

    def noteWait(self, seconds: float) -> None:
        self.waitCounts[bisect_left(QUEUE_WAIT_BUCKETS, seconds)] += 1
        self.waitSum += seconds


class Lease:
    """
    One request's hold on a backend member: the one place that counts it in
    flight (C{Member.inflight}) and, for an HTTP exchange, holds one of the
    member's connection slots (C{Member.active}, capped by
    C{maxConnectionsPerServer}) or waits for one in the member's FIFO queue.

    L{take} moves the hold to a member (failover releases the old one
    first); L{release} gives back whatever is held, and does nothing the
    second time, so the counts cannot go negative.  A slot given back goes
    to the oldest waiter before any new request sees it.

    WebSocket bridges take uncapped leases (C{slotted=False}): they count in
    flight but hold no slot, since a bridge keeps its connection for hours
    and a cap sized for request/response exchanges would let a few open
    WebSockets starve every HTTP request to the member.

    With its pool's C{state}, a lease also makes the member choices of one
    request, the same for the proxy and the WebSocket bridge: L{first} (the
    affinity cookie's member, else the pool's queue-aware round robin) and
    L{failover} (one other member, never a third).
    """

    __slots__ = (
        "clock",
        "slotted",
        "state",
        "tried",
        "member",
        "counted",
        "slot",
        "waiting",
        "since",
        "timer",
        "onGrant",
        "onRefuse",
    )

    def __init__(self, clock: IReactorTime, slotted: bool = True, state: "PoolState | None" = None) -> None:
        self.clock = clock
        self.slotted = slotted
        self.state = state
        self.tried: list[Member] = []
        """The distinct members this lease has taken, in order."""
        self.member: Member | None = None
        self.counted = False
        self.slot = False
        self.waiting = False
        self.since = 0.0
        self.timer: IDelayedCall | None = None
        self.onGrant: Callable[[], None] | None = None
        self.onRefuse: Callable[[str], None] | None = None

    def first(self, pinned: Member | None = None) -> Member | None:
        """
        The member to try first: C{pinned} (the affinity cookie's) while it
        may still serve its clients (L{Member.pinnable}), else the pool's
        pick (L{PoolState.pick}); None when no member is available.
        """
        if pinned is not None and pinned.pinnable:
            return pinned
        assert self.state is not None
        return self.state.pick()

    def failover(self) -> Member | None:
        """
        The member for one retry elsewhere after the current one failed, or
        None: another available member, and only while fewer than two
        distinct members were tried.
        """
        if len(self.tried) >= 2 or self.state is None:
            return None
        return self.state.pick(exclude=self.tried)

    def take(self, member: Member, granted: Callable[[], None], refused: Callable[[str], Any]) -> None:
        """
        Release what is held, then hold C{member}: C{granted()} at once when
        it has room, later when a slot frees up, or C{refused(message)} when
        its queue is full or the wait times out.
        """
        if self.member is not None:
            self.release()
        self.member = member
        if member not in self.tried:
            self.tried.append(member)
        if not self.slotted or member.hasRoom:
            # the common case: a slot at once
            self.counted = True
            member.inflight += 1
            if self.slotted:
                self.slot = True
                member.active += 1
            granted()
            return
        self.onGrant = granted
        self.onRefuse = refused
        if len(member.queue) >= member.maxQueued:
            member.queueFull += 1
            self._refuse("Service Unavailable: the backend is at its connection limit and its queue is full")
            return
        self.waiting = True
        self.since = self.clock.seconds()
        member.queue.append(self)
        self.timer = self.clock.callLater(member.queueTimeout, self._timedOut)

    def hold(self, member: Member) -> None:
        """An uncapped hold, granted at once (for the WebSocket bridge)."""
        self.take(member, _nothing, _nothing)

    def _granted(self) -> None:
        """A slot freed up for this waiting lease (see L{Member.serveQueue})."""
        member = self.member
        assert member is not None
        self.waiting = False
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        member.noteWait(self.clock.seconds() - self.since)
        self.counted = True
        member.inflight += 1
        if self.slotted:
            self.slot = True
            member.active += 1
        granted, self.onGrant, self.onRefuse = self.onGrant, None, None
        if granted is not None:
            granted()

    def _timedOut(self) -> None:
        self.timer = None
        member = self.member
        if not self.waiting or member is None:
            return
        self.waiting = False
        member.queue.remove(self)
        member.queueTimeouts += 1
        member.noteWait(self.clock.seconds() - self.since)
        self._refuse("Service Unavailable: no backend connection became free within the queue timeout")

    def _refuse(self, message: str) -> None:
        refused, self.onGrant, self.onRefuse = self.onRefuse, None, None
        if refused is not None:
            refused(message)

    def release(self) -> None:
        """Give back the hold (or leave the queue); idempotent."""
        member = self.member
        if member is None:
            return
        if self.slot:  # the common case first
            self.slot = self.counted = False
            member.inflight -= 1
            member.active -= 1
            if member.queue:
                member.serveQueue()
            return
        self.onGrant = self.onRefuse = None
        if self.waiting:
            self.waiting = False
            if self.timer is not None and self.timer.active():
                self.timer.cancel()
            self.timer = None
            member.queue.remove(self)
        if self.counted:  # an uncapped (WebSocket) hold
            self.counted = False
            member.inflight -= 1


def _nothing(*args: Any) -> None:
    pass


class PoolState:
    """Members of one pool under one settings, with round-robin selection."""

    log = Logger()

    def __init__(self, pool: BackendAddressPool, settings: BackendHttpSettings) -> None:
        self.pool = pool
        self.settings = settings
        self.name = pool.name
        self.members: list[Member] = [
            Member(host=a.host, port=a.port if a.port is not None else settings.port)
            for a in pool.backendAddresses
        ]
        for m in self.members:
            m.limit(settings)
        self.byKey: dict[str, Member] = {m.key: m for m in self.members}
        self._next = 0

    def healthy(self) -> list[Member]:
        return [m for m in self.members if m.available]

    def pick(self, exclude: Iterable[Member] = ()) -> Member | None:
        """
        The next available member in round-robin order that has room for
        one more request (L{Member.hasRoom}), or None.  When every available
        member is at its connection cap, the one with the shortest queue:
        a slow member, whose queue drains slowly, then gets fewer waiters.
        """
        members = self.members
        n = len(members)
        if n == 0:
            return None
        excluded = tuple(exclude)
        start = self._next
        best: Member | None = None
        bestAt = 0
        for i in range(n):
            at = (start + i) % n
            m = members[at]
            if m.available and m not in excluded:
                if m.hasRoom:
                    self._next = (at + 1) % n
                    return m
                if best is None or len(m.queue) < len(best.queue):
                    best, bestAt = m, at
        if best is not None:
            self._next = (bestAt + 1) % n
        return best

    def member(self, key: str) -> Member | None:
        return self.byKey.get(key)

    def inherit(self, old: "PoolState", drain: bool) -> list[Member]:
        """
        Take over what a reload must not lose from the state this one
        replaces: the members that stay, as the same objects (with their
        health, and the open connections that hold them, which a later
        removal must find to drain), and (with C{drain}) the members that
        were removed, kept as draining so that affinity-pinned clients and
        open connections can finish.  A member back in the pool while it
        drained is no longer draining.  Returns the removed members.
        """
        removed: list[Member] = []
        for m in old.members:
            mine = self.byKey.get(m.key)
            if mine is not None:
                self.members[self.members.index(mine)] = m
                self.byKey[m.key] = m
                m.draining = False
                m.limit(self.settings)
            elif not m.draining or drain:
                removed.append(m)
                if drain:
                    m.draining = True
                    self.members.append(m)
                    self.byKey[m.key] = m
        return removed

    def dropMembers(self, members: list[Member]) -> None:
        """End of a drain: forget these members."""
        gone = set(map(id, members))
        self.members = [m for m in self.members if id(m) not in gone]
        self.byKey = {m.key: m for m in self.members}
        self._next = 0

    def setHealth(self, member: Member, health: str, reason: str, now: float) -> None:
        """Record a probe or passive result; logs every change of health."""
        member.lastReason = reason
        member.lastProbe = now
        if member.health != health:
            old = member.health
            member.health = health
            member.lastChange = now
            self.log.info(
                "backend health: pool {pool} settings {settings} member {member} {old} -> {new} ({reason})",
                pool=self.name,
                settings=self.settings.name,
                member=member.key,
                old=old,
                new=health,
                reason=reason,
                event="health_change",
            )

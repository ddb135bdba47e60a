"""
Runtime state of backend pools, shared by routing, the proxy, the WebSocket
bridge and the health prober.

A L{PoolState} exists per (backendAddressPool, backendHttpSettings) pair that
a rule uses, as in Azure's backend health view: the member's port and the
probe both come from the settings.  Config objects stay immutable; only
these objects change at runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from twisted.logger import Logger

from agwtx.model import BackendAddressPool, BackendHttpSettings

__all__ = ["Member", "hostForHeader", "PoolState", "UNKNOWN", "HEALTHY", "UNHEALTHY"]

UNKNOWN = "Unknown"
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"


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

    @property
    def key(self) -> str:
        """The member's identity in affinity cookies and logs."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"

    @property
    def hostHeader(self) -> bytes:
        """The member's name as a Host value (no port): IPv6 literals in brackets, names in IDNA."""
        return hostForHeader(self.host).encode("idna")

    @property
    def available(self) -> bool:
        """May new requests go here? Unknown counts: it is decided by its first probe."""
        return self.health != UNHEALTHY and not self.draining

    @property
    def pinnable(self) -> bool:
        """May an affinity cookie keep sending here? Yes while healthy or draining."""
        return self.health != UNHEALTHY


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
        self.byKey: dict[str, Member] = {m.key: m for m in self.members}
        self._next = 0

    def healthy(self) -> list[Member]:
        return [m for m in self.members if m.available]

    def pick(self, exclude: Iterable[Member] = ()) -> Member | None:
        """The next available member in round-robin order, or None."""
        members = self.members
        n = len(members)
        if n == 0:
            return None
        excluded = tuple(exclude)
        start = self._next
        for i in range(n):
            m = members[(start + i) % n]
            if m.available and m not in excluded:
                self._next = (start + i + 1) % n
                return m
        return None

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

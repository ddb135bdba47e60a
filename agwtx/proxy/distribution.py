"""
Load distribution policies (Azure's C{loadDistributionPolicies}): how a rule
that names one spreads new requests and WebSocket handshakes over the
members of the policy's target pools.

Every member of a target pool weighs that target's C{weightPerServer}
(Azure's name: the weight is per server, so a pool of three members at
weight 2 draws six shares against a pool of two members at weight 3).  Only
members that may take new requests count (L{Member.available}: not
unhealthy, not draining).  The algorithms:

  - C{RoundRobin}: smooth weighted round robin (nginx's), over every
    available member of every target: with equal weights, plain round
    robin; with weights, each member's share in any window is its weight's
    share, evenly interleaved.  Members at their connection cap
    (C{maxConnectionsPerServer}) are passed over while others have room.
  - C{LeastConnections}: the members with the fewest open requests and
    WebSockets for their weight (L{Member.inflight} / weight); ties, as
    under light load, by smooth weighted round robin among them.
  - C{IpHash}: weighted rendezvous hashing (highest random weight) of the
    client address (the one the gateway established: PROXY protocol or a
    trusted forwarder's X-Forwarded-For) with each member: one address goes
    to one member while the member set is unchanged; when a member is
    added, only the addresses it now wins move (about its weight's share),
    and when one goes away (removed, unhealthy, draining) only its own
    addresses move, each to its next best member.

A policy picks the first member of a request (or handshake); an affinity
cookie still wins when the rule's settings have C{cookieBasedAffinity}.
A retry after a failure (L{agwtx.proxy.pool.Lease.failover}) goes to another
member of the same pool, as for a rule without a policy.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, Sequence

from agwtx.proxy.pool import Member

__all__ = ["ALGORITHMS", "Distributor"]

ALGORITHMS = ("RoundRobin", "LeastConnections", "IpHash")

_TWO64 = float(1 << 64)


def _hash(client: bytes, member: bytes) -> int:
    """A 64-bit hash of a client address and a member, the same in every process and worker."""
    return int.from_bytes(hashlib.blake2b(client + b"|" + member, digest_size=8).digest(), "big")


class Distributor:
    """
    The member choices of one policy for one rule: C{targets} are
    (target, weight) pairs, each target having a pool state (C{.state},
    read live, so members added, drained or dropped on reload count at
    once).  L{pick} returns the member and the target whose pool it is in.
    """

    def __init__(self, name: str, algorithm: str, targets: Sequence[tuple[Any, int]]) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown load distribution algorithm {algorithm!r}")
        self.name = name
        self.algorithm = algorithm
        self.targets = tuple(targets)
        self._current: dict[Member, int] = {}
        """Smooth weighted round robin: each member's current weight."""
        self._pick = {
            "RoundRobin": self.pickRoundRobin,
            "LeastConnections": self.pickLeastConnections,
            "IpHash": self.pickIpHash,
        }[algorithm]

    def pick(self, client: str) -> tuple[Member, Any] | None:
        """
        The member for a new request from C{client} (an address as text),
        and the target whose pool it is in; None when no member is available.
        """
        return self._pick(client)

    def _available(self) -> list[tuple[Member, Any, int]]:
        return [
            (m, target, weight)
            for target, weight in self.targets
            for m in target.state.members
            if m.available
        ]

    def _smooth(self, candidates: list[tuple[Member, Any, int]]) -> tuple[Member, Any]:
        """Smooth weighted round robin among C{candidates} (not empty)."""
        current = self._current
        total = 0
        best = None
        bestWeight = 0
        for entry in candidates:
            member, _, weight = entry
            total += weight
            value = current.get(member, 0) + weight
            current[member] = value
            if best is None or value > bestWeight:
                best, bestWeight = entry, value
        assert best is not None
        current[best[0]] = bestWeight - total
        if len(current) > 4 * len(candidates) + 64:
            # members dropped by reloads: forget them
            keep = {m for m, _, _ in self._available()}
            for key in [k for k in current if k not in keep]:
                del current[key]
        return best[0], best[1]

    def pickRoundRobin(self, client: str = "") -> tuple[Member, Any] | None:
        available = self._available()
        if not available:
            return None
        roomy = [entry for entry in available if entry[0].hasRoom]
        return self._smooth(roomy or available)

    def pickLeastConnections(self, client: str = "") -> tuple[Member, Any] | None:
        available = self._available()
        if not available:
            return None
        least = min(m.inflight / weight for m, _, weight in available)
        return self._smooth([entry for entry in available if entry[0].inflight / entry[2] == least])

    def pickIpHash(self, client: str) -> tuple[Member, Any] | None:
        key = client.encode("ascii", "replace")
        best = None
        bestScore = -1.0
        for target, weight in self.targets:
            for m in target.state.members:
                if not m.available:
                    continue
                u = (_hash(key, m.hostHeader + b":%d" % m.port) + 0.5) / _TWO64
                score = -weight / math.log(u)
                if score > bestScore:
                    best, bestScore = (m, target), score
        return best

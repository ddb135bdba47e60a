"""
Connection limits: C{[gateway] maxConnections} (client connections one
gateway process holds) and C{maxConnectionsPerClient} (from one client
address; addresses in C{trustedProxies} are exempt, as a CDN or an L7
proxy in front carries many clients on its own address).

A connection over a limit is closed as soon as its HTTP channel is
connected, before a byte is read (L{agwtx.http.channel.GatewayChannel.connectionMade}:
behind the PROXY protocol, that is once the header named the client, which
is the address counted), counted in
C{agw_connections_refused_total{reason}}, and logged at most once per
L{LOG_INTERVAL} seconds with the number refused since the last line, so a
flood does not flood the log too.

Each accepted connection gets a L{ConnectionSlot}; whoever owns the
transport when it closes (the HTTP channel, or the WebSocket bridge after
a handover) releases it.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from agwtx.runtime.ratelog import LOG_INTERVAL, RateLimitedLog

__all__ = ["LOG_INTERVAL", "ConnectionLimits", "ConnectionSlot"]


class ConnectionSlot:
    """One accepted client connection, counted until L{release}d (idempotent)."""

    __slots__ = ("limits", "client")

    def __init__(self, limits: ConnectionLimits, client: str | None) -> None:
        self.limits: ConnectionLimits | None = limits
        self.client = client

    def release(self) -> None:
        limits, self.limits = self.limits, None
        if limits is not None:
            limits._release(self.client)


class ConnectionLimits:
    """The connection counts of one gateway process, checked at accept time."""

    log = Logger(namespace="agw.limits")

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.total = 0
        self.perClient: dict[str, int] = {}
        self._refusals = RateLimitedLog()

    def acquire(self, client: str | None) -> ConnectionSlot | None:
        """
        A slot for a new connection from C{client} (an IP address as text,
        None for a unix socket), or None when it is over a limit.
        """
        gateway = self.ctx.config.gateway
        if self.total >= gateway.maxConnections:
            self._refused("maxConnections", client, gateway.maxConnections)
            return None
        perClient = gateway.maxConnectionsPerClient
        if client is None or not perClient or gateway.isTrustedProxy(client):
            counted = None
        else:
            if self.perClient.get(client, 0) >= perClient:
                self._refused("maxConnectionsPerClient", client, perClient)
                return None
            self.perClient[client] = self.perClient.get(client, 0) + 1
            counted = client
        self.total += 1
        return ConnectionSlot(self, counted)

    def _release(self, client: str | None) -> None:
        self.total -= 1
        if client is not None:
            left = self.perClient[client] - 1
            if left:
                self.perClient[client] = left
            else:
                del self.perClient[client]

    def _refused(self, reason: str, client: str | None, limit: int) -> None:
        self.ctx.metrics.connectionsRefused.labels(reason).inc()
        held = self._refusals.due(self.ctx.reactor.seconds())
        if held is None:
            return
        self.log.warn(
            "connection from {client} refused: [gateway] {reason} = {limit} reached "
            "({count} refused since the last such line; at most one line per {interval:g} s)",
            client=client or "-",
            reason=reason,
            limit=limit,
            count=held + 1,
            interval=LOG_INTERVAL,
        )

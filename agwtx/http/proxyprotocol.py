"""
The PROXY protocol (v1 and v2) on frontend ports: a layer-4 balancer in
front of the gateway starts each connection with a header naming the
client, and that address becomes the connection's peer for everything above
(X-Forwarded-For, the access log, rewrite variables, plugins, /status).

Twisted's parsers (C{twisted.protocols.haproxy}) read the header; the
wrapper around them is the gateway's own because Twisted's
C{HAProxyProtocolWrapper} believes a header from anyone, closes a
connection whose first read is shorter than a v2 signature, connects the
protocol above before the header has arrived (so TLS and HTTP timers start
early) and takes what its v1 parser returns unchecked (C{300.1.1.1}, port
99999).  Here:

  - a connection from outside C{proxyProtocolSources} is closed before a
    byte is read;
  - the header must arrive whole within C{[gateway] requestHeaderTimeout};
  - a header that is malformed, or names an address that is not one, closes
    the connection; nothing is served;
  - C{UNKNOWN} (v1) and C{LOCAL} (v2, a balancer's own health check) keep
    the balancer's address as the peer;
  - the protocol above (TLS, then HTTP; or HTTP) is connected only once the
    header is read, so the PROXY header comes before the TLS handshake.

Refusals are logged at most once per L{LOG_INTERVAL} seconds per port and
reason, with the count of those not logged, so a scanner cannot flood the log.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, providedBy

from agwtx.compat.twistedprivate import (
    HAProxyProtocolWrapper,
    HAProxyWrappingFactory,
    ProxyInfo,
    V1Parser,
    V2Parser,
)
from agwtx.config.model import IPNetwork, inNetworks
from agwtx.runtime.ratelog import LOG_INTERVAL, RateLimitedLog

__all__ = ["LOG_INTERVAL", "ProxyProtocolFactory", "checkedSource"]

log = Logger(namespace="agw.proxyprotocol")

_V2_SIGNATURE = V2Parser.PREFIX
_V1_SIGNATURE = V1Parser.PROXYSTR


def checkedSource(info: ProxyInfo) -> IAddress | None:
    """
    The client address of a parsed header, or None for one that names no
    client (C{UNKNOWN}, C{LOCAL}, a UNIX socket).  Raises C{ValueError} for
    an address Twisted's parser let through that is not one.
    """
    source = info.source
    if not isinstance(source, (IPv4Address, IPv6Address)):
        return None
    ip = ipaddress.ip_address(source.host)
    if (ip.version == 4) != isinstance(source, IPv4Address):
        raise ValueError("address family does not match the protocol")
    if not 0 <= source.port <= 65535:
        raise ValueError("port out of range")
    return source


class _ProxyHeaderProtocol(HAProxyProtocolWrapper):
    """One connection: reads the PROXY header, then relays to the protocol above."""

    factory: ProxyProtocolFactory
    _timer: Any = None
    _pending = b""
    _open = False
    _closed = False

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection without connecting the wrapped protocol.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)

    def connectionMade(self) -> None:
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        if not inNetworks(getattr(peer, "host", ""), self.factory.sources):
            self._refuse("source not in proxyProtocolSources")
            return
        self._timer = self.factory.clock.callLater(self.factory.headerTimeout(), self._timedOut)

    def _timedOut(self) -> None:
        self._timer = None
        self._refuse(f"no complete PROXY header within {self.factory.headerTimeout():g}s")

    def _refuse(self, why: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.factory.refused(self.transport.getPeer(), why)  # type: ignore[union-attr]
        self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._open:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._closed:
            return
        parser = self._parser
        if parser is None:
            data = self._pending + data
            if data[:12] == _V2_SIGNATURE[: len(data)] and len(data) < 16:
                self._pending = data  # a v2 header arriving in pieces
                return
            if data[:5] == _V1_SIGNATURE[: len(data)] and len(data) < 6:
                self._pending = data
                return
            self._pending = b""
            if data[:12] == _V2_SIGNATURE and ord(data[12:13]) & 0xF0 == 0x20:
                self._parser = parser = V2Parser()
            elif data[:6] == _V1_SIGNATURE + b" ":
                self._parser = parser = V1Parser()
            else:
                self._refuse("no PROXY header")
                return
        try:
            if isinstance(parser, V1Parser) and (parser.buffer + data).startswith(b"PROXY UNKNOWN\r\n"):
                # The short UNKNOWN form, which Twisted's parser refuses.
                rest = (parser.buffer + data)[len(b"PROXY UNKNOWN\r\n") :]
                info: ProxyInfo | None = ProxyInfo(b"PROXY UNKNOWN", None, None)
            else:
                info, rest = parser.feed(data)
            if info is not None:
                source = checkedSource(info)
                if source is None:
                    info = ProxyInfo(info.header, None, None)
        except Exception:
            self._refuse("malformed PROXY header")
            return
        if info is None:
            return
        self._proxyInfo = info
        self._open = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self.wrappedProtocol.makeConnection(self)
        if rest and not self.disconnecting:
            self.wrappedProtocol.dataReceived(rest)

    def connectionLost(self, reason: Failure = Failure(ConnectionError())) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self._open:
            super().connectionLost(reason)
            return
        self.factory.unregisterProtocol(self)
        self.wrappedProtocol = None  # type: ignore[assignment]


class ProxyProtocolFactory(HAProxyWrappingFactory):
    """
    Wraps a frontend port's factory (the Site, or TLS around it).  C{sources}
    may be replaced at any time (reload): new connections use the new list.
    """

    protocol = _ProxyHeaderProtocol
    noisy = False

    def __init__(
        self,
        wrappedFactory: Any,
        sources: tuple[IPNetwork, ...],
        clock: Any,
        headerTimeout: Callable[[], float],
        port: str,
    ) -> None:
        super().__init__(wrappedFactory)
        self.sources = sources
        self.clock = clock
        self.headerTimeout = headerTimeout
        self.port = port
        self._refusals = RateLimitedLog()

    def refused(self, peer: Any, why: str) -> None:
        """Log a refusal, at most once per L{LOG_INTERVAL} for each reason."""
        unlogged = self._refusals.due(self.clock.seconds(), why)
        if unlogged is None:
            return
        log.warn(
            "frontendPort {port}: connection from {peer} closed: {why}"
            " ({unlogged} more since the last such line)",
            port=self.port,
            peer=getattr(peer, "host", str(peer)),
            why=why,
            unlogged=unlogged,
        )

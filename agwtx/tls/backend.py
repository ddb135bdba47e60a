"""
End-to-end TLS to backends (C{backendHttpSettings.protocol = Https}).

Backend (client) policy
=======================

  - SNI and the name verified: C{hostName} of the settings when set, else
    the member's host.  For an IP literal no SNI is sent and the certificate
    must name the IP address (an C{iPAddress} subjectAltName): Twisted's
    L{optionsForClientTLS} verifies IP addresses with C{service_identity}'s
    C{IPAddress_ID}.
  - Trust: the platform's store unless C{trustedRootCertificates} are named;
    then only those roots.  C{verifyCertificate = false} turns verification
    off (a warning is logged once per settings when the connector is built).
  - A connector (L{BackendTls.connect}) hands the caller's factory a
    connected protocol only once the handshake has completed and the
    certificate has been verified; a handshake that fails (or takes longer
    than the connect timeout) reaches the factory's C{clientConnectionFailed}
    with a L{TlsHandshakeError}.  So the proxy, the WebSocket bridge and the
    health prober see an unverifiable backend exactly as one that refuses
    connections: a connect failure (the proxy answers 502).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import (
    IConnector,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from agwtx.config.model import (
    BackendHttpSettings,
)
from agwtx.config.certificates import spki
from agwtx.proxy.pool import hostForHeader

log = Logger(namespace="agw.tls")

HTTP11 = b"http/1.1"


class TlsHandshakeError(ConnectError):
    """The TCP connection to a backend was made but TLS could not be set up."""

    def __str__(self) -> str:
        return str(self.args[0])


# -- end-to-end TLS (backends) --------------------------------------------------


def describeTlsFailure(reason: Failure) -> str:
    """A short, human explanation of why a backend handshake failed."""
    value = reason.value
    if isinstance(value, SSL.Error):
        details = value.args[0] if value.args else None
        if isinstance(details, list):
            texts = [str(d[2]) for d in details if isinstance(d, tuple) and len(d) >= 3 and d[2]]
            if texts:
                return ", ".join(texts)
        return str(value) or type(value).__name__
    if isinstance(value, VerificationError) and value.errors:
        ids = []
        for m in value.errors:
            mid = m.mismatched_id
            ids.append(str(getattr(mid, "hostname", None) or getattr(mid, "ip", None) or mid))
        return "the certificate is not valid for " + ", ".join(ids)
    if isinstance(value, ConnectionClosed):
        return "the connection closed during the TLS handshake"
    return str(value) or type(value).__name__


@implementer(IHandshakeListener)
class _AfterHandshake(Protocol):
    """
    Sits between TLS and the caller's protocol: the caller's protocol is
    connected only once the handshake (verification included) has completed.
    """

    def __init__(self, factory: _HandshakeFirstFactory, inner: Any) -> None:
        self.factory = factory
        self.inner = inner
        self.established = False
        self.timer: Any = None
        self.timedOut = False

    def connectionMade(self) -> None:
        self.timer = self.factory.clock.callLater(self.factory.timeout, self._timeUp)

    def _timeUp(self) -> None:
        self.timer = None
        self.timedOut = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        if getattr(self.transport, "disconnecting", False):
            # Twisted before 26 checks the host name after OpenSSL's handshake
            # and aborts (failVerification) before telling us it completed: a
            # failed handshake, reported by connectionLost with that reason.
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.established = True
        self.factory.established = True
        self.inner.makeConnection(self.transport)
        if IHandshakeListener.providedBy(self.inner):
            self.inner.handshakeCompleted()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.established:
            self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.established:
            self.inner.connectionLost(reason)
            return
        if self.timedOut:
            detail = f"the TLS handshake did not complete within {self.factory.timeout:g}s"
        else:
            detail = describeTlsFailure(reason)
        self.factory.handshakeFailed(detail)


class _HandshakeFirstFactory(ClientFactory):
    """Wraps the caller's factory for one connection attempt (see L{_AfterHandshake})."""

    noisy = False

    def __init__(self, inner: Any, clock: Any, timeout: float, where: str) -> None:
        self.inner = inner
        self.clock = clock
        self.timeout = timeout
        self.where = where
        self.connector: IConnector | None = None
        self.established = False

    def startFactory(self) -> None:
        self.inner.doStart()

    def stopFactory(self) -> None:
        self.inner.doStop()

    def startedConnecting(self, connector: IConnector) -> None:
        self.connector = connector
        started = getattr(self.inner, "startedConnecting", None)
        if started is not None:
            started(connector)

    def buildProtocol(self, addr: Any) -> Protocol | None:
        inner = self.inner.buildProtocol(addr)
        if inner is None:
            return None
        return _AfterHandshake(self, inner)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        failed = getattr(self.inner, "clientConnectionFailed", None)
        if failed is not None:
            failed(connector, reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        # Before the handshake, the caller has already heard clientConnectionFailed.
        lost = getattr(self.inner, "clientConnectionLost", None)
        if self.established and lost is not None:
            lost(connector, reason)

    def handshakeFailed(self, detail: str) -> None:
        log.warn("TLS to backend {where} failed: {detail}", where=self.where, detail=detail)
        failed = getattr(self.inner, "clientConnectionFailed", None)
        if failed is not None:
            failed(self.connector, Failure(TlsHandshakeError(None, f"TLS handshake failed: {detail}")))


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """Encrypt without verifying (C{verifyCertificate = false}); SNI still sent."""

    def __init__(self, options: CertificateOptions, serverName: bytes | None) -> None:
        self.options = options
        self.serverName = serverName

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        # Not options.clientConnectionForTLS: CertificateOptions has it only
        # from Twisted 26 on. The TLS factory puts the connection in connect state.
        conn = SSL.Connection(self.options.getContext(), None)
        if self.serverName is not None:
            conn.set_tlsext_host_name(self.serverName)
        return conn


class BackendTls:
    """
    How to reach the members of one C{backendHttpSettings} over TLS.
    L{connect} has the connector signature the upstream pool, the WebSocket
    bridge and the health prober use: C{(host, port, factory, timeout)}.
    """

    def __init__(
        self,
        settings: BackendHttpSettings,
        roots: Sequence[x509.Certificate] | None,
        reactor: Any,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        self.verify = settings.verifyCertificate
        self.trustRoot: Any = None
        if self.verify:
            if roots:
                self.trustRoot = trustRootFromCertificates(
                    [Certificate(X509.from_cryptography(c)) for c in roots]
                )
            else:
                self.trustRoot = platformTrust()
        identity = repr(
            (
                settings.hostName,
                self.verify,
                settings.trustedRootCertificates,
                sorted(spki(c.public_key()).hex() for c in roots or ()),
            )
        )
        self.key = f"tls:{settings.name}:{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
        """Keys idle upstream connections apart from those made with other TLS settings."""
        self._creators: dict[str, Any] = {}
        self._unverifiedOptions: CertificateOptions | None = None
        if not self.verify:
            self._unverifiedOptions = CertificateOptions(
                raiseMinimumTo=TLSVersion.TLSv1_2, acceptableProtocols=[HTTP11]
            )
            log.warn(
                "backendHttpSettings {settings}: verifyCertificate is false: backend "
                "certificates are NOT verified (encrypted, but not authenticated)",
                settings=settings.name,
            )

    def serverNameFor(self, host: str) -> str:
        """The name sent as SNI and verified: C{hostName}, else the member's host."""
        return self.settings.hostName or host

    def creatorFor(self, host: str) -> Any:
        """The (cached) client connection creator for a member host."""
        creator = self._creators.get(host)
        if creator is None:
            name = self.serverNameFor(host)
            if self._unverifiedOptions is not None:
                sni = None if isIPAddress(name) or isIPv6Address(name) else name.encode("idna")
                creator = _Unverified(self._unverifiedOptions, sni)
            else:
                creator = optionsForClientTLS(
                    name,
                    trustRoot=self.trustRoot,
                    acceptableProtocols=[HTTP11],
                    extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2},
                )
            self._creators[host] = creator
        return creator

    def connect(self, host: str, port: int, factory: Any, timeout: float) -> IConnector:
        """Start a TLS connection; C{factory} sees it connected after the handshake."""
        where = f"{hostForHeader(host)}:{port}"
        first = _HandshakeFirstFactory(factory, self.reactor, timeout, where)
        tls = TLSMemoryBIOFactory(self.creatorFor(host), True, first, clock=self.reactor)  # type: ignore[arg-type]
        return self.reactor.connectTCP(host, port, tls, timeout=timeout)  # type: ignore[no-any-return]

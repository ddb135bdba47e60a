"""
All TLS objects of one configuration (L{GatewayTls}): the HTTPS listeners'
contexts and one backend connector per settings; a reload builds a new one.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from cryptography import x509
from twisted.internet.interfaces import (
    IProtocolFactory,
)

from agwtx.config.model import (
    BackendHttpSettings,
    GatewayConfig,
)
from agwtx.tls.ocsp import OcspChecker
from agwtx.config.certificates import TlsError, TlsProblem, loadTrustedRoots
from agwtx.tls.backend import BackendTls
from agwtx.tls.server import TlsServerFactory, buildServerTls


class GatewayTls:
    """
    All TLS objects of one configuration, built (and every certificate
    loaded) at once; a reload builds a new one.

    @raise TlsError: from the constructor when a certificate cannot be used.
    @param previous: the running configuration's, whose OCSP checker is kept.
    """

    def __init__(
        self,
        config: GatewayConfig,
        reactor: Any,
        now: datetime.datetime | None = None,
        previous: GatewayTls | None = None,
    ) -> None:
        self.config = config
        self.reactor = reactor
        self.revocation: OcspChecker | None = None
        if any(p.verifyClientRevocation == "OCSP" for p in config.sslProfiles.values()):
            # One checker for the process: a reload keeps its cache of answers
            # and its connections to the responders.
            kept = previous.revocation if previous is not None else None
            self.revocation = kept if kept is not None else OcspChecker(reactor)
        self.server = buildServerTls(config, now, self.revocation)
        problems: list[TlsProblem] = []
        self.roots: dict[str, list[x509.Certificate]] = {}
        for name, root in config.trustedRootCertificates.items():
            try:
                self.roots[name] = loadTrustedRoots(root)
            except TlsError as e:
                problems.extend(e.problems)
        if problems:
            raise TlsError(problems)
        self.backends: dict[str, BackendTls] = {}

    def wrap(self, port: str, factory: IProtocolFactory) -> Any:
        """The factory to listen with on frontend port C{port}: TLS around it for Https."""
        serverTls = self.server.get(port)
        if serverTls is None:
            return factory
        return TlsServerFactory(serverTls, factory, self.reactor)

    def backendTls(self, settings: BackendHttpSettings) -> BackendTls:
        """The (one per settings) L{BackendTls}, whatever the settings' protocol."""
        tls = self.backends.get(settings.name)
        if tls is None or tls.settings != settings:
            roots: list[x509.Certificate] | None = None
            if settings.trustedRootCertificates:
                roots = [c for name in settings.trustedRootCertificates for c in self.roots[name]]
            tls = self.backends[settings.name] = BackendTls(settings, roots, self.reactor)
        return tls

    def connectorFor(self, settings: BackendHttpSettings) -> tuple[Callable[..., Any] | None, str]:
        """
        C{(connector, tlsKey)} for L{agwtx.routing.router.buildRouters}: TLS for
        C{protocol = Https}, C{(None, "")} (plain TCP) otherwise.
        """
        if settings.protocol != "Https":
            return None, ""
        tls = self.backendTls(settings)
        return tls.connect, tls.key

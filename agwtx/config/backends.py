"""
Where requests go: C{[backendAddressPool:NAME]}, C{[probe:NAME]} and
C{[backendHttpSettings:NAME]}, and the check that settings and their probe
agree.
"""

from __future__ import annotations

from agwtx.config.builder import _Builder, _kwargs
from agwtx.config.ini import _Section
from agwtx.config.model import BackendAddressPool, BackendHttpSettings, Probe
from agwtx.config.values import (
    CONNECTIONS_MAX,
    SECONDS_MAX,
    UNHEALTHY_THRESHOLD_MAX,
    _got,
    _parseCookieName,
    _parseEnabled,
    _parsePath,
    _parsePort,
    parseBackendAddresses,
    parseBool,
    parseByteSize,
    parseDnsName,
    parseDuration,
    parseInt,
    parseList,
    parseProtocol,
    parseStatusRanges,
)


class _BackendSections(_Builder):
    """Builds pools, probes and backend settings, and checks settings against their probe."""

    def _backendAddressPool(self, sec: _Section) -> BackendAddressPool:
        assert sec.name is not None
        return BackendAddressPool(
            **_kwargs(
                name=sec.name,
                backendAddresses=sec.get("backendAddresses", parseBackendAddresses),
            )
        )

    def _probe(self, sec: _Section) -> Probe:
        assert sec.name is not None
        pick = sec.get("pickHostNameFromBackendHttpSettings", parseBool)
        host = sec.get("host", parseDnsName)
        if pick and sec.given("host"):
            sec.error(
                sec.later("host", "pickHostNameFromBackendHttpSettings"),
                "expected host or pickHostNameFromBackendHttpSettings = true, not both",
            )
        fields = _kwargs(
            name=sec.name,
            protocol=sec.get("protocol", parseProtocol),
            host=host,
            pickHostNameFromBackendHttpSettings=pick,
            path=sec.get("path", _parsePath),
            port=sec.get("port", _parsePort),
            interval=sec.get("interval", lambda t: parseDuration(t, 1, SECONDS_MAX)),
            timeout=sec.get("timeout", lambda t: parseDuration(t, 1, SECONDS_MAX)),
            unhealthyThreshold=sec.get(
                "unhealthyThreshold", lambda t: parseInt(t, 1, UNHEALTHY_THRESHOLD_MAX)
            ),
            statusCodes=sec.get("match.statusCodes", parseStatusRanges),
            body=sec.raw("match.body"),
        )
        if pick:
            fields["host"] = None  # the host comes from the settings, not the default
        return Probe(**fields)

    def _backendHttpSettings(self, sec: _Section) -> BackendHttpSettings:
        assert sec.name is not None
        pick = sec.get("pickHostNameFromBackendAddress", parseBool)
        if pick and sec.given("hostName"):
            sec.error(
                sec.later("hostName", "pickHostNameFromBackendAddress"),
                "expected hostName or pickHostNameFromBackendAddress = true, not both",
            )
        roots = [
            self.refName(sec, "trustedRootCertificates", "trustedRootCertificate", root) or root
            for root in parseList(sec.raw("trustedRootCertificates") or "")
        ]
        return BackendHttpSettings(
            **_kwargs(
                name=sec.name,
                port=sec.get("port", _parsePort),
                protocol=sec.get("protocol", parseProtocol),
                cookieBasedAffinity=sec.get("cookieBasedAffinity", _parseEnabled),
                affinityCookieName=sec.get("affinityCookieName", _parseCookieName),
                requestTimeout=sec.get("requestTimeout", lambda t: parseDuration(t, 1, SECONDS_MAX)),
                connectTimeout=sec.get("connectTimeout", lambda t: parseDuration(t, 0.1, 3600)),
                probe=self.ref(sec, "probe", "probe"),
                hostName=sec.get("hostName", parseDnsName),
                pickHostNameFromBackendAddress=pick,
                connectionDraining=sec.get("connectionDraining", lambda t: parseDuration(t, 0, 3600)),
                path=sec.get("path", _parsePath),
                trustedRootCertificates=tuple(roots),
                verifyCertificate=sec.get("verifyCertificate", parseBool),
                webSocketIdleTimeout=sec.get(
                    "webSocketIdleTimeout", lambda t: parseDuration(t, 1, SECONDS_MAX)
                ),
                webSocketPingInterval=sec.get(
                    "webSocketPingInterval", lambda t: parseDuration(t, 0, SECONDS_MAX)
                ),
                webSocketMaxMessageSize=sec.get("webSocketMaxMessageSize", parseByteSize),
                maxConnectionsPerServer=sec.get(
                    "maxConnectionsPerServer", lambda t: parseInt(t, 0, CONNECTIONS_MAX)
                ),
                maxQueuedRequestsPerServer=sec.get(
                    "maxQueuedRequestsPerServer", lambda t: parseInt(t, 0, CONNECTIONS_MAX)
                ),
                queueTimeout=sec.get("queueTimeout", lambda t: parseDuration(t, 0.001, 3600)),
                maxIdleConnectionsPerServer=sec.get(
                    "maxIdleConnectionsPerServer", lambda t: parseInt(t, 0, CONNECTIONS_MAX)
                ),
                idleConnectionTimeout=sec.get("idleConnectionTimeout", lambda t: parseDuration(t, 1, 3600)),
            )
        )

    # -- cross-checks -------------------------------------------------------

    def _checkSettings(self) -> None:
        for settings, sec in self.built["backendHttpSettings"].values():
            if settings.trustedRootCertificates and settings.protocol == "Http":
                sec.error("trustedRootCertificates", "not allowed with protocol Http")
            probe: Probe | None = self.obj("probe", settings.probe)
            if probe is None:
                continue
            if probe.protocol != settings.protocol:
                sec.error(
                    "probe",
                    f"probe {_got(probe.name)} has protocol {probe.protocol}; "
                    f"expected {settings.protocol} like these settings",
                )
            if probe.pickHostNameFromBackendHttpSettings and not (
                settings.hostName or settings.pickHostNameFromBackendAddress
            ):
                sec.error(
                    "probe",
                    f"probe {_got(probe.name)} takes its host name from these settings, but they "
                    "set neither hostName nor pickHostNameFromBackendAddress",
                )

"""
The C{[gateway]} section: process-wide settings (admin endpoint and its
token file, workers, timeouts, connection limits, access log, affinity
secrets, the default SSL policy and custom error pages).
"""

from __future__ import annotations

import os

from agwtx.config.builder import _Builder, _kwargs
from agwtx.config.ini import _Section
from agwtx.config.listeners import _customErrorPages, _sslPolicy
from agwtx.config.model import GatewaySettings
from agwtx.config.values import (
    _parseAccessLog,
    _parseAccessLogFormat,
    _parseRequestIdHeader,
    _parseSecret,
    _parseSecrets,
    _parseWorkers,
    adminReach,
    parseBool,
    parseDuration,
    parseEndpoint,
    parseInt,
    parseNetworks,
)


REQUEST_LINE_RANGE = (1024, 1048576)
"""C{maxRequestLineSize}: 1 KiB .. 1 MiB."""
REQUEST_HEADER_RANGE = (1024, 1048576)
"""C{maxRequestHeaderSize}: 1 KiB .. 1 MiB."""
REQUEST_HEADER_COUNT_RANGE = (1, 10000)
"""C{maxRequestHeaderCount}."""
REQUEST_BODY_RANGE = (0, 2**62)
"""C{maxRequestBodySize}: 0 (no limit) .. 2**62 bytes."""


class _GatewaySection(_Builder):
    """Builds the C{[gateway]} section."""

    def _gateway(self, sec: _Section) -> GatewaySettings:
        admin = sec.raw("admin")
        adminInfo = sec.get("admin", parseEndpoint)
        if adminInfo is None:
            admin = None
        adminToken = self._adminToken(sec)
        if (
            adminInfo is not None
            and adminToken is None
            and sec.given("admin")
            and not sec.given("adminToken")
        ):
            reach = adminReach(adminInfo)
            if reach is not None:
                sec.error(
                    "admin",
                    f"the admin endpoint would be reachable {reach} without authentication; "
                    "set adminToken = /path/to/token-file, or listen on loopback (interface=127.0.0.1) "
                    "or a unix: socket",
                )
        secrets: tuple[bytes, ...] | None = None
        if sec.given("affinitySecret") and sec.given("affinitySecrets"):
            sec.error(
                sec.later("affinitySecret", "affinitySecrets"),
                "expected affinitySecret or affinitySecrets, not both",
            )
        elif sec.given("affinitySecrets"):
            secrets = sec.get("affinitySecrets", _parseSecrets)
        else:
            one = sec.get("affinitySecret", _parseSecret)
            secrets = (one,) if one is not None else None
        return GatewaySettings(
            **_kwargs(
                admin=admin.strip() if admin else None,
                adminToken=adminToken,
                adminTokenForReads=sec.get("adminTokenForReads", parseBool),
                accessLog=sec.get("accessLog", _parseAccessLog),
                affinitySecrets=secrets,
                workers=sec.get("workers", _parseWorkers),
                shutdownGracePeriod=sec.get("shutdownGracePeriod", lambda t: parseDuration(t, 0, 3600)),
                requestHeaderTimeout=sec.get("requestHeaderTimeout", lambda t: parseDuration(t, 1, 3600)),
                requestBodyTimeout=sec.get("requestBodyTimeout", lambda t: parseDuration(t, 1, 3600)),
                maxConnections=sec.get("maxConnections", lambda t: parseInt(t, 1, 1_000_000)),
                maxConnectionsPerClient=sec.get(
                    "maxConnectionsPerClient", lambda t: parseInt(t, 0, 1_000_000)
                ),
                trustedProxies=sec.get("trustedProxies", parseNetworks),
                accessLogFormat=sec.get("accessLogFormat", _parseAccessLogFormat),
                requestIdHeader=sec.get("requestIdHeader", _parseRequestIdHeader),
                trustClientRequestId=sec.get("trustClientRequestId", parseBool),
                customErrorPages=_customErrorPages(sec),
                lameDuckPeriod=sec.get("lameDuckPeriod", lambda t: parseDuration(t, 0, 3600)),
                watchConfig=sec.get("watchConfig", parseBool),
                sslPolicy=_sslPolicy(sec),
                allowUnderscoresInHeaders=sec.get("allowUnderscoresInHeaders", parseBool),
                maxRequestLineSize=sec.get(
                    "maxRequestLineSize", lambda t: parseInt(t, *REQUEST_LINE_RANGE, "bytes")
                ),
                maxRequestHeaderSize=sec.get(
                    "maxRequestHeaderSize", lambda t: parseInt(t, *REQUEST_HEADER_RANGE, "bytes")
                ),
                maxRequestHeaderCount=sec.get(
                    "maxRequestHeaderCount", lambda t: parseInt(t, *REQUEST_HEADER_COUNT_RANGE)
                ),
                maxRequestBodySize=sec.get(
                    "maxRequestBodySize", lambda t: parseInt(t, *REQUEST_BODY_RANGE, "bytes")
                ),
                enableHttp2=sec.get("enableHttp2", parseBool),
            )
        )

    def _adminToken(self, sec: _Section) -> bytes | None:
        """
        The admin bearer token from the file C{adminToken} names, read now
        (at every load and reload).  A file others may read is refused, as
        PostgreSQL refuses such key files: the token is a password.
        """
        path = sec.path("adminToken")
        if path is None:
            return None
        try:
            mode = os.stat(path).st_mode
            with open(path, "rb") as f:
                data = f.read(4097)
        except OSError as e:
            sec.error("adminToken", f"cannot read {path!r}: {e.strerror or e}")
            return None
        if mode & 0o006:
            sec.error(
                "adminToken",
                f"{path} is readable or writable by others (mode {mode & 0o777:04o}); "
                f"make it readable by the service only (chmod 600, or 640 with a group of its own)",
            )
            return None
        token = data.strip()
        if len(token) < 16 or len(token) > 4096 or any(b <= 32 or b >= 127 for b in token):
            # Never echo a secret back.
            sec.error(
                "adminToken",
                f"expected the file {path} to hold one token of 16..4096 printable ASCII "
                f"characters without spaces, got {len(token)} byte(s)",
            )
            return None
        return token

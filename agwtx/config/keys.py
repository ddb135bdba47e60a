"""
The key table: which section kinds exist, which keys each accepts
(L{_KEYS}, L{_PATTERN_KEYS}).  docs/configuration.rst is checked against
it by tests/test_docs.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------

_KINDS = (
    "backendAddressPool",
    "backendHttpSettings",
    "frontendPort",
    "gateway",
    "httpListener",
    "loadDistributionPolicy",
    "probe",
    "redirectConfiguration",
    "requestRoutingRule",
    "rewriteRuleSet",
    "sslCertificate",
    "sslProfile",
    "trustedClientCertificate",
    "trustedRootCertificate",
    "urlPathMap",
)
_KIND_BY_LOWER = {kind.lower(): kind for kind in _KINDS}

_POLICY_KEYS = ("sslPolicyType", "sslPolicyName", "sslMinProtocolVersion", "sslCipherSuites")

_KEYS: Mapping[str, tuple[str, ...]] = {
    "gateway": (
        "accessLog",
        "admin",
        "adminToken",
        "adminTokenForReads",
        "affinitySecret",
        "affinitySecrets",
        "workers",
        "shutdownGracePeriod",
        "requestHeaderTimeout",
        "requestBodyTimeout",
        "maxConnections",
        "maxConnectionsPerClient",
        "trustedProxies",
        "accessLogFormat",
        "requestIdHeader",
        "trustClientRequestId",
        "lameDuckPeriod",
        "watchConfig",
        *_POLICY_KEYS,
        "allowUnderscoresInHeaders",
        "maxRequestLineSize",
        "maxRequestHeaderSize",
        "maxRequestHeaderCount",
        "maxRequestBodySize",
        "enableHttp2",
    ),
    "frontendPort": ("port", "interface", "endpoint", "proxyProtocol", "proxyProtocolSources"),
    "sslCertificate": ("certificate", "privateKey", "password"),
    "trustedRootCertificate": ("certificate",),
    "trustedClientCertificate": ("data",),
    "sslProfile": (
        *_POLICY_KEYS,
        "trustedClientCertificates",
        "verifyClientAuthMode",
        "verifyClientCertIssuerDN",
        "verifyClientRevocation",
    ),
    "httpListener": ("frontendPort", "protocol", "hostNames", "hostName", "sslCertificate", "sslProfile"),
    "backendAddressPool": ("backendAddresses",),
    "probe": (
        "protocol",
        "host",
        "pickHostNameFromBackendHttpSettings",
        "path",
        "port",
        "interval",
        "timeout",
        "unhealthyThreshold",
        "match.statusCodes",
        "match.body",
    ),
    "backendHttpSettings": (
        "port",
        "protocol",
        "cookieBasedAffinity",
        "affinityCookieName",
        "requestTimeout",
        "connectTimeout",
        "probe",
        "hostName",
        "pickHostNameFromBackendAddress",
        "connectionDraining",
        "path",
        "trustedRootCertificates",
        "verifyCertificate",
        "webSocketIdleTimeout",
        "webSocketPingInterval",
        "webSocketMaxMessageSize",
        "maxConnectionsPerServer",
        "maxQueuedRequestsPerServer",
        "queueTimeout",
        "maxIdleConnectionsPerServer",
        "idleConnectionTimeout",
    ),
    "redirectConfiguration": (
        "redirectType",
        "targetListener",
        "targetUrl",
        "includePath",
        "includeQueryString",
    ),
    "urlPathMap": (
        "defaultBackendAddressPool",
        "defaultBackendHttpSettings",
        "defaultRedirectConfiguration",
        "defaultLoadDistributionPolicy",
    ),
    "rewriteRuleSet": (),
    "loadDistributionPolicy": ("loadDistributionAlgorithm",),
    "requestRoutingRule": (
        "ruleType",
        "priority",
        "httpListener",
        "backendAddressPool",
        "backendHttpSettings",
        "redirectConfiguration",
        "urlPathMap",
        "rewriteRuleSet",
        "plugin",
        "loadDistributionPolicy",
    ),
}

# Keys that are a prefix plus a user-chosen part, as shown in messages.
_PATTERN_KEYS: Mapping[str, tuple[str, ...]] = {
    "gateway": ("customErrorPage.NNN",),
    "httpListener": ("customErrorPage.NNN",),
    "urlPathMap": ("pathRule.NAME",),
    "requestRoutingRule": ("plugin.KEY",),
    "loadDistributionPolicy": ("target.NAME",),
    "rewriteRuleSet": (
        "rule.NAME.condition",
        "rule.NAME.condition.N",
        "rule.NAME.modifiedPath",
        "rule.NAME.modifiedQueryString",
        "rule.NAME.requestHeader.HEADER",
        "rule.NAME.responseHeader.HEADER",
        "rule.NAME.reroute",
    ),
}

_REWRITE_KEY_RE = re.compile(
    r"rule\.(?P<rule>[^.]*)\.(?:(?P<cond>condition)(?:\.(?P<n>[0-9]+))?"
    r"|(?P<action>requestHeader|responseHeader)\.(?P<header>.*)"
    r"|(?P<url>modifiedPath|modifiedQueryString|reroute))",
    re.IGNORECASE,
)


def _isPatternKey(kind: str, key: str) -> bool:
    lowered = key.lower()
    if kind == "urlPathMap":
        return lowered.startswith("pathrule.") and len(key) > len("pathRule.")
    if kind == "requestRoutingRule":
        return lowered.startswith("plugin.") and len(key) > len("plugin.")
    if kind == "loadDistributionPolicy":
        return lowered.startswith("target.") and len(key) > len("target.")
    if kind == "rewriteRuleSet":
        return _REWRITE_KEY_RE.fullmatch(key) is not None
    if kind in ("gateway", "httpListener"):
        return lowered.startswith(_CUSTOM_ERROR_PREFIX) and len(key) > len(_CUSTOM_ERROR_PREFIX)
    return False


_CUSTOM_ERROR_PREFIX = "customerrorpage."

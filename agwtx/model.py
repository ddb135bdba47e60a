"""
The configuration model: frozen, typed value objects.

L{agwtx.config.loadConfig} builds a L{GatewayConfig} from an INI file once;
nothing in here touches the reactor or a C{ConfigParser}, so runtime code can
share these objects freely and a reload simply builds a new tree.

Names mirror Azure Application Gateway's resource and property names so an
Azure user recognises each of them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal, Mapping, Union

__all__ = [
    "BackendAddress",
    "BackendAddressPool",
    "BackendHttpSettings",
    "FrontendPort",
    "GatewayConfig",
    "GatewaySettings",
    "HttpListener",
    "PathRule",
    "Probe",
    "RedirectConfiguration",
    "RequestRoutingRule",
    "RewriteRule",
    "RewriteRuleSet",
    "SslCertificate",
    "TrustedRootCertificate",
    "UrlPathMap",
]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Protocol = Literal["Http", "Https"]
RuleType = Literal["Basic", "PathBasedRouting", "Plugin"]
RedirectType = Literal["Permanent", "Found", "SeeOther", "Temporary"]

REDIRECT_STATUS: Mapping[str, int] = {
    "Permanent": 301,
    "Found": 302,
    "SeeOther": 303,
    "Temporary": 307,
}


@dataclass(frozen=True)
class GatewaySettings:
    """The C{[gateway]} section: process-wide settings."""

    admin: str | None = None
    """Twisted endpoint string of the admin endpoint (metrics, health), or None."""
    affinitySecret: bytes | None = None
    """HMAC key for affinity cookies; None means generated per process."""
    workers: int = 1
    shutdownGracePeriod: float = 30.0
    requestHeaderTimeout: float = 60.0
    """Seconds a client has from the first byte of a request head to its end (then 408)."""
    accessLog: str = "-"
    """Where access-log lines go: C{-} (standard output), an absolute path,
    C{log} (the twistd log, formatted by it: slower) or C{off}."""
    trustedProxies: tuple[IPNetwork, ...] = ()
    """Address ranges of forwarders (L7 proxies, CDNs) whose forwarding
    headers are believed; empty means no client is trusted."""
    allowUnderscoresInHeaders: bool = False
    """Whether request header fields whose names contain C{_} are forwarded.
    Off (as nginx's C{underscores_in_headers off}): they are dropped, because
    backends that fold C{_} into C{-} (CGI, WSGI, PHP) would read
    C{Transfer_Encoding} or C{X_Forwarded_For} as the real thing."""

    def isTrustedProxy(self, address: str) -> bool:
        """Whether C{address} (an IP address as text) is in L{trustedProxies}."""
        if not self.trustedProxies:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip.version == net.version and ip in net for net in self.trustedProxies)


@dataclass(frozen=True)
class FrontendPort:
    name: str
    endpoint: str
    """A Twisted server endpoint description, e.g. C{tcp:80} or C{systemd:domain=INET:index=0}."""
    port: int | None = None
    """The port number when it was given with C{port = N} (used for X-Forwarded-Port)."""


@dataclass(frozen=True)
class SslCertificate:
    name: str
    certificate: str
    privateKey: str
    password: str | None = None


@dataclass(frozen=True)
class TrustedRootCertificate:
    name: str
    certificate: str


@dataclass(frozen=True)
class HttpListener:
    name: str
    frontendPort: str
    protocol: Protocol = "Http"
    hostNames: tuple[str, ...] = ()
    sslCertificate: str | None = None


@dataclass(frozen=True)
class BackendAddress:
    host: str
    """An IP address or a DNS name."""
    port: int | None = None
    """Overrides the settings' port for this member when given (C{host:port})."""

    def __str__(self) -> str:
        if self.port is None:
            return self.host
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class BackendAddressPool:
    name: str
    backendAddresses: tuple[BackendAddress, ...] = ()


@dataclass(frozen=True)
class Probe:
    name: str
    protocol: Protocol = "Http"
    host: str | None = "127.0.0.1"
    pickHostNameFromBackendHttpSettings: bool = False
    path: str = "/"
    port: int | None = None
    interval: float = 30.0
    timeout: float = 30.0
    unhealthyThreshold: int = 3
    statusCodes: tuple[tuple[int, int], ...] = ((200, 399),)
    body: str | None = None


DEFAULT_PROBE = Probe(name="defaultProbe")


@dataclass(frozen=True)
class BackendHttpSettings:
    name: str
    port: int = 80
    protocol: Protocol = "Http"
    cookieBasedAffinity: bool = False
    affinityCookieName: str = "ApplicationGatewayAffinity"
    requestTimeout: float = 20.0
    probe: str | None = None
    hostName: str | None = None
    pickHostNameFromBackendAddress: bool = False
    connectionDraining: float = 0.0
    path: str | None = None
    trustedRootCertificates: tuple[str, ...] = ()
    verifyCertificate: bool = True
    webSocketIdleTimeout: float = 3600.0
    webSocketPingInterval: float = 0.0
    webSocketMaxMessageSize: int = 0
    """0 means no limit beyond memory-safe streaming."""


@dataclass(frozen=True)
class RedirectConfiguration:
    name: str
    redirectType: RedirectType = "Permanent"
    targetListener: str | None = None
    targetUrl: str | None = None
    includePath: bool = True
    includeQueryString: bool = True


@dataclass(frozen=True)
class PathRule:
    name: str
    paths: tuple[str, ...]
    backendAddressPool: str | None = None
    backendHttpSettings: str | None = None
    redirectConfiguration: str | None = None


@dataclass(frozen=True)
class UrlPathMap:
    name: str
    defaultBackendAddressPool: str | None = None
    defaultBackendHttpSettings: str | None = None
    defaultRedirectConfiguration: str | None = None
    pathRules: tuple[PathRule, ...] = ()


@dataclass(frozen=True)
class RewriteRule:
    name: str
    conditions: tuple[tuple[str, str, bool, bool], ...] = ()
    """(variable, pattern, ignoreCase, negate) tuples; all must hold."""
    requestHeaders: tuple[tuple[str, str | None], ...] = ()
    """(header, value) to set; value None removes the header."""
    responseHeaders: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class RewriteRuleSet:
    name: str
    rules: tuple[RewriteRule, ...] = ()


@dataclass(frozen=True)
class RequestRoutingRule:
    name: str
    httpListener: str
    ruleType: RuleType = "Basic"
    priority: int | None = None
    backendAddressPool: str | None = None
    backendHttpSettings: str | None = None
    redirectConfiguration: str | None = None
    urlPathMap: str | None = None
    rewriteRuleSet: str | None = None
    plugin: str | None = None
    pluginOptions: tuple[tuple[str, str], ...] = ()
    """Keys a routing plugin reads (C{plugin.KEY = value} lines), validated by the plugin."""


@dataclass(frozen=True)
class GatewayConfig:
    """A whole, validated gateway configuration."""

    path: str
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    frontendPorts: Mapping[str, FrontendPort] = field(default_factory=dict)
    sslCertificates: Mapping[str, SslCertificate] = field(default_factory=dict)
    trustedRootCertificates: Mapping[str, TrustedRootCertificate] = field(default_factory=dict)
    httpListeners: Mapping[str, HttpListener] = field(default_factory=dict)
    backendAddressPools: Mapping[str, BackendAddressPool] = field(default_factory=dict)
    backendHttpSettings: Mapping[str, BackendHttpSettings] = field(default_factory=dict)
    probes: Mapping[str, Probe] = field(default_factory=dict)
    redirectConfigurations: Mapping[str, RedirectConfiguration] = field(default_factory=dict)
    urlPathMaps: Mapping[str, UrlPathMap] = field(default_factory=dict)
    rewriteRuleSets: Mapping[str, RewriteRuleSet] = field(default_factory=dict)
    requestRoutingRules: Mapping[str, RequestRoutingRule] = field(default_factory=dict)

"""
The configuration model: frozen, typed value objects.

L{agwtx.config.loader.loadConfig} builds a L{GatewayConfig} from an INI file once;
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
    "CustomErrorPage",
    "FrontendPort",
    "GatewayConfig",
    "GatewaySettings",
    "HttpListener",
    "LoadDistributionPolicy",
    "LoadDistributionTarget",
    "PathRule",
    "Probe",
    "RedirectConfiguration",
    "RequestRoutingRule",
    "RewriteRule",
    "RewriteRuleSet",
    "SslCertificate",
    "SslPolicy",
    "SslProfile",
    "TrustedClientCertificate",
    "TrustedRootCertificate",
    "UrlPathMap",
    "inNetworks",
]

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
Protocol = Literal["Http", "Https"]
RuleType = Literal["Basic", "PathBasedRouting", "Plugin"]
LoadDistributionAlgorithm = Literal["RoundRobin", "LeastConnections", "IpHash"]
RedirectType = Literal["Permanent", "Found", "SeeOther", "Temporary"]

REDIRECT_STATUS: Mapping[str, int] = {
    "Permanent": 301,
    "Found": 302,
    "SeeOther": 303,
    "Temporary": 307,
}


CUSTOM_ERROR_STATUSES = (400, 403, 404, 405, 408, 500, 502, 503, 504)
"""The statuses a custom error page can be given for (Azure's list, plus 404)."""

CUSTOM_ERROR_PAGE_MAX = 1024 * 1024
"""The largest custom error page read (Azure: the page must be under 1 MB)."""


@dataclass(frozen=True)
class CustomErrorPage:
    """A C{customErrorPage.NNN} line: its status, the file, and the file's bytes as read at load."""

    status: int
    path: str
    body: bytes


SslPolicyType = Literal["Predefined", "Custom", "CustomV2"]


@dataclass(frozen=True)
class SslPolicy:
    """
    Azure's C{sslPolicy}: a predefined policy by name, or a custom one
    (minimum version and TLS 1.2 cipher suites, Azure's IANA names).
    L{agwtx.config.sslpolicy} gives it meaning.
    """

    policyType: SslPolicyType = "Predefined"
    policyName: str | None = None
    """For C{Predefined}; None means agw's default (C{AppGwSslPolicy20220101}, as Azure's)."""
    minProtocolVersion: str | None = None
    """C{TLSv1_0} .. C{TLSv1_3}, for C{Custom} and C{CustomV2}."""
    cipherSuites: tuple[str, ...] = ()
    """For C{Custom} and C{CustomV2}, in order of preference."""


@dataclass(frozen=True)
class GatewaySettings:
    """The C{[gateway]} section: process-wide settings."""

    admin: str | None = None
    """Twisted endpoint string of the admin endpoint (metrics, health), or None."""
    adminToken: bytes | None = field(default=None, repr=False)
    """The bearer token the admin endpoint requires (read from C{adminToken}'s file), or None."""
    adminTokenForReads: bool = False
    """Whether reads (GET, HEAD) need the token too, not only C{POST /reload}."""
    affinitySecrets: tuple[bytes, ...] = field(default=(), repr=False)
    """Every key that verifies affinity cookies, the signing one first."""
    workers: int = 1
    shutdownGracePeriod: float = 30.0
    requestHeaderTimeout: float = 60.0
    """Seconds a client has from the first byte of a request head to its end (then 408)."""
    accessLog: str = "-"
    """Where access-log lines go: C{-} (standard output), an absolute path,
    C{log} (the twistd log, formatted by it: slower) or C{off}."""
    requestBodyTimeout: float = 60.0
    """Seconds a request body may stall between two reads (then 408)."""
    maxConnections: int = 50000
    """Client connections one gateway process holds at most; more are closed at once."""
    maxConnectionsPerClient: int = 0
    """Client connections from one address at most (0: no limit; trusted proxies are exempt)."""
    trustedProxies: tuple[IPNetwork, ...] = ()
    """Address ranges of forwarders (L7 proxies, CDNs) whose forwarding
    headers are believed; empty means no client is trusted."""
    accessLogFormat: Literal["text", "json"] = "text"
    """C{text}: one fixed line per request; C{json}: one JSON object per line, Azure's field names."""
    requestIdHeader: str = "X-Request-ID"
    """The header carrying the request ID to the backend and back to the client."""
    trustClientRequestId: bool = False
    """Keep an incoming request ID from any client, not only from C{trustedProxies}."""
    customErrorPages: tuple[CustomErrorPage, ...] = ()
    """Gateway-wide pages for the answers the gateway makes itself."""

    @property
    def affinitySecret(self) -> bytes | None:
        """The key that signs affinity cookies (the first of L{affinitySecrets});
        None means generated per process."""
        return self.affinitySecrets[0] if self.affinitySecrets else None

    lameDuckPeriod: float = 0.0
    """Seconds a stopping instance goes on serving (and accepting) with
    C{/ready} at 503, so load balancers take it out, before it drains."""
    watchConfig: bool = False
    """Reload when the config file, or a certificate file it names, changes."""
    sslPolicy: SslPolicy = field(default_factory=SslPolicy)
    """The policy of HTTPS listeners without an C{sslProfile}."""
    allowUnderscoresInHeaders: bool = False
    """Whether request header fields whose names contain C{_} are forwarded.
    Off (as nginx's C{underscores_in_headers off}): they are dropped, because
    backends that fold C{_} into C{-} (CGI, WSGI, PHP) would read
    C{Transfer_Encoding} or C{X_Forwarded_For} as the real thing."""
    enableHttp2: bool = False
    """Whether HTTPS listeners offer HTTP/2 (ALPN C{h2}) besides HTTP/1.1
    (L{agwtx.http.h2}).  Off by default, as Azure's API and ARM templates
    (the portal ticks it for new gateways): a configuration without the key
    keeps its HTTP/1.1-only behaviour."""

    maxRequestLineSize: int = 32768
    """Bytes a request line may have (method, target, version); longer: 414."""
    maxRequestHeaderSize: int = 32768
    """Bytes the header field lines of a request head may have together
    (without the request line and line ends); more: 431.  Azure's limit
    for the request line and headers is 32 KB."""
    maxRequestHeaderCount: int = 500
    """Header field lines a request head may have; more: 431."""
    maxRequestBodySize: int = 0
    """Bytes a request body may have (0: no limit); more: 413."""

    def isTrustedProxy(self, address: str) -> bool:
        """Whether C{address} (an IP address as text) is in L{trustedProxies}."""
        return bool(self.trustedProxies) and inNetworks(address, self.trustedProxies)


def inNetworks(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    """
    Whether C{address} (an IP address as text; an IPv4-mapped IPv6 address
    counts as IPv4, a zone is ignored) is in one of C{networks}.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


@dataclass(frozen=True)
class FrontendPort:
    name: str
    endpoint: str
    """A Twisted server endpoint description, e.g. C{tcp:80} or C{systemd:domain=INET:index=0}."""
    port: int | None = None
    """The port number when it was given with C{port = N} (used for X-Forwarded-Port)."""
    proxyProtocol: bool = False
    """Connections start with a PROXY protocol header (v1 or v2) giving the client's address."""
    proxyProtocolSources: tuple[IPNetwork, ...] = ()
    """The balancers allowed to send that header; connections from elsewhere are closed."""


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
class TrustedClientCertificate:
    """Azure's C{trustedClientCertificates} entry: a PEM file of CA certificates (a chain or a bundle)."""

    name: str
    data: str


ClientAuthMode = Literal["Strict", "Passthrough"]


@dataclass(frozen=True)
class SslProfile:
    """
    Azure's C{sslProfiles} entry: a listener's own policy and client
    authentication (mutual TLS).  Client certificates are verified when
    C{trustedClientCertificates} is not empty (C{Strict}); C{Passthrough}
    requests one and verifies nothing (the backend decides).
    """

    name: str
    sslPolicy: SslPolicy | None = None
    """None: the gateway's policy."""
    trustedClientCertificates: tuple[str, ...] = ()
    verifyClientAuthMode: ClientAuthMode = "Strict"
    verifyClientCertIssuerDN: bool = False
    verifyClientRevocation: str = "None"

    @property
    def requestsClientCertificate(self) -> bool:
        return bool(self.trustedClientCertificates) or self.verifyClientAuthMode == "Passthrough"

    @property
    def verifiesClientCertificate(self) -> bool:
        return bool(self.trustedClientCertificates) and self.verifyClientAuthMode == "Strict"


@dataclass(frozen=True)
class HttpListener:
    name: str
    frontendPort: str
    protocol: Protocol = "Http"
    hostNames: tuple[str, ...] = ()
    sslCertificate: str | None = None
    sslProfile: str | None = None
    customErrorPages: tuple[CustomErrorPage, ...] = ()
    """This listener's pages; when it has any, the gateway-wide ones do not apply to it (as in Azure)."""


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
    connectTimeout: float = 10.0
    """Seconds to establish a backend connection (TCP, and TLS for Https), capped by requestTimeout."""
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
    maxConnectionsPerServer: int = 128
    """Backend connections one member serves requests on at once; 0 = no cap."""
    maxQueuedRequestsPerServer: int = 4096
    """Requests that may wait for a member's free connection; beyond: 503."""
    queueTimeout: float = 10.0
    """How long a request may wait in a member's queue; then 503."""
    maxIdleConnectionsPerServer: int = 1024
    """Idle keep-alive connections kept per member at most."""
    idleConnectionTimeout: float = 60.0
    """An idle keep-alive connection unused this long is closed."""


@dataclass(frozen=True)
class RedirectConfiguration:
    name: str
    redirectType: RedirectType = "Permanent"
    targetListener: str | None = None
    targetUrl: str | None = None
    includePath: bool = True
    includeQueryString: bool = True


@dataclass(frozen=True)
class LoadDistributionTarget:
    """A C{target.NAME = POOL[, WEIGHT]} line of a load distribution policy."""

    name: str
    backendAddressPool: str
    weightPerServer: int = 1
    """The weight of each member of the pool (Azure's C{weightPerServer}), 1..100."""


@dataclass(frozen=True)
class LoadDistributionPolicy:
    """
    Azure's C{loadDistributionPolicies} entry: how a rule that names it
    spreads requests over the members of its target pools
    (L{agwtx.proxy.distribution}).
    """

    name: str
    loadDistributionAlgorithm: LoadDistributionAlgorithm = "RoundRobin"
    targets: tuple[LoadDistributionTarget, ...] = ()


@dataclass(frozen=True)
class PathRule:
    name: str
    paths: tuple[str, ...]
    backendAddressPool: str | None = None
    backendHttpSettings: str | None = None
    redirectConfiguration: str | None = None
    loadDistributionPolicy: str | None = None
    """Instead of C{backendAddressPool}: the policy spreading requests over its pools."""


@dataclass(frozen=True)
class UrlPathMap:
    name: str
    defaultBackendAddressPool: str | None = None
    defaultBackendHttpSettings: str | None = None
    defaultRedirectConfiguration: str | None = None
    pathRules: tuple[PathRule, ...] = ()
    defaultLoadDistributionPolicy: str | None = None


@dataclass(frozen=True)
class RewriteRule:
    name: str
    conditions: tuple[tuple[str, str, bool, bool], ...] = ()
    """(variable, pattern, ignoreCase, negate) tuples; all must hold."""
    requestHeaders: tuple[tuple[str, str | None], ...] = ()
    """(header, value) to set; value None removes the header."""
    responseHeaders: tuple[tuple[str, str | None], ...] = ()
    modifiedPath: str | None = None
    """The path sent to the backend (a value template); None keeps the request's."""
    modifiedQueryString: str | None = None
    """The query sent to the backend (a value template; empty removes it); None keeps the request's."""
    reroute: bool = False
    """Route by the modified path: the rule's path map is evaluated again with it (Azure's C{reroute})."""


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
    loadDistributionPolicy: str | None = None
    """Instead of C{backendAddressPool}: the policy spreading requests over its pools."""


@dataclass(frozen=True)
class GatewayConfig:
    """A whole, validated gateway configuration."""

    path: str
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    frontendPorts: Mapping[str, FrontendPort] = field(default_factory=dict)
    sslCertificates: Mapping[str, SslCertificate] = field(default_factory=dict)
    trustedRootCertificates: Mapping[str, TrustedRootCertificate] = field(default_factory=dict)
    trustedClientCertificates: Mapping[str, TrustedClientCertificate] = field(default_factory=dict)
    sslProfiles: Mapping[str, SslProfile] = field(default_factory=dict)
    httpListeners: Mapping[str, HttpListener] = field(default_factory=dict)
    backendAddressPools: Mapping[str, BackendAddressPool] = field(default_factory=dict)
    backendHttpSettings: Mapping[str, BackendHttpSettings] = field(default_factory=dict)
    probes: Mapping[str, Probe] = field(default_factory=dict)
    redirectConfigurations: Mapping[str, RedirectConfiguration] = field(default_factory=dict)
    urlPathMaps: Mapping[str, UrlPathMap] = field(default_factory=dict)
    rewriteRuleSets: Mapping[str, RewriteRuleSet] = field(default_factory=dict)
    requestRoutingRules: Mapping[str, RequestRoutingRule] = field(default_factory=dict)
    loadDistributionPolicies: Mapping[str, LoadDistributionPolicy] = field(default_factory=dict)

"""
The admin endpoint: a small twisted.web site on C{[gateway] admin} (a Twisted
server endpoint string, loopback by default).

  - C{GET /health}: backend health as JSON, shaped like Azure's
    C{az network application-gateway show-backend-health} so the same jq
    filters work on both.
  - C{GET /ready}: 200 while taking traffic, 503 once a stop has begun.

The root is an ordinary L{Resource} with children: further pages (metrics,
a status page) are added with C{adminResource(...).putChild(b"metrics", ...)}
or by passing C{children} to L{AdminSite}/L{adminResource}.

Every request passes L{AdminGuard} first (see docs/security.rst): a Host
that does not name the admin listener itself is a 421 (DNS rebinding), a
state-changing request a browser could send cross-site is a 403 (CSRF),
and with C{[gateway] adminToken} a missing or wrong bearer token is a 401.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any

from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from agwtx.config.errors import InvalidValue
from agwtx.config.values import parseEndpoint
from agwtx.ops.listening import PortListener
from agwtx.config.model import GatewayConfig
from agwtx.ops.answers import isoTime, jsonBody
from agwtx.ops.metrics import metricsResource
from agwtx.ops.statuspage import installStatusPage
from agwtx.proxy.pool import Member, PoolState
from agwtx.routing.match import splitHost
from agwtx.runtime.answers import errorPage
from agwtx.ops.startup import serverEndpoint

__all__ = [
    "AdminGuard",
    "AdminRoot",
    "AdminSite",
    "HealthResource",
    "ReadyResource",
    "adminResource",
    "adminService",
    "backendHealth",
    "isoTime",
    "jsonBody",
]


def _server(member: Member) -> dict[str, Any]:
    return {
        "address": member.key,
        "health": member.health,
        "healthProbeLog": member.lastReason,
        "lastChange": isoTime(member.lastChange),
        "lastProbe": isoTime(member.lastProbe),
        "draining": member.draining,
        "inflight": member.inflight,
    }


def backendHealth(pools: Mapping[tuple[str, str], PoolState]) -> dict[str, Any]:
    """
    The C{/health} document for C{ctx.pools}: pools in the order they were
    first used, each with the settings it is used through.
    """
    byPool: dict[str, list[PoolState]] = {}
    for (poolName, _settingsName), state in pools.items():
        byPool.setdefault(poolName, []).append(state)
    return {
        "backendAddressPools": [
            {
                "backendAddressPool": {"name": poolName},
                "backendHttpSettingsCollection": [
                    {
                        "backendHttpSettings": {"name": state.settings.name},
                        "servers": [_server(m) for m in state.members],
                    }
                    for state in states
                ],
            }
            for poolName, states in byPool.items()
        ]
    }


class HealthResource(Resource):
    """C{GET /health}: see L{backendHealth}."""

    isLeaf = True

    def __init__(self, ctx: Any) -> None:
        super().__init__()
        self.ctx = ctx

    def render_GET(self, request: Request) -> bytes:
        return jsonBody(request, backendHealth(self.ctx.pools))


class ReloadResource(Resource):
    """
    C{POST /reload}: re-read the configuration file, as SIGHUP does (in every
    worker).  200 with C{{"ok": true}}, or 400 with the errors (nothing
    changed).  Only POST, so a browser or crawler following links never
    reloads; the admin endpoint listens on loopback by default.
    """

    isLeaf = True

    def __init__(self, ctx: Any) -> None:
        super().__init__()
        self.ctx = ctx

    def render_POST(self, request: Request) -> bytes:
        handler = getattr(self.ctx, "reloadHandler", None)
        errors = ["reload is not available"] if handler is None else handler()
        if errors:
            request.setResponseCode(400)
        return jsonBody(request, {"ok": not errors, "errors": list(errors)})


class ReadyResource(Resource):
    """
    C{GET /ready}: 200 while the instance takes traffic, 503 once a stop
    has begun (the lame duck period, then the drain), for load balancers'
    and Kubernetes' readiness checks.
    """

    isLeaf = True

    def __init__(self, ctx: Any) -> None:
        super().__init__()
        self.ctx = ctx

    def render_GET(self, request: Request) -> bytes:
        ready = not getattr(self.ctx, "stopping", False)
        if not ready:
            request.setResponseCode(503)
        return jsonBody(request, {"ready": ready})


class AdminRoot(Resource):
    """C{/}: lists the pages below it, so the endpoint explains itself."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return notFound()

    def render_GET(self, request: Request) -> bytes:
        names = sorted(k.decode("ascii", "replace") for k in self.children if k)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        lines = ["agw admin endpoint", ""] + [f"/{n}" for n in names]
        return ("\n".join(lines) + "\n").encode("utf-8")


def adminResource(
    ctx: Any,
    config: GatewayConfig,
    reactor: Any,
    children: Mapping[bytes, Resource] | None = None,
) -> AdminRoot:
    """The admin root resource with C{/health} (and any C{children} given)."""
    root = AdminRoot()
    root.putChild(b"health", HealthResource(ctx))
    root.putChild(b"reload", ReloadResource(ctx))
    root.putChild(b"ready", ReadyResource(ctx))
    metrics = getattr(ctx, "metrics", None)
    if metrics is not None:
        root.putChild(b"metrics", metricsResource(metrics))
    installStatusPage(root, ctx, config, reactor)  # /status, /status.json; browsers on / go there
    for name, child in (children or {}).items():
        root.putChild(name, child)
    return root


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""Host names every admin endpoint answers to (besides its own address)."""

_READS = frozenset({b"GET", b"HEAD"})
_SAME_ORIGIN_FETCH = frozenset({b"same-origin", b"none"})


def _sameAddress(name: str, address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(name) == ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False


class AdminGuard:
    """
    Who may use the admin endpoint: the checks every admin request passes
    before its page is rendered.  C{settings} is read per request (a reload
    changes the token); C{interface} is the configured listening address of
    the endpoint, fixed while it listens.
    """

    def __init__(self, settings: Any, interface: str | None) -> None:
        self.settings = settings
        self.interface = interface.lower() if interface else None

    @classmethod
    def forEndpoint(cls, settings: Any, endpoint: str) -> AdminGuard:
        try:
            interface = parseEndpoint(endpoint).interface
        except InvalidValue:
            interface = None
        return cls(settings, interface)

    def hostAllowed(self, request: Request) -> bool:
        """
        Whether the Host header names this listener: a loopback name, the
        configured interface, or the address the connection came in on,
        with no port or the listener's own.  A DNS-rebinding page reaches
        the endpoint under its attacker's name, which is none of these.

        An HTTP/1.0 request without Host passes: browsers always send one,
        and load balancers' health checks (HAProxy's C{option httpchk GET
        /ready}) often do not.
        """
        hosts = request.requestHeaders.getRawHeaders(b"host")
        if hosts is None and request.clientproto == b"HTTP/1.0":
            return True
        if not hosts or len(hosts) != 1:
            return False
        split = splitHost(hosts[0])
        if split is None:
            return False
        name, port = split
        local = request.getHost()
        localPort = getattr(local, "port", None)
        if port is not None and localPort is not None and port != localPort:
            return False
        if name in LOOPBACK_NAMES or name == self.interface:
            return True
        return _sameAddress(name, getattr(local, "host", None)) or _sameAddress(name, self.interface)

    def crossSite(self, request: Request) -> bool:
        """
        Whether a state-changing request comes from another site: an
        C{Origin} other than this endpoint's own, or a C{Sec-Fetch-Site}
        other than C{same-origin}/C{none}.  Browsers send at least one of
        them with every cross-site POST; curl and scripts send neither.
        """
        site = request.getHeader(b"sec-fetch-site")
        if site is not None and site.strip().lower() not in _SAME_ORIGIN_FETCH:
            return True
        origin = request.getHeader(b"origin")
        if origin is None:
            return False
        scheme = b"https://" if request.isSecure() else b"http://"
        host = request.getHeader(b"host") or b""
        return origin.strip().lower() != scheme + host.strip().lower()

    def authorized(self, request: Request) -> bool:
        """Whether the request carries the configured bearer token (compared in constant time)."""
        token = self.settings.adminToken
        given = request.getHeader(b"authorization") or b""
        scheme, _, credentials = given.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            credentials = b""
        # compare_digest takes as long for any wrong token of a given length.
        return hmac.compare_digest(credentials.strip(), token)

    def check(self, request: Request) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """None when C{request} may proceed, else C{(status, message, extra headers)}."""
        if not self.hostAllowed(request):
            return 421, "Misdirected Request: this admin endpoint answers only to its own address", []
        write = request.method not in _READS
        if write and self.crossSite(request):
            return 403, "Forbidden: cross-site requests may not change the gateway", []
        settings = self.settings
        if settings.adminToken is not None and (write or settings.adminTokenForReads):
            if not self.authorized(request):
                challenge = b'Bearer realm="agw admin"'
                if request.getHeader(b"authorization") is not None:
                    challenge += b', error="invalid_token"'
                return (
                    401,
                    "Unauthorized: a valid admin bearer token is required",
                    [(b"WWW-Authenticate", challenge)],
                )
        return None


class _Refused(Resource):
    """The answer to a request L{AdminGuard} refused."""

    isLeaf = True

    def __init__(self, code: int, message: str, extra: list[tuple[bytes, bytes]]) -> None:
        super().__init__()
        self.code = code
        self.message = message
        self.extra = extra

    def render(self, request: Any) -> Any:
        return errorPage(request, self.code, self.message, self.extra)


class AdminSite(Site):
    """The admin site; C{site.resource} is the L{AdminRoot} to extend."""

    displayTracebacks = False
    noisy = False

    def __init__(
        self,
        ctx: Any,
        config: GatewayConfig,
        reactor: Any,
        children: Mapping[bytes, Resource] | None = None,
    ) -> None:
        super().__init__(adminResource(ctx, config, reactor, children), reactor=reactor)
        self.ctx = ctx
        self.guard = AdminGuard.forEndpoint(_CurrentSettings(ctx, config), config.gateway.admin or "")

    def getResourceFor(self, request: Any) -> Any:
        # A worker's private admin site (a mode-600 UNIX socket in a 0700
        # directory, see agwtx.ops.workerview) is asked only by its supervisor,
        # which has already applied the checks to the request it serves.
        refusal = None if getattr(self.ctx, "workerAdmin", False) else self.guard.check(request)
        if refusal is not None:
            request.site = self
            return _Refused(*refusal)
        return super().getResourceFor(request)

    def log(self, request: Any) -> None:
        # Health checks and scrapes would drown the access log.
        pass


class _CurrentSettings:
    """C{[gateway]} of the configuration in force (a reload replaces C{ctx.config})."""

    def __init__(self, ctx: Any, config: GatewayConfig) -> None:
        self.ctx = ctx
        self.config = config

    def __getattr__(self, name: str) -> Any:
        config = getattr(self.ctx, "config", None) or self.config
        return getattr(config.gateway, name)


def adminService(ctx: Any, config: GatewayConfig, reactor: Any, endpoint: str | None = None) -> PortListener:
    """
    The service that serves L{AdminSite} on C{config.gateway.admin}, or on
    C{endpoint} (a worker's private socket, see L{agwtx.ops.workerview}).
    """
    endpoint = endpoint or config.gateway.admin
    assert endpoint is not None
    site = AdminSite(ctx, config, reactor)
    svc = PortListener(
        "[gateway] admin",
        endpoint,
        serverEndpoint(reactor, endpoint, "admin endpoint"),
        site,
        what="admin endpoint",
    )
    svc.setName("admin")
    return svc

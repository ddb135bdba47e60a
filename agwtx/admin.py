"""
The admin endpoint: a small twisted.web site on C{[gateway] admin} (a Twisted
server endpoint string, loopback by default).

  - C{GET /health}: backend health as JSON, shaped like Azure's
    C{az network application-gateway show-backend-health} so the same jq
    filters work on both.

The root is an ordinary L{Resource} with children: further pages (metrics,
a status page) are added with C{adminResource(...).putChild(b"metrics", ...)}
or by passing C{children} to L{AdminSite}/L{adminResource}.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from agwtx.model import GatewayConfig
from agwtx.pool import Member, PoolState
from agwtx.startup import ListeningService, serverEndpoint

__all__ = [
    "AdminRoot",
    "AdminSite",
    "HealthResource",
    "adminResource",
    "adminService",
    "backendHealth",
    "isoTime",
    "jsonBody",
]


def isoTime(seconds: float | None) -> str | None:
    """A reactor time (POSIX seconds) as ISO 8601 in UTC, or None."""
    if seconds is None:
        return None
    return (
        datetime.fromtimestamp(seconds, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def jsonBody(request: Request, document: Any) -> bytes:
    """An admin JSON answer: never cached, indented for people reading it with curl."""
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"


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
    metrics = getattr(ctx, "metrics", None)
    if metrics is not None:
        from agwtx.metrics import metricsResource

        root.putChild(b"metrics", metricsResource(metrics))
    from agwtx.statuspage import installStatusPage

    installStatusPage(root, ctx, config, reactor)  # /status, /status.json; browsers on / go there
    for name, child in (children or {}).items():
        root.putChild(name, child)
    return root


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

    def log(self, request: Any) -> None:
        # Health checks and scrapes would drown the access log.
        pass


def adminService(ctx: Any, config: GatewayConfig, reactor: Any) -> StreamServerEndpointService:
    """The service that serves L{AdminSite} on C{config.gateway.admin}."""
    assert config.gateway.admin is not None
    site = AdminSite(ctx, config, reactor)
    admin = config.gateway.admin
    svc = ListeningService("admin endpoint", admin, serverEndpoint(reactor, admin, "admin endpoint"), site)
    svc.setName("admin")
    return svc

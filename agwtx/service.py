"""
The gateway as a tree of services: one listener service per frontend port,
plus the health prober and the optional admin endpoint.
"""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from agwtx.affinity import AffinityCodec
from agwtx.model import GatewayConfig
from agwtx.routing import GatewayContext, buildRouters
from agwtx.upstream import UpstreamPool
from agwtx.web import GatewaySite

__all__ = ["GatewayService", "makeGatewayService"]


class GatewayService(MultiService):
    """Everything one gateway process runs for one configuration."""

    log = Logger(namespace="agw")

    def __init__(self, config: GatewayConfig, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.upstream = UpstreamPool(reactor)
        self.ctx = GatewayContext(reactor, self.upstream, AffinityCodec(config.gateway.affinitySecret))
        self.routers = buildRouters(config, self.ctx.pools)
        self.sites: dict[str, GatewaySite] = {}
        self.listeners: dict[str, StreamServerEndpointService] = {}
        for name, router in self.routers.items():
            fp = config.frontendPorts[name]
            site = GatewaySite(self.ctx, router, fp.port)
            self.sites[name] = site
            endpoint = serverFromString(reactor, fp.endpoint)
            svc = StreamServerEndpointService(endpoint, site)
            svc._raiseSynchronously = True
            svc.setName(f"frontendPort:{name}")
            svc.setServiceParent(self)
            self.listeners[name] = svc

    def startService(self) -> None:
        self.log.info(
            "agw starting: {listeners} listener(s) on {ports} port(s), {rules} rule(s)",
            listeners=len(self.config.httpListeners),
            ports=len(self.routers),
            rules=len(self.config.requestRoutingRules),
        )
        super().startService()

    def stopService(self) -> Deferred[Any]:
        d = super().stopService()

        def closeUpstream(result: Any) -> Any:
            self.upstream.closeAll()
            return result

        return d.addBoth(closeUpstream) if isinstance(d, Deferred) else DeferredList([])


def makeGatewayService(config: GatewayConfig, reactor: Any) -> GatewayService:
    """Build (but do not start) the service tree for C{config}."""
    return GatewayService(config, reactor)

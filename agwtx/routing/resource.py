"""
Routing targets as twisted.web resources.

Every target a routing table holds is an L{IResource}: agw's own (the
backend target, which proxies a request or bridges a WebSocket, a redirect,
a path map, a plugin rule) are leaves that render with the request alone;
a routing plugin may answer with any other resource (a C{static.File}, a
plain C{Resource} subclass, a Klein app's resource), which is traversed and
rendered the twisted.web way (L{resourceFor}, L{renderResource}).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.web.resource import NoResource, getChildForRequest

__all__ = ["GatewayResource", "renderResource", "resourceFor"]


class GatewayResource:
    """
    What agw's own routing targets share: each is a leaf twisted.web resource
    (L{twisted.web.resource.IResource}), rendered with the request alone
    (the gateway context is C{request.site.ctx}).  L{agwTarget} tells them
    from other resources, which are traversed first (L{resourceFor}).
    """

    isLeaf = True
    agwTarget = True
    urlRewrite: Any = None
    """A rule's top-level target: the rule's rewrite set when it rewrites URLs (L{agwtx.routing.router.rewriteUrl})."""

    def getChildWithDefault(self, path: bytes, request: Any) -> Any:
        return NoResource()  # never asked: a leaf is not traversed

    def putChild(self, path: bytes, child: Any) -> None:
        raise NotImplementedError("agw's routing targets have no children")


def resourceFor(resource: Any, request: Any) -> Any:
    """
    The resource that renders C{request}: agw's own targets as they are; any
    other resource traversed from the request's path, as C{Site.getResourceFor}
    does (C{prepath} empty, C{postpath} the path's segments).
    """
    if getattr(resource, "agwTarget", False):
        return resource
    request.prepath = []
    request.postpath = [unquote_to_bytes(segment) for segment in request.path[1:].split(b"/")]
    return getChildForRequest(resource, request)


def renderResource(resource: Any, request: Any) -> Any:
    """Render C{request} with C{resource} (traversed when it is not agw's own): the body or C{NOT_DONE_YET}."""
    return resourceFor(resource, request).render(request)

"""
A small backend for demos, tests, benchmarks and the WebSocket conformance run.

It answers on any path:
  - ``GET /``: a short greeting naming the backend (so round robin is visible);
  - ``GET /headers``: the request line and headers it received, as JSON;
  - ``POST/PUT /echo``: the request body back, streamed;
  - ``GET /status/NNN``: an empty response with that status;
  - a WebSocket handshake on any path: an autobahn echo server that echoes
    every message and answers the first subprotocol offered (if any).

Run it alone with ``python -m agwtx.tools.demo --listen tcp:8081:interface=127.0.0.1``;
``twistd agw --demo`` starts the ones the demo config points at.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorCore
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

__all__ = ["DemoEchoProtocol", "DemoRoot", "demoService", "demoSite"]


class DemoEchoProtocol(WebSocketServerProtocol):
    """Echo every message; pick the first subprotocol offered."""

    def onConnect(self, request: ConnectionRequest) -> str | None:
        if request.protocols:
            return request.protocols[0]
        return None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


def echoFactory() -> WebSocketServerFactory:
    factory = WebSocketServerFactory()
    factory.protocol = DemoEchoProtocol
    factory.setProtocolOptions(
        maxFramePayloadSize=0,
        maxMessagePayloadSize=0,
        autoFragmentSize=65536,
        failByDrop=False,
        openHandshakeTimeout=10,
        closeHandshakeTimeout=5,
    )
    return factory


class DemoRoot(Resource):
    """Every path is served here; see the module docstring."""

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.ws = WebSocketResource(echoFactory())

    def render(self, request: Request) -> Any:
        upgrade = request.getHeader(b"upgrade") or b""
        if upgrade.lower() == b"websocket":
            return self.ws.render(request)
        path = request.path
        request.setHeader(b"x-demo-backend", self.name.encode())
        if path == b"/headers":
            body = json.dumps(
                {
                    "method": request.method.decode("latin-1"),
                    "uri": request.uri.decode("latin-1"),
                    "headers": [
                        [k.decode("latin-1"), v.decode("latin-1")]
                        for k, vs in request.requestHeaders.getAllRawHeaders()
                        for v in vs
                    ],
                    "backend": self.name,
                }
            ).encode()
            request.setHeader(b"content-type", b"application/json")
            return body
        if path == b"/echo":
            request.setHeader(b"content-type", b"application/octet-stream")
            content = request.content
            content.seek(0)
            while True:
                block = content.read(65536)
                if not block:
                    break
                request.write(block)
            request.finish()
            return NOT_DONE_YET
        if path.startswith(b"/status/"):
            try:
                code = int(path[8:])
            except ValueError:
                code = 400
            request.setResponseCode(code)
            return b""
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return f"Hello from agw demo backend {self.name}\n".encode()


def demoSite(name: str) -> Site:
    site = Site(DemoRoot(name))
    site.displayTracebacks = False
    site.noisy = False
    return site


def demoService(reactor: Any, description: str, name: str) -> IService:
    """A service that runs a demo backend on an endpoint description."""
    return StreamServerEndpointService(serverFromString(reactor, description), demoSite(name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agwtx.tools.demo")
    parser.add_argument(
        "--listen",
        action="append",
        required=True,
        help="Twisted endpoint, e.g. tcp:8081:interface=127.0.0.1 (repeatable)",
    )
    parser.add_argument("--name", default=None)
    args = parser.parse_args(argv)
    from twisted.internet import reactor
    from twisted.python import log

    if "-v" in (argv or []):
        log.startLogging(sys.stdout)
    r: IReactorCore = reactor  # type: ignore[assignment]
    for i, description in enumerate(args.listen):
        name = args.name or description
        svc = demoService(reactor, description, f"{name}" if len(args.listen) == 1 else f"{name}#{i}")
        svc.startService()
    r.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

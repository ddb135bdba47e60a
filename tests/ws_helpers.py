"""
A scriptable WebSocket backend for the bridge tests, run as a subprocess:

    python -m tests.ws_helpers --port N [--name X]

Plain HTTP (health probes): ``GET /`` answers 200; ``GET /closes`` answers
the closes this backend has received, as JSON ``{id: [code, reason]}``.

A WebSocket on any path (the query's ``id`` names the connection in
``/closes``):
  - ``/refuse/NNN``: the handshake is refused with status NNN;
  - ``/slow?delay=S``: the handshake is answered after S seconds;
  - ``/headers``: the first message is JSON with the handshake the backend
    received (request line, headers, subprotocol, extensions);
  - anything else: echo.  The first offered subprotocol is chosen.
Text messages starting with ``!`` are commands instead of being echoed:
  - ``!close CODE [REASON]``: the backend starts a closing handshake;
  - ``!drop``: the backend drops the TCP connection without closing;
  - ``!burst N SIZE``: the backend sends N binary messages of SIZE bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

CLOSES: dict[str, list[Any]] = {}


class ScriptedBackend(WebSocketServerProtocol):
    connId = ""
    mode = "echo"

    def onConnect(self, request: ConnectionRequest) -> Any:
        params = request.params
        self.connId = (params.get("id") or [""])[0]
        path = request.path
        if path.startswith("/refuse/"):
            raise ConnectionDeny(int(path[8:]), "refused by test backend")
        self.mode = "headers" if path == "/headers" else "echo"
        chosen = request.protocols[0] if request.protocols else None
        if path == "/slow":
            from twisted.internet import reactor as _reactor

            reactor: Any = _reactor
            delay = float((params.get("delay") or ["5"])[0])
            d: defer.Deferred[Any] = defer.Deferred()
            reactor.callLater(delay, d.callback, chosen)
            return d
        return chosen

    def onOpen(self) -> None:
        if self.mode == "headers":
            raw = self.http_request_data.decode("latin-1").split("\r\n")
            doc = {
                "requestLine": raw[0],
                "headers": [
                    line.split(":", 1)[0:1] + [line.split(":", 1)[1].strip()]
                    for line in raw[1:]
                    if ":" in line
                ],
                "subprotocol": self.websocket_protocol_in_use,
                "extensions": [e.EXTENSION_NAME for e in self.websocket_extensions_in_use],
                "backend": getattr(self.factory, "backendName", "-"),
            }
            self.sendMessage(json.dumps(doc).encode(), False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary and payload.startswith(b"!"):
            words = payload.decode().split(" ", 2)
            if words[0] == "!close":
                code = int(words[1])
                reason = words[2].encode() if len(words) > 2 else None
                self.sendCloseFrame(code=code, reasonUtf8=reason, isReply=False)
            elif words[0] == "!drop":
                transport: Any = self.transport
                transport.abortConnection()
            elif words[0] == "!burst":
                count, size = int(words[1]), int(words[2])
                for i in range(count):
                    self.sendMessage(bytes([i % 256]) * size, True)
            return
        self.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.connId:
            CLOSES[self.connId] = [code, reason, wasClean]


def _accept(offers: list[Any]) -> Any:
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


class Root(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        factory = WebSocketServerFactory()
        factory.protocol = ScriptedBackend
        factory.backendName = name  # type: ignore[attr-defined]
        factory.setProtocolOptions(
            maxFramePayloadSize=0,
            maxMessagePayloadSize=0,
            autoFragmentSize=65536,
            failByDrop=False,
            echoCloseCodeReason=True,
            openHandshakeTimeout=30,
            closeHandshakeTimeout=5,
            perMessageCompressionAccept=_accept,
        )
        self.ws = WebSocketResource(factory)

    def render(self, request: Request) -> Any:
        if (request.getHeader(b"upgrade") or b"").lower() == b"websocket":
            return self.ws.render(request)
        request.setHeader(b"content-type", b"application/json")
        if request.path == b"/closes":
            return json.dumps(CLOSES).encode()
        return json.dumps({"backend": self.name}).encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ws_helpers")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="ws")
    args = parser.parse_args(argv)
    from twisted.internet import reactor as _reactor

    reactor: Any = _reactor
    site = Site(Root(args.name))
    site.noisy = False
    reactor.listenTCP(args.port, site, interface="127.0.0.1")
    reactor.run()
    return 0


def closesOf(port: int) -> dict[str, list[Any]]:
    """The closes a scripted backend on C{port} has recorded."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/closes")
    data = conn.getresponse().read()
    conn.close()
    result: dict[str, list[Any]] = json.loads(data)
    return result


def startScriptedBackend(tmp: Any, name: str = "ws") -> tuple[Any, int]:
    """Run this backend in a subprocess on a free loopback port."""
    from tests.support import Proc, freePort, waitForPort

    port = freePort()
    proc = Proc(
        [sys.executable, "-m", "tests.ws_helpers", "--port", str(port), "--name", name],
        tmp / f"ws-{name}-{port}.log",
    )
    waitForPort(port, proc.proc)
    return proc, port


if __name__ == "__main__":
    sys.exit(main())

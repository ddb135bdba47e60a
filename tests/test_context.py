"""
The runtime context (L{agwtx.routing.GatewayContext}) is assembled from
collaborators the gateway service hands over at construction; afterwards
only a reload's commit (L{GatewayContext.switch}) replaces the
configuration-dependent ones, together.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock

from agwtx.ops.accesslog import AccessEvents
from agwtx.proxy.affinity import AffinityCodec
from agwtx.config.loader import loadConfig
from agwtx.runtime.errorpages import ErrorPages
from agwtx.runtime.requestid import RequestTagger
from agwtx.context import GatewayContext, OpenWebSockets
from agwtx.service import GatewayService
from agwtx.websocket.bridge import WebSocketBridge
from tests.support import basicIni

ROOT = Path(__file__).resolve().parent.parent / "agwtx"


def test_the_service_builds_the_context_with_its_collaborators(tmp_path: Path) -> None:
    ini = tmp_path / "gw.ini"
    ini.write_text(basicIni(1, ["127.0.0.1:1"]))
    config = loadConfig(ini)
    gw = GatewayService(config, MemoryReactorClock(), serveAdmin=False, instanceId="host/3", workerAdmin=True)
    ctx = gw.ctx
    assert ctx.config is config and ctx.pools and ctx.instanceId == "host/3" and ctx.workerAdmin
    assert ctx.reloadHandler == gw.reload
    assert isinstance(ctx.webSocketHandler, WebSocketBridge) and ctx.webSocketHandler is gw.webSockets
    assert isinstance(ctx.access, AccessEvents) and ctx.access.instanceId == "host/3"
    assert isinstance(ctx.openWebSockets, OpenWebSockets)
    assert gw.webSockets.open is ctx.openWebSockets


def test_switch_replaces_the_configuration_collaborators_together() -> None:
    clock = MemoryReactorClock()
    ctx = GatewayContext(clock, None, AffinityCodec(b"k" * 32))
    events: list[dict[str, object]] = []
    affinity = AffinityCodec(b"j" * 32)
    tagger = RequestTagger(ctx.tagger.settings)
    pages = ErrorPages(None)
    ctx.switch("config", {}, tagger, pages, affinity, events.append)
    assert (ctx.config, ctx.tagger, ctx.errorPages, ctx.affinity) == ("config", tagger, pages, affinity)
    ctx.refusedLog("192.0.2.1", 400, 10, "Bad Request")
    assert [e["status"] for e in events] == [400]


def test_no_context_attribute_is_patched_after_construction() -> None:
    """The service and the tap hand collaborators over; they do not assign them onto the context."""
    assigned = re.compile(r"\bctx\.(\w+)\s*=[^=]")
    found = []
    for name in ("service.py", "tap.py"):
        for n, line in enumerate((ROOT / name).read_text().splitlines(), 1):
            m = assigned.search(line)
            if m and m.group(1) != "stopping":  # runtime state: a stop has begun
                found.append(f"{name}:{n}: {line.strip()}")
    assert found == []

"""
The twistd plugin's options and service maker: C{twistd agw --config FILE}.

Configuration errors surface at option-parse time, before twistd
daemonises, as a list naming file, section and key (never a traceback).
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from agwtx.config import ConfigError, loadConfig, summarize
from agwtx.model import GatewayConfig

__all__ = ["Options", "makeService"]

DEMO_BACKENDS = ("tcp:8081:interface=127.0.0.1", "tcp:8082:interface=127.0.0.1")


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run agw, an application gateway: HTTP/HTTPS listeners, routing rules, "
        "backend pools with health probes, and native WebSocket."
    )
    optParameters = [
        ["config", "c", "etc/gw.ini", "Path to the gateway configuration (INI)."],
    ]
    optFlags = [
        ["check", None, "Validate the configuration, print a summary, and exit (0 ok, 1 errors)."],
        ["demo", None, "Also run the demo backends on 127.0.0.1:8081 and :8082."],
    ]

    gatewayConfig: GatewayConfig

    def postOptions(self) -> None:
        try:
            self.gatewayConfig = loadConfig(self["config"])
        except ConfigError as e:
            if self["check"]:
                sys.stderr.write(f"configuration has {len(e.errors)} error(s):\n{e}\n")
                raise SystemExit(1)
            raise usage.UsageError(f"invalid configuration:\n{e}")
        if self["check"]:
            sys.stdout.write("configuration OK\n")
            for line in summarize(self.gatewayConfig):
                sys.stdout.write(f"  {line}\n")
            sys.stdout.flush()
            raise SystemExit(0)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from agwtx.service import makeGatewayService

    gateway = makeGatewayService(options.gatewayConfig, reactor)
    _reloadOnSighup(reactor, gateway)
    if not options["demo"]:
        return gateway
    from agwtx.demo import demoService

    top = MultiService()
    for i, description in enumerate(DEMO_BACKENDS):
        demo = demoService(reactor, description, f"demo-{i + 1}")
        demo.setServiceParent(top)
    gateway.setServiceParent(top)
    return top




def _reloadOnSighup(reactor: Any, gateway: Any) -> None:
    """C{kill -HUP} (systemd's ExecReload) re-reads the configuration."""
    import signal

    def onSignal(signum: int, frame: Any) -> None:
        reactor.callFromThread(gateway.reload)

    signal.signal(signal.SIGHUP, onSignal)

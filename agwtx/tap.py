"""
The twistd plugin's options and service maker: C{twistd agw --config FILE}.

Configuration errors surface at option-parse time, before twistd
daemonises, as a list naming file, section and key (never a traceback).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, NoReturn

from twisted.application.service import IService, MultiService
from twisted.python import usage

from agwtx.config.errors import ConfigError
from agwtx.config.loader import loadConfig, summarize
from agwtx.routing.plugin import checkPlugins
from agwtx.config.model import GatewayConfig

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
        ["worker", None, "0", "Internal: the index of this worker process ([gateway] workers)."],
    ]
    optFlags = [
        ["check", None, "Validate the configuration, print a summary, and exit (0 ok, 1 errors)."],
        [
            "demo",
            None,
            "Also run the demo backends on 127.0.0.1:8081 and :8082, and create the demo "
            "TLS certificate (demo-tls/ beside the config) if it is missing.",
        ],
    ]

    gatewayConfig: GatewayConfig

    def postOptions(self) -> None:
        if self["demo"]:
            # The demo config's HTTPS listener uses a self-signed certificate made on first run.
            from agwtx.tools.democert import ensureDemoCertificate

            certDir = os.path.join(os.path.dirname(os.path.abspath(self["config"])), "demo-tls")
            try:
                ensureDemoCertificate(certDir)
            except OSError as e:
                sys.stderr.write(f"agw: --demo: cannot create the demo certificate in {certDir}: {e}\n")
                raise SystemExit(1)
        try:
            self.gatewayConfig = loadConfig(self["config"])
            checkPlugins(self.gatewayConfig)
        except ConfigError as e:
            _configErrors(list(e.errors))  # at option-parse time, before daemonising
        if self["check"]:
            sys.stdout.write("configuration OK\n")
            for line in summarize(self.gatewayConfig):
                sys.stdout.write(f"  {line}\n")
            sys.stdout.flush()
            raise SystemExit(0)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from agwtx.ops.gctune import tuneGarbageCollector
    from agwtx.ops.reactorpoll import installLeanPoll
    from agwtx.ops.startup import installExceptHook

    installExceptHook()
    installLeanPoll(reactor)
    service = _services(options, reactor)
    # After the service tree exists, so the freeze takes the routing tables,
    # pools and TLS contexts out of later collections too.
    tuneGarbageCollector()
    return service


def _services(options: Options, reactor: Any) -> IService:
    """The gateway's service tree for this process (a worker's, or the first process's)."""
    from agwtx.ops.workers import SECRET_ENV, WorkerSupervisor
    from agwtx.ops.workerview import WORKER_ADMIN_ENV

    config = options.gatewayConfig
    worker = int(options["worker"])
    count = config.gateway.workers
    if worker:
        # A worker started by the first process: same ports, same affinity secret, no admin.
        secret = bytes.fromhex(os.environ.get(SECRET_ENV, "")) or None
        private = os.environ.get(WORKER_ADMIN_ENV)
        gateway = _gatewayService(
            options,
            reactor,
            reusePort=True,
            serveAdmin=False,
            affinitySecret=secret,
            instanceId=f"{socket.gethostname()}/{worker}",
            workerAdmin=bool(private),
        )
        if private:
            # The supervisor's admin endpoint asks this one for the worker's figures.
            from agwtx.ops.workerview import adminService

            admin = adminService(gateway.ctx, config, reactor, endpoint=f"unix:{private}:mode=600")
            admin.setServiceParent(gateway)
        _reloadOnSighup(reactor, gateway)
        _reopenOnSigusr1(reactor, gateway)
        return gateway
    secret = config.gateway.affinitySecret or os.urandom(32)
    top = MultiService()
    supervisor = None
    workerView = None
    if count > 1:
        supervisor = WorkerSupervisor(
            reactor,
            os.path.abspath(options["config"]),
            count,
            secret,
            config.gateway.lameDuckPeriod + config.gateway.shutdownGracePeriod,
        )
        from agwtx.ops.workerview import WorkerView

        workerView = WorkerView(reactor, supervisor.adminSockets)
    gateway = _gatewayService(
        options,
        reactor,
        reusePort=count > 1,
        affinitySecret=secret,
        instanceId=f"{socket.gethostname()}/0" if count > 1 else socket.gethostname(),
        workerView=workerView,
    )
    if supervisor is not None:
        supervisor.setServiceParent(top)
    _reloadOnSighup(reactor, gateway, supervisor)
    _reopenOnSigusr1(reactor, gateway, supervisor)
    from agwtx.ops.watch import ConfigWatcher

    # [gateway] watchConfig, looked up at each tick (a reload may turn it on or off).
    watcher = ConfigWatcher(reactor, lambda: gateway.config, gateway.reload)
    watcher.setServiceParent(gateway)
    if not options["demo"] and supervisor is None:
        return gateway
    from agwtx.tools.demo import demoService

    if options["demo"]:
        for i, description in enumerate(DEMO_BACKENDS):
            demo = demoService(reactor, description, f"demo-{i + 1}")
            demo.setServiceParent(top)
    gateway.setServiceParent(top)
    return top


def _gatewayService(options: Options, reactor: Any, **kw: Any) -> Any:
    """
    The gateway service of C{options}' config.  A certificate file that went
    bad after L{Options.postOptions} checked it is reported like any config
    error (still before twistd daemonises), not as a traceback.
    """
    from agwtx.service import makeGatewayService
    from agwtx.ops.startup import StartupError
    from agwtx.config.certificates import TlsError

    try:
        return makeGatewayService(options.gatewayConfig, reactor, **kw)
    except TlsError as e:
        _configErrors(e.lines(options["config"]))
    except StartupError as e:  # before daemonising: said here, once
        sys.stderr.write(f"agw: {e}\n")
        raise SystemExit(1)


def _configErrors(lines: list[str]) -> NoReturn:
    # Not a UsageError: twistd would print the whole option help first and
    # bury the errors.
    sys.stderr.write(f"agw: configuration has {len(lines)} error(s):\n" + "".join(f"{x}\n" for x in lines))
    raise SystemExit(1)


def _reloadOnSighup(reactor: Any, gateway: Any, supervisor: Any = None) -> None:
    """C{kill -HUP} (systemd's ExecReload) re-reads the configuration, in every worker."""
    import signal

    def reloaded(errors: list[str]) -> None:
        # Every reload (SIGHUP, POST /reload, watchConfig) that applied is passed on to the workers.
        if supervisor is not None and not errors:
            supervisor.signal(signal.SIGHUP)

    def onSignal(signum: int, frame: Any) -> None:
        reactor.callFromThread(gateway.reload)

    gateway.reloadListeners.append(reloaded)

    signal.signal(signal.SIGHUP, onSignal)


def _reopenOnSigusr1(reactor: Any, gateway: Any, supervisor: Any = None) -> None:
    """
    C{kill -USR1} (logrotate's postrotate) reopens the access log file, in
    every worker: each writes the shared file through its own descriptor.
    Installed before twistd sets up its log, so twistd leaves SIGUSR1 alone
    (it would rotate its own log file on it).
    """
    import signal

    def reopen() -> None:
        gateway.reopenLogs()
        if supervisor is not None:
            supervisor.signal(signal.SIGUSR1)

    def onSignal(signum: int, frame: Any) -> None:
        reactor.callFromThread(reopen)

    signal.signal(signal.SIGUSR1, onSignal)

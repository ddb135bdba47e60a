"""
Worker processes: C{[gateway] workers = N} runs N processes that accept on
the same ports.

Each process binds its own listening socket with C{SO_REUSEPORT}, so the
kernel spreads new connections across them (no shared accept queue, no
thundering herd).  The first process (the one twistd started, which also
serves the admin endpoint) supervises the others: it starts them, restarts
one that dies, and passes SIGHUP (reload) and SIGTERM (graceful stop) on.
Every worker probes its backends itself, as every Azure instance does, and
all share one affinity secret, so a cookie pins the same member whichever
worker answers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint, serverFromString
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from agwtx.compat.twistedprivate import tcpEndpointParts
from agwtx.ops.workerview import WORKER_ADMIN_ENV

__all__ = ["ReusePortEndpoint", "WorkerSupervisor", "reusePortEndpoint", "SECRET_ENV"]

SECRET_ENV = "AGW_AFFINITY_SECRET"


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A TCP server endpoint whose socket has C{SO_REUSEPORT} set."""

    def __init__(self, reactor: Any, port: int, interface: str, backlog: int, family: int) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog
        self.family = family

    def listen(self, factory: Any) -> "defer.Deferred[IListeningPort]":
        def bindAndAdopt() -> IListeningPort:
            sock = socket.socket(self.family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if self.family == socket.AF_INET6 and self.interface in ("", "::"):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                default = "::" if self.family == socket.AF_INET6 else "0.0.0.0"
                sock.bind((self.interface or default, self.port))
                sock.listen(self.backlog)
                sock.setblocking(False)
                port: IListeningPort = self.reactor.adoptStreamPort(sock.fileno(), self.family, factory)
                return port
            finally:
                sock.close()  # the reactor holds its own duplicate

        return defer.execute(bindAndAdopt)


def reusePortEndpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    The C{SO_REUSEPORT} twin of a C{tcp:}/C{tcp6:} endpoint description;
    other endpoints (C{unix:}, C{systemd:}) are returned as they are.
    """
    endpoint = serverFromString(reactor, description)
    if isinstance(endpoint, TCP6ServerEndpoint):
        family = socket.AF_INET6
    elif isinstance(endpoint, TCP4ServerEndpoint):
        family = socket.AF_INET
    else:
        return endpoint
    port, interface, backlog = tcpEndpointParts(endpoint)
    return ReusePortEndpoint(reactor, port, interface, backlog, family)


class _WorkerProtocol(ProcessProtocol):
    def __init__(self, supervisor: "WorkerSupervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.supervisor._ended(self, reason)


class WorkerSupervisor(Service):
    """Starts workers 1..N-1, restarts them, forwards reload and stop."""

    log = Logger(namespace="agw.workers")

    def __init__(self, reactor: Any, configPath: str, count: int, secret: bytes, graceSeconds: float) -> None:
        self.reactor = reactor
        self.configPath = configPath
        self.count = count
        self.secret = secret
        self.grace = graceSeconds
        self.workers: dict[int, tuple[Any, _WorkerProtocol]] = {}
        self.restarts: dict[int, int] = {}
        # Each worker's private admin socket, in a directory only this user
        # can enter (agwtx.ops.workerview: one view of every process); made when
        # the service starts, so a start that fails leaves nothing behind.
        self.adminDirectory: str | None = None
        self.adminSockets: dict[int, str] = {}
        self.stopping = False

    def startService(self) -> None:
        super().startService()
        self.adminDirectory = tempfile.mkdtemp(prefix="agw-workers-")
        for i in range(1, self.count):
            self.adminSockets[i] = os.path.join(self.adminDirectory, f"worker-{i}.sock")
        for i in range(1, self.count):
            self._spawn(i)

    def _spawn(self, index: int) -> None:
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if os.path.exists(twistd):
            args = [twistd]
        else:
            args = [sys.executable, "-m", "twisted"]
            twistd = sys.executable
        args += [
            "--nodaemon",
            "--pidfile=",
            "--logfile=-",
            "agw",
            "--config",
            self.configPath,
            "--worker",
            str(index),
        ]
        env = dict(os.environ)
        env[SECRET_ENV] = self.secret.hex()
        env[WORKER_ADMIN_ENV] = self.adminSockets[index]
        env.pop("NOTIFY_SOCKET", None)  # only the supervisor talks to systemd
        proto = _WorkerProtocol(self, index)
        transport = self.reactor.spawnProcess(proto, twistd, args, env=env, childFDs={0: "w", 1: 1, 2: 2})
        self.workers[index] = (transport, proto)
        self.log.info("started worker {index} (pid {pid})", index=index, pid=transport.pid)

    def _ended(self, proto: _WorkerProtocol, reason: Failure) -> None:
        current = self.workers.get(proto.index)
        if current is not None and current[1] is proto:
            del self.workers[proto.index]
        if self.stopping or not self.running:
            return
        n = self.restarts[proto.index] = self.restarts.get(proto.index, 0) + 1
        delay = min(30.0, 0.5 * (2 ** min(n, 6)))
        self.log.warn(
            "worker {index} exited ({reason}); restarting in {delay}s",
            index=proto.index,
            reason=reason.value,
            delay=delay,
        )
        self.reactor.callLater(delay, self._respawn, proto.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping and self.running and index not in self.workers:
            self._spawn(index)

    def signal(self, signum: int) -> None:
        for transport, _ in list(self.workers.values()):
            try:
                transport.signalProcess(signum)
            except Exception:
                pass

    def _removeAdminDirectory(self) -> None:
        if self.adminDirectory is not None:
            shutil.rmtree(self.adminDirectory, ignore_errors=True)
            self.adminDirectory = None

    def stopService(self) -> "defer.Deferred[Any]":
        self.stopping = True
        super().stopService()
        ended = [proto.ended for _, proto in self.workers.values()]
        self.signal(signal.SIGTERM)
        if not ended:
            self._removeAdminDirectory()
            return defer.succeed(None)
        everyone = defer.DeferredList(ended)
        killer = self.reactor.callLater(self.grace + 5, self.signal, signal.SIGKILL)

        def done(result: Any) -> Any:
            if killer.active():
                killer.cancel()
            self._removeAdminDirectory()
            return result

        return everyone.addBoth(done)

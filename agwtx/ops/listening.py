"""
Frontend ports as listening sockets whose protocol stack can change in place.

A reload must not re-bind a port whose endpoint stays the same: a re-bind
can fail (another process took the port in between) and leaves a moment
with nothing listening.  So each port listens with a L{PortFactory}, a
stable factory that hands every new connection to its current I{stack}
(the Site, TLS around it, the PROXY protocol around that); a reload that
switches TLS or the PROXY protocol on or off builds a new stack and swaps
it in (L{PortFactory.swap}), and connections already open keep the stack
they were accepted by.

A L{PortListener} binds its endpoint synchronously (L{PortListener.bind}),
so a reload can bind every new port I{before} it changes anything, and
undo the binds when one fails (L{PortListener.unbind}).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from agwtx.ops.startup import StartupError, listenFailure

log = Logger(namespace="agw")

__all__ = ["BindError", "PortFactory", "PortListener"]


class BindError(Exception):
    """A frontend port's endpoint could not be listened on; the message names port and endpoint."""


@implementer(IProtocolFactory)
class PortFactory:
    """
    The factory a frontend port listens with: every new connection is built
    by the current C{stack}, which a reload may replace (L{swap}).
    """

    noisy = False

    def __init__(self, stack: IProtocolFactory) -> None:
        self.stack = stack
        self.listening = 0

    def buildProtocol(self, addr: Any) -> Any:
        return self.stack.buildProtocol(addr)

    def doStart(self) -> None:
        self.listening += 1
        self.stack.doStart()

    def doStop(self) -> None:
        if self.listening:
            self.listening -= 1
            self.stack.doStop()

    def swap(self, stack: IProtocolFactory) -> None:
        """New connections go to C{stack}; the old one is stopped (its open connections go on)."""
        old, self.stack = self.stack, stack
        for _ in range(self.listening):
            stack.doStart()
            old.doStop()

    def logPrefix(self) -> str:
        return type(self.stack).__name__


class PortListener(Service):
    """
    A listening socket as a service (a frontend port's, the admin
    endpoint's).  Unlike Twisted's C{StreamServerEndpointService}, binding
    is a separate synchronous step that raises L{BindError}, so a reload
    binds before it commits; at start-up the endpoint's own error is raised
    (twistd reports it and exits).
    """

    def __init__(
        self,
        label: str,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        what: str = "",
    ) -> None:
        self.label = label
        """What reload errors call it: C{[frontendPort:web]}, C{[gateway] admin}."""
        self.what = what or label
        """What a start-up failure calls it: C{frontendPort:web}, C{admin endpoint}."""
        self.description = description
        self.endpoint = endpoint
        self.factory = factory
        self.listening: IListeningPort | None = None

    def bind(self) -> None:
        """
        Listen now.  Every stream server endpoint of Twisted (tcp, tcp6,
        ssl, unix, systemd) binds synchronously; one that does not is
        refused rather than waited for, as a reload cannot wait.

        @raise BindError: naming the port and its endpoint.
        """
        if self.listening is not None:
            return
        outcome: list[Any] = []
        try:
            d: Deferred[IListeningPort] = self.endpoint.listen(self.factory)
        except Exception as e:  # an endpoint that raises instead of failing its Deferred
            raise BindError(f"{self.label} {self.description}: {e}") from e
        d.addBoth(outcome.append)
        if not outcome:
            d.cancel()
            raise BindError(f"{self.label} {self.description}: did not bind at once")
        result = outcome[0]
        if isinstance(result, Failure):
            raise BindError(f"{self.label} {self.description}: {result.getErrorMessage()}") from result.value
        self.listening = result

    def unbind(self) -> Deferred[None]:
        """Stop listening (idempotent); fires when the socket is closed."""
        listening, self.listening = self.listening, None
        if listening is None:
            done: Deferred[None] = Deferred()
            done.callback(None)
            return done
        return maybeDeferred(listening.stopListening)

    def privilegedStartService(self) -> None:
        # Binding here (not in startService) lets privileged ports bind before twistd drops root.
        try:
            self.bind()
        except BindError as e:
            # One line naming the listener, the address and port, and the
            # reason; twistd prints it and exits 1 (see agwtx.ops.startup).
            message = listenFailure(self.what, e.__cause__ or e, self.description)
            log.critical("agw: {message}", message=message)
            raise StartupError(message) from None
        super().privilegedStartService()

    def startService(self) -> None:
        self.bind()
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.unbind()

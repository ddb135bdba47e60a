"""
Start-up failures a user can cause (a port already taken, a port below 1024
without the capability, a unix socket in a missing directory, an access log
that cannot be opened) reported as one line and exit status 1, as nginx does,
instead of twistd's traceback.

A failure found while the service is built (before twistd daemonises) is
printed and exits at once.  One found when the listeners bind
(C{privilegedStartService}, after twistd has forked in daemon mode) is raised
as L{StartupError}, which L{installExceptHook} prints as its one line; in
daemon mode twistd's parent process also reports it (its own format, "An
error has occurred: ...") and exits 1.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

__all__ = [
    "StartupError",
    "installExceptHook",
    "listenFailure",
    "reason",
    "serverEndpoint",
]

log = Logger(namespace="agw.startup")


class StartupError(Exception):
    """A start-up failure with a message for the user: printed as one line, exit status 1."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# Short: twistd's parent shows at most 100 bytes of it in daemon mode.
StartupError.__module__ = "agw"


def reason(error: BaseException | None) -> str:
    """The reason of a failed bind or open, as a short lower-case phrase."""
    if isinstance(error, OSError) and error.strerror:
        reason = error.strerror[:1].lower() + error.strerror[1:]
        if error.errno == errno.EACCES:
            reason += " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
        return reason
    return str(error) if error is not None else "unknown error"


def listenFailure(what: str, failure: BaseException, description: str = "") -> str:
    """
    One line for a failure to listen: C{what} (which listener), the address
    and port (else the endpoint C{description}), and the reason.
    """
    if isinstance(failure, CannotListenError):
        interface, port = failure.interface, failure.port
        if interface is None and isinstance(port, str):  # a unix socket: its path
            where = f"unix socket {port}"
        else:
            where = f"{interface or '*'}:{port}"
        return f"cannot listen on {where} ({what}): {reason(failure.socketError)}"
    where = f" on {description}" if description else ""
    return f"cannot listen{where} ({what}): {reason(failure)}"


def serverEndpoint(reactor: Any, description: str, what: str) -> Any:
    """
    C{serverFromString}, with a C{systemd:} endpoint whose socket systemd did
    not pass (the config run by hand, not from its .socket unit) reported as
    a L{StartupError} instead of an C{IndexError} traceback.
    """
    try:
        return serverFromString(reactor, description)
    except IndexError:
        raise StartupError(
            f"cannot listen on {description} ({what}): systemd passed no socket with that index "
            "(LISTEN_FDS); start it from its .socket unit"
        ) from None


def installExceptHook() -> None:
    """
    Print a L{StartupError} that ends the process as its one line on the
    process's own standard error (twistd has redirected C{sys.stderr} into its
    log, which L{ListeningService} has already written to), not a traceback.
    Anything else keeps Python's report.
    """
    previous = sys.excepthook

    def hook(kind: Any, value: BaseException, tb: Any) -> None:
        if isinstance(value, StartupError):
            stream = sys.__stderr__
            if stream is not None:
                stream.write(f"agw: {value}\n")
                stream.flush()
            return
        previous(kind, value, tb)

    sys.excepthook = hook

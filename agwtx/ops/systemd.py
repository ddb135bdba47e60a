"""
systemd integration: C{sd_notify} over C{$NOTIFY_SOCKET} (READY=1,
RELOADING=1, STOPPING=1, STATUS=...), a few lines over a unix datagram
socket instead of a dependency.  A no-op when not started by systemd.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["notify"]


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """
    Send C{fields} (e.g. C{"READY=1"}, C{"STATUS=serving"}) to systemd.
    Returns whether a message was sent.  Errors are swallowed: a gateway
    must not fail because its supervisor went away.
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    message = "\n".join(fields)
    if "RELOADING=1" in fields and "MONOTONIC_USEC=" not in message:
        # Type=notify-reload needs the timestamp; plain Type=notify ignores it.
        message += f"\nMONOTONIC_USEC={time.monotonic_ns() // 1000}"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(address)
            s.sendall(message.encode("utf-8"))
    except OSError:
        return False
    return True

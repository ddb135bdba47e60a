"""
Coarse deadlines for many short-lived things (request timeouts).

A per-request C{callLater} plus its C{cancel} is measurable on the proxy's
hot path; here a request only adds itself to a dict and removes itself when
done, and one sweep every L{RESOLUTION} seconds fires what is overdue.  A
timeout therefore fires up to a quarter of a second late, which is fine for
timeouts counted in seconds.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["Deadlines", "RESOLUTION"]

RESOLUTION = 0.25


class Deadlines:
    """Call C{callback()} once C{delay} seconds have passed, unless removed first."""

    log = Logger()

    def __init__(self, clock: IReactorTime, resolution: float = RESOLUTION) -> None:
        self.clock = clock
        self.resolution = resolution
        self.items: dict[Any, tuple[float, Callable[[], None]]] = {}
        self.call: IDelayedCall | None = None

    def add(self, key: Any, delay: float, callback: Callable[[], None]) -> None:
        """(Re)arm C{key}'s deadline."""
        self.items[key] = (self.clock.seconds() + delay, callback)
        if self.call is None:
            self.call = self.clock.callLater(self.resolution, self._sweep)

    def remove(self, key: Any) -> None:
        self.items.pop(key, None)

    def _sweep(self) -> None:
        self.call = None
        now = self.clock.seconds()
        due = [(key, cb) for key, (deadline, cb) in self.items.items() if deadline <= now]
        for key, callback in due:
            del self.items[key]
            try:
                callback()
            except Exception:
                self.log.failure("deadline callback failed")
        if self.items and self.call is None:
            self.call = self.clock.callLater(self.resolution, self._sweep)

    def stop(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        self.items.clear()

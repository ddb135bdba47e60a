"""
Log lines about things a client can repeat at will (refused connections,
dropped header fields), at most one per L{LOG_INTERVAL} seconds for each
kind, with the number not logged since the last line: a flood of them does
not flood the log too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LOG_INTERVAL", "RateLimitedLog"]

LOG_INTERVAL = 10.0
"""Seconds between two log lines of one kind."""


class RateLimitedLog:
    """When a line of each kind may be logged, and how many were held back since the last."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[Any, float] = {}
        self._held: dict[Any, int] = {}

    def due(self, now: float, kind: Any = None) -> int | None:
        """
        For one more event of C{kind} at C{now} (the reactor's seconds): None when a line of that kind was
        logged less than L{interval} seconds ago (the event is counted),
        else the number of events held back since that line (this one is to
        be logged now).
        """
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        return self._held.pop(kind, 0)

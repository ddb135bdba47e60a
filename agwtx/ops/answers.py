"""What every admin page answers with: times as ISO 8601, JSON documents."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from twisted.web.server import Request

__all__ = ["isoTime", "jsonBody"]


def isoTime(seconds: float | None) -> str | None:
    """A reactor time (POSIX seconds) as ISO 8601 in UTC, or None."""
    if seconds is None:
        return None
    return (
        datetime.fromtimestamp(seconds, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def jsonBody(request: Request, document: Any) -> bytes:
    """An admin JSON answer: never cached, indented for people reading it with curl."""
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(document, indent=2).encode("utf-8") + b"\n"

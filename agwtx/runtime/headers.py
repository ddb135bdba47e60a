"""
Header-level helpers shared by the proxy, the WebSocket bridge and the
gateway's own answers: the hop-by-hop set, Connection tokens, the Date
value, and a backend response's headers as relayed to the client.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.web.http import datetimeToString
from twisted.web.http_headers import Headers

from agwtx.config.values import HOP_BY_HOP_FIELDS

__all__ = ["HOP_BY_HOP", "connectionTokens", "httpDate", "responseHeaders"]

HOP_BY_HOP = frozenset(name.encode("ascii") for name in HOP_BY_HOP_FIELDS)
"""The connection-specific fields, as the proxy compares them (lowercase bytes)."""


def connectionTokens(values: list[bytes] | None) -> frozenset[bytes]:
    """Header names listed in Connection headers (lowercased)."""
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(b",") if t.strip())


_date: list[Any] = [-1, b""]


def httpDate() -> bytes:
    """The current time as an HTTP Date value (IMF-fixdate), made once per second."""
    second = int(time.time())
    if second != _date[0]:
        _date[1] = datetimeToString(second)
        _date[0] = second
    return _date[1]  # type: ignore[no-any-return]


def responseHeaders(headers: list[tuple[bytes, bytes]]) -> Headers:
    """
    Backend response headers minus hop-by-hop ones, order kept; a Date added
    when the backend sent none (RFC 9110 section 6.6.1: a recipient with a
    clock forwarding such a response must add one).
    """
    named: frozenset[bytes] = frozenset()
    for name, value in headers:
        if name.lower() == b"connection":
            named = named | connectionTokens([value])
    out = Headers()
    add = out.addRawHeader
    dated = False
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in named:
            continue
        if lname == b"date":
            dated = True
        add(name, value)
    if not dated:
        add(b"Date", httpDate())
    return out

"""
The body of an answer the gateway makes itself (no healthy member, backend
unreachable or too slow, routing and request errors): a custom HTML page
(C{customErrorPage.NNN}, Azure's customErrorConfigurations), JSON for
clients that prefer it, or a line of plain text.

A backend's own error responses never come here: they pass through as the
backend sent them, as in Azure.
"""

from __future__ import annotations

import json
from typing import Mapping

from agwtx.config.model import CustomErrorPage, GatewayConfig

__all__ = ["ErrorPages", "prefersJson"]

HTML = b"text/html; charset=utf-8"
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"


def _pages(pages: tuple[CustomErrorPage, ...]) -> dict[int, bytes]:
    return {page.status: page.body for page in pages}


def _mediaRanges(values: list[bytes]) -> list[tuple[str, float]]:
    """(media range, q) pairs of Accept header values, in order; malformed q counts as 0."""
    out: list[tuple[str, float]] = []
    for value in values:
        for item in value.decode("latin-1").split(","):
            parts = item.split(";")
            media = parts[0].strip().lower()
            if not media:
                continue
            q = 1.0
            for param in parts[1:]:
                name, _, raw = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        q = float(raw.strip())
                    except ValueError:
                        q = 0.0
                    if not 0.0 <= q <= 1.0:
                        q = 0.0
            out.append((media, q))
    return out


def _quality(ranges: list[tuple[str, float]], media: str) -> tuple[float, int]:
    """The q the most specific matching range gives C{media}, and that range's position (-1: none)."""
    kind = media.split("/", 1)[0] + "/*"
    best: tuple[int, float, int] = (-1, 0.0, -1)
    for index, (candidate, q) in enumerate(ranges):
        if candidate == media:
            specificity = 2
        elif candidate == kind:
            specificity = 1
        elif candidate == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[0]:
            best = (specificity, q, index)
    return best[1], best[2]


def prefersJson(accept: list[bytes] | None) -> bool:
    """
    Whether a client's Accept prefers C{application/json} to C{text/html}:
    a higher q, or the same q with JSON named first.  No Accept, or one
    that rates both alike by wildcard, keeps HTML.
    """
    if not accept:
        return False
    ranges = _mediaRanges(accept)
    jsonQ, jsonAt = _quality(ranges, "application/json")
    htmlQ, htmlAt = _quality(ranges, "text/html")
    if jsonQ <= 0.0:
        return False
    if jsonQ != htmlQ:
        return jsonQ > htmlQ
    return ranges[jsonAt][0] == "application/json" and (htmlAt < 0 or jsonAt < htmlAt)


class ErrorPages:
    """The custom error pages of one configuration (none for C{None})."""

    def __init__(self, config: GatewayConfig | None) -> None:
        self.gateway: dict[int, bytes] = {}
        self.listeners: Mapping[str, dict[int, bytes]] = {}
        if config is not None:
            self.gateway = _pages(config.gateway.customErrorPages)
            self.listeners = {
                name: _pages(listener.customErrorPages)
                for name, listener in config.httpListeners.items()
                if listener.customErrorPages
            }

    def page(self, listener: str | None, status: int) -> bytes | None:
        """
        The custom page for C{status} on C{listener}: a listener with pages of
        its own uses only those (Azure: a listener's configuration overrides
        the global one), others the gateway-wide ones.
        """
        pages = self.listeners.get(listener, self.gateway) if listener is not None else self.gateway
        return pages.get(status)

    def body(
        self,
        listener: str | None,
        status: int,
        message: str,
        requestId: str | None,
        accept: list[bytes] | None,
    ) -> tuple[bytes, bytes]:
        """(content type, body) of the gateway's own answer with C{status}."""
        if prefersJson(accept):
            doc = {"status": status, "reason": message, "requestId": requestId}
            return JSON, json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n"
        page = self.page(listener, status)
        if page is not None:
            return HTML, page
        return TEXT, f"{status} {message}\n".encode("utf-8")

"""
Pure functions routing is made of: Host syntax and the host name a request
is for, path normalisation and matching, the WebSocket upgrade test.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence
from urllib.parse import unquote_to_bytes

from twisted.web.iweb import IRequest

# -- pure helpers ---------------------------------------------------------


# RFC 3986 section 3.2.2 and 3.2.3: a reg-name (unreserved, sub-delims and
# %-escapes) or a bracketed IPv6 literal, then an optional port of digits.
_HOST_SYNTAX = re.compile(rb"(?:[A-Za-z0-9\-._~%!$&'()*+,;=]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{0,5}))?\Z")


def validHost(host: bytes) -> bool:
    """
    Whether a Host header value is a syntactically valid authority.  Empty
    is allowed (RFC 9110 section 7.2: a target without an authority).  Like
    nginx, a name that starts with a dot or holds two dots together is
    refused, and so is a port past 65535.
    """
    if not host:
        return True
    m = _HOST_SYNTAX.match(host)
    if m is None or host[:1] == b"." or b".." in host:
        return False
    port = m.group(1)
    return not port or int(port) <= 65535


def splitHost(host: bytes) -> tuple[str, int | None] | None:
    """
    C{(name, port)} of a non-empty, valid (L{validHost}) Host value: the
    name as L{requestHost} gives it, the port or None; None when invalid.
    """
    host = host.strip()
    m = _HOST_SYNTAX.match(host)
    if not host or m is None or not validHost(host):
        return None
    return requestHost(host), int(m.group(1)) if m.group(1) else None


def requestHost(host: bytes | None) -> str:
    """The Host header's name, lowercased, without port or trailing dot."""
    if not host:
        return ""
    h = host.decode("latin-1").strip().lower()
    if h.startswith("["):
        end = h.find("]")
        return h[1:end] if end > 0 else h
    name, _, _ = h.partition(":")
    return name.rstrip(".")


def normalizePath(path: bytes) -> str | None:
    """
    Percent-decode a request path and resolve C{.} and C{..} segments
    (RFC 3986 5.2.4), so that C{/images/../admin} is matched as C{/admin}.
    None when the path is not origin-form or decodes to invalid UTF-8 or NUL.
    """
    if not path.startswith(b"/"):
        return None
    if b"%" not in path and b"/." not in path and b"\0" not in path:
        # The common case: nothing to decode or resolve (same result, a fraction of the cost).
        try:
            return path.decode("utf-8")
        except UnicodeDecodeError:
            return None
    decoded = unquote_to_bytes(path)
    if b"\0" in decoded:
        return None
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out: list[str] = []
    segments = text.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if out:
                out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)


def pathMatcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Azure path patterns: exact, or a prefix when they end in C{*}; case-insensitive."""
    exact = {p.lower() for p in patterns if not p.endswith("*")}
    prefixes = tuple(p[:-1].lower() for p in patterns if p.endswith("*"))

    def match(path: str) -> bool:
        lowered = path.lower()
        return lowered in exact or (bool(prefixes) and lowered.startswith(prefixes))

    return match


def isWebSocketUpgrade(request: IRequest) -> bool:
    upgrade = request.requestHeaders.getRawHeaders(b"upgrade")
    return bool(upgrade) and any(v.strip().lower() == b"websocket" for v in upgrade)  # type: ignore[union-attr]

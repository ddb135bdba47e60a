"""
The opening handshake, pure functions: validating the client's (RFC 6455
section 4.2.1), the extension offers, which headers are forwarded to the
backend and which of its answer are returned.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
)
from twisted.web.http_headers import Headers

from agwtx.runtime.headers import connectionTokens, responseHeaders

from agwtx.websocket.frames import DEFLATE


_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

# Request headers the backend handshake never copies: autobahn's client
# writes its own key, version, subprotocol offer and extension offer.
_NOT_FORWARDED = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"sec-websocket-accept",
        b"content-length",
    }
)

# Backend 101 headers that are not the backend's to pass on (besides
# hop-by-hop ones): the client leg's handshake writes its own.
_NOT_RETURNED = frozenset(
    {
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
        b"sec-websocket-version",
        b"content-length",
        b"server",
        b"date",
    }
)

# Refusal headers passed on with a backend's non-101 status.
_REFUSAL_HEADERS = frozenset({b"location", b"www-authenticate", b"retry-after", b"set-cookie"})


# -- pure helpers ---------------------------------------------------------


def _isToken(value: bytes) -> bool:
    return bool(value) and all(c in _TCHAR for c in value)


def parseExtensionOffers(header: str) -> list[tuple[str, str, dict[str, list[Any]]]]:
    """
    C{Sec-WebSocket-Extensions} as (name, original text, params), params in
    the shape autobahn's offer parsers take (quotes removed, bare names True).
    """
    out: list[tuple[str, str, dict[str, list[Any]]]] = []
    for element in header.split(","):
        element = element.strip()
        if not element:
            continue
        parts = [p.strip() for p in element.split(";")]
        params: dict[str, list[Any]] = {}
        for p in parts[1:]:
            key, eq, value = p.partition("=")
            key = key.strip().lower()
            v: Any = True
            if eq:
                v = value.strip()
                if v[:1] == '"':
                    v = v[1:]
                if v[-1:] == '"':
                    v = v[:-1]
            params.setdefault(key, []).append(v)
        out.append((parts[0].lower(), element, params))
    return out


def _deflateOffers(header: str | None) -> list[str]:
    """
    The client's permessage-deflate offers that parse.  RFC 7692 5: a server
    declines (ignores) an offer with bad parameters; it does not fail.
    """
    if not header:
        return []
    good = []
    for name, text, params in parseExtensionOffers(header):
        if name != PerMessageDeflateOffer.EXTENSION_NAME:
            continue
        try:
            PerMessageDeflateOffer.parse(params)
        except Exception:
            continue
        good.append(text)
    return good


class HandshakeError(Exception):
    """A handshake the gateway answers itself, with a status and a short message."""

    def __init__(self, code: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.headers = list(headers)


class ClientHandshake:
    """What the bridge needs from a valid client handshake."""

    __slots__ = ("deflateOffers", "key", "subprotocols")

    def __init__(self, key: bytes, subprotocols: list[str], deflateOffers: list[str]) -> None:
        self.key = key
        self.subprotocols = subprotocols
        self.deflateOffers = deflateOffers


def checkHandshake(method: bytes, version: bytes, headers: Headers) -> ClientHandshake:
    """
    Validate an opening handshake (RFC 6455 4.2.1); raise L{HandshakeError}
    with the status to answer.  An unsupported or missing version is 426 with
    C{Sec-WebSocket-Version: 13}; anything else malformed is 400.
    """
    if method != b"GET":
        raise HandshakeError(400, "Bad Request: a WebSocket handshake must use GET")
    if version != b"HTTP/1.1":
        raise HandshakeError(400, "Bad Request: a WebSocket handshake must use HTTP/1.1")
    if b"upgrade" not in connectionTokens(list(headers.getRawHeaders(b"connection") or ())):
        raise HandshakeError(400, "Bad Request: Connection must include the upgrade token")
    versions = headers.getRawHeaders(b"sec-websocket-version") or []
    if len(versions) != 1 or versions[0].strip() != b"13":
        raise HandshakeError(
            426,
            "Upgrade Required: only WebSocket version 13 is supported",
            [(b"Sec-WebSocket-Version", b"13"), (b"Upgrade", b"websocket")],
        )
    keys = headers.getRawHeaders(b"sec-websocket-key") or []
    if len(keys) != 1:
        raise HandshakeError(400, "Bad Request: exactly one Sec-WebSocket-Key is required")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Bad Request: Sec-WebSocket-Key must be 16 bytes in base64")
    subprotocols: list[str] = []
    offered = headers.getRawHeaders(b"sec-websocket-protocol")
    if offered:
        for token in b",".join(offered).split(b","):
            token = token.strip()
            if not _isToken(token):
                raise HandshakeError(400, "Bad Request: malformed Sec-WebSocket-Protocol")
            name = token.decode("ascii")
            if name in subprotocols:
                raise HandshakeError(400, "Bad Request: a subprotocol is offered twice")
            subprotocols.append(name)
    origins = headers.getRawHeaders(b"origin")
    if origins is not None and len(origins) > 1:
        raise HandshakeError(400, "Bad Request: more than one Origin header")
    extensions = headers.getRawHeaders(b"sec-websocket-extensions")
    deflate = (
        _deflateOffers(b", ".join(extensions).decode("latin-1") if extensions else None) if DEFLATE else []
    )
    return ClientHandshake(key, subprotocols, deflate)


def _returnedHeaders(head: bytes) -> Headers:
    """The end-to-end headers of a backend's response head that are the backend's to pass on."""
    pairs: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name and name[-1:] not in (b" ", b"\t"):
            pairs.append((name, value.strip(b" \t")))
    headers = responseHeaders(pairs)
    for name in _NOT_RETURNED:
        headers.removeHeader(name)
    return headers


def _statusOf(statusLine: str | None) -> int | None:
    if not statusLine:
        return None
    parts = statusLine.split()
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit() and len(parts[1]) == 3:
        return int(parts[1])
    return None

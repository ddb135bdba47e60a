"""
Cookie-based affinity: the cookie itself says which member it pins.

The value is C{<member key, base64url>.<HMAC-SHA256 tag, base64url>}, the tag
covering the pool and settings names as well, so a cookie minted for one pool
means nothing to another.  Any gateway instance holding the same secret
honours the same cookie, which is what lets agw scale out without shared
state.  A forged, stale or malformed cookie is ignored: the request is
balanced normally and re-pinned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["AffinityCodec", "affinityCookies"]

_TAG_BYTES = 16


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class AffinityCodec:
    """Signs and verifies member identities for affinity cookies."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret if secret is not None else os.urandom(32)

    def _tag(self, scope: bytes, key: bytes) -> bytes:
        return hmac.new(self.secret, scope + b"\0" + key, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, scope: str, memberKey: str) -> bytes:
        key = memberKey.encode("utf-8")
        return _b64(key) + b"." + _b64(self._tag(scope.encode("utf-8"), key))

    def decode(self, scope: str, value: bytes) -> str | None:
        """The member key a genuine cookie names, else None."""
        head, sep, tag = value.partition(b".")
        if not sep or len(value) > 512:
            return None
        try:
            key = _unb64(head)
            given = _unb64(tag)
        except (ValueError, TypeError):
            return None
        if not hmac.compare_digest(given, self._tag(scope.encode("utf-8"), key)):
            return None
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            return None


def affinityCookies(name: str, value: bytes, secure: bool) -> list[bytes]:
    """
    The Set-Cookie values Azure sends: the plain cookie and its C{CORS} twin
    (C{SameSite=None; Secure}, which browsers keep for cross-site requests).
    """
    cookie = name.encode("ascii") + b"=" + value + b"; Path=/; HttpOnly"
    if secure:
        cookie += b"; Secure"
    cors = name.encode("ascii") + b"CORS=" + value + b"; Path=/; HttpOnly; SameSite=None; Secure"
    return [cookie, cors]

"""
Cookie-based affinity: the cookie says which member it pins, opaquely.

The value is a member token: C{HMAC-SHA256(key, scope, member)} truncated
to 16 bytes, base64url (22 characters).  The scope (pool and settings
names) makes a cookie minted for one pool mean nothing to another; the
member's address is not in it, not even encoded: the gateway finds the
member in a map, per scope, from every token of every member of the pool
(under each key) to that member, made again when the membership changes, so
a request's cookie costs one dict lookup.  Any gateway instance holding the same keys honours the same
cookie, which is what lets agw scale out without shared state.

Keys rotate without logging anyone out: C{[gateway] affinitySecrets = new,
old} signs with the first key and accepts tokens of every key; a client
pinned with the old key is re-pinned with the new one on its next response.
A forged, stale or malformed cookie is ignored: the request is balanced
normally and re-pinned.

L{AffinityCodec.encode}/L{AffinityCodec.decode} sign arbitrary values (the
value readable, with a tag) for routing plugins that need a sticky label.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence

__all__ = ["AffinityCodec", "affinityCookies"]

_TAG_BYTES = 16
_TOKEN_LENGTH = 22
"""Characters of a member token: 16 bytes in unpadded base64url."""
_CACHE_LIMIT = 8192
_SCOPE_LIMIT = 1024
"""Scopes with a reverse map kept (one per (pool, settings) pair a rule uses)."""


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


class AffinityCodec:
    """
    Signs and verifies affinity cookie values with one or more keys: the
    first signs, all verify.  Without keys, a random one for this process.
    The keys never change: new keys (a reload) are a new codec, with maps
    of its own.
    """

    def __init__(self, secret: bytes | None = None, secrets: Sequence[bytes] = ()) -> None:
        keys = tuple(secrets) or ((secret,) if secret is not None else (os.urandom(32),))
        self.secrets = keys
        self.secret = keys[0]
        self._tokens: dict[tuple[int, str, str], bytes] = {}
        self._byScope: dict[str, tuple[tuple[str, ...], dict[bytes, tuple[str, bool]]]] = {}
        """Per scope: the member keys the map was made for, and token -> (member key, signing key?)."""

    # -- member tokens (affinity cookies)

    def _token(self, index: int, scope: str, memberKey: str) -> bytes:
        cacheKey = (index, scope, memberKey)
        token = self._tokens.get(cacheKey)
        if token is None:
            if len(self._tokens) >= _CACHE_LIMIT:
                self._tokens.clear()
            mac = hmac.new(
                self.secrets[index],
                b"member\0" + scope.encode("utf-8") + b"\0" + memberKey.encode("utf-8"),
                hashlib.sha256,
            )
            token = self._tokens[cacheKey] = _b64(mac.digest()[:_TAG_BYTES])
        return token

    def memberToken(self, scope: str, memberKey: str) -> bytes:
        """The cookie value pinning C{memberKey} in C{scope}, with the signing key."""
        return self._token(0, scope, memberKey)

    def findMember(self, scope: str, value: bytes, memberKeys: Iterable[str]) -> tuple[str, bool] | None:
        """
        C{(member key, current)}: the one of C{memberKeys} that C{value}
        pins under any of the keys, and whether that was the signing key (if
        not, the caller pins the client again, with the signing key); else None.
        """
        if len(value) != _TOKEN_LENGTH:
            return None
        keys = tuple(memberKeys)
        entry = self._byScope.get(scope)
        if entry is None or entry[0] != keys:
            entry = self._byScope[scope] = (keys, self._reverseMap(scope, keys))
        # A plain dict lookup, not a constant-time comparison: the timing
        # can tell only whether the value's (per-process keyed) hash meets
        # a token's, which says nothing about a token's bytes.
        return entry[1].get(value)

    def _reverseMap(self, scope: str, memberKeys: tuple[str, ...]) -> dict[bytes, tuple[str, bool]]:
        """Every token of C{memberKeys} in C{scope} under every key, to (member key, signing key?)."""
        if len(self._byScope) >= _SCOPE_LIMIT:
            self._byScope.clear()
        found: dict[bytes, tuple[str, bool]] = {}
        for index in range(len(self.secrets)):
            for memberKey in memberKeys:
                found.setdefault(self._token(index, scope, memberKey), (memberKey, index == 0))
        return found

    # -- signed values (routing plugins)

    def _tag(self, secret: bytes, scope: bytes, key: bytes) -> bytes:
        return hmac.new(secret, scope + b"\0" + key, hashlib.sha256).digest()[:_TAG_BYTES]

    def encode(self, scope: str, value: str) -> bytes:
        """C{value} (readable) with a tag of the signing key, for a plugin's sticky cookie."""
        key = value.encode("utf-8")
        return _b64(key) + b"." + _b64(self._tag(self.secret, scope.encode("utf-8"), key))

    def decode(self, scope: str, raw: bytes) -> str | None:
        """The value a genuine L{encode}d cookie carries (tagged by any key), else None."""
        head, sep, tag = raw.partition(b".")
        if not sep or len(raw) > 512:
            return None
        try:
            key = _unb64(head)
            given = _unb64(tag)
        except (ValueError, TypeError):
            return None
        scoped = scope.encode("utf-8")
        if not any(hmac.compare_digest(given, self._tag(s, scoped, key)) for s in self.secrets):
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

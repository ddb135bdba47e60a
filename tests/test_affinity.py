"""
Affinity cookies' member lookup (L{AffinityCodec.findMember}): one dict
lookup in a per-scope map from tokens to members, made again when the
pool's membership changes; cookies of a former key still pin (to be re-signed).
"""

from __future__ import annotations

from typing import Any

from agwtx.proxy.affinity import AffinityCodec

SCOPE = "pool/settings"
MEMBERS = ("10.0.0.1:80", "10.0.0.2:80", "[2001:db8::3]:80")


def counted(codec: AffinityCodec) -> list[tuple[int, str, str]]:
    """Record every token C{codec} works out (an HMAC, unless cached)."""
    calls: list[tuple[int, str, str]] = []
    token = codec._token

    def spy(index: int, scope: str, memberKey: str) -> Any:
        calls.append((index, scope, memberKey))
        return token(index, scope, memberKey)

    codec._token = spy  # type: ignore[method-assign]
    return calls


def test_a_cookie_is_found_by_one_lookup_once_the_scope_is_mapped() -> None:
    codec = AffinityCodec(secrets=[b"n" * 32, b"o" * 32])
    old = AffinityCodec(b"o" * 32)
    assert codec.findMember(SCOPE, codec.memberToken(SCOPE, MEMBERS[0]), MEMBERS) == (MEMBERS[0], True)
    calls = counted(codec)
    for _ in range(3):
        assert codec.findMember(SCOPE, codec.memberToken(SCOPE, MEMBERS[2]), MEMBERS) == (MEMBERS[2], True)
        # a cookie of the former key pins its member, to be signed again with the new one
        assert codec.findMember(SCOPE, old.memberToken(SCOPE, MEMBERS[1]), MEMBERS) == (MEMBERS[1], False)
        assert codec.findMember(SCOPE, b"A" * 22, MEMBERS) is None
    # memberToken (cached) for the cookies above; no token for the lookups
    assert calls == [(0, SCOPE, MEMBERS[2])] * 3


def test_the_map_is_made_again_when_the_membership_changes() -> None:
    codec = AffinityCodec(b"k" * 32)
    gone, staying, new = MEMBERS
    tokens = {key: codec.memberToken(SCOPE, key) for key in MEMBERS}
    assert codec.findMember(SCOPE, tokens[gone], (gone, staying)) == (gone, True)
    assert codec.findMember(SCOPE, tokens[new], (gone, staying)) is None
    # gone leaves the pool, new joins: its cookie pins it, gone's pins nothing
    assert codec.findMember(SCOPE, tokens[new], (staying, new)) == (new, True)
    assert codec.findMember(SCOPE, tokens[gone], (staying, new)) is None
    assert codec.findMember(SCOPE, tokens[staying], (staying, new)) == (staying, True)
    # each scope has its own map: a token of one scope means nothing in another
    assert codec.findMember("other/settings", tokens[staying], (staying, new)) is None
    assert codec.findMember(SCOPE, tokens[staying], [staying]) == (staying, True)


def test_new_keys_are_a_new_codec_that_maps_afresh() -> None:
    """A reload with rotated keys builds a new codec (L{agwtx.service}): old cookies re-pin, unknown ones do not."""
    before = AffinityCodec(b"o" * 32)
    cookie = before.memberToken(SCOPE, MEMBERS[1])
    assert before.findMember(SCOPE, cookie, MEMBERS) == (MEMBERS[1], True)
    rotated = AffinityCodec(secrets=[b"n" * 32, b"o" * 32])
    assert rotated.findMember(SCOPE, cookie, MEMBERS) == (MEMBERS[1], False)
    assert AffinityCodec(b"n" * 32).findMember(SCOPE, cookie, MEMBERS) is None

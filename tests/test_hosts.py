"""routing.match.splitHost: the one Host parser the admin guard and routing share."""

from __future__ import annotations

import pytest

from agwtx.routing.match import splitHost


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"localhost", ("localhost", None)),
        (b"LocalHost:9901", ("localhost", 9901)),
        (b"[::1]", ("::1", None)),
        (b"[::1]:9901", ("::1", 9901)),
        (b"127.0.0.1:80", ("127.0.0.1", 80)),
        (b"  example.com.  ", ("example.com", None)),
        (b"", None),
        (b"a:99999", None),
        (b"[::1", None),
        (b"[::1]x", None),
        (b"a b", None),
        (b".example", None),
        (b"a..b", None),
    ],
)
def test_split_host(value: bytes, expected: tuple[str, int | None] | None) -> None:
    assert splitHost(value) == expected

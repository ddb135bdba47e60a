"""
Every place the gateway writes a host into a URL or a Host value brackets an
IPv6 literal (RFC 3986 section 3.2.2) through one function,
L{agwtx.proxy.pool.hostForHeader}: redirects to a listener, probe URLs,
member keys and Host values.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.web.http_headers import Headers

from agwtx.config.model import DEFAULT_PROBE, RedirectConfiguration
from agwtx.health.probe import ProbeRequest
from agwtx.proxy.pool import Member, hostForHeader
from agwtx.routing.router import RedirectTarget


@pytest.mark.parametrize(
    "host, expected",
    [("::1", "[::1]"), ("[::1]", "[::1]"), ("10.0.0.1", "10.0.0.1"), ("app.example", "app.example")],
)
def test_hostForHeader(host: str, expected: str) -> None:
    assert hostForHeader(host) == expected


@pytest.mark.parametrize(
    "hostHeader, location",
    [
        (b"[2001:db8::1]:8080", b"https://[2001:db8::1]:8443/a?b=c"),
        (b"[::1]", b"https://[::1]:8443/a?b=c"),
        (b"app.example:8080", b"https://app.example:8443/a?b=c"),
    ],
)
def test_a_redirect_to_a_listener_brackets_an_ipv6_host(hostHeader: bytes, location: bytes) -> None:
    target = RedirectTarget("r", RedirectConfiguration("r", targetListener="l"), "", "https", 8443)
    request = SimpleNamespace(uri=b"/a?b=c", agwUri=None, requestHeaders=Headers({b"host": [hostHeader]}))
    assert target.location(request) == location  # type: ignore[arg-type]


def test_probe_url_and_member_brackets_an_ipv6_member() -> None:
    probe = ProbeRequest("2001:db8::7", 8080, "Http", "[2001:db8::7]", "/health", DEFAULT_PROBE)
    assert probe.url == "http://[2001:db8::7]:8080/health"
    member = Member("2001:db8::7", 8080)
    assert (member.key, member.hostHeader) == ("[2001:db8::7]:8080", b"[2001:db8::7]")

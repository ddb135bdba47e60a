"""
The client address of a request: the TCP peer (or the PROXY protocol
client), or, from trusted proxies only, the rightmost untrusted address of
C{X-Forwarded-For} / C{Forwarded}.
"""

from __future__ import annotations

import ipaddress
from typing import Any


from agwtx.config.model import GatewaySettings


def clientAddress(
    peer: Any, headers: Any, settings: GatewaySettings, trusted: bool
) -> tuple[str, str, int | None]:
    """
    C{(peerIP, clientIP, clientPort)} of a request: the one place the client
    address is decided, for X-Forwarded-For, the access log, rewrite
    variables, plugins and WebSocket logs.

    C{peer} is the channel's peer: the TCP peer, or on a port with the PROXY
    protocol the client its header named.  When that peer is a trusted
    forwarder (C{trusted}: in C{[gateway] trustedProxies}, as the caller
    found once per request), the client is the right-most
    X-Forwarded-For entry not itself trusted (nginx's real_ip_recursive,
    Caddy's trusted_proxies); its port is unknown.  Otherwise the header is
    not believed.
    """
    peerIP = getattr(peer, "host", "-")
    port = getattr(peer, "port", None)
    if trusted:
        chain = headers.getRawHeaders(b"x-forwarded-for")
        if chain:
            client = rightmostUntrusted(chain, settings)
            if client is not None:
                return peerIP, client, None
    return peerIP, peerIP, port


def rightmostUntrusted(chain: list[bytes], settings: GatewaySettings) -> str | None:
    """
    The right-most address in the X-Forwarded-For values C{chain} that is not
    a trusted proxy (the left-most when all are); the walk stops at an entry
    that is not an address (the hops to its right are the last believed).
    None when the right-most entry is already not an address.
    """
    found: str | None = None
    for item in reversed(b",".join(chain).split(b",")):
        item = item.strip()
        if not item:
            continue
        ip = forwardedAddress(item)
        if ip is None:
            break
        found = ip
        if not settings.isTrustedProxy(ip):
            break
    return found


def forwardedAddress(item: bytes) -> str | None:
    """
    One X-Forwarded-For entry as an IP address: C{192.0.2.1},
    C{192.0.2.1:443}, C{2001:db8::1} or C{[2001:db8::1]:443} (Azure adds the
    port); None for anything else.
    """
    try:
        text = item.decode("ascii")
    except UnicodeDecodeError:
        return None
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None

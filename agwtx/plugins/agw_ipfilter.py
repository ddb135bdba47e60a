"""
C{ipFilter}: let only some client addresses through, and answer the
others itself (403 by default) without a backend seeing them::

    [requestRoutingRule:internal]
    ruleType = Plugin
    httpListener = l1
    plugin = ipFilter
    plugin.allow = 10.0.0.0/8, 192.168.0.0/16, 2001:db8::/32   ; optional
    plugin.deny = 10.6.6.0/24                                   ; optional
    plugin.status = 403                                         ; optional: 403 or 404
    backendAddressPool = mainPool                               ; what passes goes here
    backendHttpSettings = mainSettings

The address looked at is the client's as the gateway established it once
per request: the TCP peer, the address a PROXY protocol header named, or
the client a trusted forwarder (C{[gateway] trustedProxies}) named in
X-Forwarded-For; never a header an untrusted client sent.  An IPv4-mapped
IPv6 address (C{::ffff:10.1.2.3}) is taken as the IPv4 address.

A deny range wins over an allow range; an empty (or absent) C{allow}
allows every address no C{deny} range holds.  A client whose address is
not an IP address (a Unix socket) is refused when C{allow} is given, and
passes otherwise.  A refused request is answered C{403 Forbidden: the client address is
not allowed} (or C{404 Not Found: ...} with C{plugin.status = 404}, which
does not tell a scanner that something is there), through the listener's
or the gateway's custom error page for that status when one is set; a
WebSocket handshake gets the same answer.  What passes goes to the rule's
own backend (404 when the rule has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from twisted.plugin import IPlugin
from zope.interface import implementer

from agwtx.config.model import inNetworks
from agwtx.config.values import IPNetwork, InvalidValue, parseNetworks
from agwtx.interfaces import (
    Answer,
    Candidates,
    IRoutingPlugin,
    PluginConfigError,
    PluginRuleConfig,
    RoutingRequest,
    checkOptionKeys,
)

STATUSES = (403, 404)
"""The statuses a refusal may have."""


@dataclass(frozen=True)
class IpFilterOptions:
    allow: tuple[IPNetwork, ...]
    deny: tuple[IPNetwork, ...]
    refusal: Answer

    @property
    def allowAll(self) -> bool:
        """No C{allow} ranges: every address passes unless denied."""
        return not self.allow


@implementer(IPlugin, IRoutingPlugin)
class IpFilter:
    name = "ipFilter"

    def configure(self, options: Mapping[str, str], section: str) -> PluginRuleConfig:
        checkOptionKeys(options, optional=("allow", "deny", "status"))
        parsed = {}
        for key in ("allow", "deny"):
            text = (options.get(key) or "").strip()
            try:
                parsed[key] = parseNetworks(text) if text else ()
            except InvalidValue as e:
                raise PluginConfigError(key, str(e)) from None
        if not parsed["allow"] and not parsed["deny"]:
            raise PluginConfigError("allow", "expected plugin.allow or plugin.deny (or both)")
        statusText = (options.get("status") or "").strip() or "403"
        if statusText not in {str(s) for s in STATUSES}:
            raise PluginConfigError("status", f"expected 403 or 404, got {statusText!r}")
        return PluginRuleConfig(
            options=IpFilterOptions(
                allow=parsed["allow"],
                deny=parsed["deny"],
                refusal=Answer(int(statusText), "the client address is not allowed"),
            )
        )

    def route(self, request: RoutingRequest, candidates: Candidates) -> Any:
        opts: IpFilterOptions = candidates.options
        return opts.refusal if not allowed(opts, request.clientAddress) else None


def allowed(opts: IpFilterOptions, address: str) -> bool:
    """Whether C{address} (an IP address as text, or anything else) passes C{opts}."""
    if opts.deny and inNetworks(address, opts.deny):
        return False
    return opts.allowAll or inNetworks(address, opts.allow)


ipFilter = IpFilter()

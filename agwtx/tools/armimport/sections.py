"""
The intermediate form of the import: sections of lines, with references
resolved late, and the name and value checks the conversion shares.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from agwtx.config.values import (
    HEADER_TOKEN_RE,
    REDIRECT_TYPES,
    REWRITE_VARIABLES,
    RULE_TYPES,
    isResponseVariable,
    sameVariable,
)

from agwtx.tools.armimport.evaluate import (
    _deepReadable,
    _readable,
)
from agwtx.tools.armimport.read import _get

# ---------------------------------------------------------------------------
# The intermediate form: sections of lines, with references resolved late
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """A reference to a section of C{kind}, by the name the input uses."""

    kind: str
    azure: str


Part = Union[str, _Ref]  # not str | _Ref: Python 3.9 (PyPy) evaluates this at import


@dataclass
class _Line:
    """One C{key = value} line; the value's references are resolved when written."""

    key: str
    parts: tuple[Part, ...]
    required: bool = False
    """The section cannot be converted unless every reference here is."""
    group: str | None = None
    """At least one line of each group must convert (path rules of a map)."""
    note: str | None = None


@dataclass
class _Item:
    """One section being built: its lines and comments, and whether it can be written."""

    kind: str
    azure: str
    name: str
    body: list[_Line | str] = field(default_factory=list)
    fatal: str | None = None
    emitted: bool = True
    reason: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def add(
        self,
        key: str,
        *parts: Part,
        required: bool = False,
        group: str | None = None,
        note: str | None = None,
    ) -> None:
        self.body.append(_Line(key, tuple(parts), required, group, note))

    def comment(self, text: str) -> None:
        self.body.append(text)

    def notConverted(self, what: str, why: str) -> None:
        self.body.append(f"NOT CONVERTED: {what}: {why}")

    def fail(self, reason: str) -> None:
        if self.fatal is None:
            self.fatal = reason


def _sanitise(name: str, pattern: re.Pattern[str], allowed: str) -> str:
    """C{name} if C{pattern} accepts it, else with runs of characters outside C{allowed} replaced by C{_}."""
    if pattern.fullmatch(name):
        return name
    cleaned = re.sub(f"[^{allowed}]+", "_", name).strip("_")[:80]
    return cleaned if cleaned and pattern.fullmatch(cleaned) else "unnamed"


def _unique(name: str, taken: set[str]) -> str:
    """C{name}, or C{name-2}, C{name-3}, ... if taken (case-insensitively); then taken."""
    candidate, n = name, 1
    while candidate.lower() in taken:
        n += 1
        suffix = f"-{n}"
        candidate = name[: 80 - len(suffix)] + suffix
    taken.add(candidate.lower())
    return candidate


def _shellWord(text: str) -> str:
    """
    C{text} as one shell word (C{shlex.quote}) for a suggested command; a
    value with a line break or other control character becomes a
    placeholder, so that it can neither end the comment line nor the word.
    """
    if not text.isprintable():
        return "VALUE-WITH-CONTROL-CHARACTERS"
    return shlex.quote(text)


def _brief(value: Any, limit: int = 100) -> str:
    """A short, one-line rendering of a JSON value for a comment."""
    if _isReference(value):
        return "-> " + _shortId(_get(value, "id"))
    if isinstance(value, list) and value and all(_isReference(v) for v in value):
        text = ", ".join(_shortId(_get(v, "id")) for v in value)
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and isinstance(_get(v, "name"), str) for v in value)
    ):
        text = ", ".join(_readable(_get(v, "name")) for v in value)
    elif isinstance(value, str):
        text = _readable(value)
    else:
        text = json.dumps(_deepReadable(value), ensure_ascii=False, separators=(", ", ": "))
    text = _oneLine(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _isReference(value: Any) -> bool:
    """C{{"id": ...}}, possibly with the C{resourceGroup} the az CLI adds."""
    return (
        isinstance(value, dict)
        and isinstance(_get(value, "id"), str)
        and all(k.lower() in ("id", "resourcegroup") for k in value)
    )


def _shortId(ident: str) -> str:
    """A resource id from its provider on (the subscription and group say little here)."""
    text = _readable(ident)
    return text.rsplit("/providers/", 1)[-1] if "/providers/" in text else text


def _oneLine(text: str) -> str:
    return re.sub(r"[\r\n]+", " ", text)


def _iniProblem(text: str) -> str | None:
    """Why C{text} cannot be written as an INI value, or None."""
    if "\n" in text or "\r" in text:
        return "it contains a line break, which an INI value cannot hold"
    if re.search(r"(?:^|\s)[;#]", text):
        return "it contains ';' or '#' after a space, which would start a comment in the INI file"
    if text != text.strip():
        return "it has leading or trailing spaces, which an INI value cannot keep"
    return None


# Read-only bookkeeping in each element (no configuration in it).
_ELEMENT_METADATA = frozenset({"id", "name", "etag", "type", "provisioningstate", "resourcegroup"})
_BACKREFS: Mapping[str, frozenset[str]] = {
    "frontendPort": frozenset({"httplisteners", "listeners"}),
    "sslCertificate": frozenset({"httplisteners", "listeners"}),
    "trustedRootCertificate": frozenset(),
    "trustedClientCertificate": frozenset(),
    "sslProfile": frozenset({"httplisteners", "listeners"}),
    "httpListener": frozenset(),
    "backendAddressPool": frozenset(),
    "probe": frozenset({"backendhttpsettings", "backendsettings"}),
    "backendHttpSettings": frozenset(),
    "loadDistributionPolicy": frozenset({"requestroutingrules", "urlpathmaps", "pathrules"}),
    "redirectConfiguration": frozenset({"requestroutingrules", "urlpathmaps", "pathrules"}),
    "rewriteRuleSet": frozenset(),
    "urlPathMap": frozenset(),
    "requestRoutingRule": frozenset(),
}

_ELEMENT_NOT_CONVERTED: Mapping[str, str] = {
    "firewallpolicy": "agw has no web application firewall",
    "authenticationcertificates": "v1 authentication certificates; use trustedRootCertificates",
    "backendipconfigurations": (
        "members that are NICs or VM scale set instances; add their addresses to backendAddresses by hand"
    ),
    "minservers": "agw has no minimum healthy-member count for probes",
    "copy": "ARM copy loops are not evaluated; list the values by hand",
}

# Gateway-level properties agw has no equivalent for, with what to say.
_GATEWAY_NOT_CONVERTED: Mapping[str, str] = {
    "sku": "agw has no SKU or instance count; run [gateway] workers = N or more hosts",
    "autoscaleconfiguration": "agw does not autoscale; run [gateway] workers = N or more hosts",
    "gatewayipconfigurations": "agw runs on this host's network",
    "frontendipconfigurations": (
        "agw listens on this host's addresses; add interface = ADDRESS to a "
        "[frontendPort] section to bind one"
    ),
    "webapplicationfirewallconfiguration": "agw has no web application firewall",
    "firewallpolicy": "agw has no web application firewall",
    "forcefirewallpolicyassociation": "agw has no web application firewall",
    "enablefips": "agw has no FIPS mode",
    "privatelinkconfigurations": "agw has no private link",
    "privateendpointconnections": "agw has no private link",
    "authenticationcertificates": "v1 authentication certificates; use trustedRootCertificates",
    "backendsettingscollection": "layer-4 (TCP/TLS proxy) settings; agw is a layer-7 gateway",
    "listeners": "layer-4 (TCP/TLS proxy) listeners; agw is a layer-7 gateway",
    "routingrules": "layer-4 (TCP/TLS proxy) routing rules; agw is a layer-7 gateway",
    "loaddistributionpolicies": "agw balances round robin over healthy members",
    "globalconfiguration": "agw has no such settings",
    "zones": "availability zones: run agw on hosts in several zones",
    "identity": "managed identity (used for Key Vault): agw reads certificate files",
    "condition": "ARM deploy condition: the gateway was converted regardless",
    "copy": "ARM copy loop over the gateway: one gateway was converted",
}

# Azure's bookkeeping at the gateway level: listed once, not converted.
_GATEWAY_METADATA = frozenset(
    {
        "id",
        "name",
        "type",
        "apiversion",
        "location",
        "tags",
        "dependson",
        "etag",
        "resourcegroup",
        "provisioningstate",
        "resourceguid",
        "operationalstate",
        "comments",
        "metadata",
        "scope",
        "defaultpredefinedsslpolicy",
    }
)

_REDIRECT_TYPES = {t.lower(): t for t in REDIRECT_TYPES}
# Plugin is agw's own rule type: an Azure rule is never one.
_RULE_TYPES = {t.lower(): t for t in RULE_TYPES if t != "Plugin"}


def _variableProblem(name: str, inResponse: bool, tested: Sequence[str] = ()) -> str | None:
    """
    Why agw cannot use the rewrite variable C{name} in a value (or a
    condition) of a rule whose conditions test C{tested}, or None; a capture
    (C{{http_resp_Location_1}}) needs a condition on its variable.
    """
    capture = re.fullmatch(r"(.+)_[0-9]+", name)
    if capture is not None and name not in REWRITE_VARIABLES:
        stem = capture.group(1)
        if _variableProblem(stem, inResponse=True) is None:
            if not any(sameVariable(stem, c) for c in tested):
                return (
                    f"{{{name}}} is a capture from a condition on {{{stem}}}, which this rule does not have"
                )
            return _variableProblem(stem, inResponse)
    if name in REWRITE_VARIABLES:
        if not inResponse and isResponseVariable(name):
            return f"{{{name}}} (a response value) cannot be used for a request"
        return None
    for prefix in ("http_req_", "http_resp_", "var_cookie_"):
        if name.startswith(prefix):
            header = name[len(prefix) :]
            if not HEADER_TOKEN_RE.fullmatch(header):
                return f"{{{name}}} does not name a {'cookie' if prefix == 'var_cookie_' else 'header'}"
            if prefix == "http_resp_" and not inResponse:
                return f"{{{name}}} (a response header) cannot be used for a request"
            return None
    return f"agw has no variable {{{name}}}"

"""
Load and validate the gateway configuration (an INI file) into a frozen
L{agwtx.config.model.GatewayConfig}.

Every mistake is reported, all at once, as one line that points at the file,
the line, the section and the key and says what was expected::

    etc/gw.ini:12: [probe:p1] interval: expected 1..86400 seconds, got 0

Every section and key (type, range, default, Azure equivalent) is listed in
docs/configuration.rst, which tests/test_docs.py checks against L{_KEYS} and
L{_PATTERN_KEYS} both ways.

Errors about a whole section leave out the key::

    etc/gw.ini:3: [frob:x]: unknown section kind 'frob'; expected one of: ...

General rules
=============

  - Sections are C{[kind:name]} (C{[gateway]} has no name).  Kinds and keys
    match case-insensitively and are reported as written; names are 1..80 of
    C{A-Z a-z 0-9 _ . -}.  References name another section of the given kind;
    they also match case-insensitively and the model stores the name as the
    section spells it.
  - A key with an empty value is the same as a key left out: the model's
    default applies (C{hostNames =} is a basic listener, C{match.body =} means
    no body check).  The one exception is a rewrite header action, where an
    empty value removes the header.
  - C{;} and C{#} start a comment at the start of a line or after whitespace.
    A value continues on following lines that are indented deeper than its key
    (handy for long comma lists).
  - Booleans: C{true/false}, C{yes/no}, C{1/0}, C{Enabled/Disabled} (any case).
  - Durations are seconds: C{30}, C{2.5}; C{500ms}, C{30s}, C{5m}, C{1h} also work.
  - Sizes are bytes with optional binary suffixes: C{64K}, C{16M}, C{1G}
    (C{KiB}, C{MiB}, C{GiB} too).
  - Relative certificate paths resolve against the config file's directory.

Path rules (C{[urlPathMap:NAME]})
=================================

One key per path rule, kept in the order written (the first match wins)::

    [urlPathMap:site]
    defaultBackendAddressPool = web
    defaultBackendHttpSettings = webSettings
    pathRule.images = /images/*, /img/* -> imagePool, imageSettings
    pathRule.old = /old/* -> redirect:toNew

The paths before C{->} are a comma list; each starts with C{/}, may end with
C{*} (and has no other C{*}), contains no C{?} or C{#}, and has at most 1000
characters.  After C{->} comes either C{POOL, SETTINGS} or
C{redirect:REDIRECTCONFIGURATION}.

Rewrite rule sets (C{[rewriteRuleSet:NAME]})
============================================

Rules are applied in the order their first key appears; within a rule, all
conditions must hold::

    [rewriteRuleSet:headers]
    rule.noAdmin.condition = {var_uri_path} !~* ^/admin
    rule.noAdmin.condition.2 = {http_req_X-Debug} ~ ^1$
    rule.noAdmin.requestHeader.X-Client-Ip = {var_client_ip}:{var_client_port}
    rule.noAdmin.responseHeader.Server =

  - C{rule.RULE.condition} and C{rule.RULE.condition.N} (N any number, used
    only to make the keys distinct) hold C{{VARIABLE} OP PATTERN}.  OP is
    C{~} (the Python regular expression PATTERN matches, searching), C{~*}
    (same, ignoring case), C{!~} and C{!~*} (does not match).
  - C{rule.RULE.requestHeader.HEADER} and C{rule.RULE.responseHeader.HEADER}
    set the header to the value, in which C{{VARIABLE}} is substituted; an
    empty value removes the header.
  - Variables: C{var_client_ip}, C{var_client_port}, C{var_host},
    C{var_uri_path}, C{var_query_string}, C{var_request_uri},
    C{var_ssl_enabled}, C{http_req_HEADER}, C{http_resp_HEADER} (the last only
    in conditions and response header values).
  - Hop-by-hop headers (C{Connection}, C{Upgrade}, C{Keep-Alive}, ...) and
    C{Content-Length} belong to the gateway and cannot be rewritten.

Routing plugins (C{[requestRoutingRule:NAME]} with C{ruleType = Plugin})
=====================================================================

C{plugin = NAME} names the plugin; C{plugin.KEY = value} lines are handed to
it, in file order, as L{RequestRoutingRule.pluginOptions}.  Whether the
plugin exists and accepts those options is checked where plugins are loaded,
not here.
"""

from __future__ import annotations

import configparser
import io
import ipaddress
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar
from urllib.parse import urlsplit

from agwtx.config.certificates import certificateProblems
from agwtx.config.model import (
    BackendAddress,
    BackendAddressPool,
    BackendHttpSettings,
    CUSTOM_ERROR_PAGE_MAX,
    CUSTOM_ERROR_STATUSES,
    CustomErrorPage,
    FrontendPort,
    GatewayConfig,
    GatewaySettings,
    HttpListener,
    IPNetwork,
    PathRule,
    Probe,
    RedirectConfiguration,
    RequestRoutingRule,
    RewriteRule,
    RewriteRuleSet,
    SslCertificate,
    SslPolicy,
    SslProfile,
    TrustedClientCertificate,
    TrustedRootCertificate,
    UrlPathMap,
)
from agwtx.config.sslpolicy import (
    PREDEFINED,
    PROTOCOL_VERSIONS,
    canonicalCipherSuite,
    canonicalPolicyName,
    policyProblems,
)

__all__ = [
    "HEADER_TOKEN_RE",
    "NAME_RE",
    "PORT_RANGE",
    "REDIRECT_TYPES",
    "RULE_NAME_RE",
    "RULE_TYPES",
    "SECONDS_MAX",
    "UNHEALTHY_THRESHOLD_MAX",
    "ConfigError",
    "EndpointInfo",
    "InvalidValue",
    "loadConfig",
    "parseBackendAddress",
    "parseBackendAddresses",
    "parseBool",
    "parseByteSize",
    "parseDnsName",
    "parseDuration",
    "parseEndpoint",
    "parseHostNamePattern",
    "parseInt",
    "parseList",
    "parseName",
    "parseNetwork",
    "parseNetworks",
    "parsePathRule",
    "parseProtocol",
    "parseRewriteCondition",
    "parseRewriteValue",
    "parseStatusRanges",
    "parseUrlPathPattern",
    "summarize",
]

T = TypeVar("T")


class ConfigError(Exception):
    """
    The configuration cannot be used.

    C{errors} holds every problem found, one line each, in file order; the
    exception's text is those lines joined by newlines, ready to print.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


class InvalidValue(ValueError):
    """
    Raised by the C{parse*} functions.  The text says what was expected and
    what was found (C{expected Http or Https, got 'Htp'}); L{loadConfig} puts
    the file, line, section and key in front of it.
    """


# ---------------------------------------------------------------------------
# Pure value parsers
# ---------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "1", "enabled"})
_FALSE = frozenset({"false", "no", "0", "disabled"})


def _got(text: str) -> str:
    return repr(text)


def parseBool(text: str) -> bool:
    """Parse a boolean, accepting Azure's C{Enabled}/C{Disabled} as well."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InvalidValue(f"expected true or false (or yes/no, 1/0, Enabled/Disabled), got {_got(text)}")


def _parseEnabled(text: str) -> bool:
    try:
        return parseBool(text)
    except InvalidValue:
        raise InvalidValue(f"expected Enabled or Disabled, got {_got(text)}") from None


_INT_RE = re.compile(r"[+-]?[0-9]+")


def parseInt(text: str, lo: int, hi: int, unit: str = "") -> int:
    """Parse a decimal integer in C{lo..hi}; C{unit} only decorates the message."""
    expected = f"expected {lo}..{hi}{' ' + unit if unit else ''}"
    stripped = text.strip()
    if not _INT_RE.fullmatch(stripped):
        raise InvalidValue(f"{expected}, got {_got(text)}")
    value = int(stripped)
    if not lo <= value <= hi:
        raise InvalidValue(f"{expected}, got {stripped}")
    return value


def _parsePort(text: str) -> int:
    return parseInt(text, *PORT_RANGE)


_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parseDuration(text: str, lo: float, hi: float) -> float:
    """
    Parse a duration in seconds (C{30}, C{2.5}, C{500ms}, C{30s}, C{5m},
    C{1h}) that must lie in C{lo..hi} seconds.
    """
    expected = f"expected {_num(lo)}..{_num(hi)} seconds"
    stripped = text.strip()
    match = _DURATION_RE.fullmatch(stripped)
    if match is None:
        raise InvalidValue(f"{expected}, got {_got(text)}")
    value = float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
    if not (math.isfinite(value) and lo <= value <= hi):
        raise InvalidValue(f"{expected}, got {stripped}")
    return value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


_SIZE_RE = re.compile(r"([0-9]+)\s*(?:([KMG])(?:iB)?)?", re.IGNORECASE)
_SIZE_UNITS = {"k": 2**10, "m": 2**20, "g": 2**30}


def parseByteSize(text: str, lo: int = 0, hi: int = 2**40) -> int:
    """Parse a size in bytes with an optional binary suffix K, M or G."""
    expected = f"expected {lo}..{hi} bytes (suffixes K, M, G allowed)"
    stripped = text.strip()
    match = _SIZE_RE.fullmatch(stripped)
    if match is None:
        raise InvalidValue(f"{expected}, got {_got(text)}")
    value = int(match.group(1)) * _SIZE_UNITS.get((match.group(2) or "").lower(), 1)
    if not lo <= value <= hi:
        raise InvalidValue(f"{expected}, got {stripped}")
    return value


def parseList(text: str) -> list[str]:
    """Split a comma (or newline) separated list, dropping empty items."""
    return [item.strip() for item in re.split(r"[,\n]", text) if item.strip()]


def parseProtocol(text: str) -> str:
    """C{Http} or C{Https} in any case, normalised to Azure's spelling."""
    return _choice(text, ("Http", "Https"))


def _choice(text: str, choices: Sequence[str]) -> str:
    for choice in choices:
        if text.strip().lower() == choice.lower():
            return choice
    raise InvalidValue(f"expected {_orList(choices)}, got {_got(text)}")


def _orList(items: Sequence[str]) -> str:
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} or {items[-1]}"


# What the loader accepts, shared with agwtx.tools.armimport so that the importer
# writes only what loads.
NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,80}")
RULE_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,80}")
PORT_RANGE = (1, 65535)
SECONDS_MAX = 86400
CONNECTIONS_MAX = 1_000_000
UNHEALTHY_THRESHOLD_MAX = 20
REDIRECT_TYPES = ("Permanent", "Found", "SeeOther", "Temporary")
RULE_TYPES = ("Basic", "PathBasedRouting", "Plugin")


def parseName(text: str) -> str:
    """A resource name: 1..80 letters, digits, C{_}, C{.} or C{-} (Azure's rule)."""
    if not NAME_RE.fullmatch(text):
        raise InvalidValue(f"expected a name of 1..80 letters, digits, '_', '.' or '-', got {_got(text)}")
    return text


_STATUS_RE = re.compile(r"([0-9]{3})(?:\s*-\s*([0-9]{3}))?")


def parseStatusRanges(text: str) -> tuple[tuple[int, int], ...]:
    """
    Parse C{200-399, 404}: HTTP status codes and inclusive ranges in
    C{100..599}, as C{(low, high)} pairs.
    """
    items = parseList(text)
    if not items:
        raise InvalidValue(f"expected status codes or ranges like 200, 200-399, got {_got(text)}")
    ranges: list[tuple[int, int]] = []
    for item in items:
        match = _STATUS_RE.fullmatch(item)
        if match is None:
            raise InvalidValue(
                f"expected status codes or ranges like 200, 200-399 (100..599), got {_got(item)}"
            )
        lo = int(match.group(1))
        hi = int(match.group(2) or lo)
        if not (100 <= lo <= 599 and 100 <= hi <= 599):
            raise InvalidValue(f"expected status codes in 100..599, got {_got(item)}")
        if lo > hi:
            raise InvalidValue(f"expected a range low-high with low <= high, got {_got(item)}")
        ranges.append((lo, hi))
    return tuple(ranges)


_DNS_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def parseDnsName(text: str) -> str:
    """
    Validate an IP address literal or a DNS name (labels of letters, digits,
    C{-} and C{_}, not all-numeric at the end) and return it normalised: IP
    addresses in their canonical form, names lowercased.
    """
    stripped = text.strip()
    try:
        return str(ipaddress.ip_address(stripped))
    except ValueError:
        pass
    name = stripped.lower()
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    if (
        not name
        or len(name) > 253
        or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise InvalidValue(f"expected an IP address or a DNS name, got {_got(text)}")
    return name


_HOST_PATTERN_RE = re.compile(r"[a-z0-9*?-]+(?:\.[a-z0-9*?-]+)*")


def parseHostNamePattern(text: str) -> str:
    """
    A listener host name: a DNS name that may use the wildcards C{*} and
    C{?} (C{*.contoso.com}, C{w??.contoso.com}); lowercased.
    """
    name = text.strip().lower()
    if len(name) > 253 or not _HOST_PATTERN_RE.fullmatch(name):
        raise InvalidValue(
            "expected a host name such as www.contoso.com or *.contoso.com (letters, digits, "
            f"'-', '.' and the wildcards '*' and '?'), got {_got(text)}"
        )
    return name


def parseBackendAddress(text: str) -> BackendAddress:
    """
    Parse one pool member: C{host}, C{host:port}, C{[v6]}, C{[v6]:port} or a
    bare IPv6 literal, where host is an IP address or a DNS name.
    """
    stripped = text.strip()
    portText: str | None = None
    if stripped.startswith("["):
        match = re.fullmatch(r"\[([^\]]*)\](?::(.*))?", stripped)
        if match is None:
            raise InvalidValue(f"expected [IPv6] or [IPv6]:port, got {_got(text)}")
        try:
            host = str(ipaddress.IPv6Address(match.group(1)))
        except ValueError:
            raise InvalidValue(f"expected an IPv6 address inside [...], got {_got(text)}") from None
        portText = match.group(2)
    elif stripped.count(":") > 1:
        try:
            host = str(ipaddress.IPv6Address(stripped))
        except ValueError:
            raise InvalidValue(
                f"expected an IPv6 address (write [IPv6]:port to give a port), got {_got(text)}"
            ) from None
    else:
        hostText, colon, portPart = stripped.partition(":")
        if colon:
            portText = portPart
        host = parseDnsName(hostText)
    port: int | None = None
    if portText is not None:
        try:
            port = _parsePort(portText)
        except InvalidValue:
            raise InvalidValue(f"expected a port 1..65535 after ':', got {_got(text)}") from None
    return BackendAddress(host=host, port=port)


def parseNetwork(text: str) -> IPNetwork:
    """An IPv4 or IPv6 address range in CIDR form (C{10.0.0.0/8}, C{::1/128}); a bare address is one host."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            raise InvalidValue(
                f"expected an address range in CIDR form with no host bits set, got {_got(text)}"
            ) from None
        raise InvalidValue(
            f"expected an IPv4 or IPv6 address range (CIDR, e.g. 10.0.0.0/8), got {_got(text)}"
        ) from None


def parseNetworks(text: str) -> tuple[IPNetwork, ...]:
    """A comma list of address ranges (L{parseNetwork}), each given once."""
    return _parseUniqueList(text, parseNetwork, str)


def _parseUniqueList(text: str, parse: Callable[[str], T], describe: Callable[[T], str]) -> tuple[T, ...]:
    """A L{parseList} of C{parse}d items, none listed twice (C{describe} names one in the error)."""
    items: list[T] = []
    for raw in parseList(text):
        item = parse(raw)
        if item in items:
            raise InvalidValue(f"{describe(item)} is listed twice")
        items.append(item)
    return tuple(items)


def parseBackendAddresses(text: str) -> tuple[BackendAddress, ...]:
    """A comma list of L{parseBackendAddress} items, none listed twice."""
    return _parseUniqueList(text, parseBackendAddress, lambda address: f"address '{address}'")


def _parsePath(text: str) -> str:
    stripped = text.strip()
    if not stripped.startswith("/"):
        raise InvalidValue(f"expected a path starting with '/', got {_got(text)}")
    if any(c.isspace() for c in stripped):
        raise InvalidValue(f"expected a path without spaces, got {_got(text)}")
    return stripped


def parseUrlPathPattern(text: str) -> str:
    """
    A path map pattern: starts with C{/}, may end with C{*} (and has no
    other), no C{?} or C{#} (paths match without the query), at most 1000
    characters like Azure.
    """
    path = _parsePath(text)
    if len(path) > 1000:
        raise InvalidValue(f"expected at most 1000 characters, got {len(path)}")
    if "*" in path[:-1]:
        raise InvalidValue(f"expected '*' only at the end of a path, got {_got(path)}")
    if "?" in path or "#" in path:
        raise InvalidValue(
            f"expected a path without '?' or '#' (paths match without the query), got {_got(path)}"
        )
    return path


_PATH_RULE_HINT = "'/path/*, ... -> POOL, SETTINGS' or '/path/*, ... -> redirect:NAME'"


def parsePathRule(name: str, text: str) -> PathRule:
    """Parse the value of a C{pathRule.NAME} key (see the module docstring)."""
    paths, arrow, target = text.partition("->")
    if not arrow or "->" in target:
        raise InvalidValue(f"expected {_PATH_RULE_HINT}, got {_got(text)}")
    patterns = parseList(paths)
    if not patterns:
        raise InvalidValue(f"expected at least one path before '->', got {_got(text)}")
    seen: set[str] = set()
    for pattern in patterns:
        parseUrlPathPattern(pattern)
        if pattern.lower() in seen:
            raise InvalidValue(f"path {_got(pattern)} is listed twice")
        seen.add(pattern.lower())
    target = target.strip()
    if target.lower().startswith("redirect:"):
        redirect = target[len("redirect:") :].strip()
        return PathRule(name=name, paths=tuple(patterns), redirectConfiguration=redirect)
    names = [n.strip() for n in target.split(",")]
    if len(names) != 2 or not all(names):
        raise InvalidValue(f"expected {_PATH_RULE_HINT}, got {_got(text)}")
    return PathRule(
        name=name, paths=tuple(patterns), backendAddressPool=names[0], backendHttpSettings=names[1]
    )


_ENDPOINT_KINDS = ("tcp", "tcp6", "ssl", "unix", "systemd")
_ENDPOINT_EXPECTED = "expected a Twisted endpoint string starting with tcp:, tcp6:, ssl:, unix: or systemd:"


@dataclass(frozen=True)
class EndpointInfo:
    """What L{parseEndpoint} learned from an endpoint string."""

    kind: str
    """The endpoint type: tcp, tcp6, ssl, unix or systemd."""
    port: int | None = None
    """The TCP port for tcp, tcp6 and ssl endpoints."""
    interface: str | None = None
    """The interface a TCP endpoint binds, if given."""


def _splitUnescaped(text: str, sep: str, maxsplit: int = -1) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if char == sep and (maxsplit < 0 or len(parts) < maxsplit):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def parseEndpoint(text: str) -> EndpointInfo:
    """
    Check a Twisted server endpoint string without building it (building one
    would read key files or look up systemd sockets): the type must be tcp,
    tcp6, ssl, unix or systemd, and TCP types need a port in 1..65535.
    """
    stripped = text.strip()
    tokens = _splitUnescaped(stripped, ":")
    kind = tokens[0]
    if kind not in _ENDPOINT_KINDS or len(tokens) < 2:
        raise InvalidValue(f"{_ENDPOINT_EXPECTED}, got {_got(text)}")
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for token in tokens[1:]:
        pair = _splitUnescaped(token, "=", 1)
        if len(pair) == 2:
            kwargs[_unescape(pair[0])] = _unescape(pair[1])
        else:
            args.append(_unescape(token))
    if kind in ("tcp", "tcp6", "ssl"):
        portText = kwargs.get("port", args[0] if args else None)
        try:
            port = _parsePort(portText or "")
        except InvalidValue:
            raise InvalidValue(
                f"expected a port 1..65535, as in {kind}:8080 or {kind}:port=8080, got {_got(text)}"
            ) from None
        interface = kwargs.get("interface", args[1] if len(args) > 1 else None)
        return EndpointInfo(kind=kind, port=port, interface=interface or None)
    if kind == "unix" and not kwargs.get("address", args[0] if args else ""):
        raise InvalidValue(f"expected a socket path, as in unix:/run/agw.sock, got {_got(text)}")
    if kind == "systemd" and not (any(args) or kwargs):
        raise InvalidValue(f"expected systemd:domain=INET:index=N, got {_got(text)}")
    return EndpointInfo(kind=kind)


HEADER_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VARIABLES = (
    "var_client_ip",
    "var_client_port",
    "var_host",
    "var_query_string",
    "var_request_uri",
    "var_ssl_enabled",
    "var_uri_path",
    "var_client_certificate",
    "var_client_certificate_end_date",
    "var_client_certificate_fingerprint",
    "var_client_certificate_issuer",
    "var_client_certificate_serial",
    "var_client_certificate_start_date",
    "var_client_certificate_subject",
    "var_client_certificate_verification",
)
_VARIABLES_EXPECTED = ", ".join(_VARIABLES + ("http_req_<Header>", "http_resp_<Header>"))
REWRITE_VARIABLES = frozenset(_VARIABLES)
"""The C{var_*} variables rewrite rules may use."""
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def _checkVariable(name: str) -> None:
    if name in _VARIABLES:
        return
    for prefix in ("http_req_", "http_resp_"):
        if name.startswith(prefix) and HEADER_TOKEN_RE.fullmatch(name[len(prefix) :]):
            return
    raise InvalidValue(f"unknown variable {_got(name)}; expected one of: {_VARIABLES_EXPECTED}")


_CONDITION_RE = re.compile(r"\{(?P<var>[^{}]*)\}\s*(?P<op>!?~\*?)\s+(?P<pattern>\S.*)", re.DOTALL)


def parseRewriteCondition(text: str) -> tuple[str, str, bool, bool]:
    """
    Parse C{{variable} OP pattern} into the model's C{(variable, pattern,
    ignoreCase, negate)}; the pattern must compile as a Python regex.
    """
    match = _CONDITION_RE.fullmatch(text.strip())
    if match is None:
        raise InvalidValue(
            f"expected '{{variable}} OP pattern' with OP one of ~, ~*, !~, !~*, got {_got(text)}"
        )
    variable, op, pattern = match.group("var", "op", "pattern")
    _checkVariable(variable)
    ignoreCase = op.endswith("*")
    try:
        re.compile(pattern, re.IGNORECASE if ignoreCase else 0)
    except re.error as e:
        raise InvalidValue(f"pattern {_got(pattern)} is not a valid regular expression: {e}") from None
    return (variable, pattern, ignoreCase, op.startswith("!"))


def parseRewriteValue(text: str, response: bool) -> str:
    """
    Check the C{{variable}} references in a header value template.  Request
    header values cannot use C{http_resp_*}: there is no response yet.
    """
    for variable in re.findall(r"\{([^{}]*)\}", text):
        _checkVariable(variable)
        if not response and variable.startswith("http_resp_"):
            raise InvalidValue(f"variable {_got(variable)} is only available in response headers")
    return text


def _parseHeaderName(text: str, response: bool) -> str:
    if not HEADER_TOKEN_RE.fullmatch(text):
        raise InvalidValue(f"expected a header name, got {_got(text)}")
    lowered = text.lower()
    if lowered in _HOP_BY_HOP:
        raise InvalidValue(
            f"header {_got(text)} is hop-by-hop: the gateway manages it and it cannot be rewritten"
        )
    if lowered == "content-length":
        raise InvalidValue(f"header {_got(text)} frames the message and cannot be rewritten")
    return text


UNREWRITABLE_HEADERS = _HOP_BY_HOP | {"content-length"}
"""Headers a rewrite rule may not set or remove (lowercase)."""


def _parseCookieName(text: str) -> str:
    stripped = text.strip()
    if not HEADER_TOKEN_RE.fullmatch(stripped):
        raise InvalidValue(f"expected a cookie name (letters, digits and !#$%&'*+-.^_`|~), got {_got(text)}")
    return stripped


def _parseUrl(text: str) -> str:
    stripped = text.strip()
    try:
        parts = urlsplit(stripped)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() for c in stripped)
    ):
        raise InvalidValue(f"expected an absolute http:// or https:// URL, got {_got(text)}")
    return stripped


def _parseWorkers(text: str) -> int:
    if text.strip().lower() == "auto":
        return max(1, min(64, os.cpu_count() or 1))
    stripped = text.strip()
    if not _INT_RE.fullmatch(stripped):
        raise InvalidValue(f"expected 1..64 or auto, got {_got(text)}")
    if not 1 <= int(stripped) <= 64:
        raise InvalidValue(f"expected 1..64 or auto, got {stripped}")
    return int(stripped)


def _parseAccessLog(text: str) -> str:
    value = text.strip()
    if value in ("-", "off", "log"):
        return value
    if not os.path.isabs(value):
        raise InvalidValue(f"expected -, off, log or an absolute file path, got {_got(text)}")
    directory = os.path.dirname(value)
    if not os.path.isdir(directory):
        raise InvalidValue(f"the directory {directory} does not exist")
    return value


def _parseAccessLogFormat(text: str) -> str:
    value = text.strip().lower()
    if value not in ("text", "json"):
        raise InvalidValue(f"expected text or json, got {_got(text)}")
    return value


_RESERVED_ID_HEADERS = _HOP_BY_HOP | {
    "content-length",
    "host",
    "traceparent",
    "tracestate",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-original-host",
    "cookie",
    "set-cookie",
    "authorization",
    "expect",
}


def _parseRequestIdHeader(text: str) -> str:
    stripped = text.strip()
    if not HEADER_TOKEN_RE.fullmatch(stripped):
        raise InvalidValue(f"expected a header name, got {_got(text)}")
    if stripped.lower() in _RESERVED_ID_HEADERS:
        raise InvalidValue(
            f"header {_got(stripped)} has a meaning of its own and cannot carry the request ID"
        )
    return stripped


def _parseSecret(text: str) -> bytes:
    if len(text) < 16:
        # Never echo a secret back.
        raise InvalidValue(f"expected at least 16 characters, got {len(text)}")
    return text.encode("utf-8")


def _parseSecrets(text: str) -> tuple[bytes, ...]:
    """A comma list of secrets (the first signs, all verify), each at least 16 characters."""
    secrets: list[bytes] = []
    for number, item in enumerate(parseList(text), 1):
        if len(item) < 16:
            # Never echo a secret back: say which one by position.
            raise InvalidValue(
                f"expected at least 16 characters in each secret, got {len(item)} in secret {number}"
            )
        secret = item.encode("utf-8")
        if secret in secrets:
            raise InvalidValue(f"secret {number} repeats secret {secrets.index(secret) + 1}")
        secrets.append(secret)
    if not secrets:
        raise InvalidValue("expected one or more secrets, separated by commas")
    return tuple(secrets)


def adminReach(info: EndpointInfo) -> str | None:
    """
    Where an admin endpoint listens beyond this machine's loopback, as words
    for a message (C{"on all interfaces"}, C{"on 10.0.0.5"}), or None for a
    loopback address or a C{unix:} socket (file permissions guard it).  A
    C{systemd:} socket is the unit's business and counts as local.
    """
    if info.kind not in ("tcp", "tcp6", "ssl"):
        return None
    if not info.interface:
        return "on all interfaces"
    try:
        if ipaddress.ip_address(info.interface.split("%", 1)[0]).is_loopback:
            return None
    except ValueError:
        pass
    if info.interface in ("0.0.0.0", "::"):
        return "on all interfaces"
    return f"on {info.interface}"


# ---------------------------------------------------------------------------
# Reading the file: configparser for values, our own scan for line numbers
# ---------------------------------------------------------------------------

_NO_DEFAULT_SECTION = "\x00agw: no DEFAULT section"


def _newParser(strict: bool) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None,
        strict=strict,
        inline_comment_prefixes=(";", "#"),
        # [DEFAULT] would silently add its keys to every section; make it an
        # ordinary (unknown) section instead.
        default_section=_NO_DEFAULT_SECTION,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    return parser


@dataclass
class _Scan:
    """Line numbers and structural errors, found by mirroring configparser's reader."""

    headerLines: dict[str, list[int]] = field(default_factory=dict)
    keyLines: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)
    fatal: bool = False


def _scan(text: str, path: str) -> _Scan:
    """
    Walk the text the way C{RawConfigParser._read} does (comments, indented
    continuation lines, section and option patterns) to learn where each
    section and key is, which configparser does not keep.
    """
    scan = _Scan()
    section: str | None = None
    keysHere: dict[str, int] = {}
    inValue = False
    indentLevel = 0
    for lineno, line in enumerate(io.StringIO(text), start=1):
        # Comment stripping exactly as configparser does it (prefix by prefix,
        # round by round), so both agree on what each line holds.
        commentStart = sys.maxsize
        inline = {prefix: -1 for prefix in (";", "#")}
        while commentStart == sys.maxsize and inline:
            following: dict[str, int] = {}
            for prefix, index in inline.items():
                index = line.find(prefix, index + 1)
                if index == -1:
                    continue
                following[prefix] = index
                if index == 0 or line[index - 1].isspace():
                    commentStart = min(commentStart, index)
            inline = following
        if line.strip().startswith(("#", ";")):
            commentStart = 0
        value = line[:commentStart].strip()
        if not value:
            continue
        nonspace = re.search(r"\S", line)
        indent = nonspace.start() if nonspace else 0
        if section is not None and inValue and indent > indentLevel:
            continue
        indentLevel = indent
        header = configparser.RawConfigParser.SECTCRE.match(value)
        if header is not None:
            section = header.group("header")
            scan.headerLines.setdefault(section, []).append(lineno)
            keysHere = {}
            inValue = False
            trailing = value[header.end() :].strip()
            if trailing:
                scan.errors.append(
                    (
                        lineno,
                        f"{path}:{lineno}: unexpected text after the section header: {trailing!r}",
                    )
                )
            continue
        if section is None:
            scan.errors.append(
                (
                    lineno,
                    f"{path}:{lineno}: expected a [section] header before the first key, got {line.strip()!r}",
                )
            )
            scan.fatal = True
            return scan
        option = configparser.RawConfigParser.OPTCRE.match(value)
        if option is None or not option.group("option").rstrip():
            # configparser keeps the previous key open after a bad line
            scan.errors.append((lineno, f"{path}:{lineno}: expected 'key = value', got {line.strip()!r}"))
            if option is not None:
                inValue = False
            continue
        key = option.group("option").rstrip()
        first = keysHere.get(key.lower())
        if first is not None:
            scan.errors.append(
                (
                    lineno,
                    f"{path}:{lineno}: [{section}] {key}: duplicate key (first defined at {path}:{first})",
                )
            )
        else:
            keysHere[key.lower()] = lineno
        scan.keyLines[(section, key)] = lineno
        inValue = True
    return scan


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------

_KINDS = (
    "backendAddressPool",
    "backendHttpSettings",
    "frontendPort",
    "gateway",
    "httpListener",
    "probe",
    "redirectConfiguration",
    "requestRoutingRule",
    "rewriteRuleSet",
    "sslCertificate",
    "sslProfile",
    "trustedClientCertificate",
    "trustedRootCertificate",
    "urlPathMap",
)
_KIND_BY_LOWER = {kind.lower(): kind for kind in _KINDS}

_POLICY_KEYS = ("sslPolicyType", "sslPolicyName", "sslMinProtocolVersion", "sslCipherSuites")

_KEYS: Mapping[str, tuple[str, ...]] = {
    "gateway": (
        "accessLog",
        "admin",
        "adminToken",
        "adminTokenForReads",
        "affinitySecret",
        "affinitySecrets",
        "workers",
        "shutdownGracePeriod",
        "requestHeaderTimeout",
        "requestBodyTimeout",
        "maxConnections",
        "maxConnectionsPerClient",
        "trustedProxies",
        "accessLogFormat",
        "requestIdHeader",
        "trustClientRequestId",
        "lameDuckPeriod",
        "watchConfig",
        *_POLICY_KEYS,
        "allowUnderscoresInHeaders",
    ),
    "frontendPort": ("port", "interface", "endpoint", "proxyProtocol", "proxyProtocolSources"),
    "sslCertificate": ("certificate", "privateKey", "password"),
    "trustedRootCertificate": ("certificate",),
    "trustedClientCertificate": ("data",),
    "sslProfile": (
        *_POLICY_KEYS,
        "trustedClientCertificates",
        "verifyClientAuthMode",
        "verifyClientCertIssuerDN",
        "verifyClientRevocation",
    ),
    "httpListener": ("frontendPort", "protocol", "hostNames", "hostName", "sslCertificate", "sslProfile"),
    "backendAddressPool": ("backendAddresses",),
    "probe": (
        "protocol",
        "host",
        "pickHostNameFromBackendHttpSettings",
        "path",
        "port",
        "interval",
        "timeout",
        "unhealthyThreshold",
        "match.statusCodes",
        "match.body",
    ),
    "backendHttpSettings": (
        "port",
        "protocol",
        "cookieBasedAffinity",
        "affinityCookieName",
        "requestTimeout",
        "connectTimeout",
        "probe",
        "hostName",
        "pickHostNameFromBackendAddress",
        "connectionDraining",
        "path",
        "trustedRootCertificates",
        "verifyCertificate",
        "webSocketIdleTimeout",
        "webSocketPingInterval",
        "webSocketMaxMessageSize",
        "maxConnectionsPerServer",
        "maxQueuedRequestsPerServer",
        "queueTimeout",
        "maxIdleConnectionsPerServer",
        "idleConnectionTimeout",
    ),
    "redirectConfiguration": (
        "redirectType",
        "targetListener",
        "targetUrl",
        "includePath",
        "includeQueryString",
    ),
    "urlPathMap": (
        "defaultBackendAddressPool",
        "defaultBackendHttpSettings",
        "defaultRedirectConfiguration",
    ),
    "rewriteRuleSet": (),
    "requestRoutingRule": (
        "ruleType",
        "priority",
        "httpListener",
        "backendAddressPool",
        "backendHttpSettings",
        "redirectConfiguration",
        "urlPathMap",
        "rewriteRuleSet",
        "plugin",
    ),
}

# Keys that are a prefix plus a user-chosen part, as shown in messages.
_PATTERN_KEYS: Mapping[str, tuple[str, ...]] = {
    "gateway": ("customErrorPage.NNN",),
    "httpListener": ("customErrorPage.NNN",),
    "urlPathMap": ("pathRule.NAME",),
    "requestRoutingRule": ("plugin.KEY",),
    "rewriteRuleSet": (
        "rule.NAME.condition",
        "rule.NAME.condition.N",
        "rule.NAME.requestHeader.HEADER",
        "rule.NAME.responseHeader.HEADER",
    ),
}

_REWRITE_KEY_RE = re.compile(
    r"rule\.(?P<rule>[^.]*)\.(?:(?P<cond>condition)(?:\.(?P<n>[0-9]+))?"
    r"|(?P<action>requestHeader|responseHeader)\.(?P<header>.*))",
    re.IGNORECASE,
)


def _isPatternKey(kind: str, key: str) -> bool:
    lowered = key.lower()
    if kind == "urlPathMap":
        return lowered.startswith("pathrule.") and len(key) > len("pathRule.")
    if kind == "requestRoutingRule":
        return lowered.startswith("plugin.") and len(key) > len("plugin.")
    if kind == "rewriteRuleSet":
        return _REWRITE_KEY_RE.fullmatch(key) is not None
    if kind in ("gateway", "httpListener"):
        return lowered.startswith(_CUSTOM_ERROR_PREFIX) and len(key) > len(_CUSTOM_ERROR_PREFIX)
    return False


_CUSTOM_ERROR_PREFIX = "customerrorpage."


@dataclass
class _Entry:
    key: str
    """As written."""
    value: str
    line: int


class _Errors:
    """Collects (line, message) pairs; sorted into file order at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[tuple[float, int, str]] = []

    def add(self, line: int | None, where: str | None, message: str) -> None:
        if line is None:
            text = f"{self.path}: {message}"
        elif where is None:
            text = f"{self.path}:{line}: {message}"
        else:
            text = f"{self.path}:{line}: {where}: {message}"
        self.items.append((math.inf if line is None else line, len(self.items), text))

    def addRaw(self, line: int, text: str) -> None:
        self.items.append((line, len(self.items), text))

    def lines(self) -> list[str]:
        return [text for _, _, text in sorted(self.items)]


class _Section:
    """One section: its entries (first spelling of each key wins) and where it is."""

    def __init__(
        self,
        kind: str,
        name: str | None,
        header: str,
        line: int,
        entries: list[_Entry],
        errors: _Errors,
        baseDir: str,
    ) -> None:
        self.kind = kind
        self.name = name
        self.header = header
        self.line = line
        self.entries = entries
        self.byKey = {entry.key.lower(): entry for entry in reversed(entries)}
        self.errors = errors
        self.baseDir = baseDir
        self.failed = False

    def where(self, key: str | None = None) -> str:
        if key is None:
            return f"[{self.header}]"
        entry = self.byKey.get(key.lower())
        return f"[{self.header}] {entry.key if entry else key}"

    def lineOf(self, key: str | None) -> int:
        entry = self.byKey.get(key.lower()) if key else None
        return entry.line if entry else self.line

    def error(self, key: str | None, message: str) -> None:
        self.failed = True
        self.errors.add(self.lineOf(key), self.where(key), message)

    def raw(self, key: str) -> str | None:
        """The value, or None when the key is absent or empty."""
        entry = self.byKey.get(key.lower())
        if entry is None or entry.value == "":
            return None
        return entry.value

    def given(self, key: str) -> bool:
        return self.raw(key) is not None

    def get(self, key: str, parse: Callable[[str], T]) -> T | None:
        text = self.raw(key)
        if text is None:
            return None
        try:
            return parse(text)
        except InvalidValue as e:
            self.error(key, str(e))
            return None

    def require(self, key: str, parse: Callable[[str], T]) -> T | None:
        if not self.given(key):
            self.error(key, "required key is missing")
            return None
        return self.get(key, parse)

    def later(self, *keys: str) -> str:
        """Of C{keys}, the one written last (to blame for a conflict)."""
        return max(keys, key=self.lineOf)

    def path(self, key: str) -> str | None:
        """A readable file named by C{key}, resolved against the config's directory."""
        text = self.raw(key)
        if text is None:
            return None
        text = text.strip()
        resolved = os.path.abspath(os.path.join(self.baseDir, text))
        try:
            with open(resolved, "rb"):
                pass
        except OSError as e:
            shown = repr(text) if os.path.isabs(text) else f"{text!r} ({resolved})"
            self.error(key, f"cannot read {shown}: {e.strerror or e}")
            return None
        return resolved


# Keys whose value may go on over indented lines (comma lists).
_MULTILINE_KEYS = frozenset(
    {
        "backendaddresses",
        "hostnames",
        "trustedrootcertificates",
        "match.statuscodes",
        "trustedproxies",
        "affinitysecrets",
        "sslciphersuites",
        "trustedclientcertificates",
    }
)
# Only known kinds, so that an IPv6 list item such as [fd00::4] is not taken for one.
_LOOKS_LIKE_SECTION = re.compile(r"\[\s*(?:" + "|".join(_KINDS) + r")\s*(?::[^\]]*)?\]", re.IGNORECASE)
_LOOKS_LIKE_KEY = re.compile(r"[A-Za-z0-9_.-]+\s*=")


def _checkContinuation(sec: _Section, entry: _Entry) -> None:
    """
    An indented line continues the value above it (configparser's rule), which
    silently swallows an indented key or section header.  Say so, and keep
    the value as it was meant.
    """
    lines = entry.value.split("\n")
    if len(lines) == 1:
        return
    for index, line in enumerate(lines[1:], start=1):
        if _LOOKS_LIKE_SECTION.fullmatch(line) or _LOOKS_LIKE_KEY.match(line):
            sec.error(
                entry.key,
                f"the indented line {_got(line)} continues this value; "
                "unindent it to make it a line of its own",
            )
            entry.value = "\n".join(lines[:index]).rstrip()
            return
    multiline = entry.key.lower() in _MULTILINE_KEYS or entry.key.lower().startswith("pathrule.")
    if not multiline:
        sec.error(entry.key, f"expected a value on one line, got {_got(entry.value)}")
        entry.value = lines[0]


def _kwargs(**values: Any) -> dict[str, Any]:
    """Only the values that were given, so the model's defaults apply to the rest."""
    return {key: value for key, value in values.items() if value is not None}


_Built = dict[str, tuple[Any, _Section]]


class _Loader:
    """One load: sections in file order, name registries, collected errors."""

    def __init__(self, path: str, errors: _Errors) -> None:
        self.path = path
        self.errors = errors
        self.baseDir = os.path.dirname(os.path.abspath(path))
        self.names: dict[str, dict[str, tuple[str, int]]] = {kind: {} for kind in _KINDS}
        self.built: dict[str, _Built] = {kind: {} for kind in _KINDS}
        self.gateway: GatewaySettings | None = None
        self.sections: list[_Section] = []
        self.refs: list[tuple[_Section, str, str, str]] = []

    # -- references ---------------------------------------------------------

    def ref(self, sec: _Section, key: str, kind: str) -> str | None:
        """
        Note that C{key} refers to a C{kind} section, to be checked once every
        name is known (so sections may refer forward); return the name.
        """
        return self.refName(sec, key, kind, sec.raw(key))

    def refName(self, sec: _Section, key: str, kind: str, name: str | None) -> str | None:
        """Like L{ref}, for a name that is only part of the key's value."""
        if name is None:
            return None
        name = name.strip()
        self.refs.append((sec, key, kind, name))
        return name

    def canon(self, kind: str, name: str | None) -> str | None:
        """The defined spelling of a reference (references match case-insensitively)."""
        if name is None:
            return None
        return self.names[kind].get(name.lower(), (name, 0))[0]

    def obj(self, kind: str, name: str | None) -> Any:
        if name is None:
            return None
        entry = self.built[kind].get(name)
        return entry[0] if entry else None

    # -- sections -----------------------------------------------------------

    def section(self, sec: _Section) -> None:
        allowed = {key.lower() for key in _KEYS[sec.kind]}
        for entry in sec.entries:
            if entry.key.lower() not in allowed and not _isPatternKey(sec.kind, entry.key):
                expected = sorted(_KEYS[sec.kind] + _PATTERN_KEYS.get(sec.kind, ()), key=str.lower)
                sec.error(
                    entry.key,
                    f"unknown key {_got(entry.key)}; expected one of: {', '.join(expected)}",
                )
            else:
                _checkContinuation(sec, entry)
        built = getattr(self, f"_{sec.kind}")(sec)
        if sec.kind == "gateway":
            if not sec.failed:
                self.gateway = built
        elif built is not None and not sec.failed:
            assert sec.name is not None
            self.built[sec.kind][sec.name] = (built, sec)

    def _gateway(self, sec: _Section) -> GatewaySettings:
        admin = sec.raw("admin")
        adminInfo = sec.get("admin", parseEndpoint)
        if adminInfo is None:
            admin = None
        adminToken = self._adminToken(sec)
        if (
            adminInfo is not None
            and adminToken is None
            and sec.given("admin")
            and not sec.given("adminToken")
        ):
            reach = adminReach(adminInfo)
            if reach is not None:
                sec.error(
                    "admin",
                    f"the admin endpoint would be reachable {reach} without authentication; "
                    "set adminToken = /path/to/token-file, or listen on loopback (interface=127.0.0.1) "
                    "or a unix: socket",
                )
        secrets: tuple[bytes, ...] | None = None
        if sec.given("affinitySecret") and sec.given("affinitySecrets"):
            sec.error(
                sec.later("affinitySecret", "affinitySecrets"),
                "expected affinitySecret or affinitySecrets, not both",
            )
        elif sec.given("affinitySecrets"):
            secrets = sec.get("affinitySecrets", _parseSecrets)
        else:
            one = sec.get("affinitySecret", _parseSecret)
            secrets = (one,) if one is not None else None
        return GatewaySettings(
            **_kwargs(
                admin=admin.strip() if admin else None,
                adminToken=adminToken,
                adminTokenForReads=sec.get("adminTokenForReads", parseBool),
                accessLog=sec.get("accessLog", _parseAccessLog),
                affinitySecret=secrets[0] if secrets else None,
                affinitySecrets=secrets,
                workers=sec.get("workers", _parseWorkers),
                shutdownGracePeriod=sec.get("shutdownGracePeriod", lambda t: parseDuration(t, 0, 3600)),
                requestHeaderTimeout=sec.get("requestHeaderTimeout", lambda t: parseDuration(t, 1, 3600)),
                requestBodyTimeout=sec.get("requestBodyTimeout", lambda t: parseDuration(t, 1, 3600)),
                maxConnections=sec.get("maxConnections", lambda t: parseInt(t, 1, 1_000_000)),
                maxConnectionsPerClient=sec.get(
                    "maxConnectionsPerClient", lambda t: parseInt(t, 0, 1_000_000)
                ),
                trustedProxies=sec.get("trustedProxies", parseNetworks),
                accessLogFormat=sec.get("accessLogFormat", _parseAccessLogFormat),
                requestIdHeader=sec.get("requestIdHeader", _parseRequestIdHeader),
                trustClientRequestId=sec.get("trustClientRequestId", parseBool),
                customErrorPages=self.customErrorPages(sec),
                lameDuckPeriod=sec.get("lameDuckPeriod", lambda t: parseDuration(t, 0, 3600)),
                watchConfig=sec.get("watchConfig", parseBool),
                sslPolicy=_sslPolicy(sec),
                allowUnderscoresInHeaders=sec.get("allowUnderscoresInHeaders", parseBool),
            )
        )

    def _adminToken(self, sec: _Section) -> bytes | None:
        """
        The admin bearer token from the file C{adminToken} names, read now
        (at every load and reload).  A file others may read is refused, as
        PostgreSQL refuses such key files: the token is a password.
        """
        path = sec.path("adminToken")
        if path is None:
            return None
        try:
            mode = os.stat(path).st_mode
            with open(path, "rb") as f:
                data = f.read(4097)
        except OSError as e:
            sec.error("adminToken", f"cannot read {path!r}: {e.strerror or e}")
            return None
        if mode & 0o006:
            sec.error(
                "adminToken",
                f"{path} is readable or writable by others (mode {mode & 0o777:04o}); "
                f"make it readable by the service only (chmod 600, or 640 with a group of its own)",
            )
            return None
        token = data.strip()
        if len(token) < 16 or len(token) > 4096 or any(b <= 32 or b >= 127 for b in token):
            # Never echo a secret back.
            sec.error(
                "adminToken",
                f"expected the file {path} to hold one token of 16..4096 printable ASCII "
                f"characters without spaces, got {len(token)} byte(s)",
            )
            return None
        return token

    def customErrorPages(self, sec: _Section) -> tuple[CustomErrorPage, ...] | None:
        """
        The C{customErrorPage.NNN = PATH} lines of C{sec} (Azure's
        customErrorConfigurations), each file read now: a page that cannot
        be read, is empty, over L{CUSTOM_ERROR_PAGE_MAX} or not UTF-8 is an
        error naming the key.  None when there are none (the default applies).
        """
        pages: list[CustomErrorPage] = []
        allowed = ", ".join(str(s) for s in CUSTOM_ERROR_STATUSES)
        for entry in sec.entries:
            if (
                not entry.key.lower().startswith(_CUSTOM_ERROR_PREFIX)
                or sec.byKey.get(entry.key.lower()) is not entry
            ):
                continue
            code = entry.key[len(_CUSTOM_ERROR_PREFIX) :]
            if not (code.isdigit() and int(code) in CUSTOM_ERROR_STATUSES):
                sec.error(
                    entry.key, f"expected a status of {allowed} after customErrorPage., got {_got(code)}"
                )
                continue
            resolved = sec.path(entry.key)
            if resolved is None:
                if not sec.given(entry.key):
                    sec.error(entry.key, "expected the path of an HTML file")
                continue
            try:
                with open(resolved, "rb") as f:
                    body = f.read(CUSTOM_ERROR_PAGE_MAX + 1)
            except OSError as e:
                sec.error(entry.key, f"cannot read {resolved!r}: {e.strerror or e}")
                continue
            if len(body) > CUSTOM_ERROR_PAGE_MAX:
                sec.error(entry.key, f"{resolved!r} is over {CUSTOM_ERROR_PAGE_MAX} bytes (1 MiB)")
                continue
            if not body:
                sec.error(entry.key, f"{resolved!r} is empty")
                continue
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                sec.error(
                    entry.key, f"{resolved!r} is not UTF-8 text (it is served as text/html; charset=utf-8)"
                )
                continue
            pages.append(CustomErrorPage(int(code), resolved, body))
        return tuple(sorted(pages, key=lambda p: p.status)) or None

    def _frontendPort(self, sec: _Section) -> FrontendPort | None:
        assert sec.name is not None
        hasPort, hasEndpoint = sec.given("port"), sec.given("endpoint")
        if hasPort and hasEndpoint:
            sec.error(sec.later("port", "endpoint"), "expected port or endpoint, not both")
            return None
        if not (hasPort or hasEndpoint):
            sec.error(None, "expected port or endpoint")
            return None
        if hasEndpoint:
            if sec.given("interface"):
                sec.error(
                    "interface",
                    "only allowed with port; put interface= into the endpoint string",
                )
            info = sec.get("endpoint", parseEndpoint)
            endpoint = sec.raw("endpoint")
            proxy = self._proxyProtocol(sec)
            if info is None or endpoint is None:
                return None
            return FrontendPort(name=sec.name, endpoint=endpoint.strip(), port=info.port, **proxy)
        port = sec.get("port", _parsePort)
        interface = sec.get("interface", _parseInterface)
        proxy = self._proxyProtocol(sec)
        if port is None:
            return None
        endpoint = f"tcp:{port}"
        if interface is not None:
            endpoint += ":interface=" + interface.replace(":", "\\:")
        return FrontendPort(name=sec.name, endpoint=endpoint, port=port, **proxy)

    def _proxyProtocol(self, sec: _Section) -> dict[str, Any]:
        """
        C{proxyProtocol} and its C{proxyProtocolSources}: required with it
        (there is no safe default: a header believed from anyone lets any
        client choose its address), meaningless without it.
        """
        enabled = sec.get("proxyProtocol", parseBool)
        sources = sec.get("proxyProtocolSources", parseNetworks)
        if enabled and not sec.given("proxyProtocolSources"):
            sec.error(
                "proxyProtocol",
                "proxyProtocolSources is required with proxyProtocol = true "
                "(the balancers' address ranges, e.g. 10.0.0.0/8)",
            )
        elif not enabled and sec.given("proxyProtocolSources"):
            sec.error("proxyProtocolSources", "only allowed with proxyProtocol = true")
        return _kwargs(proxyProtocol=enabled, proxyProtocolSources=sources)

    def _sslCertificate(self, sec: _Section) -> SslCertificate | None:
        assert sec.name is not None
        for key in ("certificate", "privateKey"):
            if not sec.given(key):
                sec.error(key, "required key is missing")
        certificate = sec.path("certificate")
        privateKey = sec.path("privateKey")
        if certificate is None or privateKey is None:
            return None
        return SslCertificate(
            name=sec.name,
            certificate=certificate,
            privateKey=privateKey,
            password=sec.raw("password"),
        )

    def _trustedRootCertificate(self, sec: _Section) -> TrustedRootCertificate | None:
        assert sec.name is not None
        if not sec.given("certificate"):
            sec.error("certificate", "required key is missing")
        certificate = sec.path("certificate")
        if certificate is None:
            return None
        return TrustedRootCertificate(name=sec.name, certificate=certificate)

    def _trustedClientCertificate(self, sec: _Section) -> TrustedClientCertificate | None:
        assert sec.name is not None
        if not sec.given("data"):
            sec.error("data", "required key is missing")
        data = sec.path("data")
        if data is None:
            return None
        return TrustedClientCertificate(name=sec.name, data=data)

    def _sslProfile(self, sec: _Section) -> SslProfile | None:
        assert sec.name is not None
        trusted = tuple(
            self.refName(sec, "trustedClientCertificates", "trustedClientCertificate", name) or name
            for name in parseList(sec.raw("trustedClientCertificates") or "")
        )
        mode = sec.get("verifyClientAuthMode", lambda t: _choice(t, ("Strict", "Passthrough")))
        issuerDN = sec.get("verifyClientCertIssuerDN", parseBool)
        revocation = sec.get("verifyClientRevocation", lambda t: _choice(t, ("None", "OCSP")))
        if mode == "Passthrough" and trusted:
            sec.error(
                "trustedClientCertificates",
                "not used with verifyClientAuthMode Passthrough (nothing is verified); remove it",
            )
        if not trusted or mode == "Passthrough":
            for key, value in (
                ("verifyClientCertIssuerDN", issuerDN),
                ("verifyClientRevocation", revocation),
            ):
                if value not in (None, False, "None"):
                    sec.error(key, "only with trustedClientCertificates (verifyClientAuthMode Strict)")
        hasPolicy = any(sec.given(key) for key in _POLICY_KEYS)
        return SslProfile(
            **_kwargs(
                name=sec.name,
                sslPolicy=_sslPolicy(sec) if hasPolicy else None,
                trustedClientCertificates=trusted,
                verifyClientAuthMode=mode,
                verifyClientCertIssuerDN=issuerDN,
                verifyClientRevocation=revocation,
            )
        )

    def _httpListener(self, sec: _Section) -> HttpListener | None:
        assert sec.name is not None
        frontendPort = sec.require("frontendPort", str.strip)
        self.ref(sec, "frontendPort", "frontendPort")
        protocol = sec.get("protocol", parseProtocol)
        protocolKnown = protocol is not None or not sec.given("protocol")
        protocol = protocol or "Http"
        hostNames: tuple[str, ...] = ()
        if sec.given("hostName") and sec.given("hostNames"):
            sec.error(sec.later("hostName", "hostNames"), "expected hostName or hostNames, not both")
        elif sec.given("hostName"):
            hostNames = (sec.get("hostName", parseHostNamePattern) or "",)
        elif sec.given("hostNames"):
            hostNames = sec.get("hostNames", _parseHostNames) or ()
        sslCertificate = self.ref(sec, "sslCertificate", "sslCertificate")
        if protocolKnown and protocol == "Https" and sslCertificate is None:
            sec.error("sslCertificate", "required for protocol Https")
        if protocolKnown and protocol == "Http" and sslCertificate is not None:
            sec.error("sslCertificate", "not allowed with protocol Http")
        sslProfile = self.ref(sec, "sslProfile", "sslProfile")
        if protocolKnown and protocol == "Http" and sslProfile is not None:
            sec.error("sslProfile", "not allowed with protocol Http")
        if frontendPort is None:
            return None
        return HttpListener(
            **_kwargs(
                name=sec.name,
                frontendPort=frontendPort,
                protocol=protocol,
                hostNames=hostNames,
                sslCertificate=sslCertificate,
                customErrorPages=self.customErrorPages(sec),
                sslProfile=sslProfile,
            )
        )

    def _backendAddressPool(self, sec: _Section) -> BackendAddressPool:
        assert sec.name is not None
        return BackendAddressPool(
            **_kwargs(
                name=sec.name,
                backendAddresses=sec.get("backendAddresses", parseBackendAddresses),
            )
        )

    def _probe(self, sec: _Section) -> Probe:
        assert sec.name is not None
        pick = sec.get("pickHostNameFromBackendHttpSettings", parseBool)
        host = sec.get("host", parseDnsName)
        if pick and sec.given("host"):
            sec.error(
                sec.later("host", "pickHostNameFromBackendHttpSettings"),
                "expected host or pickHostNameFromBackendHttpSettings = true, not both",
            )
        fields = _kwargs(
            name=sec.name,
            protocol=sec.get("protocol", parseProtocol),
            host=host,
            pickHostNameFromBackendHttpSettings=pick,
            path=sec.get("path", _parsePath),
            port=sec.get("port", _parsePort),
            interval=sec.get("interval", lambda t: parseDuration(t, 1, SECONDS_MAX)),
            timeout=sec.get("timeout", lambda t: parseDuration(t, 1, SECONDS_MAX)),
            unhealthyThreshold=sec.get(
                "unhealthyThreshold", lambda t: parseInt(t, 1, UNHEALTHY_THRESHOLD_MAX)
            ),
            statusCodes=sec.get("match.statusCodes", parseStatusRanges),
            body=sec.raw("match.body"),
        )
        if pick:
            fields["host"] = None  # the host comes from the settings, not the default
        return Probe(**fields)

    def _backendHttpSettings(self, sec: _Section) -> BackendHttpSettings:
        assert sec.name is not None
        pick = sec.get("pickHostNameFromBackendAddress", parseBool)
        if pick and sec.given("hostName"):
            sec.error(
                sec.later("hostName", "pickHostNameFromBackendAddress"),
                "expected hostName or pickHostNameFromBackendAddress = true, not both",
            )
        roots = [
            self.refName(sec, "trustedRootCertificates", "trustedRootCertificate", root) or root
            for root in parseList(sec.raw("trustedRootCertificates") or "")
        ]
        return BackendHttpSettings(
            **_kwargs(
                name=sec.name,
                port=sec.get("port", _parsePort),
                protocol=sec.get("protocol", parseProtocol),
                cookieBasedAffinity=sec.get("cookieBasedAffinity", _parseEnabled),
                affinityCookieName=sec.get("affinityCookieName", _parseCookieName),
                requestTimeout=sec.get("requestTimeout", lambda t: parseDuration(t, 1, SECONDS_MAX)),
                connectTimeout=sec.get("connectTimeout", lambda t: parseDuration(t, 0.1, 3600)),
                probe=self.ref(sec, "probe", "probe"),
                hostName=sec.get("hostName", parseDnsName),
                pickHostNameFromBackendAddress=pick,
                connectionDraining=sec.get("connectionDraining", lambda t: parseDuration(t, 0, 3600)),
                path=sec.get("path", _parsePath),
                trustedRootCertificates=tuple(roots),
                verifyCertificate=sec.get("verifyCertificate", parseBool),
                webSocketIdleTimeout=sec.get(
                    "webSocketIdleTimeout", lambda t: parseDuration(t, 1, SECONDS_MAX)
                ),
                webSocketPingInterval=sec.get(
                    "webSocketPingInterval", lambda t: parseDuration(t, 0, SECONDS_MAX)
                ),
                webSocketMaxMessageSize=sec.get("webSocketMaxMessageSize", parseByteSize),
                maxConnectionsPerServer=sec.get(
                    "maxConnectionsPerServer", lambda t: parseInt(t, 0, CONNECTIONS_MAX)
                ),
                maxQueuedRequestsPerServer=sec.get(
                    "maxQueuedRequestsPerServer", lambda t: parseInt(t, 0, CONNECTIONS_MAX)
                ),
                queueTimeout=sec.get("queueTimeout", lambda t: parseDuration(t, 0.001, 3600)),
                maxIdleConnectionsPerServer=sec.get(
                    "maxIdleConnectionsPerServer", lambda t: parseInt(t, 0, CONNECTIONS_MAX)
                ),
                idleConnectionTimeout=sec.get("idleConnectionTimeout", lambda t: parseDuration(t, 1, 3600)),
            )
        )

    def _redirectConfiguration(self, sec: _Section) -> RedirectConfiguration:
        assert sec.name is not None
        if sec.given("targetListener") and sec.given("targetUrl"):
            sec.error(
                sec.later("targetListener", "targetUrl"),
                "expected targetListener or targetUrl, not both",
            )
        elif not (sec.given("targetListener") or sec.given("targetUrl")):
            sec.error(None, "expected targetListener or targetUrl")
        return RedirectConfiguration(
            **_kwargs(
                name=sec.name,
                redirectType=sec.get(
                    "redirectType",
                    lambda t: _choice(t, REDIRECT_TYPES),
                ),
                targetListener=self.ref(sec, "targetListener", "httpListener"),
                targetUrl=sec.get("targetUrl", _parseUrl),
                includePath=sec.get("includePath", parseBool),
                includeQueryString=sec.get("includeQueryString", parseBool),
            )
        )

    def _urlPathMap(self, sec: _Section) -> UrlPathMap:
        assert sec.name is not None
        _checkTarget(
            sec,
            "defaultBackendAddressPool",
            "defaultBackendHttpSettings",
            "defaultRedirectConfiguration",
            required=True,
        )
        rules: list[PathRule] = []
        seenPaths: dict[str, str] = {}
        seenRules: dict[str, str] = {}
        for entry in sec.entries:
            if not entry.key.lower().startswith("pathrule.") or entry.key.lower() in ("pathrule.",):
                continue
            name = entry.key[len("pathRule.") :]
            try:
                parseName(name)
                if name.lower() in seenRules:
                    raise InvalidValue(f"path rule {_got(name)} is defined twice")
                rule = parsePathRule(name, entry.value)
            except InvalidValue as e:
                sec.error(entry.key, str(e))
                continue
            seenRules[name.lower()] = name
            for attr in ("backendAddressPool", "backendHttpSettings", "redirectConfiguration"):
                self.refName(sec, entry.key, attr, getattr(rule, attr))
            for pattern in rule.paths:
                other = seenPaths.get(pattern.lower())
                if other is not None:
                    sec.error(
                        entry.key,
                        f"path {_got(pattern)} is already listed in pathRule {_got(other)}",
                    )
                seenPaths[pattern.lower()] = name
            rules.append(rule)
        if not rules and not sec.failed:
            sec.error(None, "expected at least one pathRule.NAME key")
        return UrlPathMap(
            name=sec.name,
            defaultBackendAddressPool=self.ref(sec, "defaultBackendAddressPool", "backendAddressPool"),
            defaultBackendHttpSettings=self.ref(sec, "defaultBackendHttpSettings", "backendHttpSettings"),
            defaultRedirectConfiguration=self.ref(
                sec, "defaultRedirectConfiguration", "redirectConfiguration"
            ),
            pathRules=tuple(rules),
        )

    def _rewriteRuleSet(self, sec: _Section) -> RewriteRuleSet:
        assert sec.name is not None
        order: list[str] = []
        names: dict[str, str] = {}
        firstKey: dict[str, str] = {}
        conditions: dict[str, list[tuple[str, str, bool, bool]]] = {}
        request: dict[str, list[tuple[str, str | None]]] = {}
        response: dict[str, list[tuple[str, str | None]]] = {}
        responseConditionKey: dict[str, str] = {}
        for entry in sec.entries:
            match = _REWRITE_KEY_RE.fullmatch(entry.key)
            if match is None:
                continue
            ruleName = match.group("rule")
            if not RULE_NAME_RE.fullmatch(ruleName):
                sec.error(
                    entry.key,
                    f"expected a rule name of 1..80 letters, digits, '_' or '-', got {_got(ruleName)}",
                )
                continue
            rid = ruleName.lower()
            if rid not in names:
                names[rid] = ruleName
                firstKey[rid] = entry.key
                order.append(rid)
                conditions[rid], request[rid], response[rid] = [], [], []
            try:
                if match.group("cond"):
                    condition = parseRewriteCondition(entry.value)
                    if condition[0].startswith("http_resp_"):
                        responseConditionKey.setdefault(rid, entry.key)
                    conditions[rid].append(condition)
                else:
                    isResponse = match.group("action").lower() == "responseheader"
                    header = _parseHeaderName(match.group("header"), isResponse)
                    value = parseRewriteValue(entry.value, isResponse) if entry.value else None
                    (response if isResponse else request)[rid].append((header, value))
            except InvalidValue as e:
                sec.error(entry.key, str(e))
        rules: list[RewriteRule] = []
        for rid in order:
            where = f"rule.{names[rid]}"
            if not (request[rid] or response[rid]):
                sec.errors.add(
                    sec.lineOf(firstKey[rid]),
                    f"[{sec.header}] {where}",
                    "expected at least one requestHeader or responseHeader action",
                )
                sec.failed = True
            elif rid in responseConditionKey and request[rid]:
                sec.error(
                    responseConditionKey[rid],
                    "a condition on a response header cannot guard requestHeader actions; "
                    "put them in a rule of their own",
                )
            rules.append(
                RewriteRule(
                    name=names[rid],
                    conditions=tuple(conditions[rid]),
                    requestHeaders=tuple(request[rid]),
                    responseHeaders=tuple(response[rid]),
                )
            )
        if not order and not sec.failed:
            sec.error(None, "expected at least one rule.NAME.requestHeader or responseHeader key")
        return RewriteRuleSet(name=sec.name, rules=tuple(rules))

    def _requestRoutingRule(self, sec: _Section) -> RequestRoutingRule | None:
        assert sec.name is not None
        refs = {key: self.ref(sec, key, kind) for key, kind in _RULE_REFS.items()}
        ruleType = sec.get("ruleType", lambda t: _choice(t, RULE_TYPES))
        if ruleType is None:
            if sec.given("ruleType"):
                sec.get("priority", lambda t: parseInt(t, 1, 20000))
                return None
            ruleType = "Basic"
        priority = sec.get("priority", lambda t: parseInt(t, 1, 20000))
        if not sec.given("httpListener"):
            sec.error("httpListener", "required key is missing")
        pluginOptions = tuple(
            (entry.key[len("plugin.") :], entry.value)
            for entry in sec.entries
            if entry.key.lower().startswith("plugin.")
        )
        notAllowed = f"not allowed with ruleType {ruleType}"
        if ruleType == "Basic":
            _checkTarget(
                sec,
                "backendAddressPool",
                "backendHttpSettings",
                "redirectConfiguration",
                required=True,
            )
            for key in ("urlPathMap", "plugin"):
                if sec.given(key):
                    sec.error(key, notAllowed)
        elif ruleType == "PathBasedRouting":
            if not sec.given("urlPathMap"):
                sec.error("urlPathMap", "required for ruleType PathBasedRouting")
            for key in (
                "backendAddressPool",
                "backendHttpSettings",
                "redirectConfiguration",
                "plugin",
            ):
                if sec.given(key):
                    sec.error(key, notAllowed)
        else:
            if not sec.given("plugin"):
                sec.error("plugin", "required for ruleType Plugin")
            _checkTarget(sec, "backendAddressPool", "backendHttpSettings", None, required=False)
            for key in ("redirectConfiguration", "urlPathMap"):
                if sec.given(key):
                    sec.error(key, notAllowed)
        if ruleType != "Plugin":
            for entry in sec.entries:
                if entry.key.lower().startswith("plugin."):
                    sec.error(entry.key, notAllowed)
        plugin = sec.get("plugin", lambda t: parseName(t.strip()))
        if refs["httpListener"] is None:
            return None
        return RequestRoutingRule(
            **_kwargs(
                name=sec.name,
                ruleType=ruleType,
                priority=priority,
                plugin=plugin,
                pluginOptions=pluginOptions,
                **refs,
            )
        )

    # -- cross-checks -------------------------------------------------------

    def crossCheck(self) -> None:
        """Checks that need every section: references, shared ports, pairings."""
        for sec, key, kind, name in self.refs:
            if name.lower() not in self.names[kind]:
                sec.error(key, f"refers to {kind} {_got(name)}, which is not defined")
        for _kind, built in self.built.items():
            for name, (obj, sec) in built.items():
                built[name] = (self._canonical(obj), sec)
        self._checkFrontendPorts()
        self._checkListeners()
        self._checkSettings()
        self._checkRules()

    def _canonical(self, obj: Any) -> Any:
        """C{obj} with its references spelled as the sections they name."""
        fields = _REF_FIELDS.get(type(obj), {})
        changes: dict[str, Any] = {
            attr: self.canon(kind, getattr(obj, attr)) for attr, kind in fields.items()
        }
        if isinstance(obj, SslProfile):
            changes["trustedClientCertificates"] = tuple(
                self.canon("trustedClientCertificate", name) or name for name in obj.trustedClientCertificates
            )
        if isinstance(obj, BackendHttpSettings):
            changes["trustedRootCertificates"] = tuple(
                self.canon("trustedRootCertificate", root) or root for root in obj.trustedRootCertificates
            )
        if isinstance(obj, UrlPathMap):
            changes["pathRules"] = tuple(self._canonical(rule) for rule in obj.pathRules)
        return replace(obj, **changes) if changes else obj

    def _checkFrontendPorts(self) -> None:
        seen: dict[int, list[tuple[str | None, str, _Section]]] = {}
        for name, (port, sec) in self.built["frontendPort"].items():
            if port.port is None:
                continue
            key = "endpoint" if sec.given("endpoint") else "port"
            interface = (
                sec.get("interface", _parseInterface)
                if key == "port"
                else parseEndpoint(port.endpoint).interface
            )
            for otherInterface, otherName, otherSec in seen.get(port.port, []):
                if interface is None or otherInterface is None or interface == otherInterface:
                    sec.error(
                        key,
                        f"port {port.port} is already used by frontendPort {_got(otherName)} "
                        f"({self.path}:{otherSec.line})",
                    )
                    break
            seen.setdefault(port.port, []).append((interface, name, sec))

    def _checkListeners(self) -> None:
        # per frontend port: the first listener's protocol, the basic listener, host names
        protocols: dict[str, tuple[str, str]] = {}
        basic: dict[str, str] = {}
        hosts: dict[tuple[str, str], str] = {}
        for name, (listener, sec) in self.built["httpListener"].items():
            port = listener.frontendPort
            first = protocols.setdefault(port, (listener.protocol, name))
            if first[0] != listener.protocol:
                sec.error(
                    "protocol",
                    f"listeners on frontendPort {_got(port)} must share one protocol; "
                    f"expected {first[0]} (as listener {_got(first[1])}), got {listener.protocol}",
                )
            if not listener.hostNames:
                if port in basic:
                    sec.error(
                        "frontendPort",
                        f"frontendPort {_got(port)} already has a basic listener "
                        f"{_got(basic[port])} (one without host names); give this one hostNames",
                    )
                else:
                    basic[port] = name
            hostKey = "hostName" if sec.given("hostName") else "hostNames"
            for host in listener.hostNames:
                other = hosts.setdefault((port, host), name)
                if other != name:
                    sec.error(
                        hostKey,
                        f"host name {_got(host)} is already used by listener {_got(other)} "
                        f"on frontendPort {_got(port)}",
                    )

    def _checkSettings(self) -> None:
        for settings, sec in self.built["backendHttpSettings"].values():
            if settings.trustedRootCertificates and settings.protocol == "Http":
                sec.error("trustedRootCertificates", "not allowed with protocol Http")
            probe: Probe | None = self.obj("probe", settings.probe)
            if probe is None:
                continue
            if probe.protocol != settings.protocol:
                sec.error(
                    "probe",
                    f"probe {_got(probe.name)} has protocol {probe.protocol}; "
                    f"expected {settings.protocol} like these settings",
                )
            if probe.pickHostNameFromBackendHttpSettings and not (
                settings.hostName or settings.pickHostNameFromBackendAddress
            ):
                sec.error(
                    "probe",
                    f"probe {_got(probe.name)} takes its host name from these settings, but they "
                    "set neither hostName nor pickHostNameFromBackendAddress",
                )

    def _checkRules(self) -> None:
        rules = self.built["requestRoutingRule"]
        withPriority = [name for name, (rule, _) in rules.items() if rule.priority is not None]
        priorities: dict[int, str] = {}
        listeners: dict[str, str] = {}
        for name, (rule, sec) in rules.items():
            if rule.priority is None and withPriority:
                sec.error(
                    "priority",
                    f"missing; rule {_got(withPriority[0])} has a priority, so every rule needs one",
                )
            elif rule.priority is not None:
                other = priorities.setdefault(rule.priority, name)
                if other != name:
                    sec.error("priority", f"{rule.priority} is already used by rule {_got(other)}")
            other = listeners.setdefault(rule.httpListener, name)
            if other != name:
                sec.error(
                    "httpListener",
                    f"listener {_got(rule.httpListener)} is already used by rule {_got(other)}; "
                    "each listener belongs to exactly one rule",
                )
        if not self.names["requestRoutingRule"]:
            return  # "nothing to serve" says it all
        # Rules that failed to build still count as using their listener.
        used = {
            name.lower()
            for sec, key, kind, name in self.refs
            if sec.kind == "requestRoutingRule" and key == "httpListener"
        }
        for sec in self.sections:
            if sec.kind == "httpListener" and sec.name is not None and sec.name.lower() not in used:
                sec.error(
                    None,
                    "no requestRoutingRule uses this listener, so its requests could not be routed",
                )


_RULE_REFS = {
    "httpListener": "httpListener",
    "backendAddressPool": "backendAddressPool",
    "backendHttpSettings": "backendHttpSettings",
    "redirectConfiguration": "redirectConfiguration",
    "urlPathMap": "urlPathMap",
    "rewriteRuleSet": "rewriteRuleSet",
}

_REF_FIELDS: Mapping[type, Mapping[str, str]] = {
    HttpListener: {
        "frontendPort": "frontendPort",
        "sslCertificate": "sslCertificate",
        "sslProfile": "sslProfile",
    },
    BackendHttpSettings: {"probe": "probe"},
    RedirectConfiguration: {"targetListener": "httpListener"},
    UrlPathMap: {
        "defaultBackendAddressPool": "backendAddressPool",
        "defaultBackendHttpSettings": "backendHttpSettings",
        "defaultRedirectConfiguration": "redirectConfiguration",
    },
    PathRule: {
        "backendAddressPool": "backendAddressPool",
        "backendHttpSettings": "backendHttpSettings",
        "redirectConfiguration": "redirectConfiguration",
    },
    RequestRoutingRule: _RULE_REFS,
}


def _parseCipherSuites(text: str) -> tuple[str, ...]:
    def one(name: str) -> str:
        known = canonicalCipherSuite(name)
        if known is None:
            raise InvalidValue(
                f"unknown cipher suite {_got(name)}; expected Azure's names, such as "
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 (see docs/tls.rst)"
            )
        return known

    return _parseUniqueList(text, one, lambda name: f"cipher suite {_got(name)}")


def _parsePolicyName(text: str) -> str:
    known = canonicalPolicyName(text)
    if known is None:
        raise InvalidValue(
            f"unknown predefined policy {_got(text)}; expected one of: {', '.join(PREDEFINED)}"
        )
    return known


def _sslPolicy(sec: _Section) -> SslPolicy:
    """The C{sslPolicy*} keys of a C{[gateway]} or C{[sslProfile:NAME]} section, checked."""
    failedBefore = sec.failed
    sec.failed = False
    policy = SslPolicy(
        **_kwargs(
            policyType=sec.get("sslPolicyType", lambda t: _choice(t, ("Predefined", "Custom", "CustomV2"))),
            policyName=sec.get("sslPolicyName", _parsePolicyName),
            minProtocolVersion=sec.get(
                "sslMinProtocolVersion", lambda t: _choice(t, tuple(PROTOCOL_VERSIONS))
            ),
            cipherSuites=sec.get("sslCipherSuites", _parseCipherSuites),
        )
    )
    if not sec.failed:  # a value that did not parse is reported; the rest would be guesswork
        for key, message in policyProblems(policy):
            sec.error(key, message)
    sec.failed = sec.failed or failedBefore
    return policy


def _parseInterface(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise InvalidValue(f"expected an IP address, got {_got(text)}") from None


def _parseHostNames(text: str) -> tuple[str, ...]:
    names = _parseUniqueList(text, parseHostNamePattern, lambda name: f"host name {_got(name)}")
    if len(names) > 5:
        raise InvalidValue(f"expected at most 5 host names, got {len(names)}")
    return names


def _checkTarget(
    sec: _Section, poolKey: str, settingsKey: str, redirectKey: str | None, required: bool
) -> None:
    """Pool and settings come together; they and the redirect exclude each other."""
    hasPool, hasSettings = sec.given(poolKey), sec.given(settingsKey)
    hasRedirect = redirectKey is not None and sec.given(redirectKey)
    if hasPool != hasSettings:
        given, missing = (poolKey, settingsKey) if hasPool else (settingsKey, poolKey)
        sec.error(given, f"needs {missing} as well")
    if redirectKey is not None and hasRedirect and (hasPool or hasSettings):
        sec.error(
            redirectKey,
            f"expected either {poolKey} and {settingsKey} or {redirectKey}, not both",
        )
    if required and not (hasPool or hasSettings or hasRedirect):
        alternatives = f"{poolKey} and {settingsKey}"
        if redirectKey is not None:
            alternatives += f", or {redirectKey}"
        sec.error(None, f"expected {alternatives}")


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def _readText(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the configuration file: {e.strerror or e}"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: expected UTF-8 text: {e.reason}"]) from None


def _parse(text: str, path: str, scan: _Scan, errors: _Errors) -> configparser.ConfigParser | None:
    parser = _newParser(strict=True)
    try:
        parser.read_file(io.StringIO(text), source=path)
    except (configparser.DuplicateSectionError, configparser.DuplicateOptionError) as e:
        # The scan (keys) and loadConfig (sections) report every duplicate
        # with a clearer message; this is only a safety net.
        known = (
            len(scan.headerLines.get(e.section, [])) > 1
            if isinstance(e, configparser.DuplicateSectionError)
            else any(line == e.lineno for line, _ in scan.errors)
        )
        if not known:
            errors.addRaw(e.lineno or 0, f"{path}:{e.lineno}: {e.message}")
        parser = _newParser(strict=False)
        try:
            parser.read_file(io.StringIO(text), source=path)
        except configparser.ParsingError:
            pass  # reported by the scan, as below
    except configparser.MissingSectionHeaderError as e:
        if not scan.errors:
            errors.addRaw(e.lineno, f"{path}:{e.lineno}: {e.message}")
        return None
    except configparser.ParsingError as e:
        if not scan.errors:
            errors.addRaw(0, f"{path}: {e.message}")
    return parser


def loadConfig(path: str | os.PathLike[str]) -> GatewayConfig:
    """
    Read, validate and return the configuration at C{path}.

    @raise ConfigError: listing every problem found, each naming the file,
        line, section and key (see the module docstring).
    """
    path = os.fspath(path)
    text = _readText(path)
    errors = _Errors(path)
    scan = _scan(text, path)
    for line, message in scan.errors:
        errors.addRaw(line, message)
    parser = None if scan.fatal else _parse(text, path, scan, errors)
    if parser is None:
        raise ConfigError(errors.lines())

    loader = _Loader(path, errors)
    seen: dict[tuple[str, str | None], int] = {}
    for header in parser.sections():
        lines = scan.headerLines.get(header, [0])
        sec = _makeSection(header, lines[0], parser, scan, errors, loader.baseDir)
        if sec is None:
            continue
        identity = (sec.kind, sec.name.lower() if sec.name is not None else None)
        for line in [lines[0]] + lines[1:]:
            first = seen.setdefault(identity, line)
            if first != line:
                errors.add(
                    line,
                    sec.where(),
                    (
                        f"duplicate name {_got(sec.name)} (first defined at {path}:{first})"
                        if sec.name is not None
                        else f"duplicate section (first defined at {path}:{first})"
                    ),
                )
        if seen[identity] != lines[0]:
            continue  # a second spelling of a name already defined
        if sec.name is not None:
            loader.names[sec.kind][sec.name.lower()] = (sec.name, sec.line)
        loader.sections.append(sec)

    for sec in loader.sections:
        loader.section(sec)
    loader.crossCheck()
    # agw-tls (issue 5): certificate files must load (PEM, key matches, not expired).
    for kind in ("sslCertificate", "trustedRootCertificate", "trustedClientCertificate"):
        for obj, sec in loader.built[kind].values():
            if not sec.failed:
                for key, message in certificateProblems(obj):
                    sec.error(key, message)

    if not loader.names["httpListener"]:
        errors.add(None, None, "no httpListener sections: nothing to serve")
    if not loader.names["requestRoutingRule"]:
        errors.add(None, None, "no requestRoutingRule sections: nothing to serve")

    if errors.items:
        raise ConfigError(errors.lines())

    def objects(kind: str) -> dict[str, Any]:
        return {name: obj for name, (obj, _) in loader.built[kind].items()}

    return GatewayConfig(
        path=path,
        gateway=loader.gateway or GatewaySettings(),
        frontendPorts=objects("frontendPort"),
        sslCertificates=objects("sslCertificate"),
        trustedRootCertificates=objects("trustedRootCertificate"),
        trustedClientCertificates=objects("trustedClientCertificate"),
        sslProfiles=objects("sslProfile"),
        httpListeners=objects("httpListener"),
        backendAddressPools=objects("backendAddressPool"),
        backendHttpSettings=objects("backendHttpSettings"),
        probes=objects("probe"),
        redirectConfigurations=objects("redirectConfiguration"),
        urlPathMaps=objects("urlPathMap"),
        rewriteRuleSets=objects("rewriteRuleSet"),
        requestRoutingRules=objects("requestRoutingRule"),
    )


def _makeSection(
    header: str,
    line: int,
    parser: configparser.ConfigParser,
    scan: _Scan,
    errors: _Errors,
    baseDir: str,
) -> _Section | None:
    """Check a section header; None (error recorded) when it is unusable."""
    where = f"[{header}]"
    kindText, colon, nameText = header.partition(":")
    kindText, nameText = kindText.strip(), nameText.strip()
    kind = _KIND_BY_LOWER.get(kindText.lower())
    if kind is None:
        errors.add(
            line,
            where,
            f"unknown section kind {_got(kindText)}; expected one of: {', '.join(_KINDS)}",
        )
        return None
    name: str | None = None
    if kind == "gateway":
        if colon:
            errors.add(line, where, "expected [gateway] without a name")
            return None
    elif not colon or not nameText:
        errors.add(line, where, f"expected [{kindText}:NAME]")
        return None
    else:
        try:
            name = parseName(nameText)
        except InvalidValue as e:
            errors.add(line, where, str(e))
            return None
    entries: list[_Entry] = []
    seenKeys: set[str] = set()
    for key, value in parser.items(header):
        if not key or key.lower() in seenKeys:
            continue  # reported by the scan
        seenKeys.add(key.lower())
        entries.append(_Entry(key=key, value=value, line=scan.keyLines.get((header, key), line)))
    return _Section(kind, name, header.strip(), line, entries, errors, baseDir)


def _members(count: int) -> str:
    return f"{count} member" if count == 1 else f"{count} members"


def summarize(config: GatewayConfig) -> list[str]:
    """
    One line per listener and per rule, for C{twistd agw --check}: enough to
    see at a glance what the gateway will serve and where it sends it.
    """
    lines: list[str] = []
    for listener in config.httpListeners.values():
        port = config.frontendPorts.get(listener.frontendPort)
        endpoint = port.endpoint if port is not None else listener.frontendPort
        hosts = f"hostNames {','.join(listener.hostNames)}" if listener.hostNames else "(basic)"
        line = f"listener {listener.name}: {listener.protocol} on {endpoint} {hosts}"
        if listener.sslCertificate:
            line += f", sslCertificate {listener.sslCertificate}"
        if listener.sslProfile:
            line += f", sslProfile {listener.sslProfile}"
        lines.append(line)

    def backend(pool: str, settings: str) -> str:
        members = config.backendAddressPools.get(pool)
        count = len(members.backendAddresses) if members is not None else 0
        return f"pool {pool} ({_members(count)}), settings {settings}"

    for rule in config.requestRoutingRules.values():
        head = rule.ruleType + (f", priority {rule.priority}" if rule.priority is not None else "")
        if rule.urlPathMap is not None:
            pathMap = config.urlPathMaps.get(rule.urlPathMap)
            count = len(pathMap.pathRules) if pathMap is not None else 0
            target = f"urlPathMap {rule.urlPathMap} ({count} path rule{'' if count == 1 else 's'})"
        elif rule.redirectConfiguration is not None:
            redirect = config.redirectConfigurations.get(rule.redirectConfiguration)
            detail = ""
            if redirect is not None:
                to = f"listener {redirect.targetListener}" if redirect.targetListener else redirect.targetUrl
                detail = f" ({redirect.redirectType} to {to})"
            target = f"redirect {rule.redirectConfiguration}{detail}"
        elif rule.ruleType == "Plugin":
            target = f"plugin {rule.plugin}"
            if rule.backendAddressPool and rule.backendHttpSettings:
                target += ", fallback " + backend(rule.backendAddressPool, rule.backendHttpSettings)
        elif rule.backendAddressPool and rule.backendHttpSettings:
            target = backend(rule.backendAddressPool, rule.backendHttpSettings)
        else:
            target = "nothing"
        if rule.rewriteRuleSet:
            target += f", rewriteRuleSet {rule.rewriteRuleSet}"
        lines.append(f"rule {rule.name} ({head}): {rule.httpListener} -> {target}")
    return lines

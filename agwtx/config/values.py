"""
The value parsers of the configuration: each takes the text of one key and
returns a typed value or raises L{InvalidValue} saying what was expected and
what was found.  Pure functions; the loader adds file, line, section and key.
The syntax they accept is described in L{agwtx.config.loader}.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from agwtx.config.errors import InvalidValue
from agwtx.config.model import (
    BackendAddress,
    IPNetwork,
    PathRule,
)


T = TypeVar("T")


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
LOAD_DISTRIBUTION_ALGORITHMS = ("RoundRobin", "LeastConnections", "IpHash")
WEIGHT_PER_SERVER_RANGE = (1, 100)
"""Azure's range for a load distribution target's C{weightPerServer}."""


def parseLoadDistributionTarget(text: str) -> tuple[str, int]:
    """A C{target.NAME} value: C{POOL} or C{POOL, WEIGHT} (the weight of each of its members, default 1)."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) > 2 or not parts[0]:
        raise InvalidValue(f"expected 'POOL' or 'POOL, WEIGHT', got {_got(text)}")
    pool = parseName(parts[0])
    weight = 1
    if len(parts) == 2:
        lo, hi = WEIGHT_PER_SERVER_RANGE
        try:
            weight = parseInt(parts[1], lo, hi)
        except InvalidValue:
            raise InvalidValue(
                f"expected a weight of {lo}..{hi} after the pool, got {_got(parts[1])}"
            ) from None
    return pool, weight


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
    """
    An IPv4 or IPv6 address range in CIDR form (C{10.0.0.0/8}, C{::1/128}); a
    bare address is one host.  An IPv4-mapped IPv6 range
    (C{::ffff:10.0.0.0/104}) is the IPv4 range, as addresses are taken
    (L{agwtx.config.model.inNetworks}).
    """
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            raise InvalidValue(
                f"expected an address range in CIDR form with no host bits set, got {_got(text)}"
            ) from None
        raise InvalidValue(
            f"expected an IPv4 or IPv6 address range (CIDR, e.g. 10.0.0.0/8), got {_got(text)}"
        ) from None
    if network.version == 6 and network.prefixlen >= 96 and network.subnet_of(_MAPPED):  # type: ignore[arg-type]
        return ipaddress.ip_network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


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


_PATH_RULE_HINT = (
    "'/path/*, ... -> POOL, SETTINGS', '/path/*, ... -> loadDistributionPolicy:NAME, SETTINGS' "
    "or '/path/*, ... -> redirect:NAME'"
)
_POLICY_PREFIX = "loaddistributionpolicy:"


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
    if names[0].lower().startswith(_POLICY_PREFIX):
        policy = names[0][len(_POLICY_PREFIX) :].strip()
        if not policy:
            raise InvalidValue(f"expected {_PATH_RULE_HINT}, got {_got(text)}")
        return PathRule(
            name=name, paths=tuple(patterns), loadDistributionPolicy=policy, backendHttpSettings=names[1]
        )
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
    "var_add_x_forwarded_for_proxy",
    "var_ciphers_used",
    "var_client_ip",
    "var_client_port",
    "var_client_user",
    "var_host",
    "var_http_method",
    "var_http_status",
    "var_http_version",
    "var_query_string",
    "var_request_query",
    "var_request_scheme",
    "var_request_uri",
    "var_server_port",
    "var_ssl_connection_protocol",
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
_VARIABLES_EXPECTED = ", ".join(_VARIABLES + ("var_cookie_<name>", "http_req_<Header>", "http_resp_<Header>"))
REWRITE_VARIABLES = frozenset(_VARIABLES)
"""The C{var_*} variables rewrite rules may use (besides C{var_cookie_NAME})."""
RESPONSE_VARIABLES = frozenset({"var_http_status"})
"""Server variables that exist only once the backend has answered (like C{http_resp_*})."""
_CAPTURE_RE = re.compile(r"(?P<base>.+)_(?P<group>[0-9]+)")
HOP_BY_HOP_FIELDS = frozenset(
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
        # HTTP/2's upgrade field (RFC 9113 section 3.2.1): connection-specific
        # by definition, whether Connection names it or not.
        "http2-settings",
    }
)
"""Connection-specific fields (lowercase): never forwarded, never rewritten;
L{agwtx.runtime.headers.HOP_BY_HOP} is this set as bytes."""


def _checkVariable(name: str) -> None:
    if name in _VARIABLES:
        return
    for prefix in ("http_req_", "http_resp_", "var_cookie_"):
        if name.startswith(prefix) and HEADER_TOKEN_RE.fullmatch(name[len(prefix) :]):
            return
    raise InvalidValue(f"unknown variable {_got(name)}; expected one of: {_VARIABLES_EXPECTED}")


def isResponseVariable(name: str) -> bool:
    """Whether a variable only has a value once the backend answered."""
    return name.startswith("http_resp_") or name in RESPONSE_VARIABLES


def sameVariable(a: str, b: str) -> bool:
    """Whether two variable names are the same (header names ignore case)."""
    if a == b:
        return True
    for prefix in ("http_req_", "http_resp_"):
        if a.startswith(prefix) and b.startswith(prefix):
            return a.lower() == b.lower()
    return False


def rewriteReference(name: str, conditions: Sequence[str]) -> tuple[str, int | None]:
    """
    What C{{name}} in a value of a rule whose conditions test the variables
    C{conditions} refers to: C{(variable, None)} for a variable's value,
    C{(variable, N)} for group N of the rule's condition on C{variable}
    (Azure's C{{var_uri_path_1}}, C{{http_req_User-Agent_2}}).  A name that
    ends in C{_N} is a capture whenever its stem is a variable: a header or
    cookie whose own name ends in C{_N} can be tested, not copied.

    @raise InvalidValue: an unknown variable, or a capture from a variable
        no condition of the rule tests.
    """
    if name in _VARIABLES:
        return name, None
    match = _CAPTURE_RE.fullmatch(name)
    if match is not None:
        base = match.group("base")
        try:
            _checkVariable(base)
        except InvalidValue:
            pass
        else:
            if not any(sameVariable(base, c) for c in conditions):
                raise InvalidValue(
                    f"{_got(name)} refers to group {match.group('group')} of a condition on "
                    f"{_got(base)}, and this rule has no condition on {_got(base)}"
                )
            return base, int(match.group("group"))
    _checkVariable(name)
    return name, None


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


def parseRewriteValue(text: str, response: bool, conditions: Sequence[str] = ()) -> str:
    """
    Check the C{{variable}} references in a value template (a header value,
    a modified path or query) of a rule whose conditions test the variables
    C{conditions} (for capture references, see L{rewriteReference}).
    Request values cannot use C{http_resp_*} or C{var_http_status}: there is
    no response yet.
    """
    for reference in re.findall(r"\{([^{}]*)\}", text):
        variable, _ = rewriteReference(reference, conditions)
        if not response and isResponseVariable(variable):
            raise InvalidValue(f"variable {_got(variable)} is only available in response headers")
    return text


def parseRewriteUrlPart(text: str, path: bool) -> str:
    """
    A C{modifiedPath} (C{path}) or C{modifiedQueryString} template: no
    whitespace or control characters outside its C{{variable}} references,
    no C{#}, and no C{?} in a path (the query has a key of its own).
    """
    forbidden = "?#" if path else "#"
    for char in re.sub(r"\{[^{}]*\}", "", text):
        if char in forbidden or char.isspace() or ord(char) < 32 or ord(char) == 127:
            what = "a path" if path else "a query string"
            raise InvalidValue(f"expected {what}, got {_got(text)} (it contains {_got(char)})")
    return text


def _parseHeaderName(text: str, response: bool) -> str:
    if not HEADER_TOKEN_RE.fullmatch(text):
        raise InvalidValue(f"expected a header name, got {_got(text)}")
    lowered = text.lower()
    if lowered in HOP_BY_HOP_FIELDS:
        raise InvalidValue(
            f"header {_got(text)} is hop-by-hop: the gateway manages it and it cannot be rewritten"
        )
    if lowered == "content-length":
        raise InvalidValue(f"header {_got(text)} frames the message and cannot be rewritten")
    return text


UNREWRITABLE_HEADERS = HOP_BY_HOP_FIELDS | {"content-length"}
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


_RESERVED_ID_HEADERS = HOP_BY_HOP_FIELDS | {
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

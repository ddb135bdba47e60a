"""
Rewrites: a L{RewriteRuleSet} from the config compiled into a L{RewriteSet}
that the routing decision (URL), the proxy and the WebSocket bridge
(headers) apply per request.

Everything that can be decided from the config is decided once, in
L{compileRewriteSet}: regular expressions are compiled, header names are
encoded and lowercased, value templates are split into literal bytes,
variable getters and capture references.  Applying a set to a request only
reads the variables its rules use, runs the compiled patterns and joins
bytes.

Semantics (Azure Application Gateway's rewrite rules):

  - Rules apply in order; a rule acts only when all its conditions hold.
  - A condition searches (C{re.search}) a variable's value with the rule's
    pattern, optionally ignoring case, optionally negated.
  - Captures: C{{VARIABLE_N}} in a value is group N of the match of the
    rule's (first) condition on VARIABLE (C{{var_uri_path_1}},
    C{{http_req_User-Agent_2}}, C{{http_resp_Location_1}}); empty when the
    group does not exist or took no part in the match, and for a negated
    condition, which matched nothing.
  - Variables always read what the client sent and what the backend
    answered, never the result of another rewrite: every rule's conditions
    and values are evaluated first, then the actions are applied in rule
    order, so a later rule's action on the same header (or on the path or
    the query) wins.
  - A set action replaces every occurrence of the header with one value; a
    remove action (value None) deletes them all.  Set request headers are
    appended after the forwarded ones.
  - URL actions (L{RewriteSet.rewriteUrl}, applied once, in the routing
    decision): C{modifiedPath} replaces the path sent to the backend,
    C{modifiedQueryString} the query (empty: none).  Bytes a request line
    cannot carry (controls, space, non-ASCII, C{#}, and C{?} in a path) are
    percent-encoded; a path that does not start with C{/} gets one.  With
    C{reroute} (of the rule whose C{modifiedPath} is used) the path map is
    evaluated again with the new path.
  - Variables: C{var_client_ip}, C{var_client_port}, C{var_host} (the Host
    name, lowercased, without port), C{var_uri_path} (the path as sent, still
    percent-encoded), C{var_query_string} and C{var_request_query} (after
    C{?}, empty if none), C{var_request_uri} (path and query as sent),
    C{var_http_method}, C{var_http_version} (C{HTTP/1.1}),
    C{var_request_scheme} (C{http} or C{https}), C{var_server_port} (the
    listener's port), C{var_ssl_enabled} (C{on} for TLS, else empty, as in
    Azure), C{var_ssl_connection_protocol} and C{var_ciphers_used} (the TLS
    version and cipher, empty on plain HTTP), C{var_add_x_forwarded_for_proxy}
    (the client's X-Forwarded-For with the connection's peer address
    appended, or the peer address alone), C{var_client_user} (the user name
    of C{Authorization: Basic}), C{var_cookie_NAME} (the first cookie of that
    name), C{var_http_status} (the backend's status; response rules only),
    C{http_req_HEADER} and C{http_resp_HEADER} (repeated headers joined with
    C{", "}; empty when absent).  C{http_resp_*} is empty in request rules:
    there is no response yet.
  - Client-certificate variables (mutual TLS, L{agwtx.tls.clientauth}):
    C{var_client_certificate} (URL-encoded PEM),
    C{var_client_certificate_fingerprint} (SHA-1, lowercase hex),
    C{var_client_certificate_serial}, C{var_client_certificate_subject},
    C{var_client_certificate_issuer} (RFC 4514 DNs),
    C{var_client_certificate_start_date}, C{var_client_certificate_end_date}
    and C{var_client_certificate_verification} (C{SUCCESS},
    C{FAILED:reason} or C{NONE}); empty on plain HTTP.  A request header
    that any rule fills from one of them is never taken from the client:
    the client's is removed even when the rule's conditions do not hold.
  - CR, LF and NUL never reach a header value: they become spaces.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from twisted.web.http_headers import Headers

from agwtx.config.model import GatewayConfig, RewriteRule, RewriteRuleSet
from agwtx.config.values import rewriteReference, sameVariable
from agwtx.routing.match import requestHost

if TYPE_CHECKING:
    from agwtx.http.request import GatewayRequest

__all__ = ["RewriteSet", "compileRewriteSet", "rewriteCompiler"]

HeaderPairs = list[tuple[bytes, bytes]]
RespLookup = Callable[[bytes], "bytes | None"]
Matches = "tuple[Any, ...] | None"
Getter = Callable[[Any, "RespLookup | None", Any], bytes]
"""(request, response header lookup or None, the rule's condition matches or None) -> the value."""

_EMPTY = b""
_VARIABLE_RE = re.compile(r"\{([^{}]*)\}")


# -- variables ---------------------------------------------------------------


def _clientIP(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    return str(getattr(request, "clientIP", "")).encode("ascii", "replace")


def _clientPort(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    port = getattr(request, "clientPort", None)
    return b"%d" % port if isinstance(port, int) else _EMPTY


def _host(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    hosts = request.requestHeaders.getRawHeaders(b"host")
    return requestHost(hosts[0] if hosts else None).encode("latin-1", "replace")


def _uriPath(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    return bytes(request.uri.partition(b"?")[0])


def _queryString(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    return bytes(request.uri.partition(b"?")[2])


def _requestUri(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    return bytes(request.uri)


def _sslEnabled(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    return b"on" if request.isSecure() else _EMPTY


def _httpMethod(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    return bytes(request.method)


def _httpVersion(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    return bytes(request.clientproto)


def _requestScheme(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    return b"https" if request.isSecure() else b"http"


def _serverPort(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    port = getattr(request, "listenerPort", 0)
    return b"%d" % port if port else _EMPTY


def _httpStatus(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    return b"%d" % request.code if resp is not None else _EMPTY


def _addXForwardedForProxy(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    peer = str(getattr(request, "peerIP", "")).encode("ascii", "replace")
    sent = _joined(request.requestHeaders.getRawHeaders(b"x-forwarded-for"))
    return sent + b", " + peer if sent else peer


def _clientUser(request: Any, resp: RespLookup | None, m: Any) -> bytes:
    auth = request.requestHeaders.getRawHeaders(b"authorization")
    if not auth or auth[0][:6].lower() != b"basic ":
        return _EMPTY
    try:
        decoded = base64.b64decode(auth[0][6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return _EMPTY
    return decoded.partition(b":")[0]


def _tls(index: int) -> Getter:
    def get(request: Any, resp: RespLookup | None, m: Any) -> bytes:
        info = request.tlsInfo() if request.isSecure() else None
        return info[index].encode("ascii", "replace") if info else _EMPTY

    return get


def _cookie(name: bytes) -> Getter:
    def get(request: Any, resp: RespLookup | None, m: Any) -> bytes:
        for header in request.requestHeaders.getRawHeaders(b"cookie") or ():
            for pair in header.split(b";"):
                key, eq, value = pair.partition(b"=")
                if eq and key.strip() == name:
                    return value.strip()
        return _EMPTY

    return get


def _clientCertificate(attribute: str) -> Getter:
    def get(request: Any, resp: RespLookup | None, m: Any) -> bytes:
        cert = getattr(request, "agwClientCert", None)
        if cert is None:
            return _EMPTY
        return str(getattr(cert, attribute)).encode("utf-8", "replace")

    return get


CLIENT_CERTIFICATE_VARIABLES: dict[str, str] = {
    "var_client_certificate": "pem",
    "var_client_certificate_end_date": "endDate",
    "var_client_certificate_fingerprint": "fingerprint",
    "var_client_certificate_issuer": "issuer",
    "var_client_certificate_serial": "serial",
    "var_client_certificate_start_date": "startDate",
    "var_client_certificate_subject": "subject",
    "var_client_certificate_verification": "verification",
}
"""Azure's mutual-authentication server variables and the L{agwtx.tls.clientauth.ClientCertificate} attribute of each."""

_SERVER_VARIABLES: dict[str, Getter] = {
    "var_add_x_forwarded_for_proxy": _addXForwardedForProxy,
    "var_ciphers_used": _tls(0),
    "var_client_ip": _clientIP,
    "var_client_port": _clientPort,
    "var_client_user": _clientUser,
    "var_host": _host,
    "var_http_method": _httpMethod,
    "var_http_status": _httpStatus,
    "var_http_version": _httpVersion,
    "var_uri_path": _uriPath,
    "var_query_string": _queryString,
    "var_request_query": _queryString,
    "var_request_scheme": _requestScheme,
    "var_request_uri": _requestUri,
    "var_server_port": _serverPort,
    "var_ssl_connection_protocol": _tls(1),
    "var_ssl_enabled": _sslEnabled,
    **{name: _clientCertificate(attribute) for name, attribute in CLIENT_CERTIFICATE_VARIABLES.items()},
}

_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def _joined(values: Sequence[bytes] | None) -> bytes | None:
    """A repeated header's values as one (C{", "}-joined), None when there are none."""
    if not values:
        return None
    return values[0] if len(values) == 1 else b", ".join(values)


def _requestHeader(name: bytes) -> Getter:
    def get(request: Any, resp: RespLookup | None, m: Any) -> bytes:
        return _joined(request.requestHeaders.getRawHeaders(name)) or _EMPTY

    return get


def _responseHeader(name: bytes) -> Getter:
    def get(request: Any, resp: RespLookup | None, m: Any) -> bytes:
        if resp is None:
            return _EMPTY
        return resp(name) or _EMPTY

    return get


def _getter(variable: str) -> Getter:
    """The getter for a variable name as the model stores it (C{var_host}, C{http_req_X})."""
    getter = _SERVER_VARIABLES.get(variable)
    if getter is not None:
        return getter
    for prefix, make in (
        ("http_req_", _requestHeader),
        ("http_resp_", _responseHeader),
        ("var_cookie_", _cookie),
    ):
        if variable.startswith(prefix):
            name = variable[len(prefix) :]
            if _HEADER_NAME_RE.fullmatch(name):
                return make((name if prefix == "var_cookie_" else name.lower()).encode("ascii"))
    raise ValueError(f"unknown rewrite variable {variable!r}")


def _capture(index: int, group: int) -> Getter:
    """Group C{group} of the match of the rule's condition C{index}: empty when there is none."""

    def get(request: Any, resp: RespLookup | None, matches: Any) -> bytes:
        found = matches[index] if matches is not None else None
        if found is None or group > found.re.groups:
            return _EMPTY
        value = found.group(group)
        return value.encode("utf-8", "surrogateescape") if value is not None else _EMPTY

    return get


# -- compiled pieces -----------------------------------------------------------


_SAFE = bytes.maketrans(b"\r\n\0", b"   ")


def _sanitize(value: bytes) -> bytes:
    return value.translate(_SAFE)


class _Template:
    """A value: literal bytes with C{{variable}} and C{{variable_N}} (capture) holes."""

    __slots__ = ("parts", "constant", "single", "variables")

    def __init__(self, text: str, conditions: Sequence[str] = ()) -> None:
        parts: list[bytes | Getter] = []
        pos = 0
        self.variables = frozenset(m.group(1) for m in _VARIABLE_RE.finditer(text))
        for m in _VARIABLE_RE.finditer(text):
            if m.start() > pos:
                parts.append(_sanitize(text[pos : m.start()].encode("utf-8")))
            parts.append(_part(m.group(1), conditions))
            pos = m.end()
        if pos < len(text):
            parts.append(_sanitize(text[pos:].encode("utf-8")))
        self.parts: tuple[bytes | Getter, ...] = tuple(parts)
        self.constant: bytes | None = None
        self.single: Getter | None = None
        if all(isinstance(p, bytes) for p in parts):
            self.constant = b"".join(p for p in parts if isinstance(p, bytes))
        elif len(parts) == 1 and not isinstance(parts[0], bytes):
            self.single = parts[0]

    def render(self, request: Any, resp: RespLookup | None, matches: Any = None) -> bytes:
        if self.constant is not None:
            return self.constant
        if self.single is not None:
            return self.single(request, resp, matches).translate(_SAFE)
        return b"".join(
            [p if p.__class__ is bytes else p(request, resp, matches) for p in self.parts]  # type: ignore[operator,misc]
        ).translate(_SAFE)


def _part(reference: str, conditions: Sequence[str]) -> Getter:
    """The getter of C{{reference}} in a value of a rule whose conditions test C{conditions}."""
    try:
        variable, group = rewriteReference(reference, conditions)
    except Exception:
        raise ValueError(f"unknown rewrite variable {reference!r}") from None
    if group is None:
        return _getter(variable)
    index = next(i for i, c in enumerate(conditions) if sameVariable(variable, c))
    return _capture(index, group)


def _quoter(unsafe: bytes) -> Callable[[bytes], bytes]:
    """Percent-encode what a request line cannot carry (controls, space, non-ASCII) and C{unsafe}."""
    pattern = re.compile(b"[\\x00-\\x20\\x7f-\\xff" + re.escape(unsafe) + b"]")

    def encode(m: Any) -> bytes:
        return b"%%%02X" % m.group()[0]

    def quote(value: bytes) -> bytes:
        return pattern.sub(encode, value)

    return quote


_quotePath = _quoter(b"#?")
_quoteQuery = _quoter(b"#")


class _Rule:
    __slots__ = (
        "name",
        "conditions",
        "requestActions",
        "responseActions",
        "modifiedPath",
        "modifiedQuery",
        "reroute",
    )

    def __init__(self, rule: RewriteRule) -> None:
        self.name = rule.name
        conditions = []
        tested = [variable for variable, _, _, _ in rule.conditions]
        for variable, pattern, ignoreCase, negate in rule.conditions:
            regex = re.compile(pattern, re.IGNORECASE if ignoreCase else 0)
            conditions.append((_getter(variable), regex.search, negate))
        self.conditions: tuple[tuple[Getter, Callable[[str], Any], bool], ...] = tuple(conditions)
        self.requestActions = _actions(rule.requestHeaders, tested)
        self.responseActions = _actions(rule.responseHeaders, tested)
        self.modifiedPath = None if rule.modifiedPath is None else _Template(rule.modifiedPath, tested)
        self.modifiedQuery = (
            None if rule.modifiedQueryString is None else _Template(rule.modifiedQueryString, tested)
        )
        self.reroute = rule.reroute

    def holds(self, request: Any, resp: RespLookup | None) -> tuple[Any, ...] | None:
        """The match of each condition (None for a negated one) when all hold, else None."""
        matches = []
        for get, search, negate in self.conditions:
            found = search(get(request, resp, None).decode("utf-8", "surrogateescape"))
            if (found is None) is not negate:
                return None
            matches.append(found)
        return tuple(matches)


Action = tuple[bytes, bytes, "_Template | None"]
"""(lowercased name, name as configured, value template or None to remove)."""


def _actions(headers: Sequence[tuple[str, str | None]], tested: Sequence[str]) -> tuple[Action, ...]:
    out = []
    for name, value in headers:
        if not _HEADER_NAME_RE.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        raw = name.encode("ascii")
        out.append((raw.lower(), raw, None if value is None else _Template(value, tested)))
    return tuple(out)


def _decide(
    rules: tuple[_Rule, ...], request: Any, resp: RespLookup | None, response: bool
) -> dict[bytes, tuple[bytes, bytes | None]]:
    """First pass: {lowercased name: (name, value or None)} from the rules whose conditions hold."""
    decided: dict[bytes, tuple[bytes, bytes | None]] = {}
    for rule in rules:
        matches = rule.holds(request, resp)
        if matches is None:
            continue
        for lname, name, template in rule.responseActions if response else rule.requestActions:
            decided.pop(lname, None)  # re-insert so that the last action decides the order too
            decided[lname] = (name, None if template is None else template.render(request, resp, matches))
    return decided


def _pairsLookup(pairs: Sequence[tuple[bytes, bytes]]) -> RespLookup:
    def lookup(name: bytes) -> bytes | None:
        return _joined([v for n, v in pairs if n.lower() == name])

    return lookup


def _headersLookup(headers: Headers) -> RespLookup:
    def lookup(name: bytes) -> bytes | None:
        return _joined(headers.getRawHeaders(name))

    return lookup


def _rewritePairs(
    pairs: Iterable[tuple[bytes, bytes]], decided: dict[bytes, tuple[bytes, bytes | None]]
) -> HeaderPairs:
    out = [(n, v) for n, v in pairs if n.lower() not in decided]
    out.extend((name, value) for name, value in decided.values() if value is not None)
    return out


# -- the public object -----------------------------------------------------------


class RewriteSet:
    """
    A compiled rewrite rule set, shared by every target of the rules that
    name it.  Stateless after construction, so requests in flight and a
    reload never interfere.
    """

    def __init__(self, name: str, rules: Sequence[_Rule]) -> None:
        self.name = name
        self._requestRules = tuple(r for r in rules if r.requestActions)
        self._responseRules = tuple(r for r in rules if r.responseActions)
        self._urlRules = tuple(r for r in rules if r.modifiedPath is not None or r.modifiedQuery is not None)
        self._guarded = frozenset(
            lname
            for rule in self._requestRules
            for lname, _, template in rule.requestActions
            if template is not None and template.variables & CLIENT_CERTIFICATE_VARIABLES.keys()
        )
        """Request headers a rule fills from the client certificate: never taken from the client."""

    @property
    def rewritesUrl(self) -> bool:
        return bool(self._urlRules)

    def rewriteUrl(self, request: "GatewayRequest") -> tuple[bytes | None, bool]:
        """
        The path and query to send to the backend, and whether to route by
        them (C{reroute}); C{(None, False)} when no URL rule acts.
        """
        path: bytes | None = None
        query: bytes | None = None
        reroute = False
        for rule in self._urlRules:
            matches = rule.holds(request, None)
            if matches is None:
                continue
            if rule.modifiedPath is not None:
                path = _quotePath(rule.modifiedPath.render(request, None, matches))
                reroute = rule.reroute
            if rule.modifiedQuery is not None:
                query = _quoteQuery(rule.modifiedQuery.render(request, None, matches))
        if path is None and query is None:
            return None, False
        original, q, originalQuery = request.uri.partition(b"?")
        if path is None:
            path = original
        elif path[:1] != b"/":
            path = b"/" + path
        if query is None:
            return (path + b"?" + originalQuery if q else path), reroute
        return (path + b"?" + query if query else path), reroute

    @property
    def rewritesRequest(self) -> bool:
        return bool(self._requestRules)

    @property
    def rewritesResponse(self) -> bool:
        return bool(self._responseRules)

    def applyRequest(self, request: "GatewayRequest", fwd: HeaderPairs) -> HeaderPairs:
        """
        The headers to send to the backend: C{fwd} (name, value) pairs as the
        proxy built them, rewritten.  Returns C{fwd} itself when no rule acts.
        """
        if not self._requestRules:
            return fwd
        if self._guarded:
            fwd = [(n, v) for n, v in fwd if n.lower() not in self._guarded]
        decided = _decide(self._requestRules, request, None, False)
        if not decided:
            return fwd
        return _rewritePairs(fwd, decided)

    def applyResponse(self, request: "GatewayRequest", headers: Headers) -> Headers:
        """Rewrite the backend response's C{headers} in place (and return them)."""
        if not self._responseRules:
            return headers
        decided = _decide(self._responseRules, request, _headersLookup(headers), True)
        for _, (name, value) in decided.items():
            if value is None:
                headers.removeHeader(name)
            else:
                headers.setRawHeaders(name, [value])
        return headers

    def applyResponseHeaders(
        self, request: "GatewayRequest", headerPairs: Sequence[tuple[bytes, bytes]]
    ) -> HeaderPairs:
        """
        The same response rewrite for a response held as (name, value) pairs,
        such as the WebSocket bridge's 101: returns a new list, order kept
        for the headers no rule touches.
        """
        if not self._responseRules:
            return list(headerPairs)
        decided = _decide(self._responseRules, request, _pairsLookup(headerPairs), True)
        return _rewritePairs(headerPairs, decided)

    def __repr__(self) -> str:
        return (
            f"<RewriteSet {self.name}: {len(self._requestRules)} request, "
            f"{len(self._responseRules)} response, {len(self._urlRules)} URL rule(s)>"
        )


def compileRewriteSet(rs: RewriteRuleSet) -> RewriteSet:
    """
    Compile a rule set once, at build time.

    @raise ValueError: for a variable, header name or pattern the config
        loader would have rejected (a model built by hand).
    """
    rules = []
    for rule in rs.rules:
        try:
            rules.append(_Rule(rule))
        except re.error as e:
            raise ValueError(f"rewriteRuleSet {rs.name} rule {rule.name}: {e}") from None
    return RewriteSet(rs.name, rules)


def rewriteCompiler(config: GatewayConfig) -> Callable[[str], RewriteSet]:
    """
    The C{rewriteFor} argument of L{agwtx.routing.router.buildRouters}: compiles each
    named set once, so that all rules naming it share one L{RewriteSet}.
    """
    compiled: dict[str, RewriteSet] = {}
    byLower = {name.lower(): name for name in config.rewriteRuleSets}

    def rewriteFor(name: str) -> RewriteSet:
        canonical = name if name in config.rewriteRuleSets else byLower[name.lower()]
        found = compiled.get(canonical)
        if found is None:
            found = compiled[canonical] = compileRewriteSet(config.rewriteRuleSets[canonical])
        return found

    return rewriteFor

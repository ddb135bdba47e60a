"""
Load and validate the gateway configuration (an INI file) into a frozen
L{agwtx.config.model.GatewayConfig}.

Every mistake is reported, all at once, as one line that points at the file,
the line, the section and the key and says what was expected::

    etc/gw.ini:12: [probe:p1] interval: expected 1..86400 seconds, got 0

Every section and key (type, range, default, Azure equivalent) is listed in
docs/configuration.rst, which tests/test_docs.py checks against
L{agwtx.config.keys._KEYS} and L{agwtx.config.keys._PATTERN_KEYS} both ways.

The configuration package splits the work by job: the key table in
L{agwtx.config.keys}, the value parsers in L{agwtx.config.values}, reading
the INI file (line numbers, continuation lines, error collection) in
L{agwtx.config.ini}, certificate files in L{agwtx.config.certificates}.
This module builds the model from the sections and checks references
between them.  It is over 800 lines on purpose: L{_Loader} has one method
per section kind, each short, and they share the cross-reference tables
and the error bookkeeping; splitting them apart would pass that state
around instead.  The syntax every value parser accepts is described here,
in one place.

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
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from agwtx.config.certificates import certificateProblems
from agwtx.config.model import (
    BackendAddressPool,
    BackendHttpSettings,
    CUSTOM_ERROR_PAGE_MAX,
    CUSTOM_ERROR_STATUSES,
    CustomErrorPage,
    FrontendPort,
    GatewayConfig,
    GatewaySettings,
    HttpListener,
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

from agwtx.config.ini import _Entry, _Errors, _Scan, _Section, _checkContinuation, _parse, _readText, _scan
from agwtx.config.keys import (
    _CUSTOM_ERROR_PREFIX,
    _KEYS,
    _KINDS,
    _KIND_BY_LOWER,
    _PATTERN_KEYS,
    _POLICY_KEYS,
    _REWRITE_KEY_RE,
    _isPatternKey,
)
from agwtx.config.errors import ConfigError, InvalidValue
from agwtx.config.values import (
    CONNECTIONS_MAX,
    REDIRECT_TYPES,
    RULE_NAME_RE,
    RULE_TYPES,
    SECONDS_MAX,
    UNHEALTHY_THRESHOLD_MAX,
    _choice,
    _got,
    _parseAccessLog,
    _parseAccessLogFormat,
    _parseCookieName,
    _parseEnabled,
    _parseHeaderName,
    _parsePath,
    _parsePort,
    _parseRequestIdHeader,
    _parseSecret,
    _parseSecrets,
    _parseUniqueList,
    _parseUrl,
    _parseWorkers,
    adminReach,
    parseBackendAddresses,
    parseBool,
    parseByteSize,
    parseDnsName,
    parseDuration,
    parseEndpoint,
    parseHostNamePattern,
    parseInt,
    parseList,
    parseName,
    parseNetworks,
    parsePathRule,
    parseProtocol,
    parseRewriteCondition,
    parseRewriteValue,
    parseStatusRanges,
)


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

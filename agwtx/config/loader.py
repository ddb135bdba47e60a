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
Building the model is split by area: the state one load shares and the
dispatch of a section to its builder in L{agwtx.config.builder}; the
C{[gateway]} section in L{agwtx.config.gateway}; frontend ports,
certificates, SSL profiles and listeners in L{agwtx.config.listeners}; pools,
probes and backend settings in L{agwtx.config.backends}; redirects, path
maps, rewrite rule sets and routing rules in L{agwtx.config.rules}.  This
module reads the file into sections, has each built, checks the references
between them and the certificate files, and summarizes a loaded
configuration.  The syntax every value parser accepts is described here, in
one place.

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
    rule.shop.condition = {var_uri_path} ~ ^/shop/(.+)/(.+)$
    rule.shop.modifiedPath = /buy.aspx
    rule.shop.modifiedQueryString = category={var_uri_path_1}&product={var_uri_path_2}

  - C{rule.RULE.condition} and C{rule.RULE.condition.N} (N any number, used
    only to make the keys distinct) hold C{{VARIABLE} OP PATTERN}.  OP is
    C{~} (the Python regular expression PATTERN matches, searching), C{~*}
    (same, ignoring case), C{!~} and C{!~*} (does not match).
  - C{rule.RULE.requestHeader.HEADER} and C{rule.RULE.responseHeader.HEADER}
    set the header to the value, in which C{{VARIABLE}} is substituted; an
    empty value removes the header.
  - C{rule.RULE.modifiedPath} and C{rule.RULE.modifiedQueryString} replace
    the path and the query sent to the backend (an empty
    C{modifiedQueryString} removes the query: the second exception to
    "empty is left out"); C{rule.RULE.reroute = true} routes by the new path
    (only in a set of C{PathBasedRouting} rules, and only with a
    C{modifiedPath}).  A path has no whitespace, C{?} or C{#} outside its
    C{{VARIABLE}} references, a query no whitespace or C{#}.
  - Variables: C{var_client_ip}, C{var_client_port}, C{var_host},
    C{var_uri_path}, C{var_query_string}, C{var_request_query},
    C{var_request_uri}, C{var_http_method}, C{var_http_version},
    C{var_request_scheme}, C{var_server_port}, C{var_ssl_enabled},
    C{var_ssl_connection_protocol}, C{var_ciphers_used},
    C{var_add_x_forwarded_for_proxy}, C{var_client_user},
    C{var_cookie_NAME}, the C{var_client_certificate*} set,
    C{http_req_HEADER}; C{http_resp_HEADER} and C{var_http_status} only in
    conditions and response header values (a condition on them cannot
    guard request or URL actions).
  - Captures: C{{VARIABLE_N}} is group N of the rule's condition on
    VARIABLE (C{{var_uri_path_1}}, C{{http_req_User-Agent_2}}); naming a
    variable no condition of the rule tests is an error.  A name ending in
    C{_N} is always a capture when its stem is a variable.
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
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from agwtx.config.backends import _BackendSections
from agwtx.config.certificates import certificateProblems
from agwtx.config.errors import ConfigError, InvalidValue
from agwtx.config.gateway import _GatewaySection
from agwtx.config.ini import _Entry, _Errors, _Scan, _Section, _parse, _readText, _scan
from agwtx.config.keys import _KIND_BY_LOWER, _KINDS
from agwtx.config.listeners import _ListenerSections
from agwtx.config.model import (
    BackendHttpSettings,
    LoadDistributionPolicy,
    LoadDistributionTarget,
    GatewayConfig,
    GatewaySettings,
    HttpListener,
    PathRule,
    RedirectConfiguration,
    RequestRoutingRule,
    SslProfile,
    UrlPathMap,
)
from agwtx.config.rules import _RULE_REFS, _RuleSections
from agwtx.config.values import _got, parseName


class _Loader(_GatewaySection, _ListenerSections, _BackendSections, _RuleSections):
    """One load: every section kind's builder, and the checks that need every section."""

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
        if isinstance(obj, LoadDistributionPolicy):
            changes["targets"] = tuple(self._canonical(target) for target in obj.targets)
        return replace(obj, **changes) if changes else obj


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
        "defaultLoadDistributionPolicy": "loadDistributionPolicy",
    },
    PathRule: {
        "backendAddressPool": "backendAddressPool",
        "backendHttpSettings": "backendHttpSettings",
        "redirectConfiguration": "redirectConfiguration",
        "loadDistributionPolicy": "loadDistributionPolicy",
    },
    LoadDistributionTarget: {"backendAddressPool": "backendAddressPool"},
    RequestRoutingRule: _RULE_REFS,
}


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
        loadDistributionPolicies=objects("loadDistributionPolicy"),
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
        elif rule.loadDistributionPolicy and rule.backendHttpSettings:
            spec = config.loadDistributionPolicies.get(rule.loadDistributionPolicy)
            pools = ", ".join(
                f"{backend(t.backendAddressPool, rule.backendHttpSettings)} weight {t.weightPerServer}"
                for t in (spec.targets if spec is not None else ())
            )
            algorithm = spec.loadDistributionAlgorithm if spec is not None else "?"
            target = f"loadDistributionPolicy {rule.loadDistributionPolicy} ({algorithm}: {pools})"
        else:
            target = "nothing"
        if rule.rewriteRuleSet:
            target += f", rewriteRuleSet {rule.rewriteRuleSet}"
        lines.append(f"rule {rule.name} ({head}): {rule.httpListener} -> {target}")
    return lines

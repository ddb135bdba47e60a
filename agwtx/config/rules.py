"""
How requests are routed: C{[redirectConfiguration:NAME]},
C{[loadDistributionPolicy:NAME]},
C{[urlPathMap:NAME]} (path rules), C{[rewriteRuleSet:NAME]} (header
rewrites) and C{[requestRoutingRule:NAME]}, and the checks between rules
(priorities, one rule per listener, every listener used).  The syntax of path
rules, rewrite rules and plugin options is described in
L{agwtx.config.loader}.
"""

from __future__ import annotations

from typing import Any

from agwtx.config.builder import _Builder, _kwargs
from agwtx.config.errors import InvalidValue
from agwtx.config.ini import _Section
from agwtx.config.keys import _REWRITE_KEY_RE
from agwtx.config.model import (
    LoadDistributionPolicy,
    LoadDistributionTarget,
    PathRule,
    RedirectConfiguration,
    RequestRoutingRule,
    RewriteRule,
    RewriteRuleSet,
    UrlPathMap,
)
from agwtx.config.values import (
    LOAD_DISTRIBUTION_ALGORITHMS,
    REDIRECT_TYPES,
    RULE_NAME_RE,
    RULE_TYPES,
    _choice,
    _got,
    _parseHeaderName,
    _parseUrl,
    isResponseVariable,
    parseBool,
    parseInt,
    parseLoadDistributionTarget,
    parseName,
    parsePathRule,
    parseRewriteCondition,
    parseRewriteUrlPart,
    parseRewriteValue,
)

_RULE_REFS = {
    "httpListener": "httpListener",
    "backendAddressPool": "backendAddressPool",
    "backendHttpSettings": "backendHttpSettings",
    "redirectConfiguration": "redirectConfiguration",
    "urlPathMap": "urlPathMap",
    "rewriteRuleSet": "rewriteRuleSet",
    "loadDistributionPolicy": "loadDistributionPolicy",
}


class _RuleSections(_Builder):
    """Builds redirects, path maps, rewrite rule sets and routing rules, and checks the rules together."""

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

    def _loadDistributionPolicy(self, sec: _Section) -> LoadDistributionPolicy:
        assert sec.name is not None
        targets: list[LoadDistributionTarget] = []
        names: dict[str, str] = {}
        pools: dict[str, str] = {}
        for entry in sec.entries:
            if not entry.key.lower().startswith("target."):
                continue
            name = entry.key[len("target.") :]
            try:
                parseName(name)
                if name.lower() in names:
                    raise InvalidValue(f"target {_got(name)} is defined twice")
                pool, weight = parseLoadDistributionTarget(entry.value)
                if pool.lower() in pools:
                    raise InvalidValue(
                        f"backendAddressPool {_got(pool)} is already target {_got(pools[pool.lower()])}"
                    )
            except InvalidValue as e:
                sec.error(entry.key, str(e))
                continue
            names[name.lower()] = name
            pools[pool.lower()] = name
            targets.append(
                LoadDistributionTarget(
                    name, self.refName(sec, entry.key, "backendAddressPool", pool) or pool, weight
                )
            )
        if not targets and not sec.failed:
            sec.error(None, "expected at least one target.NAME = POOL[, WEIGHT] key")
        return LoadDistributionPolicy(
            **_kwargs(
                name=sec.name,
                loadDistributionAlgorithm=sec.get(
                    "loadDistributionAlgorithm", lambda t: _choice(t, LOAD_DISTRIBUTION_ALGORITHMS)
                ),
                targets=tuple(targets),
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
            policyKey="defaultLoadDistributionPolicy",
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
            for attr in (
                "backendAddressPool",
                "backendHttpSettings",
                "redirectConfiguration",
                "loadDistributionPolicy",
            ):
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
            defaultLoadDistributionPolicy=self.ref(
                sec, "defaultLoadDistributionPolicy", "loadDistributionPolicy"
            ),
            pathRules=tuple(rules),
        )

    def _rewriteRuleSet(self, sec: _Section) -> RewriteRuleSet:
        assert sec.name is not None
        order: list[str] = []
        rules: dict[str, _RewriteRuleParts] = {}
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
            parts = rules.get(rid)
            if parts is None:
                parts = rules[rid] = _RewriteRuleParts(ruleName, entry.key)
                order.append(rid)
            try:
                parts.add(match, entry.key, entry.value)
            except InvalidValue as e:
                sec.error(entry.key, str(e))
        built = [rules[rid].build(sec) for rid in order]
        if not order and not sec.failed:
            sec.error(
                None,
                "expected at least one rule.NAME.requestHeader, responseHeader, modifiedPath or "
                "modifiedQueryString key",
            )
        return RewriteRuleSet(name=sec.name, rules=tuple(built))

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
                policyKey="loadDistributionPolicy",
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
                "loadDistributionPolicy",
            ):
                if sec.given(key):
                    sec.error(key, notAllowed)
        else:
            if not sec.given("plugin"):
                sec.error("plugin", "required for ruleType Plugin")
            _checkTarget(sec, "backendAddressPool", "backendHttpSettings", None, required=False)
            for key in ("redirectConfiguration", "urlPathMap", "loadDistributionPolicy"):
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
            rewrites = self.obj("rewriteRuleSet", self.canon("rewriteRuleSet", rule.rewriteRuleSet))
            if rule.ruleType != "PathBasedRouting" and rewrites is not None:
                rerouting = [r.name for r in rewrites.rules if r.reroute]
                if rerouting:
                    sec.error(
                        "rewriteRuleSet",
                        f"rewrite rule {_got(rerouting[0])} of {_got(rewrites.name)} has reroute = true, "
                        f"which only a PathBasedRouting rule can do (a {rule.ruleType} rule has no path map)",
                    )
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


class _RewriteRuleParts:
    """The keys of one rewrite rule as they are read; L{build} checks them together."""

    def __init__(self, name: str, firstKey: str) -> None:
        self.name = name
        self.firstKey = firstKey
        self.conditions: list[tuple[str, str, bool, bool]] = []
        self.responseConditionKey: str | None = None
        self.request: list[tuple[str, str | None]] = []
        self.response: list[tuple[str, str | None]] = []
        self.url: dict[str, Any] = {}
        self.urlKeys: dict[str, str] = {}
        self.values: list[tuple[str, str, bool]] = []
        """(key, value template, is a response value): references checked once all conditions are known."""

    def add(self, match: Any, key: str, value: str) -> None:
        if match.group("cond"):
            condition = parseRewriteCondition(value)
            if isResponseVariable(condition[0]):
                self.responseConditionKey = self.responseConditionKey or key
            self.conditions.append(condition)
        elif match.group("url"):
            which = match.group("url").lower()
            if value or which == "modifiedquerystring":  # an empty query removes it; else empty = left out
                self.urlKeys[which] = key
            if which == "reroute":
                self.url["reroute"] = parseBool(value) if value else False
            elif which == "modifiedpath":
                if value:
                    self.url["modifiedPath"] = parseRewriteUrlPart(value, path=True)
            else:
                self.url["modifiedQueryString"] = parseRewriteUrlPart(value, path=False)
            if which != "reroute" and value:
                self.values.append((key, value, False))
        else:
            isResponse = match.group("action").lower() == "responseheader"
            header = _parseHeaderName(match.group("header"), isResponse)
            (self.response if isResponse else self.request).append((header, value or None))
            if value:
                self.values.append((key, value, isResponse))

    def build(self, sec: _Section) -> RewriteRule:
        tested = [variable for variable, _, _, _ in self.conditions]
        for key, value, isResponse in self.values:
            try:
                parseRewriteValue(value, isResponse, tested)
            except InvalidValue as e:
                sec.error(key, str(e))
        rewritesUrl = "modifiedpath" in self.urlKeys or "modifiedquerystring" in self.urlKeys
        if not (self.request or self.response or rewritesUrl):
            sec.errors.add(
                sec.lineOf(self.firstKey),
                f"[{sec.header}] rule.{self.name}",
                "expected at least one requestHeader, responseHeader, modifiedPath or "
                "modifiedQueryString action",
            )
            sec.failed = True
        elif self.responseConditionKey is not None and (self.request or rewritesUrl):
            sec.error(
                self.responseConditionKey,
                "a condition on the response cannot guard requestHeader, modifiedPath or "
                "modifiedQueryString actions; put them in a rule of their own",
            )
        if self.url.get("reroute") and "modifiedPath" not in self.url:
            sec.error(self.urlKeys["reroute"], "reroute = true needs a modifiedPath to route by")
        return RewriteRule(
            name=self.name,
            conditions=tuple(self.conditions),
            requestHeaders=tuple(self.request),
            responseHeaders=tuple(self.response),
            **self.url,
        )


def _checkTarget(
    sec: _Section,
    poolKey: str,
    settingsKey: str,
    redirectKey: str | None,
    required: bool,
    policyKey: str | None = None,
) -> None:
    """
    Pool (or load distribution policy, which stands for pools) and settings
    come together; pool and policy exclude each other, and they and the
    redirect do.
    """
    hasPool, hasSettings = sec.given(poolKey), sec.given(settingsKey)
    hasPolicy = policyKey is not None and sec.given(policyKey)
    hasRedirect = redirectKey is not None and sec.given(redirectKey)
    if hasPool and hasPolicy:
        assert policyKey is not None
        sec.error(sec.later(poolKey, policyKey), f"expected {poolKey} or {policyKey}, not both")
    pools = hasPool or hasPolicy
    if pools != hasSettings:
        if pools:
            given, missing = (poolKey if hasPool else policyKey or poolKey), settingsKey
        else:
            given, missing = settingsKey, poolKey + (f" or {policyKey}" if policyKey else "")
        sec.error(given, f"needs {missing} as well")
    if redirectKey is not None and hasRedirect and (pools or hasSettings):
        sec.error(
            redirectKey,
            f"expected either {poolKey} and {settingsKey} or {redirectKey}, not both",
        )
    if required and not (pools or hasSettings or hasRedirect):
        alternatives = f"{poolKey} and {settingsKey}"
        if redirectKey is not None:
            alternatives += f", or {redirectKey}"
        sec.error(None, f"expected {alternatives}")

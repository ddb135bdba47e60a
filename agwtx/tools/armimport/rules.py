"""
Converting how requests are routed: Azure's redirect configurations,
rewrite rule sets (header rewrites), URL path maps and request routing
rules, including lifting a path map's rewrite set onto its routing rules.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from agwtx.config.errors import InvalidValue
from agwtx.config.values import (
    HEADER_TOKEN_RE,
    LOAD_DISTRIBUTION_ALGORITHMS,
    NAME_RE,
    RULE_NAME_RE,
    WEIGHT_PER_SERVER_RANGE,
    UNREWRITABLE_HEADERS,
    isResponseVariable,
    parseRewriteCondition,
    parseRewriteUrlPart,
)
from agwtx.tools.armimport.base import _ConverterBase
from agwtx.tools.armimport.evaluate import _isOpaque, _why
from agwtx.tools.armimport.read import _get, _isEmpty, _View
from agwtx.tools.armimport.sections import (
    Part,
    _ELEMENT_METADATA,
    _Item,
    _REDIRECT_TYPES,
    _RULE_TYPES,
    _Ref,
    _brief,
    _iniProblem,
    _sanitise,
    _unique,
    _variableProblem,
)


class _RuleConverters(_ConverterBase):
    """Converts redirects, rewrite rule sets, path maps and routing rules."""

    def _redirectConfiguration(self, item: _Item, view: _View) -> None:
        redirectType = self.text(item, view, "redirectType")
        if redirectType:
            known = _REDIRECT_TYPES.get(redirectType.lower())
            if known is None:
                item.fail(f"redirectType {redirectType} is not one of Permanent, Found, SeeOther, Temporary")
            else:
                item.add("redirectType", known)
        listener = self.ref(item, view, "targetListener", "httpListener")
        url = self.text(item, view, "targetUrl")
        if listener is not None:
            item.add("targetListener", listener, required=True)
            if url:
                item.comment(f"targetUrl {url} ignored: targetListener is set")
        elif url:
            item.add("targetUrl", url)
        else:
            item.fail("it has neither targetListener nor targetUrl")
        for key in ("includePath", "includeQueryString"):
            flag = self.flag(item, view, key)
            item.add(key, "true" if flag else "false")

    def _rewriteRuleSet(self, item: _Item, view: _View) -> None:
        rules = self.value(item, view, "rewriteRules")
        if not isinstance(rules, list) or not rules:
            item.fail("it has no rewrite rules")
            return
        ordered = sorted(
            enumerate(rules),
            key=lambda pair: (
                _get(pair[1], "ruleSequence") if isinstance(_get(pair[1], "ruleSequence"), int) else 100,
                pair[0],
            ),
        )
        taken: set[str] = set()
        converted = 0
        for index, rule in ordered:
            if not isinstance(rule, dict):
                item.notConverted(f"rewrite rule #{index + 1}", "expected an object")
                continue
            if self._rewriteRule(item, rule, index, taken):
                converted += 1
        if not converted:
            item.fail("none of its rewrite rules could be converted")

    def _rewriteRule(self, item: _Item, rule: dict[str, Any], index: int, taken: set[str]) -> bool:
        ruleView = _View(rule)
        azure, _ = self.nameOf(ruleView.get("name"))
        azure = azure or f"rule{index + 1}"
        name = _unique(_sanitise(azure, RULE_NAME_RE, "A-Za-z0-9_-"), taken)
        ruleView.get("ruleSequence")
        label = f"rewrite rule {azure!r}"
        lines: list[tuple[str, str]] = []
        notes: list[str] = []

        conditions = ruleView.get("conditions") or []
        responseCondition = False
        tested: list[str] = []
        for n, condition in enumerate(conditions if isinstance(conditions, list) else [conditions]):
            problem: str | None = None
            variable = str(_get(condition, "variable") or "").strip().strip("{}")
            pattern = _get(condition, "pattern")
            pattern = "" if pattern is None else pattern
            if _isOpaque(condition):
                problem = _why(condition)
            elif not isinstance(condition, dict) or not isinstance(pattern, str):
                problem = "expected a condition object"
            else:
                problem = _variableProblem(variable, inResponse=True)
            if problem is None and pattern:
                problem = _iniProblem(pattern)
            op = ("!" if _get(condition, "negate") is True else "") + "~"
            op += "*" if _get(condition, "ignoreCase") is True else ""
            text = f"{{{variable}}} {op} {pattern or '(?:)'}"
            if problem is None:
                try:
                    parseRewriteCondition(text)  # what the loader will check
                except InvalidValue as e:
                    problem = str(e)
            if problem is not None:
                item.notConverted(f"{label} (condition {_brief(condition)})", problem)
                return False
            lines.append((f"rule.{name}.condition" + (f".{n + 1}" if n else ""), text))
            responseCondition = responseCondition or isResponseVariable(variable)
            tested.append(variable)

        actions = ruleView.get("actionSet")
        actionView = _View(actions if isinstance(actions, dict) else {})
        if not isinstance(actions, dict) and not _isEmpty(actions):
            notes.append(f"NOT CONVERTED: {label}: actionSet = {_brief(actions)}: expected an object")
        count = 0
        for azureKey, agwKey, inResponse in (
            ("requestHeaderConfigurations", "requestHeader", False),
            ("responseHeaderConfigurations", "responseHeader", True),
        ):
            seen: set[str] = set()
            configs = actionView.get(azureKey)
            if _isEmpty(configs):
                continue
            for header in configs if isinstance(configs, list) else [configs]:
                headerName = str(_get(header, "headerName") or "").strip()
                headerValue = _get(header, "headerValue")
                headerValue = "" if headerValue is None else headerValue
                what = f"{label}: {agwKey} {headerName or _brief(header)}"
                problem = None
                if _isOpaque(header):
                    problem = _why(header)
                elif not isinstance(headerValue, str):
                    problem = "expected a string value"
                elif not HEADER_TOKEN_RE.fullmatch(headerName):
                    problem = "not a header name"
                elif headerName.lower() in UNREWRITABLE_HEADERS:
                    problem = "agw manages this header itself; it cannot be rewritten"
                elif headerName.lower() in seen:
                    problem = "the header is set twice in this rule"
                elif not _isEmpty(_get(header, "headerValueMatcher")):
                    problem = "agw has no headerValueMatcher (rewriting one of several values)"
                elif not inResponse and responseCondition:
                    problem = "a condition on a response header cannot guard a request header rewrite"
                else:
                    problem = _valueProblem(headerValue, inResponse, tested)
                if problem is not None:
                    notes.append(f"NOT CONVERTED: {what}: {problem}")
                    continue
                seen.add(headerName.lower())
                lines.append((f"rule.{name}.{agwKey}.{headerName}", headerValue))
                count += 1
        url = actionView.get("urlConfiguration")
        if not _isEmpty(url):
            urlLines = self._urlConfiguration(url, name, label, tested, responseCondition, notes)
            lines.extend(urlLines)
            count += bool(urlLines)
        for key, value in actionView.leftovers():
            if not _isEmpty(value):
                notes.append(f"NOT CONVERTED: {label}: {key} = {_brief(value)}: agw has no equivalent")
        for key, value in ruleView.leftovers():
            if key.lower() not in _ELEMENT_METADATA and not _isEmpty(value):
                notes.append(f"NOT CONVERTED: {label}: {key} = {_brief(value)}: agw has no equivalent")
        if not count:
            for note in notes:
                item.comment(note)
            item.notConverted(label, "none of its actions could be converted")
            return False
        if name != azure:
            item.comment(f"rewrite rule {azure!r} is named {name!r} here (agw rule names: A-Z a-z 0-9 _ -)")
        for note in notes:
            item.comment(note)
        for key, value in lines:
            item.add(key, value)
        return True

    def _urlConfiguration(
        self,
        url: Any,
        name: str,
        label: str,
        tested: list[str],
        responseCondition: bool,
        notes: list[str],
    ) -> list[tuple[str, str]]:
        """A rewrite rule's C{urlConfiguration} as agw keys; what cannot be converted goes to C{notes}."""
        what = f"{label}: urlConfiguration = {_brief(url)}"
        problem = None
        if _isOpaque(url):
            problem = _why(url)
        elif not isinstance(url, dict):
            problem = "expected an object"
        elif responseCondition:
            problem = "a condition on the response cannot guard a URL rewrite"
        if problem is not None:
            notes.append(f"NOT CONVERTED: {what}: {problem}")
            return []
        view = _View(url)
        out: list[tuple[str, str]] = []
        for azureKey, isPath in (("modifiedPath", True), ("modifiedQueryString", False)):
            value = view.get(azureKey)
            if value is None or (isPath and value == ""):
                continue
            if not isinstance(value, str) or _isOpaque(value):
                problem = _why(value) if _isOpaque(value) else "expected a string"
            else:
                try:
                    parseRewriteUrlPart(value, path=isPath)
                except InvalidValue as e:
                    problem = str(e)
                else:
                    problem = _valueProblem(value, False, tested)
            if problem is not None:
                notes.append(f"NOT CONVERTED: {label}: {azureKey} = {_brief(value)}: {problem}")
                return []
            out.append((f"rule.{name}.{azureKey}", value))
        reroute = view.get("reroute")
        if reroute is True:
            if any(key.endswith(".modifiedPath") for key, _ in out):
                out.append((f"rule.{name}.reroute", "true"))
            else:
                notes.append(f"NOT CONVERTED: {label}: reroute = true: there is no modifiedPath to route by")
        elif reroute not in (None, False):
            notes.append(f"NOT CONVERTED: {label}: reroute = {_brief(reroute)}: expected true or false")
        for key, value in view.leftovers():
            if not _isEmpty(value):
                notes.append(
                    f"NOT CONVERTED: {label}: urlConfiguration.{key} = {_brief(value)}: agw has no equivalent"
                )
        return out

    def _loadDistributionPolicy(self, item: _Item, view: _View) -> None:
        algorithm = self.text(item, view, "loadDistributionAlgorithm")
        if algorithm is not None:
            known = {a.lower(): a for a in LOAD_DISTRIBUTION_ALGORITHMS}
            if algorithm.lower() not in known:
                item.fail(f"loadDistributionAlgorithm {algorithm} is not one of {', '.join(known.values())}")
            else:
                item.add("loadDistributionAlgorithm", known[algorithm.lower()])
        targets = self.value(item, view, "loadDistributionTargets")
        if not isinstance(targets, list) or not targets:
            item.fail("it has no loadDistributionTargets")
            targets = []
        taken: set[str] = set()
        lo, hi = WEIGHT_PER_SERVER_RANGE
        for index, target, targetView in _elements(item, targets, "loadDistributionTargets"):
            azure = self.nameOf(_get(target, "name"))[0] or f"target{index + 1}"
            name = _unique(_sanitise(azure, NAME_RE, "A-Za-z0-9_.-"), taken)
            label = f"target.{name}"
            pool = self.ref(item, targetView, "backendAddressPool", "backendAddressPool")
            weight = self.number(item, targetView, "weightPerServer", lo, hi, f"{label} weightPerServer")
            self.leftovers(item, targetView, f"{label} ")
            if pool is None:
                item.notConverted(label, "it has no backendAddressPool")
                continue
            if weight is None and not _isEmpty(targetView.get("weightPerServer")):
                continue  # noted: another weight would change the shares
            item.add(label, pool, *([", ", str(weight)] if weight is not None else []), group="target")

    def _target(
        self,
        item: _Item,
        view: _View,
        poolKey: str,
        settingsKey: str,
        redirectKey: str,
        policyKey: str,
    ) -> list[Part] | None:
        """The C{POOL, SETTINGS}, C{loadDistributionPolicy:NAME, SETTINGS} or C{redirect:NAME} of a path rule, or None."""
        pool = self.ref(item, view, poolKey, "backendAddressPool")
        settings = self.ref(item, view, settingsKey, "backendHttpSettings")
        redirect = self.ref(item, view, redirectKey, "redirectConfiguration")
        policy = self.ref(item, view, policyKey, "loadDistributionPolicy")
        if redirect is not None and pool is None and settings is None and policy is None:
            return ["redirect:", redirect]
        if policy is not None and settings is not None and redirect is None:
            if pool is not None:
                item.comment(f"{policyKey} {policy.azure} is used instead of {poolKey} {pool.azure}")
            return ["loadDistributionPolicy:", policy, ", ", settings]
        if pool is not None and settings is not None and redirect is None:
            return [pool, ", ", settings]
        return None

    def _urlPathMap(self, item: _Item, view: _View) -> None:
        pool = self.ref(item, view, "defaultBackendAddressPool", "backendAddressPool")
        settings = self.ref(item, view, "defaultBackendHttpSettings", "backendHttpSettings")
        redirect = self.ref(item, view, "defaultRedirectConfiguration", "redirectConfiguration")
        policy = self.ref(item, view, "defaultLoadDistributionPolicy", "loadDistributionPolicy")
        _addDestination(
            item,
            "default",
            pool,
            settings,
            redirect,
            policy,
            "it needs defaultBackendAddressPool and defaultBackendHttpSettings, or defaultRedirectConfiguration",
        )
        rewriteSets: list[str | None] = []
        default = view.get("defaultRewriteRuleSet")
        rewriteSets.append(self.nameOf(default)[0] if not _isEmpty(default) else None)
        rules = view.get("pathRules")
        if not isinstance(rules, list) or not rules:
            item.fail("it has no path rules")
            rules = []
        taken: set[str] = set()
        seenPaths: set[str] = set()
        pathRuleNotes: list[tuple[str, str | None]] = []
        for index, rule, ruleView in _elements(item, rules, "path rule"):
            azure, note = self.nameOf(_get(rule, "name"))
            azure = azure or f"rule{index + 1}"
            name = _unique(_sanitise(azure, NAME_RE, "A-Za-z0-9_.-"), taken)
            label = f"pathRule.{name}"
            if note:
                item.comment(f"{label}: {note}")
            if name != azure:
                item.comment(f"path rule {azure!r} is named {name!r} here")
            paths: list[str] = []
            rawPaths = self.value(item, ruleView, "paths", f"{label} paths")
            for path in rawPaths if isinstance(rawPaths, list) else []:
                if not isinstance(path, str) or not path.strip():
                    item.notConverted(f"{label} path {_brief(path)}", "expected a path")
                    continue
                path = path.strip()
                problem = _iniProblem(path)
                if problem is None and ("," in path or "->" in path or " " in path):
                    problem = "a path here cannot contain ',', '->' or spaces"
                if problem is None and path.lower() in seenPaths:
                    problem = "an earlier path rule already lists it"
                if problem is not None:
                    item.notConverted(f"{label} path {_brief(path)}", problem)
                    continue
                seenPaths.add(path.lower())
                paths.append(path)
            target = self._target(
                item,
                ruleView,
                "backendAddressPool",
                "backendHttpSettings",
                "redirectConfiguration",
                "loadDistributionPolicy",
            )
            rewrite = ruleView.get("rewriteRuleSet")
            rewriteSets.append(self.nameOf(rewrite)[0] if not _isEmpty(rewrite) else None)
            self.leftovers(item, ruleView, f"{label} ")
            if not paths:
                item.notConverted(label, "none of its paths could be converted")
                continue
            if target is None:
                item.notConverted(
                    label,
                    "it needs backendAddressPool and backendHttpSettings, or redirectConfiguration",
                )
                continue
            item.add(label, ", ".join(paths) + " -> ", *target, group="pathRule")
            pathRuleNotes.append((label, rewriteSets[-1]))
        # agw applies a rewrite set per routing rule: lift it when the whole map agrees.
        if any(rewriteSets):
            if all(s is not None and s.lower() == str(rewriteSets[0]).lower() for s in rewriteSets):
                item.info["rewriteRuleSet"] = rewriteSets[0]
                item.comment(
                    f"rewriteRuleSet {rewriteSets[0]} (on the default and every path rule) is set "
                    "on the routing rules that use this map"
                )
            else:
                if rewriteSets[0]:
                    item.notConverted(
                        f"defaultRewriteRuleSet = {rewriteSets[0]}",
                        "agw applies rewrite sets per routing rule, not per path rule",
                    )
                for label, rewrite in pathRuleNotes:
                    if rewrite:
                        item.notConverted(
                            f"{label} rewriteRuleSet = {rewrite}",
                            "agw applies rewrite sets per routing rule, not per path rule",
                        )

    def _requestRoutingRule(self, item: _Item, view: _View) -> None:
        ruleTypeText = self.text(item, view, "ruleType") or "Basic"
        ruleType = _RULE_TYPES.get(ruleTypeText.lower())
        if ruleType is None:
            item.fail(f"ruleType {ruleTypeText} is not Basic or PathBasedRouting")
            ruleType = "Basic"
        item.add("ruleType", ruleType)
        priority = self.number(item, view, "priority", 1, 20000)
        if priority is not None:
            item.add("priority", str(priority))
        listener = self.ref(item, view, "httpListener", "httpListener")
        if listener is None:
            item.fail("it has no httpListener")
        else:
            item.add("httpListener", listener, required=True)
        pool = self.ref(item, view, "backendAddressPool", "backendAddressPool")
        settings = self.ref(item, view, "backendHttpSettings", "backendHttpSettings")
        redirect = self.ref(item, view, "redirectConfiguration", "redirectConfiguration")
        pathMap = self.ref(item, view, "urlPathMap", "urlPathMap")
        rewrite = self.ref(item, view, "rewriteRuleSet", "rewriteRuleSet")
        policy = self.ref(item, view, "loadDistributionPolicy", "loadDistributionPolicy")
        if ruleType == "PathBasedRouting":
            if pathMap is None:
                item.fail("ruleType PathBasedRouting without a urlPathMap")
            else:
                item.add("urlPathMap", pathMap, required=True)
                mapItem = self.lookup("urlPathMap", pathMap.azure)
                lifted = mapItem.info.get("rewriteRuleSet") if mapItem is not None else None
                if lifted and rewrite is None:
                    rewrite = _Ref("rewriteRuleSet", lifted)
                    item.comment(f"rewriteRuleSet {lifted} comes from urlPathMap {pathMap.azure}")
            for ref in (pool, settings, redirect, policy):
                if ref is not None:
                    item.comment(f"{ref.kind} {ref.azure} ignored: ruleType is PathBasedRouting")
        else:
            _addDestination(
                item,
                "",
                pool,
                settings,
                redirect,
                policy,
                "a Basic rule needs backendAddressPool and backendHttpSettings, or redirectConfiguration",
            )
            if pathMap is not None:
                item.comment(f"urlPathMap {pathMap.azure} ignored: ruleType is Basic")
        if rewrite is not None:
            item.add("rewriteRuleSet", rewrite)


def _addDestination(
    item: _Item,
    prefix: str,
    pool: _Ref | None,
    settings: _Ref | None,
    redirect: _Ref | None,
    policy: _Ref | None,
    needs: str,
) -> None:
    """
    Where a rule (C{prefix} "") or a path map's default (C{prefix}
    "default") sends requests: a load distribution policy or a pool, each
    with its settings, or a redirect; anything else fails the item with
    C{needs}.
    """

    def key(name: str) -> str:
        return prefix + name[0].upper() + name[1:] if prefix else name

    if policy is not None and settings is not None and redirect is None:
        if pool is not None:
            item.comment(
                f"{key('loadDistributionPolicy')} {policy.azure} is used instead of "
                f"{key('backendAddressPool')} {pool.azure}"
            )
        item.add(key("loadDistributionPolicy"), policy, required=True)
        item.add(key("backendHttpSettings"), settings, required=True)
    elif pool is not None and settings is not None and redirect is None:
        item.add(key("backendAddressPool"), pool, required=True)
        item.add(key("backendHttpSettings"), settings, required=True)
    elif redirect is not None and pool is None and settings is None:
        item.add(key("redirectConfiguration"), redirect, required=True)
    else:
        item.fail(needs)


def _valueProblem(value: str, inResponse: bool, tested: list[str]) -> str | None:
    """Why a rewrite value (header, path, query) cannot be converted, or None."""
    for variable in re.findall(r"\{([^{}]*)\}", value):
        problem = _variableProblem(variable, inResponse, tested)
        if problem:
            return problem
    return _iniProblem(value) if value else None


def _elements(item: _Item, elements: list[Any], what: str) -> Iterator[tuple[int, Any, _View]]:
    """(index, element, its properties) for each object of a sub-collection; anything else is noted."""
    for index, element in enumerate(elements):
        if not isinstance(element, dict):
            item.notConverted(f"{what} #{index + 1}", "expected an object")
            continue
        props = _get(element, "properties")
        yield index, element, _View(props if isinstance(props, dict) else element)

"""
Writing agw INI text: the conversion of one gateway into the intermediate
form of L{agwtx.tools.armimport.sections}, then dropping the sections that
cannot work and writing the rest.

The section kinds are converted by area: the shared state and helpers in
L{agwtx.tools.armimport.base}; frontend ports, certificates, SSL profiles and
listeners (and the SSL policy and error pages) in
L{agwtx.tools.armimport.listeners}; pools, probes and settings in
L{agwtx.tools.armimport.backends}; redirects, rewrite rule sets, path maps and
routing rules (and load distribution policies) in L{agwtx.tools.armimport.rules}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agwtx.config.sslpolicy import DEFAULT_POLICY_NAME
from agwtx.tools.armimport.backends import _BackendConverters
from agwtx.tools.armimport.base import SECTION_ORDER
from agwtx.tools.armimport.evaluate import ArmEvaluator, _isOpaque, _Literal, _readable, _why
from agwtx.tools.armimport.listeners import _ListenerConverters
from agwtx.tools.armimport.read import ArmImportError, FoundGateway, _get, _isEmpty, _View, findGateways
from agwtx.tools.armimport.rules import _RuleConverters
from agwtx.tools.armimport.sections import (
    _GATEWAY_METADATA,
    _GATEWAY_NOT_CONVERTED,
    _Item,
    _Line,
    _Ref,
    _brief,
    _oneLine,
)

DEFAULT_TLS_DIR = "/etc/agw/tls"
PROG = "agw-import-arm"

# Azure collection property -> agw section kind.
_COLLECTIONS: Mapping[str, str] = {
    "frontendPorts": "frontendPort",
    "sslCertificates": "sslCertificate",
    "trustedRootCertificates": "trustedRootCertificate",
    "trustedClientCertificates": "trustedClientCertificate",
    "sslProfiles": "sslProfile",
    "httpListeners": "httpListener",
    "backendAddressPools": "backendAddressPool",
    "probes": "probe",
    "backendHttpSettingsCollection": "backendHttpSettings",
    "loadDistributionPolicies": "loadDistributionPolicy",
    "redirectConfigurations": "redirectConfiguration",
    "rewriteRuleSets": "rewriteRuleSet",
    "urlPathMaps": "urlPathMap",
    "requestRoutingRules": "requestRoutingRule",
}

# ---------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------


class _Converter(_ListenerConverters, _BackendConverters, _RuleConverters):
    """Turns one gateway into sections; see L{convert}."""

    # -- the gateway -----------------------------------------------------------

    def run(self) -> None:
        gateway = self.gateway
        evaluate = self.evaluator.deep
        propsView = _View(evaluate(gateway.props))
        if gateway.outer is gateway.props:
            outerView = propsView
        else:
            outerView = _View(evaluate({k: v for k, v in gateway.outer.items() if k.lower() != "properties"}))
        outerView.get("name")

        collections: dict[str, list[Any]] = {}
        for azureKey, kind in _COLLECTIONS.items():
            value = propsView.get(azureKey)
            if _isEmpty(value):
                continue
            if isinstance(value, str) and _isOpaque(value):
                self.top.append(f"NOT CONVERTED: {azureKey} = {_brief(value)}: {_why(value)}")
                continue
            if not isinstance(value, list):
                self.top.append(f"NOT CONVERTED: {azureKey}: expected a list, got {_brief(value)}")
                continue
            collections[kind] = value

        # Name everything first: references may point forwards.
        pending: list[tuple[_Item, _View]] = []
        for kind in SECTION_ORDER:
            for index, element in enumerate(collections.get(kind, [])):
                made = self.newItem(kind, element, index)
                if made is not None:
                    pending.append(made)
        # Probes before settings (settings check their probe), path maps before rules.
        for item, view in pending:
            getattr(self, "_" + item.kind)(item, view)
            self.leftovers(item, view)

        self.top.extend(self.customErrors(propsView.get("customErrorConfigurations"), None))
        if propsView.get("enableHttp2") is True:
            self.gatewayItem.add("enableHttp2", "true")
        policy = propsView.get("sslPolicy")
        if not _isEmpty(policy):
            self.sslPolicy(self.gatewayItem, policy, "sslPolicy.")
        else:
            api = _get(self.gateway.outer, "apiVersion")  # not outerView.get: it stays listed as bookkeeping
            if isinstance(api, str) and api[:10] < "2023-02-01":
                self.gatewayItem.comment(
                    f"no sslPolicy: Azure's default for apiVersion {api} is AppGwSslPolicy20150501 "
                    f"(TLS 1.0 and up); agw's is {DEFAULT_POLICY_NAME}, Azure's from 2023-02-01 (TLS 1.2 "
                    "and up). Add sslPolicyName = AppGwSslPolicy20150501 for old clients"
                )
        self.gatewayLeftovers(outerView, propsView)
        self.settle()

    def gatewayLeftovers(self, outerView: _View, propsView: _View) -> None:
        views = [outerView] if outerView is propsView else [outerView, propsView]
        metadata: list[str] = []
        for view in views:
            for key, value in view.leftovers():
                lowered = key.lower()
                if _isEmpty(value) or value is False:
                    continue
                if lowered in _GATEWAY_METADATA:
                    metadata.append(key)
                    continue
                why = _GATEWAY_NOT_CONVERTED.get(lowered, "agw has no equivalent")
                self.top.append(f"NOT CONVERTED: {key} = {_brief(value)}: {why}")
        if metadata:
            self.top.append("ignored (Azure bookkeeping, nothing to convert): " + ", ".join(metadata))

    # -- which sections can be written -----------------------------------------

    def target(self, ref: _Ref) -> _Item | None:
        item = self.lookup(ref.kind, ref.azure)
        return item if item is not None and item.emitted else None

    def missing(self, ref: _Ref) -> str:
        exists = self.lookup(ref.kind, ref.azure)
        what = f"{ref.kind} '{ref.azure}'"
        if exists is None:
            return f"refers to {what}, which is not in the input"
        return f"refers to {what}, which could not be converted"

    def problem(self, item: _Item, usedListeners: set[int]) -> str | None:
        if item.fatal:
            return item.fatal
        groups: dict[str, bool] = {}
        for line in item.body:
            if isinstance(line, str):
                continue
            ok = all(self.target(p) is not None for p in line.parts if isinstance(p, _Ref))
            if line.group is not None:
                groups[line.group] = groups.get(line.group, False) or ok
            if line.required and not ok:
                ref = next(p for p in line.parts if isinstance(p, _Ref) and self.target(p) is None)
                return f"its {line.key} {self.missing(ref)}"
        for group, ok in groups.items():
            if not ok:
                return f"none of its {group}s could be converted"
        if item.kind == "httpListener" and id(item) not in usedListeners:
            return "no converted requestRoutingRule uses it (agw needs a rule for every listener)"
        return None

    def settle(self) -> None:
        """Drop sections that cannot work, until what is left is consistent."""
        changed = True
        while changed:
            changed = False
            used: set[int] = set()
            for rule in self.items["requestRoutingRule"]:
                if not rule.emitted:
                    continue
                for line in rule.body:
                    if isinstance(line, _Line) and line.key == "httpListener":
                        for part in line.parts:
                            if isinstance(part, _Ref):
                                target = self.target(part)
                                if target is not None:
                                    used.add(id(target))
            for kind in SECTION_ORDER:
                for item in self.items[kind]:
                    if not item.emitted:
                        continue
                    reason = self.problem(item, used)
                    if reason is not None:
                        item.emitted, item.reason, changed = False, reason, True

    # -- writing ---------------------------------------------------------------

    def render(self, ref: _Ref) -> str:
        item = self.lookup(ref.kind, ref.azure)
        return item.name if item is not None else ref.azure

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.gatewayItem.body:
            out.append("")
            out.append("[gateway]")
            for line in self.gatewayItem.body:
                if isinstance(line, str):
                    out.append(f"; {_oneLine(line)}")
                else:
                    out.append(f"{line.key} = {''.join(p for p in line.parts if isinstance(p, str))}")
        for kind in SECTION_ORDER:
            for item in self.items[kind]:
                out.append("")
                section: list[str] = []
                for line in item.body:
                    if isinstance(line, str):
                        section.append(f"; {_oneLine(line)}")
                        continue
                    text = "".join(self.render(p) if isinstance(p, _Ref) else p for p in line.parts)
                    broken = [p for p in line.parts if isinstance(p, _Ref) and self.target(p) is None]
                    if broken and item.emitted:
                        section.append(f"; NOT CONVERTED: {line.key} = {text}: it {self.missing(broken[0])}")
                    else:
                        section.append(f"{line.key} = {text}".rstrip())
                if item.emitted:
                    out.append(f"[{kind}:{item.name}]")
                    out.extend(section)
                else:
                    out.append(f"; NOT CONVERTED: [{kind}:{item.name}]: {item.reason}")
                    out.append(f"; [{kind}:{item.name}]")
                    out.extend(s if s.startswith(";") else f"; {s}" for s in section)
        return out


def _scrub(value: Any) -> Any:
    """The JSON value with NUL characters replaced (they delimit unresolved parts here)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, dict):
        return {str(_scrub(k)): _scrub(v) for k, v in value.items()}
    return value


def convert(
    data: Any,
    source: str,
    tlsDir: str = DEFAULT_TLS_DIR,
    gateway: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    lenient: bool = False,
) -> str:
    """
    Convert parsed JSON (an ARM template or az CLI output) to agw INI text.

    @param source: how to name the input in the header comment.
    @param tlsDir: where certificate placeholders point.
    @param gateway: the gateway's name, when the input holds several.
    @param parameters: template parameter values overriding C{defaultValue}.
    @param lenient: the input needed L{loadJson}'s lenient reading (noted in the header).
    @raise ArmImportError: when there is no (single) application gateway to convert.
    """
    found = findGateways(_scrub(data))
    supplied = _scrub(dict(parameters or {}))

    def evaluatorFor(g: FoundGateway) -> ArmEvaluator | _Literal:
        return ArmEvaluator(g.template, supplied) if g.template is not None else _Literal()

    def displayName(g: FoundGateway) -> str:
        name = evaluatorFor(g).deep(g.name)
        return _readable(name) if isinstance(name, str) else str(name)

    if not found:
        raise ArmImportError(
            "no application gateway found: expected an ARM template with a resource of type "
            "Microsoft.Network/applicationGateways, or the JSON output of "
            "'az network application-gateway show'"
        )
    if gateway is not None:
        chosen = [g for g in found if displayName(g).lower() == gateway.lower()]
        if not chosen:
            names = ", ".join(displayName(g) for g in found)
            raise ArmImportError(f"no application gateway named {gateway!r}; found: {names}")
        found = chosen[:1]
    elif len(found) > 1:
        names = ", ".join(displayName(g) for g in found)
        raise ArmImportError(
            f"{len(found)} application gateways found ({names}); choose one with --gateway NAME"
        )
    chosenGateway = found[0]
    converter = _Converter(chosenGateway, evaluatorFor(chosenGateway), tlsDir)
    converter.run()

    kindOfInput = "ARM template" if chosenGateway.template is not None else "az CLI / REST JSON"
    header = [
        f"; agw configuration imported by {PROG} from {source}",
        (f"; Azure application gateway: {displayName(chosenGateway)} ({kindOfInput}, {chosenGateway.where})"),
        "; Whatever agw cannot express is listed in a 'NOT CONVERTED' comment: here for the",
        "; gateway as a whole, in its section otherwise.  Check the result with",
        ";   twistd agw --config FILE --check",
    ]
    if lenient:
        header.append("; note: the input is not strict JSON (comments or trailing commas); read leniently")
    if not any(converter.items.values()):
        raise ArmImportError(
            f"the application gateway {displayName(chosenGateway)} has nothing to convert "
            "(no listeners, pools, settings or rules)"
        )
    top = [f"; {_oneLine(line)}" for line in converter.top]
    if top:
        header.append(";")
        header.extend(top)
    return "\n".join(header + converter.lines()) + "\n"

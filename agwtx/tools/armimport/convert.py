"""
Writing agw INI text: the conversion of one gateway, section kind by
section kind, into the intermediate form of L{agwtx.tools.armimport.sections}.

Over 800 lines on purpose: L{_Converter} is one class whose methods each
convert one Azure element kind into one agw section kind, and share its
name tables and NOT CONVERTED bookkeeping; splitting it by kind would only
move that shared state into parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from agwtx.config.sslpolicy import (
    DEFAULT_POLICY_NAME,
    PROTOCOL_VERSIONS,
    canonicalCipherSuite,
    canonicalPolicyName,
    policyProblems,
)
from agwtx.config.model import SslPolicy
from agwtx.config.errors import InvalidValue
from agwtx.config.values import (
    HEADER_TOKEN_RE,
    NAME_RE,
    PORT_RANGE,
    RULE_NAME_RE,
    SECONDS_MAX,
    UNHEALTHY_THRESHOLD_MAX,
    UNREWRITABLE_HEADERS,
    parseProtocol,
    parseRewriteCondition,
)
from agwtx.config.model import CUSTOM_ERROR_STATUSES

from agwtx.tools.armimport.evaluate import (
    ArmEvaluator,
    _isOpaque,
    _Literal,
    _readable,
    _SENTINEL_RE,
    _why,
)
from agwtx.tools.armimport.sections import (
    Part,
    _BACKREFS,
    _ELEMENT_METADATA,
    _ELEMENT_NOT_CONVERTED,
    _GATEWAY_METADATA,
    _GATEWAY_NOT_CONVERTED,
    _Item,
    _Line,
    _REDIRECT_TYPES,
    _RULE_TYPES,
    _Ref,
    _brief,
    _iniProblem,
    _oneLine,
    _sanitise,
    _shellWord,
    _unique,
    _variableProblem,
)
from agwtx.tools.armimport.read import ArmImportError, FoundGateway, _get, _isEmpty, _View, findGateways
from agwtx.config.sslpolicy import PREDEFINED

DEFAULT_TLS_DIR = "/etc/agw/tls"
ERROR_PAGES_DIR = "/etc/agw/errorpages"
"""Where notes for Azure's custom error pages (URLs) say to put the downloaded files."""
PROG = "agw-import-arm"


SECTION_ORDER = (
    "frontendPort",
    "sslCertificate",
    "trustedRootCertificate",
    "trustedClientCertificate",
    "sslProfile",
    "httpListener",
    "backendAddressPool",
    "probe",
    "backendHttpSettings",
    "redirectConfiguration",
    "rewriteRuleSet",
    "urlPathMap",
    "requestRoutingRule",
)

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
    "redirectConfigurations": "redirectConfiguration",
    "rewriteRuleSets": "rewriteRuleSet",
    "urlPathMaps": "urlPathMap",
    "requestRoutingRules": "requestRoutingRule",
}

# ---------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------


class _Converter:
    """Turns one gateway into sections; see L{convert}."""

    def __init__(self, gateway: FoundGateway, evaluator: ArmEvaluator | _Literal, tlsDir: str) -> None:
        self.gateway = gateway
        self.evaluator = evaluator
        self.tlsBase = tlsDir.rstrip("/") + "/"
        self.top: list[str] = []
        self.items: dict[str, list[_Item]] = {kind: [] for kind in SECTION_ORDER}
        self.byAzure: dict[str, dict[str, _Item]] = {kind: {} for kind in SECTION_ORDER}
        self.taken: dict[str, set[str]] = {kind: set() for kind in SECTION_ORDER}
        self.gatewayItem = _Item("gateway", "gateway", "gateway")
        """The C{[gateway]} keys converted from gateway-level properties (the SSL policy)."""

    # -- names and references ----------------------------------------------

    def nameOf(self, value: Any) -> tuple[str | None, str | None]:
        """
        The name a reference or name value stands for: its last path segment.
        The second item is a note when the name was guessed.  (Debris after
        an id, like the C{')]} in Azure's own snippets, is dealt with when
        the reference is looked up: see L{lookup}.)
        """
        if isinstance(value, dict):
            value = _get(value, "id")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return None, None
        note: str | None = None
        segments: list[list[tuple[bool, str]]] = [[]]
        pos = 0

        def literal(text: str) -> None:
            pieces = text.split("/")
            segments[-1].append((False, pieces[0]))
            for piece in pieces[1:]:
                segments.append([(False, piece)])

        for match in _SENTINEL_RE.finditer(value):
            literal(value[pos : match.start()])
            segments[-1].append((True, match.group(1)))
            pos = match.end()
        literal(value[pos:])

        def meaningful(segment: list[tuple[bool, str]]) -> bool:
            return any(opaque or text.strip("'\")]} ") for opaque, text in segment)

        while len(segments) > 1 and not meaningful(segments[-1]):
            segments.pop()
        out: list[str] = []
        for opaque, text in segments[-1]:
            if not opaque:
                out.append(text)
                continue
            kind, what, reason = json.loads(text)
            if kind == "param":
                out.append(what)
                note = f"the name stands in for parameter '{what}': {reason}"
            elif kind == "expr":
                quoted = re.findall(r"'((?:[^']|'')*)'", what)
                guess = ""
                for candidate in reversed(quoted):
                    tail = [s for s in candidate.replace("''", "'").split("/") if s.strip()]
                    if tail:
                        guess = tail[-1]
                        break
                out.append(guess)
                note = f"{reason}; the name was taken from its last quoted string"
            else:
                out.append(re.sub(r"\W+", "", what.split("(")[0]))
                note = f"the name depends on {what}, {reason}"
        name = "".join(out).strip()
        return (name or None), note

    def ref(self, item: _Item, view: _View, key: str, kind: str) -> _Ref | None:
        """A reference property as a L{_Ref}, or None when absent (noted when unusable)."""
        value = view.get(key)
        if _isEmpty(value):
            return None
        name, note = self.nameOf(value)
        if name is None:
            item.notConverted(key, f"cannot read a reference from {_brief(value)}")
            return None
        if note:
            item.comment(f"{key}: {note}")
        return _Ref(kind, name)

    def refList(self, item: _Item, values: list[Any], key: str, kind: str) -> list[Part]:
        """A list of references as comma-separated L{_Ref} parts (unusable ones noted)."""
        refs: list[Part] = []
        for value in values:
            name, note = self.nameOf(value)
            if name is None:
                item.notConverted(f"{key}: {_brief(value)}", "not a reference")
                continue
            if note:
                item.comment(f"{key}: {note}")
            if refs:
                refs.append(", ")
            refs.append(_Ref(kind, name))
        return refs

    def newItem(self, kind: str, element: Any, index: int) -> tuple[_Item, _View] | None:
        """Name an element of a collection and give its properties as a L{_View}."""
        if not isinstance(element, dict):
            self.top.append(f"NOT CONVERTED: {kind} #{index + 1}: expected an object, got {_brief(element)}")
            return None
        props = _get(element, "properties")
        if isinstance(props, dict):
            merged = {k: v for k, v in element.items() if k.lower() != "properties"}
            merged.update(props)
            view = _View(merged)
        else:
            view = _View(element)
        rawName = _get(element, "name")
        azure, note = self.nameOf(rawName)
        if azure is None:
            azure = f"{kind}{index + 1}"
            note = "the input gives no name"
        candidate = _sanitise(azure, NAME_RE, "A-Za-z0-9_.-")
        name = _unique(candidate, self.taken[kind])
        item = _Item(kind, azure, name)
        if note:
            item.comment(f"name: {note}")
        if name != azure:
            why = (
                "is used twice"
                if candidate == azure
                else "is not a valid agw name (1..80 of A-Z a-z 0-9 _ . -)"
            )
            item.comment(f"Azure name {azure!r} {why}: renamed to {name!r}")
        self.byAzure[kind].setdefault(azure.lower(), item)
        self.items[kind].append(item)
        return item, view

    # -- typed values --------------------------------------------------------

    def value(self, item: _Item, view: _View, key: str, label: str | None = None) -> Any:
        """The property, or None (with a NOT CONVERTED note) when it is unresolved."""
        value = view.get(key)
        if _isOpaque(value):
            item.notConverted(f"{label or key} = {_brief(value)}", _why(value))
            return None
        return value

    def text(self, item: _Item, view: _View, key: str, label: str | None = None) -> str | None:
        """A string an INI value can hold, or None (noted unless absent)."""
        value = self.value(item, view, key, label)
        if _isEmpty(value):
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            item.notConverted(f"{label or key} = {_brief(value)}", "expected a string")
            return None
        return self.checked(item, label or key, str(value))

    def checked(self, item: _Item, label: str, text: str) -> str | None:
        """C{text} if an INI value can hold it; else None, noted."""
        problem = _iniProblem(text)
        if problem is not None:
            item.notConverted(f"{label} = {_brief(text)}", problem)
            return None
        return text

    def number(
        self, item: _Item, view: _View, key: str, lo: int, hi: int, label: str | None = None
    ) -> int | None:
        """A whole number in C{lo..hi}, or None (noted unless absent)."""
        value = self.value(item, view, key, label)
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value)
        ):
            number = int(value)
        else:
            item.notConverted(f"{label or key} = {_brief(value)}", "expected a whole number")
            return None
        if not lo <= number <= hi:
            item.notConverted(f"{label or key} = {number}", f"expected {lo}..{hi}")
            return None
        return number

    def flag(self, item: _Item, view: _View, key: str, label: str | None = None) -> bool | None:
        """A boolean (true/false, Enabled/Disabled), or None (noted unless absent)."""
        value = self.value(item, view, key, label)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (
            "true",
            "enabled",
            "false",
            "disabled",
        ):
            return value.strip().lower() in ("true", "enabled")
        item.notConverted(f"{label or key} = {_brief(value)}", "expected true or false")
        return None

    def protocol(self, item: _Item, view: _View, key: str = "protocol") -> str | None:
        """Http or Https; anything else makes the section unconvertible."""
        value = self.text(item, view, key)
        if value is None:
            return None
        try:
            return parseProtocol(value)
        except InvalidValue:
            item.fail(f"protocol {value}: agw speaks Http and Https only")
            return None

    def hostOrPick(self, item: _Item, view: _View, hostKey: str, pickKey: str) -> tuple[bool, str | None]:
        """C{pickKey = true}, else C{hostKey}: the host name is one or the other."""
        pick = self.flag(item, view, pickKey)
        host = self.text(item, view, hostKey)
        if pick:
            item.add(pickKey, "true")
            if host:
                item.comment(f"{hostKey} {host} ignored: {pickKey} is true")
        elif host:
            item.add(hostKey, host.lower())
        return bool(pick), host

    def leftovers(self, item: _Item, view: _View, label: str = "") -> None:
        """Note every property this converter did not read (of C{label}, a part of the section)."""
        skip = _ELEMENT_METADATA | _BACKREFS[item.kind]
        for key, value in view.leftovers():
            lowered = key.lower()
            if lowered in skip or _isEmpty(value) or value is False:
                continue
            if lowered == "minservers" and value == 0:
                continue
            why = _ELEMENT_NOT_CONVERTED.get(lowered, "agw has no equivalent")
            item.notConverted(f"{label}{key} = {_brief(value)}", why)

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

    def customErrors(self, value: Any, listener: str | None) -> list[str]:
        """
        Notes for Azure's customErrorConfigurations (of the gateway, or of
        C{listener}): agw serves a local file, Azure fetches a URL, so each
        page is a note saying where to download it and the key to set.
        """
        if _isEmpty(value):
            return []
        if isinstance(value, str) and _isOpaque(value):
            return [f"NOT CONVERTED: customErrorConfigurations = {_brief(value)}: {_why(value)}"]
        if not isinstance(value, list):
            return [f"NOT CONVERTED: customErrorConfigurations: expected a list, got {_brief(value)}"]
        where = "[gateway]" if listener is None else "this section"
        notes = []
        for entry in value:
            status = _get(entry, "statusCode")
            url = _get(entry, "customErrorPageUrl")
            code = (
                status[len("HttpStatus") :]
                if isinstance(status, str) and status.startswith("HttpStatus")
                else ""
            )
            if not isinstance(entry, dict):
                notes.append(
                    f"NOT CONVERTED: customErrorConfigurations: expected an object, got {_brief(entry)}"
                )
            elif not (code.isdigit() and int(code) in CUSTOM_ERROR_STATUSES):
                allowed = ", ".join(f"HttpStatus{c}" for c in CUSTOM_ERROR_STATUSES)
                notes.append(
                    f"NOT CONVERTED: customErrorConfigurations: statusCode = {_brief(status)}: "
                    f"agw has custom pages for {allowed}"
                )
            elif not isinstance(url, str) or not url.strip() or _isOpaque(url):
                why = _why(url) if isinstance(url, str) and _isOpaque(url) else "expected the page's URL"
                notes.append(
                    f"NOT CONVERTED: customErrorConfigurations {status}: customErrorPageUrl = {_brief(url)}: {why}"
                )
            else:
                scope = "gateway" if listener is None else listener
                path = f"{ERROR_PAGES_DIR}/{scope}-{code}.html"
                notes.append(
                    f"NOT CONVERTED: download {_oneLine(url.strip())} to {path}, "
                    f"then set in {where}: customErrorPage.{code} = {path}"
                )
        return notes

    def sslPolicy(self, item: _Item, value: Any, label: str) -> None:
        """Azure's C{sslPolicy} object as the C{sslPolicy*} keys of C{item}."""
        if _isOpaque(value) or not isinstance(value, dict):
            item.notConverted(
                f"{label[:-1]} = {_brief(value)}", _why(value) if _isOpaque(value) else "expected an object"
            )
            return
        view = _View(value)
        kind = self.text(item, view, "policyType", label + "policyType")
        name = self.text(item, view, "policyName", label + "policyName")
        low = self.text(item, view, "minProtocolVersion", label + "minProtocolVersion")
        suites = self.value(item, view, "cipherSuites", label + "cipherSuites")
        disabled = self.value(item, view, "disabledSslProtocols", label + "disabledSslProtocols")
        for key, leftover in view.leftovers():
            if not _isEmpty(leftover):
                item.notConverted(f"{label}{key} = {_brief(leftover)}", "agw has no equivalent")
        if kind is None:
            kind = "Predefined" if name is not None or (low is None and _isEmpty(suites)) else "Custom"
        types = {t.lower(): t for t in ("Predefined", "Custom", "CustomV2")}
        if kind.lower() not in types:
            item.notConverted(f"{label}policyType = {kind}", "expected Predefined, Custom or CustomV2")
            return
        kind = types[kind.lower()]
        if not _isEmpty(disabled):
            versions = disabled if isinstance(disabled, list) else [disabled]
            enabled = [v for v in PROTOCOL_VERSIONS if v not in versions]
            if kind == "Predefined" and name is None and enabled:
                # the 2015-era way of raising the minimum: a custom policy with 2015's suites
                item.comment(
                    f"{label}disabledSslProtocols = {_brief(disabled)}: written as a Custom policy "
                    "with AppGwSslPolicy20150501's cipher suites"
                )

                kind, low = "Custom", enabled[0]
                suites = list(PREDEFINED["AppGwSslPolicy20150501"][2])
            else:
                item.notConverted(
                    f"{label}disabledSslProtocols = {_brief(disabled)}",
                    "ignored: the policy sets the versions",
                )
        policyName: str | None = None
        if name is not None:
            policyName = canonicalPolicyName(name)
            if policyName is None:
                item.notConverted(f"{label}policyName = {name}", "not one of Azure's predefined policies")
                return
        if low is not None and low not in PROTOCOL_VERSIONS:
            item.notConverted(f"{label}minProtocolVersion = {low}", "expected TLSv1_0 .. TLSv1_3")
            return
        names: list[str] = []
        if not _isEmpty(suites):
            for suite in suites if isinstance(suites, list) else [suites]:
                known = canonicalCipherSuite(suite) if isinstance(suite, str) else None
                if known is None:
                    item.notConverted(
                        f"{label}cipherSuites: {_brief(suite)}", "not a cipher suite Azure knows"
                    )
                elif known not in names:
                    names.append(known)
        policy = SslPolicy(
            policyType=kind,  # type: ignore[arg-type]
            policyName=policyName,
            minProtocolVersion=low,
            cipherSuites=tuple(names),
        )
        problems = policyProblems(policy)
        if problems:
            for key, message in problems:
                item.notConverted(f"{label} ({key})", message)
            return
        item.add("sslPolicyType", kind)
        if policyName is not None:
            item.add("sslPolicyName", policyName)
        if low is not None:
            item.add("sslMinProtocolVersion", low)
        if names:
            item.add("sslCipherSuites", ", ".join(names))

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

    # -- section kinds ---------------------------------------------------------

    def _frontendPort(self, item: _Item, view: _View) -> None:
        port = self.number(item, view, "port", *PORT_RANGE)
        if port is None:
            item.fail("it has no usable port")
            return
        item.add("port", str(port))

    def _sslCertificate(self, item: _Item, view: _View) -> None:
        certificate, key = self.tlsBase + item.name + ".pem", self.tlsBase + item.name + ".key"
        data, password = view.get("data"), view.get("password")
        vault = view.get("keyVaultSecretId")
        if not _isEmpty(vault):
            item.notConverted(
                f"keyVaultSecretId = {_brief(vault)}", "agw reads PEM files, not Key Vault secrets"
            )
            item.comment("Export the secret (a PFX) as PEM to the two paths below, e.g.")
            # Every value printed into a command is quoted for the shell: the
            # template is untrusted input, and the line is meant to be pasted.
            shown = _shellWord(_readable(vault)) if isinstance(vault, str) else "SECRET-ID"
            pfx = _shellWord(item.name + ".pfx")
            item.comment(f"  az keyvault secret download --id {shown} --encoding base64 --file {pfx}")
        else:
            if not _isEmpty(data):
                what = "data (an embedded PFX)"
                if not _isEmpty(password):
                    what += " and its password"
                reason = "agw reads PEM files; the PFX cannot be written from here"
            elif not _isEmpty(view.get("publicCertData")):
                what = "publicCertData"
                reason = "Azure never returns the private key; use the PFX that was uploaded"
            else:
                what, reason = "the certificate", "the input holds no certificate data"
            item.notConverted(what, reason)
            item.comment("Export the certificate and key as PEM to the two paths below, e.g.")
        pfx = _shellWord(item.name + ".pfx")
        item.comment(f"  openssl pkcs12 -in {pfx} -nokeys -out {_shellWord(certificate)}")
        item.comment(f"  openssl pkcs12 -in {pfx} -nocerts -nodes -out {_shellWord(key)}")
        item.add("certificate", certificate)
        item.add("privateKey", key)

    def caPlaceholder(self, item: _Item, view: _View, suffix: str, key: str, embedded: str) -> None:
        """C{key = TLSDIR/NAME+suffix} for CA certificates Azure holds inline or in Key Vault."""
        path = self.tlsBase + item.name + suffix
        data, vault = view.get("data"), view.get("keyVaultSecretId")
        if not _isEmpty(vault):
            item.notConverted(
                f"keyVaultSecretId = {_brief(vault)}", "agw reads PEM files, not Key Vault secrets"
            )
        else:
            item.notConverted(
                embedded if not _isEmpty(data) else "the certificate",
                "agw reads PEM files; the certificate cannot be written from here",
            )
        item.comment("Save the CA certificate as PEM at the path below, e.g. from the .cer file:")
        cer, out = _shellWord(item.name + ".cer"), _shellWord(path)
        item.comment(f"  openssl x509 -in {cer} -out {out}   (add -inform DER if binary)")
        item.add(key, path)

    def _trustedRootCertificate(self, item: _Item, view: _View) -> None:
        self.caPlaceholder(item, view, ".crt", "certificate", "data (the embedded .cer)")

    def _trustedClientCertificate(self, item: _Item, view: _View) -> None:
        self.caPlaceholder(item, view, ".ca.pem", "data", "data (the embedded CA certificates)")

    def _sslProfile(self, item: _Item, view: _View) -> None:
        policy = view.get("sslPolicy")
        if not _isEmpty(policy):
            self.sslPolicy(item, policy, "sslPolicy.")
        trusted = self.value(item, view, "trustedClientCertificates")
        refs: list[Part] = []
        if not _isEmpty(trusted):
            refs = self.refList(
                item,
                trusted if isinstance(trusted, list) else [trusted],
                "trustedClientCertificates",
                "trustedClientCertificate",
            )
        auth = self.value(item, view, "clientAuthConfiguration")
        mode = "Strict"
        lines: list[tuple[str, str]] = []
        if isinstance(auth, dict):
            authView = _View(auth)
            chosen = self.text(
                item, authView, "verifyClientAuthMode", "clientAuthConfiguration.verifyClientAuthMode"
            )
            if chosen is not None:
                if chosen.lower() not in ("strict", "passthrough"):
                    item.notConverted(f"verifyClientAuthMode = {chosen}", "expected Strict or Passthrough")
                else:
                    mode = "Passthrough" if chosen.lower() == "passthrough" else "Strict"
                    if mode == "Passthrough":
                        lines.append(("verifyClientAuthMode", mode))
            dn = self.flag(
                item, authView, "verifyClientCertIssuerDN", "clientAuthConfiguration.verifyClientCertIssuerDN"
            )
            if dn:
                lines.append(("verifyClientCertIssuerDN", "true"))
            revocation = self.text(
                item, authView, "verifyClientRevocation", "clientAuthConfiguration.verifyClientRevocation"
            )
            if revocation is not None and revocation.lower() == "ocsp":
                lines.append(("verifyClientRevocation", "OCSP"))
            elif revocation is not None and revocation.lower() != "none":
                item.notConverted(f"verifyClientRevocation = {revocation}", "expected None or OCSP")
            for key, leftover in authView.leftovers():
                if not _isEmpty(leftover):
                    item.notConverted(
                        f"clientAuthConfiguration.{key} = {_brief(leftover)}", "agw has no equivalent"
                    )
        elif not _isEmpty(auth):
            item.notConverted(f"clientAuthConfiguration = {_brief(auth)}", "expected an object")
        if mode == "Passthrough":
            if refs:
                item.comment("trustedClientCertificates ignored: Passthrough verifies nothing")
            lines = [line for line in lines if line[0] == "verifyClientAuthMode"]
        elif refs:
            item.add("trustedClientCertificates", *refs, required=True)
        else:
            lines = [line for line in lines if line[0] == "verifyClientAuthMode"]
        for key, text in lines:
            item.add(key, text)

    def _httpListener(self, item: _Item, view: _View) -> None:
        frontendIp = view.get("frontendIPConfiguration")
        if not _isEmpty(frontendIp):
            name = self.nameOf(frontendIp)[0] or _brief(frontendIp)
            item.notConverted(
                f"frontendIPConfiguration = {name}", "agw listens on every address of this host"
            )
        port = self.ref(item, view, "frontendPort", "frontendPort")
        if port is None:
            item.fail("it has no frontendPort")
        else:
            item.add("frontendPort", port, required=True)
        protocol = self.protocol(item, view) or "Http"
        item.add("protocol", protocol)
        hosts: list[str] = []
        for key in ("hostNames", "hostName"):
            value = self.value(item, view, key)
            values = value if isinstance(value, list) else [value]
            for host in values:
                if _isEmpty(host):
                    continue
                if not isinstance(host, str):
                    item.notConverted(f"{key} = {_brief(host)}", "expected a host name")
                    continue
                checked = self.checked(item, key, host.strip().lower())
                if checked is not None and checked not in hosts:
                    if "," in checked:
                        item.notConverted(f"{key} = {checked}", "a host name cannot contain ','")
                        continue
                    hosts.append(checked)
        if hosts:
            item.add("hostNames", ", ".join(hosts))
        cert = self.ref(item, view, "sslCertificate", "sslCertificate")
        if protocol == "Https":
            if cert is None:
                item.fail("protocol Https without an sslCertificate")
            else:
                item.add("sslCertificate", cert, required=True)
        elif cert is not None:
            item.comment(f"sslCertificate {cert.azure} ignored: the listener's protocol is Http")
        profile = self.ref(item, view, "sslProfile", "sslProfile")
        if profile is not None and protocol == "Https":
            item.add("sslProfile", profile, required=True)
        elif profile is not None:
            item.comment(f"sslProfile {profile.azure} ignored: the listener's protocol is Http")
        sni = view.get("requireServerNameIndication")
        if sni is not None and sni is not False:
            item.comment(f"requireServerNameIndication = {_brief(sni)}: ignored, agw has no such setting")
        for note in self.customErrors(view.get("customErrorConfigurations"), item.name):
            item.comment(note)

    def _backendAddressPool(self, item: _Item, view: _View) -> None:
        addresses = view.get("backendAddresses")
        if isinstance(addresses, str) and _isOpaque(addresses):
            item.notConverted(f"backendAddresses = {_brief(addresses)}", _why(addresses))
            return
        if _isEmpty(addresses):
            item.comment("the input lists no backendAddresses: add the members by hand")
            return
        if not isinstance(addresses, list):
            item.notConverted(f"backendAddresses = {_brief(addresses)}", "expected a list")
            return
        members: list[str] = []
        for entry in addresses:
            if isinstance(entry, str):
                host: Any = entry
            elif isinstance(entry, dict):
                host = _get(entry, "ipAddress") or _get(entry, "fqdn")
                others = [
                    k for k, v in entry.items() if k.lower() not in ("ipaddress", "fqdn") and not _isEmpty(v)
                ]
                if others:
                    item.notConverted(f"backendAddresses: {_brief(entry)}", "agw takes ipAddress or fqdn")
            else:
                host = None
            if _isOpaque(host):
                item.notConverted(f"backend address {_brief(host)}", _why(host))
                continue
            if not isinstance(host, str) or not host.strip():
                item.notConverted(f"backend address {_brief(entry)}", "expected ipAddress or fqdn")
                continue
            text = self.checked(item, "backend address", host.strip().lower())
            if text is None:
                continue
            if "," in text or " " in text:
                item.notConverted(f"backend address {text}", "not an address")
                continue
            if text not in members:
                members.append(text)
        if members:
            item.add("backendAddresses", ", ".join(members))

    def _probe(self, item: _Item, view: _View) -> None:
        protocol = self.protocol(item, view)
        if protocol is not None:
            item.add("protocol", protocol)
        item.info["protocol"] = protocol or "Http"
        pick, _ = self.hostOrPick(item, view, "host", "pickHostNameFromBackendHttpSettings")
        item.info["pick"] = pick
        path = self.text(item, view, "path")
        if path:
            item.add("path", path)
        port = self.number(item, view, "port", *PORT_RANGE)
        if port is not None:
            item.add("port", str(port))
        for key, lo, hi in (
            ("interval", 1, SECONDS_MAX),
            ("timeout", 1, SECONDS_MAX),
            ("unhealthyThreshold", 1, UNHEALTHY_THRESHOLD_MAX),
        ):
            number = self.number(item, view, key, lo, hi)
            if number is not None:
                item.add(key, str(number))
        match = view.get("match")
        if isinstance(match, dict):
            matchView = _View(match)
            codes = self.value(item, matchView, "statusCodes", "match.statusCodes")
            if isinstance(codes, str):
                codes = [codes]
            if isinstance(codes, list) and codes:
                checked = self.checked(item, "match.statusCodes", ", ".join(str(c).strip() for c in codes))
                if checked:
                    item.add("match.statusCodes", checked)
            body = self.text(item, matchView, "body", "match.body")
            if body:
                item.add("match.body", body)
            for key, value in matchView.leftovers():
                if not _isEmpty(value):
                    item.notConverted(f"match.{key} = {_brief(value)}", "agw has no equivalent")
        elif not _isEmpty(match):
            item.notConverted(f"match = {_brief(match)}", "expected an object")

    def _backendHttpSettings(self, item: _Item, view: _View) -> None:
        port = self.number(item, view, "port", *PORT_RANGE)
        if port is not None:
            item.add("port", str(port))
        protocol = self.protocol(item, view)
        if protocol is not None:
            item.add("protocol", protocol)
        protocol = protocol or "Http"
        affinity = self.flag(item, view, "cookieBasedAffinity")
        if affinity is not None:
            item.add("cookieBasedAffinity", "Enabled" if affinity else "Disabled")
        cookie = self.text(item, view, "affinityCookieName")
        if cookie:
            item.add("affinityCookieName", cookie)
        timeout = self.number(item, view, "requestTimeout", 1, SECONDS_MAX)
        if timeout is not None:
            item.add("requestTimeout", str(timeout))
        probeEnabled = self.flag(item, view, "probeEnabled")
        probe = self.ref(item, view, "probe", "probe")
        if probe is not None and probeEnabled is False:
            item.notConverted(
                f"probe = {probe.azure}", "probeEnabled is false (agw then uses its default probe)"
            )
            probe = None
        pick, hostName = self.hostOrPick(item, view, "hostName", "pickHostNameFromBackendAddress")
        if probe is not None:
            target = self.lookup("probe", probe.azure)
            if target is not None and target.info.get("protocol", "Http") != protocol:
                item.notConverted(
                    f"probe = {probe.azure}",
                    f"the probe speaks {target.info.get('protocol')}, these settings {protocol} "
                    "(agw needs them to match)",
                )
            elif target is not None and target.info.get("pick") and not (pick or hostName):
                item.notConverted(
                    f"probe = {probe.azure}",
                    "the probe takes its host name from these settings, which set none",
                )
            else:
                item.add("probe", probe)
        draining = self.value(item, view, "connectionDraining")
        if isinstance(draining, dict):
            drainView = _View(draining)
            enabled = self.flag(item, drainView, "enabled", "connectionDraining.enabled")
            seconds = self.number(
                item,
                drainView,
                "drainTimeoutInSec",
                0,
                3600,
                "connectionDraining.drainTimeoutInSec",
            )
            item.add("connectionDraining", str(seconds or 0) if enabled else "0")
        elif not _isEmpty(draining):
            item.notConverted(f"connectionDraining = {_brief(draining)}", "expected an object")
        path = self.text(item, view, "path")
        if path:
            item.add("path", path)
        roots = view.get("trustedRootCertificates")
        if isinstance(roots, list) and roots:
            refs = self.refList(item, roots, "trustedRootCertificates", "trustedRootCertificate")
            if refs and protocol == "Http":
                item.comment("trustedRootCertificates ignored: the protocol is Http")
            elif refs:
                item.add("trustedRootCertificates", *refs)
        elif not _isEmpty(roots):
            item.notConverted(f"trustedRootCertificates = {_brief(roots)}", "expected a list")
        verify = self.flag(item, view, "validateCertChainAndExpiry")
        if verify is False:
            item.add("verifyCertificate", "false")
        sni = view.get("validateSNI")
        if sni is False:
            item.notConverted("validateSNI = false", "agw checks the name whenever it verifies")
        sniName = view.get("sniName")
        if not _isEmpty(sniName):
            item.notConverted(f"sniName = {_brief(sniName)}", "agw sends the host name as SNI")

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
            responseCondition = responseCondition or variable.startswith("http_resp_")

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
                    for variable in re.findall(r"\{([^{}]*)\}", headerValue):
                        problem = _variableProblem(variable, inResponse)
                        if problem:
                            break
                    problem = problem or (_iniProblem(headerValue) if headerValue else None)
                if problem is not None:
                    notes.append(f"NOT CONVERTED: {what}: {problem}")
                    continue
                seen.add(headerName.lower())
                lines.append((f"rule.{name}.{agwKey}.{headerName}", headerValue))
                count += 1
        url = actionView.get("urlConfiguration")
        if not _isEmpty(url):
            notes.append(
                f"NOT CONVERTED: {label}: urlConfiguration = {_brief(url)}: agw does not rewrite URLs"
            )
        for key, value in actionView.leftovers():
            if not _isEmpty(value):
                notes.append(f"NOT CONVERTED: {label}: {key} = {_brief(value)}: agw has no equivalent")
        for key, value in ruleView.leftovers():
            if key.lower() not in _ELEMENT_METADATA and not _isEmpty(value):
                notes.append(f"NOT CONVERTED: {label}: {key} = {_brief(value)}: agw has no equivalent")
        if not count:
            for note in notes:
                item.comment(note)
            item.notConverted(label, "none of its header actions could be converted")
            return False
        if name != azure:
            item.comment(f"rewrite rule {azure!r} is named {name!r} here (agw rule names: A-Z a-z 0-9 _ -)")
        for note in notes:
            item.comment(note)
        for key, value in lines:
            item.add(key, value)
        return True

    def _target(
        self,
        item: _Item,
        view: _View,
        poolKey: str,
        settingsKey: str,
        redirectKey: str,
    ) -> list[Part] | None:
        """The C{POOL, SETTINGS} or C{redirect:NAME} of a path rule, or None."""
        pool = self.ref(item, view, poolKey, "backendAddressPool")
        settings = self.ref(item, view, settingsKey, "backendHttpSettings")
        redirect = self.ref(item, view, redirectKey, "redirectConfiguration")
        if redirect is not None and pool is None and settings is None:
            return ["redirect:", redirect]
        if pool is not None and settings is not None and redirect is None:
            return [pool, ", ", settings]
        return None

    def _urlPathMap(self, item: _Item, view: _View) -> None:
        pool = self.ref(item, view, "defaultBackendAddressPool", "backendAddressPool")
        settings = self.ref(item, view, "defaultBackendHttpSettings", "backendHttpSettings")
        redirect = self.ref(item, view, "defaultRedirectConfiguration", "redirectConfiguration")
        if pool is not None and settings is not None and redirect is None:
            item.add("defaultBackendAddressPool", pool, required=True)
            item.add("defaultBackendHttpSettings", settings, required=True)
        elif redirect is not None and pool is None and settings is None:
            item.add("defaultRedirectConfiguration", redirect, required=True)
        else:
            item.fail(
                "it needs defaultBackendAddressPool and defaultBackendHttpSettings, "
                "or defaultRedirectConfiguration"
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
        for index, rule in enumerate(rules):
            if not isinstance(rule, dict):
                item.notConverted(f"path rule #{index + 1}", "expected an object")
                continue
            props = _get(rule, "properties")
            ruleView = _View(props if isinstance(props, dict) else rule)
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
                item, ruleView, "backendAddressPool", "backendHttpSettings", "redirectConfiguration"
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
            for ref in (pool, settings, redirect):
                if ref is not None:
                    item.comment(f"{ref.kind} {ref.azure} ignored: ruleType is PathBasedRouting")
        else:
            if pool is not None and settings is not None and redirect is None:
                item.add("backendAddressPool", pool, required=True)
                item.add("backendHttpSettings", settings, required=True)
            elif redirect is not None and pool is None and settings is None:
                item.add("redirectConfiguration", redirect, required=True)
            else:
                item.fail(
                    "a Basic rule needs backendAddressPool and backendHttpSettings, or redirectConfiguration"
                )
            if pathMap is not None:
                item.comment(f"urlPathMap {pathMap.azure} ignored: ruleType is Basic")
        if rewrite is not None:
            item.add("rewriteRuleSet", rewrite)

    # -- which sections can be written -----------------------------------------

    def lookup(self, kind: str, azure: str) -> _Item | None:
        """
        The section a reference names: by its name, else by the name without
        trailing quote and bracket debris (C{appGatewayHttpListener')]}).
        """
        names = self.byAzure[kind]
        item = names.get(azure.lower())
        if item is None:
            item = names.get(azure.rstrip("'\")]} ").lstrip("'\"[ ").lower())
        return item

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

"""
Converting what the gateway listens on: Azure's frontend ports, SSL
certificates (as placeholders with export commands), trusted root and
client certificates, SSL profiles and HTTP listeners; also the SSL policy
and custom error pages, which the gateway as a whole has too.
"""

from __future__ import annotations

from typing import Any

from agwtx.config.model import CUSTOM_ERROR_STATUSES, SslPolicy
from agwtx.config.sslpolicy import (
    PREDEFINED,
    PROTOCOL_VERSIONS,
    canonicalCipherSuite,
    canonicalPolicyName,
    policyProblems,
)
from agwtx.config.values import PORT_RANGE
from agwtx.tools.armimport.base import _ConverterBase
from agwtx.tools.armimport.evaluate import _isOpaque, _readable, _why
from agwtx.tools.armimport.read import _get, _isEmpty, _View
from agwtx.tools.armimport.sections import Part, _Item, _brief, _oneLine, _shellWord

ERROR_PAGES_DIR = "/etc/agw/errorpages"
"""Where notes for Azure's custom error pages (URLs) say to put the downloaded files."""


class _ListenerConverters(_ConverterBase):
    """Converts frontend ports, certificates, SSL profiles and listeners."""

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

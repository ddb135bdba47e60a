"""
What the gateway listens on: C{[frontendPort:NAME]} (with the PROXY
protocol), the certificate sections (C{[sslCertificate:NAME]},
C{[trustedRootCertificate:NAME]}, C{[trustedClientCertificate:NAME]}),
C{[sslProfile:NAME]} and C{[httpListener:NAME]}, and the checks between
ports and listeners.  Also the two key families listeners share with
C{[gateway]}: C{sslPolicy*} and C{customErrorPage.NNN}.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from agwtx.config.builder import _Builder, _kwargs
from agwtx.config.errors import InvalidValue
from agwtx.config.ini import _Section
from agwtx.config.keys import _CUSTOM_ERROR_PREFIX, _POLICY_KEYS
from agwtx.config.model import (
    CUSTOM_ERROR_PAGE_MAX,
    CUSTOM_ERROR_STATUSES,
    CustomErrorPage,
    FrontendPort,
    HttpListener,
    SslCertificate,
    SslPolicy,
    SslProfile,
    TrustedClientCertificate,
    TrustedRootCertificate,
)
from agwtx.config.sslpolicy import (
    PREDEFINED,
    PROTOCOL_VERSIONS,
    canonicalCipherSuite,
    canonicalPolicyName,
    policyProblems,
)
from agwtx.config.values import (
    _choice,
    _got,
    _parsePort,
    _parseUniqueList,
    parseBool,
    parseEndpoint,
    parseHostNamePattern,
    parseList,
    parseNetworks,
    parseProtocol,
)


class _ListenerSections(_Builder):
    """Builds ports, certificates, SSL profiles and listeners, and checks them together."""

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
                customErrorPages=_customErrorPages(sec),
                sslProfile=sslProfile,
            )
        )

    # -- cross-checks -------------------------------------------------------

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


def _customErrorPages(sec: _Section) -> tuple[CustomErrorPage, ...] | None:
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
            sec.error(entry.key, f"expected a status of {allowed} after customErrorPage., got {_got(code)}")
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
            sec.error(entry.key, f"{resolved!r} is not UTF-8 text (it is served as text/html; charset=utf-8)")
            continue
        pages.append(CustomErrorPage(int(code), resolved, body))
    return tuple(sorted(pages, key=lambda p: p.status)) or None


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

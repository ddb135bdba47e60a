"""
SSL policies with Azure Application Gateway's names and semantics: what a
listener's TLS context accepts (protocol versions and cipher suites).

A policy (L{agwtx.config.model.SslPolicy}) is C{Predefined} (one of Azure's named
policies, L{PREDEFINED}), C{Custom} (TLS 1.0 to 1.2, cipher suites listed)
or C{CustomV2} (TLS 1.2 or 1.3 as the minimum, TLS 1.3 always enabled).
L{resolvePolicy} turns one into what OpenSSL needs (L{ResolvedPolicy}), and
L{policyProblems} says, in config-error words, what the OpenSSL this
process runs cannot do.

Decisions where Azure leaves room:

  - agw's default is C{AppGwSslPolicy20220101}, Azure's default for gateways
    made with API version 2023-02-01 or later (older API versions defaulted
    to C{AppGwSslPolicy20150501}; name that policy to get it).
  - As on Application Gateway v2, the C{TLS_DHE_*} suites (RSA and DSS) are
    accepted in configurations but never offered.
  - TLS 1.3 suites are fixed, as in Azure: C{TLS_AES_256_GCM_SHA384} and
    C{TLS_AES_128_GCM_SHA256} whenever TLS 1.3 is enabled; naming them in a
    CustomV2 policy is allowed and changes nothing.
  - TLS 1.0 and 1.1 only work at OpenSSL security level 0 (OpenSSL 3 and
    later refuse their MD5/SHA-1 handshake signatures above it), so a policy
    whose minimum is below TLS 1.2 runs at C{@SECLEVEL=0}; one with TLS 1.2
    or later keeps OpenSSL's default level.
  - A predefined policy leaves out a suite this OpenSSL lacks (3DES in
    builds without it); a Custom policy that names one is a config error.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

from OpenSSL import SSL

from agwtx.compat.pyopensslprivate import setTls13Suites
from agwtx.config.model import SslPolicy

__all__ = [
    "CIPHER_SUITES",
    "PREDEFINED",
    "PROTOCOL_VERSIONS",
    "ResolvedPolicy",
    "applyPolicy",
    "policyProblems",
    "resolvePolicy",
]

PROTOCOL_VERSIONS: Mapping[str, int] = {
    "TLSv1_0": SSL.TLS1_VERSION,
    "TLSv1_1": SSL.TLS1_1_VERSION,
    "TLSv1_2": SSL.TLS1_2_VERSION,
    "TLSv1_3": SSL.TLS1_3_VERSION,
}
"""Azure's C{minProtocolVersion} values and OpenSSL's version numbers."""

_VERSION_NAMES = {number: name for name, number in PROTOCOL_VERSIONS.items()}

TLS13_SUITES = ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256")
"""The TLS 1.3 suites of every policy that enables TLS 1.3 (Azure's mandatory pair)."""

CIPHER_SUITES: Mapping[str, str | None] = {
    "TLS_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384": "ECDHE-RSA-AES256-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384": None,
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256": None,
    "TLS_DHE_RSA_WITH_AES_256_CBC_SHA": None,
    "TLS_DHE_RSA_WITH_AES_128_CBC_SHA": None,
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA256": "AES256-SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384": "ECDHE-ECDSA-AES256-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256": None,
    "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256": None,
    "TLS_DHE_DSS_WITH_AES_256_CBC_SHA": None,
    "TLS_DHE_DSS_WITH_AES_128_CBC_SHA": None,
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA": None,
}
"""Azure's cipher suite names (IANA's) and OpenSSL's; None: accepted, never offered (DHE, as Azure v2)."""

_CIPHER_BY_UPPER = {name.upper(): name for name in CIPHER_SUITES}

_RSA_KX = (
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
)
_ECDSA = (
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
)
_S15 = (
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    *_RSA_KX,
    *_ECDSA,
    "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256",
    "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256",
    "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
    "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA",
)
_S17 = (
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    *_RSA_KX,
    *_ECDSA,
)
_S22 = (
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
)
_S22S = (
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
)

PREDEFINED: Mapping[str, tuple[str, str, tuple[str, ...]]] = {
    "AppGwSslPolicy20150501": ("TLSv1_0", "TLSv1_2", _S15),
    "AppGwSslPolicy20170401": ("TLSv1_1", "TLSv1_2", _S17),
    "AppGwSslPolicy20170401S": ("TLSv1_2", "TLSv1_2", _S17),
    "AppGwSslPolicy20220101": ("TLSv1_2", "TLSv1_3", TLS13_SUITES + _S22),
    "AppGwSslPolicy20220101S": ("TLSv1_2", "TLSv1_3", TLS13_SUITES + _S22S),
}
"""Azure's predefined policies: (minimum version, maximum version, suites in Azure's documented order)."""

DEFAULT_POLICY_NAME = "AppGwSslPolicy20220101"

_PREDEFINED_BY_UPPER = {name.upper(): name for name in PREDEFINED}


def canonicalPolicyName(text: str) -> str | None:
    """The predefined policy's name as Azure spells it, or None for an unknown name."""
    return _PREDEFINED_BY_UPPER.get(text.strip().upper())


def canonicalCipherSuite(text: str) -> str | None:
    """A cipher suite's name as Azure spells it, or None for one Azure does not know."""
    return _CIPHER_BY_UPPER.get(text.strip().upper())


@dataclass(frozen=True)
class ResolvedPolicy:
    """What one listener context is set to."""

    minVersion: int
    maxVersion: int
    suites: tuple[str, ...]
    """Azure names of the suites that are offered, in order (TLS 1.3 ones included when enabled)."""
    cipherString: str
    """The OpenSSL cipher list for TLS 1.2 and below (with C{@SECLEVEL=0} when TLS 1.0/1.1 are on)."""
    tls13Suites: str
    """The OpenSSL TLS 1.3 ciphersuites string; empty when TLS 1.3 is off."""

    @property
    def legacy(self) -> bool:
        return self.minVersion < SSL.TLS1_2_VERSION


def versionName(number: int) -> str:
    return _VERSION_NAMES.get(number, hex(number))


@functools.lru_cache(maxsize=None)
def _available(openssl: str) -> bool:
    """Whether this OpenSSL has the (TLS 1.2 and below) cipher named C{openssl}."""
    ctx = SSL.Context(SSL.TLS_METHOD)
    try:
        ctx.set_cipher_list(f"{openssl}:@SECLEVEL=0".encode("ascii"))
    except SSL.Error:
        return False
    names = SSL.Connection(ctx, None).get_cipher_list()
    return openssl in names


@functools.lru_cache(maxsize=None)
def versionAvailable(version: int) -> bool:
    """
    Whether this OpenSSL negotiates C{version} at all (at security level 0):
    an in-memory handshake with itself, once per process and version.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import datetime

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agw version check")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    contexts = []
    for _ in range(2):
        ctx = SSL.Context(SSL.TLS_METHOD)
        try:
            ctx.set_min_proto_version(version)
            ctx.set_max_proto_version(version)
            ctx.set_cipher_list(b"ALL:@SECLEVEL=0")
        except SSL.Error:
            return False
        contexts.append(ctx)
    contexts[0].use_certificate(cert)  # type: ignore[arg-type]
    contexts[0].use_privatekey(key)  # type: ignore[arg-type]
    server = SSL.Connection(contexts[0], None)
    server.set_accept_state()
    client = SSL.Connection(contexts[1], None)
    client.set_connect_state()
    for _ in range(8):
        for a, b in ((client, server), (server, client)):
            try:
                a.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error:
                return False
            try:
                b.bio_write(a.bio_read(65536))
            except SSL.WantReadError:
                pass
    try:
        return server.get_protocol_version() == version  # type: ignore[no-any-return]
    except SSL.Error:
        return False


def _versions(policy: SslPolicy) -> tuple[str, str]:
    if policy.policyType == "Predefined":
        name = policy.policyName or DEFAULT_POLICY_NAME
        low, high, _ = PREDEFINED[name]
        return low, high
    low = policy.minProtocolVersion or ("TLSv1_2" if policy.policyType == "CustomV2" else "TLSv1_0")
    return low, "TLSv1_3" if policy.policyType == "CustomV2" else "TLSv1_2"


def _suites(policy: SslPolicy) -> tuple[str, ...]:
    if policy.policyType == "Predefined":
        return PREDEFINED[policy.policyName or DEFAULT_POLICY_NAME][2]
    suites = tuple(s for s in policy.cipherSuites if s not in TLS13_SUITES)
    if policy.policyType == "CustomV2":
        suites = TLS13_SUITES + suites
    return suites


def resolvePolicy(policy: SslPolicy) -> ResolvedPolicy:
    """
    The versions and cipher lists of a policy the config loader accepted
    (L{policyProblems} is empty for it).
    """
    low, high = _versions(policy)
    minVersion, maxVersion = PROTOCOL_VERSIONS[low], PROTOCOL_VERSIONS[high]
    offered: list[str] = []
    openssl: list[str] = []
    for suite in _suites(policy):
        name = CIPHER_SUITES[suite]
        if suite in TLS13_SUITES:
            if maxVersion >= SSL.TLS1_3_VERSION:
                offered.append(suite)
            continue
        if name is None or not _available(name):
            continue
        if minVersion >= SSL.TLS1_3_VERSION:
            continue  # TLS 1.2 suites are of no use when TLS 1.2 is off
        offered.append(suite)
        openssl.append(name)
    cipherString = ":".join(openssl)
    if minVersion < SSL.TLS1_2_VERSION:
        cipherString += ":@SECLEVEL=0"
    tls13 = ":".join(s for s in TLS13_SUITES) if maxVersion >= SSL.TLS1_3_VERSION else ""
    return ResolvedPolicy(minVersion, maxVersion, tuple(offered), cipherString, tls13)


def policyProblems(policy: SslPolicy) -> list[tuple[str, str]]:
    """
    What is wrong with a policy, as C{(key, message)} pairs with the keys
    of the C{[gateway]}/C{[sslProfile:NAME]} section (C{sslPolicyName},
    C{sslMinProtocolVersion}, C{sslCipherSuites}).  Covers Azure's rules and
    what this process's OpenSSL cannot do.
    """
    problems: list[tuple[str, str]] = []
    kind = policy.policyType
    if kind == "Predefined":
        for key, given in (
            ("sslMinProtocolVersion", policy.minProtocolVersion),
            ("sslCipherSuites", policy.cipherSuites),
        ):
            if given:
                problems.append(
                    (key, "only with sslPolicyType Custom or CustomV2; a predefined policy fixes it")
                )
    else:
        if policy.policyName is not None:
            problems.append(("sslPolicyName", "only with sslPolicyType Predefined"))
        low = policy.minProtocolVersion
        if kind == "Custom" and low == "TLSv1_3":
            problems.append(("sslMinProtocolVersion", "TLSv1_3 needs sslPolicyType CustomV2"))
        if kind == "CustomV2" and low in ("TLSv1_0", "TLSv1_1"):
            problems.append(
                (
                    "sslMinProtocolVersion",
                    f"{low} is not allowed with CustomV2 (as in Azure: use sslPolicyType Custom "
                    "or an older predefined policy for TLS 1.0 and 1.1)",
                )
            )
        if kind == "Custom":
            v13 = [s for s in policy.cipherSuites if s in TLS13_SUITES]
            if v13:
                problems.append(("sslCipherSuites", f"{v13[0]} is a TLS 1.3 suite: only with CustomV2"))
        onlyTls13 = kind == "CustomV2" and low == "TLSv1_3"
        tls12 = [s for s in policy.cipherSuites if s not in TLS13_SUITES]
        if onlyTls13 and tls12:
            problems.append(
                (
                    "sslCipherSuites",
                    f"{tls12[0]} is a TLS 1.2 suite, of no use with sslMinProtocolVersion TLSv1_3 "
                    "(TLS 1.3 suites are fixed)",
                )
            )
        if not onlyTls13:
            if not tls12:
                problems.append(("sslCipherSuites", "required: the TLS 1.2 cipher suites to offer"))
            else:
                for suite in tls12:
                    name = CIPHER_SUITES[suite]
                    if name is not None and not _available(name):
                        problems.append(
                            (
                                "sslCipherSuites",
                                f"{suite} (OpenSSL {name}) is not available in this OpenSSL "
                                f"({SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode('ascii', 'replace')})",
                            )
                        )
                if all(CIPHER_SUITES[s] is None for s in tls12):
                    problems.append(
                        (
                            "sslCipherSuites",
                            "only TLS_DHE_* suites, which agw (like Application Gateway v2) never offers",
                        )
                    )
    if problems:
        return problems
    low, _ = _versions(policy)
    if not versionAvailable(PROTOCOL_VERSIONS[low]):
        key = "sslPolicyName" if kind == "Predefined" else "sslMinProtocolVersion"
        problems.append((key, f"{low} cannot be negotiated by this OpenSSL, even at security level 0"))
    return problems


def applyPolicy(ctx: SSL.Context, policy: ResolvedPolicy) -> None:
    """Set a context's protocol versions and cipher suites: the last change to a new context."""
    ctx.set_min_proto_version(policy.minVersion)
    ctx.set_max_proto_version(policy.maxVersion)
    if policy.tls13Suites:
        setTls13Suites(ctx, policy.tls13Suites.encode("ascii"))
    # Last: it makes a Connection from the context (pyOpenSSL's check).
    ctx.set_cipher_list((policy.cipherString or "DEFAULT").encode("ascii"))

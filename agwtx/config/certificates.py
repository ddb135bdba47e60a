"""
The certificate files a configuration names, read and checked: PEM,
the key matching the certificate, dates.  The loader reports what is wrong
against the section and key (L{certificateProblems}); the TLS listeners and
backend connectors use what loads (L{loadCertificate}, L{loadTrustedRoots},
L{loadTrustedClientCertificates}).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from agwtx.config.model import (
    SslCertificate,
    TrustedClientCertificate,
    TrustedRootCertificate,
)

# -- loading and checking certificates ----------------------------------------


@dataclass(frozen=True)
class TlsProblem:
    """One thing wrong with a certificate section, in config-error words."""

    section: str
    """C{sslCertificate:NAME} or C{trustedRootCertificate:NAME}."""
    key: str
    """The key whose file is at fault: C{certificate} or C{privateKey}."""
    problem: str
    path: str

    @property
    def message(self) -> str:
        return f"{self.problem} ({self.path})"

    def __str__(self) -> str:
        return f"[{self.section}] {self.key}: {self.message}"


class TlsError(Exception):
    """Certificates that cannot be used; C{problems} lists each one."""

    def __init__(self, problems: Sequence[TlsProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def lines(self, path: str) -> list[str]:
        """The problems as config errors of the file at C{path}: file, section, key, message."""
        return [f"{path}: [{p.section}] {p.key}: {p.message}" for p in self.problems]


@dataclass(frozen=True)
class LoadedCertificate:
    """A listener certificate, parsed and checked: the leaf, its chain and key."""

    name: str
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: PrivateKeyTypes

    def dnsNames(self) -> list[str]:
        try:
            san = self.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        return list(san.value.get_values_for_type(x509.DNSName))


def _now(now: datetime.datetime | None) -> datetime.datetime:
    return now or datetime.datetime.now(datetime.timezone.utc)


def _readFile(path: str) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"


def _readCertificates(path: str) -> tuple[list[x509.Certificate], str | None]:
    data, problem = _readFile(path)
    if data is None:
        return [], problem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return [], "no PEM certificate found"
    try:
        return x509.load_pem_x509_certificates(data), None
    except ValueError as e:
        return [], f"not a valid PEM certificate: {e}"


def _readKey(path: str, password: str | None) -> tuple[PrivateKeyTypes | None, str | None]:
    data, problem = _readFile(path)
    if data is None:
        return None, problem
    if b"PRIVATE KEY-----" not in data:
        return None, "no PEM private key found"
    secret = password.encode("utf-8") if password is not None else None
    try:
        key = serialization.load_pem_private_key(data, secret)
    except TypeError:
        if secret is None:
            return None, "the private key is encrypted and no password is given"
        try:  # a password for a key that has none: harmless
            key = serialization.load_pem_private_key(data, None)
        except (TypeError, ValueError) as e:
            return None, f"not a valid PEM private key: {e}"
    except ValueError as e:
        if secret is not None:
            return None, "cannot decrypt the private key: wrong password?"
        return None, f"not a valid PEM private key: {e}"
    except Exception as e:  # unsupported algorithms and the like
        return None, f"not a usable private key: {e}"
    return key, None


def spki(publicKey: Any) -> bytes:
    return bytes(
        publicKey.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def checkCertificate(
    cert: SslCertificate, now: datetime.datetime | None
) -> tuple[LoadedCertificate | None, list[TlsProblem]]:
    section = f"sslCertificate:{cert.name}"
    problems: list[TlsProblem] = []
    certs, problem = _readCertificates(cert.certificate)
    if problem is not None:
        problems.append(TlsProblem(section, "certificate", problem, cert.certificate))
    key, problem = _readKey(cert.privateKey, cert.password)
    if problem is not None:
        problems.append(TlsProblem(section, "privateKey", problem, cert.privateKey))
    if not certs or key is None:
        return None, problems
    leaf = certs[0]
    if spki(leaf.public_key()) != spki(key.public_key()):
        problems.append(
            TlsProblem(
                section,
                "privateKey",
                f"does not match the certificate in {cert.certificate}",
                cert.privateKey,
            )
        )
    notAfter = leaf.not_valid_after_utc
    if notAfter < _now(now):
        problems.append(
            TlsProblem(
                section,
                "certificate",
                f"expired on {notAfter:%Y-%m-%d %H:%M:%S} UTC",
                cert.certificate,
            )
        )
    if problems:
        return None, problems
    return LoadedCertificate(cert.name, leaf, tuple(certs[1:]), key), []


def loadCertificate(cert: SslCertificate, now: datetime.datetime | None = None) -> LoadedCertificate:
    """
    Read a listener certificate: a PEM file with the certificate first and
    then its chain, and a PEM private key (encrypted when C{password} is set).

    @raise TlsError: naming the section, the key and the file for an
        unreadable file, a file without a PEM certificate or key, a wrong
        password, a key that does not belong to the certificate, or an expired
        certificate.
    """
    loaded, problems = checkCertificate(cert, now)
    if loaded is None:
        raise TlsError(problems)
    return loaded


def loadTrustedRoots(root: TrustedRootCertificate) -> list[x509.Certificate]:
    """
    The CA certificates of a C{trustedRootCertificate} section (one PEM file,
    one or more certificates).

    @raise TlsError: when the file cannot be read or holds no certificate.
    """
    certs, problem = _readCertificates(root.certificate)
    if problem is not None:
        raise TlsError(
            [TlsProblem(f"trustedRootCertificate:{root.name}", "certificate", problem, root.certificate)]
        )
    return certs


def loadTrustedClientCertificates(trusted: TrustedClientCertificate) -> list[x509.Certificate]:
    """
    The CA certificates of a C{trustedClientCertificate} section (one PEM
    file: a CA, or a chain of CAs up to a root).

    @raise TlsError: when the file cannot be read, holds no certificate, or
        holds no CA certificate (Azure's
        C{ApplicationGatewayTrustedClientCertificateDoesNotContainAnyCACertificate}).
    """
    section = f"trustedClientCertificate:{trusted.name}"
    certs, problem = _readCertificates(trusted.data)
    if problem is None:
        for cert in certs:
            try:
                ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                ca = False
            if not ca:
                problem = (
                    f"{cert.subject.rfc4514_string()} is not a CA certificate (basicConstraints CA:TRUE)"
                )
                break
    if problem is not None:
        raise TlsError([TlsProblem(section, "data", problem, trusted.data)])
    return certs


def certificateProblems(
    obj: SslCertificate | TrustedRootCertificate | TrustedClientCertificate,
    now: datetime.datetime | None = None,
) -> list[tuple[str, str]]:
    """
    What is wrong with one certificate section, as C{(key, message)} pairs
    for the config loader to report against that section and key.
    """
    if isinstance(obj, SslCertificate):
        _, problems = checkCertificate(obj, now)
    elif isinstance(obj, TrustedClientCertificate):
        try:
            loadTrustedClientCertificates(obj)
            problems = []
        except TlsError as e:
            problems = e.problems
    else:
        try:
            loadTrustedRoots(obj)
            problems = []
        except TlsError as e:
            problems = e.problems
    return [(p.key, p.message) for p in problems]

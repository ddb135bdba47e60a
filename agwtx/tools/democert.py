"""
A self-signed certificate for the demo HTTPS listener (C{twistd agw --demo}),
made with C{cryptography} the first time it is needed and reused after.

Clients trust it explicitly, e.g. C{curl --cacert demo-tls/demo-cert.pem
https://localhost:8443/}.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agwtx.config.model import SslCertificate
from agwtx.config.certificates import TlsError, loadCertificate

__all__ = ["CERT_FILE", "KEY_FILE", "ensureDemoCertificate", "subjectAltName"]

CERT_FILE = "demo-cert.pem"
KEY_FILE = "demo-key.pem"
VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=7)
NAMES = ("localhost", "127.0.0.1", "::1")


def subjectAltName(names: Iterable[str]) -> x509.SubjectAlternativeName:
    """IP literals as C{iPAddress} entries, anything else as C{dNSName}."""
    entries: list[x509.GeneralName] = []
    for n in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def _usable(certPath: Path, keyPath: Path, now: datetime.datetime) -> bool:
    """An existing pair that loads as a listener certificate would and is valid for another week."""

    try:
        loadCertificate(SslCertificate("demo", str(certPath), str(keyPath)), now + RENEW_BEFORE)
    except TlsError:
        return False
    return True


def _writeAtomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def ensureDemoCertificate(
    directory: str | os.PathLike[str], now: datetime.datetime | None = None
) -> tuple[str, str]:
    """
    C{(certPath, keyPath)} of a self-signed certificate for C{localhost},
    C{127.0.0.1} and C{::1} in C{directory}: the existing files when they are
    a valid pair for at least another week, else newly made ones (EC P-256,
    valid for a year; the key file is readable by its owner only).
    """
    now = now or datetime.datetime.now(datetime.timezone.utc)
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    certPath, keyPath = base / CERT_FILE, base / KEY_FILE
    if _usable(certPath, keyPath, now):
        return str(certPath), str(keyPath)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agw demo"),
            x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(subjectAltName(NAMES), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _writeAtomically(
        keyPath,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        0o600,
    )
    _writeAtomically(certPath, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return str(certPath), str(keyPath)

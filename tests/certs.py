"""
Test PKI made at test time with C{cryptography}: a root CA, an intermediate,
and leaf certificates (good, expired, wrong-name, self-signed) written as PEM
files.  EC P-256 keys keep generation fast.  With them, the TLS clients the
tests use: Python's C{ssl} (L{Pki.clientContext}, L{httpsGet}) and
C{openssl s_client} (L{sClient}).
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from agwtx.tools.democert import subjectAltName

ONE_DAY = datetime.timedelta(days=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agw tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def keyPem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def certPem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass
class Issued:
    """A leaf certificate with its key and the chain that completes it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    def write(self, directory: Path, stem: str, password: str | None = None) -> tuple[Path, Path]:
        """Write C{stem}.pem (leaf + chain) and C{stem}.key; return both paths."""
        certPath = directory / f"{stem}.pem"
        keyPath = directory / f"{stem}.key"
        certPath.write_bytes(certPem(self.cert, *self.chain))
        keyPath.write_bytes(keyPem(self.key, password))
        return certPath, keyPath


class CA:
    """A certificate authority (root, or intermediate when C{parent} is given)."""

    def __init__(self, cn: str = "agw test root CA", parent: CA | None = None) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.parent = parent
        self.cert: x509.Certificate
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(parent.cert.subject if parent else _name(cn))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - ONE_DAY)
            .not_valid_after(now + 30 * ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
        )
        signer = parent.key if parent else self.key
        if parent is not None:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
                critical=False,
            )
        self.cert = builder.sign(signer, hashes.SHA256())

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """The certificates a server sends after its leaf (intermediates, not the root)."""
        if self.parent is None:
            return ()
        return (self.cert, *self.parent.chain)

    def writeRoot(self, path: Path) -> Path:
        path.write_bytes(certPem(self.cert))
        return path

    def issue(
        self,
        names: list[str],
        cn: str | None = None,
        notBefore: datetime.datetime | None = None,
        notAfter: datetime.datetime | None = None,
        client: bool = False,
        ocspUrl: str | None = None,
    ) -> Issued:
        """
        A leaf for C{names}; C{client} makes it a TLS client certificate
        (clientAuth usage), C{ocspUrl} names its OCSP responder (AIA).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn or names[0]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore or now - ONE_DAY)
            .not_valid_after(notAfter or now + 10 * ONE_DAY)
            .add_extension(subjectAltName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if ocspUrl is not None:
            builder = builder.add_extension(
                x509.AuthorityInformationAccess(
                    [
                        x509.AccessDescription(
                            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocspUrl)
                        )
                    ]
                ),
                critical=False,
            )
        return Issued(builder.sign(self.key, hashes.SHA256()), key, self.chain)

    def issueExpired(self, names: list[str], cn: str | None = None, client: bool = False) -> Issued:
        now = _now()
        return self.issue(names, cn, notBefore=now - 10 * ONE_DAY, notAfter=now - ONE_DAY, client=client)


def selfSigned(names: list[str], cn: str | None = None) -> Issued:
    """A certificate nobody trusts: its own issuer."""
    own = CA(cn or names[0])
    return own.issue(names, cn)


class Pki:
    """
    A test module's certificates, written as PEM files in C{dir} by stem;
    clients trust C{caFile}.  Test modules subclass it with their CAs.
    """

    def __init__(self, directory: Path, caFile: Path) -> None:
        self.dir = directory
        self.caFile = caFile
        self.files: dict[str, tuple[Path, Path]] = {}
        self.issued: dict[str, Issued] = {}

    def add(self, stem: str, issued: Issued, password: str | None = None) -> tuple[Path, Path]:
        """Keep C{issued} as C{stem} and write C{stem}.pem and C{stem}.key."""
        self.issued[stem] = issued
        self.files[stem] = issued.write(self.dir, stem, password)
        return self.files[stem]

    def cert(self, stem: str) -> Path:
        return self.files[stem][0]

    def key(self, stem: str) -> Path:
        return self.files[stem][1]

    def fingerprint(self, stem: str) -> str:
        """SHA-1 of the certificate's DER, lowercase hex (nginx's C{$ssl_client_fingerprint})."""
        der = self.issued[stem].cert.public_bytes(serialization.Encoding.DER)
        return hashlib.sha1(der).hexdigest()  # noqa: S324

    def clientContext(self, stem: str | None = None, **attributes: Any) -> ssl.SSLContext:
        """
        A client context trusting C{caFile}, presenting certificate C{stem}
        when given, with C{attributes} set on it (C{maximum_version=...}).
        """
        ctx = ssl.create_default_context(cafile=str(self.caFile))
        if stem is not None:
            ctx.load_cert_chain(str(self.cert(stem)), str(self.key(stem)))
        for name, value in attributes.items():
            setattr(ctx, name, value)
        return ctx


def tlsConnect(port: int, serverName: str | None, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1:C{port} sending C{serverName} as SNI (none when None)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    try:
        return ctx.wrap_socket(raw, server_hostname=serverName)
    except BaseException:
        raw.close()
        raise


def httpsGet(
    port: int,
    ctx: ssl.SSLContext,
    path: str = "/",
    serverName: str | None = "localhost",
    host: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """
    GET C{path} over TLS to 127.0.0.1:C{port} with SNI C{serverName} and
    Host C{host} (by default the server name, else 127.0.0.1): status,
    lowercased headers and body.
    """
    conn = http.client.HTTPSConnection(host or serverName or "127.0.0.1", port, context=ctx, timeout=30)
    conn.sock = tlsConnect(port, serverName, ctx)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def sClient(port: int, *args: str, serverName: str = "localhost") -> subprocess.CompletedProcess[str]:
    """C{openssl s_client} to 127.0.0.1:C{port} with C{args}; it sends nothing and exits."""
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", serverName, *args],
        input="",
        capture_output=True,
        check=False,
        text=True,
        timeout=20,
    )

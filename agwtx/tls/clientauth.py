"""
Mutual TLS at the gateway, as Azure Application Gateway's SSL profiles do it
(C{clientAuthConfiguration}, C{trustedClientCertificates}).

How it works, and why:

  - A listener whose profile has C{trustedClientCertificates} (C{Strict})
    or C{verifyClientAuthMode = Passthrough} asks for a client certificate
    in the TLS handshake.  The handshake never fails for a missing or bad
    one: OpenSSL's verdict is recorded (L{recordVerifyError}) and the
    request is answered with HTTP 400, as Azure does ("all client
    certificate authentication failures result in an HTTP 400"), with one
    log line naming the subject, the issuer and the reason.
  - C{Strict}: the certificate must chain to one of the trusted CA files
    (OpenSSL's verification: signature, validity dates, CA constraints) and,
    with C{verifyClientCertIssuerDN}, its issuer DN must be the subject of
    the issuing CA of one of those files (the certificate in the file that
    issued no other one in it: the intermediate when a chain is uploaded,
    else the root).  With C{verifyClientRevocation = OCSP} the certificate's
    responder must also say it is good (L{agwtx.tls.ocsp}); the connection's
    requests wait for that answer.
  - C{Passthrough}: nothing is refused; the variables carry what was sent.
  - The listener whose profile the handshake used is the one SNI chose.  A
    request whose Host routes to a listener with client authentication under
    another profile is answered 421 (Misdirected Request), as nginx does,
    rather than served with a verification it did not get.

L{ClientCertificate} gives the rewrite variables their values, in the
formats of nginx's C{$ssl_client_*} (which Azure's are).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from twisted.logger import Logger

__all__ = ["ClientCertificate", "ListenerClientAuth", "clientAuthVerdict", "issuingSubjects"]

log = Logger(namespace="agw.tls")

_VERIFY_ERRORS = {
    2: "unable to get issuer certificate",
    7: "certificate signature failure",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in certificate chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    24: "invalid CA certificate",
    26: "unsupported certificate purpose",
}


def verifyErrorText(code: int) -> str:
    """OpenSSL's text for an X509_V_ERR code."""
    try:
        from cryptography.hazmat.bindings.openssl.binding import Binding

        text = Binding.lib.X509_verify_cert_error_string(code)
        return str(Binding.ffi.string(text).decode("ascii", "replace"))
    except Exception:
        return _VERIFY_ERRORS.get(code, f"verification error {code}")


def issuingSubjects(certs: list[x509.Certificate]) -> list[x509.Name]:
    """
    The subjects a client certificate's issuer must match under
    C{verifyClientCertIssuerDN}: per file, the CA certificates that issued
    no other certificate of the file.
    """
    issuers = {c.issuer.public_bytes() for c in certs if c.issuer != c.subject}
    return [c.subject for c in certs if c.subject.public_bytes() not in issuers]


@dataclass(frozen=True)
class ListenerClientAuth:
    """A listener's client authentication as the TLS side built it."""

    listener: str
    profile: str | None
    mode: str
    """C{Off}, C{Strict} or C{Passthrough}."""
    issuerSubjects: tuple[bytes, ...] | None = None
    """DER subjects the issuer must be one of (C{verifyClientCertIssuerDN}), else None."""
    ocsp: bool = False
    """C{verifyClientRevocation = OCSP}."""


def _dn(name: x509.Name) -> str:
    return name.rfc4514_string()


def _date(when: Any) -> str:
    return f"{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"


@dataclass(frozen=True)
class ClientCertificate:
    """What one TLS connection's client sent and what verification said."""

    cert: x509.Certificate | None
    verification: str
    """C{SUCCESS}, C{FAILED:reason} or C{NONE} (no certificate sent)."""

    @property
    def pem(self) -> str:
        """The certificate as PEM, URL-encoded (as Azure and nginx's C{$ssl_client_escaped_cert} send it)."""
        if self.cert is None:
            return ""
        return quote(self.cert.public_bytes(serialization.Encoding.PEM).decode("ascii"), safe="")

    @property
    def fingerprint(self) -> str:
        """SHA-1 of the DER certificate, lowercase hex, as Azure documents."""
        if self.cert is None:
            return ""
        der = self.cert.public_bytes(serialization.Encoding.DER)
        return hashlib.sha1(der).hexdigest()  # noqa: S324 - Azure's (and nginx's) fingerprint is SHA-1

    @property
    def serial(self) -> str:
        if self.cert is None:
            return ""
        text = f"{self.cert.serial_number:X}"
        return "0" + text if len(text) % 2 else text

    @property
    def subject(self) -> str:
        return _dn(self.cert.subject) if self.cert is not None else ""

    @property
    def issuer(self) -> str:
        return _dn(self.cert.issuer) if self.cert is not None else ""

    @property
    def startDate(self) -> str:
        return _date(self.cert.not_valid_before_utc) if self.cert is not None else ""

    @property
    def endDate(self) -> str:
        return _date(self.cert.not_valid_after_utc) if self.cert is not None else ""


NONE = ClientCertificate(None, "NONE")


def connectionCertificate(
    peer: Any,
    verifyError: tuple[int, int] | None,
    auth: ListenerClientAuth | None,
    revocation: str | None = None,
) -> ClientCertificate:
    """
    The L{ClientCertificate} of a connection: C{peer} is pyOpenSSL's peer
    certificate (or None), C{verifyError} the first (code, depth) OpenSSL
    reported, C{auth} the handshake listener's client authentication,
    C{revocation} why OCSP refused the certificate (None when it did not).
    """
    if peer is None:
        return NONE
    cert = peer.to_cryptography() if hasattr(peer, "to_cryptography") else peer
    if verifyError is not None:
        code, depth = verifyError
        reason = verifyErrorText(code)
        return ClientCertificate(cert, f"FAILED:{reason}")
    if auth is not None and auth.issuerSubjects is not None:
        if cert.issuer.public_bytes() not in auth.issuerSubjects:
            return ClientCertificate(cert, "FAILED:issuer DN does not match a trusted client CA's subject")
    if revocation is not None:
        return ClientCertificate(cert, f"FAILED:{revocation}")
    return ClientCertificate(cert, "SUCCESS")


def clientAuthVerdict(
    routed: ListenerClientAuth | None,
    handshake: ListenerClientAuth | None,
    client: ClientCertificate,
    port: str,
) -> tuple[int, str] | None:
    """
    None when a request routed to listener C{routed} may go on, else the
    (status, message) to answer with; every refusal is logged.
    """
    if routed is None or routed.mode == "Off":
        return None
    if handshake is None or handshake.profile != routed.profile:
        log.info(
            "frontendPort {port}: request for listener {listener} on a TLS connection made for "
            "listener {other} (another sslProfile): 421",
            port=port,
            listener=routed.listener,
            other=handshake.listener if handshake else "-",
        )
        return 421, (
            "Misdirected Request: this connection was not set up with this listener's client "
            "authentication; use its host name as the TLS server name"
        )
    if routed.mode != "Strict" or client.verification == "SUCCESS":
        return None
    if client.cert is None:
        reason = "no certificate sent"
        message = "Bad Request: No required SSL certificate was sent"
    else:
        reason = client.verification.partition(":")[2]
        message = "Bad Request: The SSL certificate error"
    log.info(
        "client certificate refused on listener {listener} (sslProfile {profile}): subject {subject!r} "
        "issuer {issuer!r}: {reason}",
        listener=routed.listener,
        profile=routed.profile,
        subject=client.subject or "-",
        issuer=client.issuer or "-",
        reason=reason,
    )
    return 400, message

"""
The OCSP checker's pure parts: what a response proves (signer, certificate,
dates, status), the bounded cache and the timeout, on a fake clock.  The
real responder (openssl ocsp) is used in tests/test_tlsprofiles.py.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock

from agwtx.tls.ocsp import OcspChecker, judge, responderUrl
from tests.certs import CA

NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
HOUR = datetime.timedelta(hours=1)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("agw OCSP test CA")


def delegate(ca: CA, signing: bool) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "responder")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - HOUR)
        .not_valid_after(NOW + HOUR)
    )
    if signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False
        )
    return builder.sign(ca.key, hashes.SHA256()), key


def respond(
    ca: CA,
    cert: x509.Certificate,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    signer: tuple[x509.Certificate, Any] | None = None,
    nextUpdate: datetime.datetime | None = NOW + HOUR,
) -> bytes:
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=cert,
        issuer=ca.cert,
        algorithm=hashes.SHA1(),  # noqa: S303 - the CertID hash OCSP uses
        cert_status=status,
        this_update=NOW - HOUR,
        next_update=nextUpdate,
        revocation_time=NOW - HOUR if status == ocsp.OCSPCertStatus.REVOKED else None,
        revocation_reason=None,
    )
    responderCert, key = signer or (ca.cert, ca.key)
    builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, responderCert)
    if signer is not None:
        builder = builder.certificates([responderCert])
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def request(ca: CA, cert: x509.Certificate) -> ocsp.OCSPRequest:
    return ocsp.OCSPRequestBuilder().add_certificate(cert, ca.cert, hashes.SHA1()).build()  # noqa: S303


def test_judge(ca: CA) -> None:
    cert = ca.issue(["device"], client=True).cert
    other = ca.issue(["other"], client=True).cert
    req = request(ca, cert)
    assert judge(respond(ca, cert), req, ca.cert, NOW) == (None, NOW + HOUR)
    assert judge(respond(ca, cert, ocsp.OCSPCertStatus.REVOKED), req, ca.cert, NOW)[0] == (
        "certificate revoked (OCSP)"
    )
    assert judge(respond(ca, cert, ocsp.OCSPCertStatus.UNKNOWN), req, ca.cert, NOW)[0] == (
        "certificate status unknown to the OCSP responder"
    )
    assert judge(respond(ca, other), req, ca.cert, NOW)[0] == "the OCSP response is about another certificate"
    assert judge(respond(ca, cert, nextUpdate=NOW - HOUR), req, ca.cert, NOW)[0] == (
        "the OCSP response is out of date"
    )
    assert judge(b"junk", req, ca.cert, NOW)[0] == "the OCSP response cannot be parsed"
    # Signed by a responder the issuer delegated to (OCSPSigning): accepted; without the usage,
    # or by someone else entirely: refused.
    assert judge(respond(ca, cert, signer=delegate(ca, True)), req, ca.cert, NOW)[0] is None
    notSigning = "the OCSP response is not signed by the issuer or its delegated responder"
    assert judge(respond(ca, cert, signer=delegate(ca, False)), req, ca.cert, NOW)[0] == notSigning
    stranger = CA("someone else")
    assert judge(respond(ca, cert, signer=(stranger.cert, stranger.key)), req, ca.cert, NOW)[0] == notSigning


def test_responder_url(ca: CA) -> None:
    assert responderUrl(ca.issue(["a"], ocspUrl="http://127.0.0.1:9/ocsp").cert) == "http://127.0.0.1:9/ocsp"
    assert responderUrl(ca.issue(["a"], ocspUrl="ldap://x/").cert) is None
    assert responderUrl(ca.issue(["a"]).cert) is None


class _Counting(OcspChecker):
    def __init__(self, reactor: Any, **kwargs: Any) -> None:
        super().__init__(reactor, **kwargs)
        self.asked: list[int] = []

    def _ask(self, cert: x509.Certificate, issuer: x509.Certificate) -> Any:
        self.asked.append(cert.serial_number)
        return succeed((None, None, True))


def test_cache_is_bounded_and_expires(ca: CA) -> None:
    clock = MemoryReactorClock()
    checker = _Counting(clock, cacheSize=2, maxAge=60.0)
    a, b, c = (ca.issue([name], client=True).cert for name in "abc")
    results: list[Any] = []
    for cert in (a, b, c, c, a):
        checker.check(cert, ca.cert).addCallback(results.append)
    assert results == [None] * 5
    # c was answered from the cache; a had been pushed out by c (two entries at most).
    assert checker.asked == [a.serial_number, b.serial_number, c.serial_number, a.serial_number]
    assert len(checker.cache) == 2
    clock.advance(61)
    checker.check(c, ca.cert)
    assert checker.asked[-1] == c.serial_number and len(checker.asked) == 5


def test_unanswered_request_times_out(ca: CA) -> None:
    clock = MemoryReactorClock()
    checker = OcspChecker(clock, timeout=5.0)
    cert = ca.issue(["device"], client=True, ocspUrl="http://127.0.0.1:9/").cert
    results: list[Any] = []
    checker.check(cert, ca.cert).addCallback(results.append)
    checker.check(cert, ca.cert).addCallback(results.append)  # shares the request in flight
    assert len(clock.tcpClients) == 1 and clock.tcpClients[0][:2] == ("127.0.0.1", 9)
    clock.advance(4.9)
    assert results == []
    clock.advance(0.2)
    assert results == ["the OCSP responder http://127.0.0.1:9/ did not answer"] * 2
    assert checker.cache == {}  # failures are not kept

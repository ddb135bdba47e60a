"""
Client certificate revocation by OCSP (C{verifyClientRevocation = OCSP}).

The responder is the one the certificate names (its Authority Information
Access extension, an C{http://} URL); the request is an RFC 6960 POST.  A
response counts only when it is signed by the certificate's issuer or by a
responder certificate that issuer delegated (C{OCSPSigning} usage), names
the same certificate, and is current (C{thisUpdate} not in the future,
C{nextUpdate} not past, a few minutes of clock skew allowed).

Anything short of a C{good} answer refuses the certificate (fail closed):
revoked, unknown, no responder in the certificate, an unreachable responder
or one that does not answer within L{OcspChecker.timeout}.  Answers are
kept in a bounded cache (least recently used out first) until their
C{nextUpdate}, at most L{OcspChecker.maxAge}; failures are not kept.  One
request at a time per certificate: concurrent checks of the same one share
it.
"""

from __future__ import annotations

import datetime
from collections import OrderedDict
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

__all__ = ["OcspChecker", "responderUrl"]

log = Logger(namespace="agw.tls")

MAX_RESPONSE = 64 * 1024
"""Bytes of an OCSP response read at most (real ones are a few KiB)."""
SKEW = datetime.timedelta(minutes=5)


def responderUrl(cert: x509.Certificate) -> str | None:
    """The first C{http://} OCSP responder of the certificate's AIA extension."""
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return None
    for description in aia:
        if description.access_method == AuthorityInformationAccessOID.OCSP:
            location = description.access_location
            if isinstance(location, x509.UniformResourceIdentifier) and location.value.lower().startswith(
                "http://"
            ):
                return str(location.value)
    return None


@implementer(IBodyProducer)
class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Collect(Protocol):
    """The response body, up to L{MAX_RESPONSE} bytes."""

    def __init__(self, done: Deferred[bytes]) -> None:
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > MAX_RESPONSE:
            self.transport.stopProducing()  # type: ignore[union-attr]
            if not self.done.called:
                self.done.errback(ValueError(f"the response is over {MAX_RESPONSE} bytes"))
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def _verify(key: Any, signature: bytes, data: bytes, algorithm: Any) -> bool:
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _signedBy(response: ocsp.OCSPResponse, issuer: x509.Certificate) -> bool:
    """Signed by the issuer, or by a responder certificate the issuer delegated to."""
    algorithm = response.signature_hash_algorithm
    signers = [issuer]
    for delegate in response.certificates:
        try:
            delegate.verify_directly_issued_by(issuer)
            usage = delegate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
            continue
        if ExtendedKeyUsageOID.OCSP_SIGNING in usage:
            signers.append(delegate)
    return any(
        _verify(s.public_key(), response.signature, response.tbs_response_bytes, algorithm) for s in signers
    )


def judge(
    der: bytes,
    request: ocsp.OCSPRequest,
    issuer: x509.Certificate,
    now: datetime.datetime,
) -> tuple[str | None, datetime.datetime | None]:
    """
    (None, nextUpdate) for a good answer, else (reason, nextUpdate or None):
    what an OCSP response says about the certificate of C{request}.
    """
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError:
        return "the OCSP response cannot be parsed", None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"the OCSP responder answered {response.response_status.name}", None
    if (
        response.serial_number != request.serial_number
        or response.issuer_key_hash != request.issuer_key_hash
        or response.issuer_name_hash != request.issuer_name_hash
    ):
        return "the OCSP response is about another certificate", None
    if not _signedBy(response, issuer):
        return "the OCSP response is not signed by the issuer or its delegated responder", None
    thisUpdate, nextUpdate = response.this_update_utc, response.next_update_utc
    if thisUpdate is not None and thisUpdate > now + SKEW:
        return "the OCSP response is not yet valid", None
    if nextUpdate is not None and nextUpdate < now - SKEW:
        return "the OCSP response is out of date", None
    status = response.certificate_status
    if status == ocsp.OCSPCertStatus.GOOD:
        return None, nextUpdate
    if status == ocsp.OCSPCertStatus.REVOKED:
        return "certificate revoked (OCSP)", nextUpdate
    return "certificate status unknown to the OCSP responder", nextUpdate


class OcspChecker:
    """
    Checks client certificates with their OCSP responders, on C{reactor}
    (its clock for the cache and the timeout, its TCP for the requests).
    """

    def __init__(
        self, reactor: Any, timeout: float = 5.0, cacheSize: int = 10000, maxAge: float = 3600.0
    ) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.cacheSize = cacheSize
        self.maxAge = maxAge
        self.cache: OrderedDict[tuple[bytes, int], tuple[str | None, float]] = OrderedDict()
        self.pending: dict[tuple[bytes, int], list[Deferred[str | None]]] = {}
        self.agent = Agent(reactor, connectTimeout=timeout)

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.reactor.seconds(), datetime.timezone.utc)

    def check(self, cert: x509.Certificate, issuer: x509.Certificate) -> Deferred[str | None]:
        """
        Fires with None when the responder says the certificate is good, else
        with the reason to refuse it; never fails.
        """
        key = (
            issuer.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            cert.serial_number,
        )
        cached = self.cache.get(key)
        if cached is not None:
            if cached[1] > self.reactor.seconds():
                self.cache.move_to_end(key)
                return succeed(cached[0])
            del self.cache[key]
        waiting: Deferred[str | None] = Deferred()
        if key in self.pending:
            self.pending[key].append(waiting)
            return waiting
        self.pending[key] = [waiting]
        self._ask(cert, issuer).addCallback(self._answered, key)
        return waiting

    def _answered(self, result: tuple[str | None, datetime.datetime | None, bool], key: Any) -> None:
        reason, nextUpdate, keep = result
        if keep:
            until = self.reactor.seconds() + self.maxAge
            if nextUpdate is not None:
                until = min(until, nextUpdate.timestamp())
            self.cache[key] = (reason, until)
            self.cache.move_to_end(key)
            while len(self.cache) > self.cacheSize:
                self.cache.popitem(last=False)
        for waiting in self.pending.pop(key, []):
            waiting.callback(reason)

    def _ask(
        self, cert: x509.Certificate, issuer: x509.Certificate
    ) -> Deferred[tuple[str | None, datetime.datetime | None, bool]]:
        url = responderUrl(cert)
        if url is None:
            return succeed(("the certificate names no http:// OCSP responder", None, False))
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()  # noqa: S303
        body = request.public_bytes(serialization.Encoding.DER)
        d = self.agent.request(
            b"POST",
            url.encode("ascii"),
            Headers({b"content-type": [b"application/ocsp-request"]}),
            _Body(body),
        )

        def read(response: Any) -> Deferred[bytes]:
            if response.code != 200:
                response.deliverBody(Protocol())
                raise ValueError(f"HTTP {response.code}")
            done: Deferred[bytes] = Deferred()
            response.deliverBody(_Collect(done))
            return done

        def judged(der: bytes) -> tuple[str | None, datetime.datetime | None, bool]:
            reason, nextUpdate = judge(der, request, issuer, self._now())
            return reason, nextUpdate, nextUpdate is not None or reason is None or "revoked" in reason

        def failed(reason: Failure) -> tuple[str | None, datetime.datetime | None, bool]:
            log.info(
                "OCSP responder {url} for {subject!r}: {problem}",
                url=url,
                subject=cert.subject.rfc4514_string(),
                problem=reason.getErrorMessage() or reason.type.__name__,
            )
            return f"the OCSP responder {url} did not answer", None, False

        d.addCallback(read)
        d.addTimeout(self.timeout, self.reactor)
        d.addCallback(judged)
        d.addErrback(failed)
        return d

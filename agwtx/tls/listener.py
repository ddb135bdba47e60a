"""
TLS on both legs: HTTPS listeners (certificates chosen by SNI) and
end-to-end TLS to backends (C{backendHttpSettings.protocol = Https}).

Everything here is built from a L{GatewayConfig} by pure functions that
return new objects (L{buildServerTls}, L{GatewayTls}), so a reload builds a
fresh set and swaps it in (L{TlsServerFactory.serverTls}); connections in
flight keep the contexts they started with.

Frontend (server) policy
========================

  - Protocol versions and cipher suites: the listener's SSL policy (its
    C{sslProfile}'s, else C{[gateway]}'s), with Azure's names and meaning
    (L{agwtx.config.sslpolicy}); the default is Azure's, C{AppGwSslPolicy20220101}.
  - Client certificates (mutual TLS) per the listener's C{sslProfile}
    (L{agwtx.tls.clientauth}).
  - L{ServerTls._serverNameReceived} is the one place that decides a
    connection's context: SNI picks the listener, the connection moves to
    that listener's context (certificate, policy, client authentication),
    and a protocol version outside that listener's policy is refused there.
  - Session resumption: a server-side session cache and session tickets,
    except on ports where a listener asks for client certificates (OpenSSL
    decides on resumption before SNI picks the listener, and a resumed
    session is not verified again).  No renegotiation.
  - ALPN: C{http/1.1} only (a client offering only C{h2} gets no ALPN answer
    rather than an alert).
  - The certificate is chosen by SNI among the port's listeners, as routing
    chooses the listener: an exact host name first, then wildcard patterns
    (L{agwtx.routing.router.hostMatcher}), then the basic listener (no host names).
    Without SNI, or for a name no listener serves, the basic listener's
    certificate is used; when the port has no basic listener the handshake
    is refused (a C{handshake_failure} alert and one log line).

Backend (client) policy
=======================

  - SNI and the name verified: C{hostName} of the settings when set, else
    the member's host.  For an IP literal no SNI is sent and the certificate
    must name the IP address (an C{iPAddress} subjectAltName): Twisted's
    L{optionsForClientTLS} verifies IP addresses with C{service_identity}'s
    C{IPAddress_ID}.
  - Trust: the platform's store unless C{trustedRootCertificates} are named;
    then only those roots.  C{verifyCertificate = false} turns verification
    off (a warning is logged once per settings when the connector is built).
  - A connector (L{BackendTls.connect}) hands the caller's factory a
    connected protocol only once the handshake has completed and the
    certificate has been verified; a handshake that fails (or takes longer
    than the connect timeout) reaches the factory's C{clientConnectionFailed}
    with a L{TlsHandshakeError}.  So the proxy, the WebSocket bridge and the
    health prober see an unverifiable backend exactly as one that refuses
    connections: a connect failure (the proxy answers 502).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import ConnectError, ConnectionClosed
from twisted.internet.interfaces import (
    IConnector,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.internet.protocol import ClientFactory, Protocol, connectionDone
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from agwtx.tls.clientauth import (
    NONE,
    ClientCertificate,
    ListenerClientAuth,
    clientAuthVerdict,
    connectionCertificate,
    issuingSubjects,
)
from agwtx.config.model import (
    BackendHttpSettings,
    GatewayConfig,
    HttpListener,
    SslCertificate,
    SslPolicy,
    SslProfile,
    TrustedClientCertificate,
    TrustedRootCertificate,
)
from agwtx.config.sslpolicy import TLS13_SUITES, ResolvedPolicy, applyPolicy, resolvePolicy, versionName
from agwtx.tls.ocsp import OcspChecker
from agwtx.routing.router import hostMatcher
from agwtx.http.site import PLAIN_HTTP_ON_HTTPS, sendRefusal

__all__ = [
    "BackendTls",
    "GatewayTls",
    "HttpsServerProtocol",
    "LoadedCertificate",
    "ServerTls",
    "TlsError",
    "TlsHandshakeError",
    "TlsProblem",
    "TlsServerFactory",
    "buildServerTls",
    "certificateProblems",
    "describeTlsFailure",
    "loadCertificate",
    "loadTrustedRoots",
    "selectCertificate",
]

log = Logger(namespace="agw.tls")

HTTP11 = b"http/1.1"


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


class TlsHandshakeError(ConnectError):
    """The TCP connection to a backend was made but TLS could not be set up."""

    def __str__(self) -> str:
        return str(self.args[0])


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


def _spki(publicKey: Any) -> bytes:
    return bytes(
        publicKey.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _checkCertificate(
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
    if _spki(leaf.public_key()) != _spki(key.public_key()):
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
    loaded, problems = _checkCertificate(cert, now)
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
        _, problems = _checkCertificate(obj, now)
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


# -- HTTPS listeners -------------------------------------------------------------


def _isWildcard(pattern: str) -> bool:
    return "*" in pattern or "?" in pattern


def _serverName(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    text = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
    return text.strip().lower().rstrip(".")


class _ListenerSelector:
    """Which listener serves a server name: exact, wildcard, basic."""

    def __init__(self, listeners: Iterable[HttpListener]) -> None:
        self.exact: list[tuple[Callable[[str], bool], HttpListener]] = []
        self.wild: list[tuple[Callable[[str], bool], HttpListener]] = []
        self.basic: HttpListener | None = None
        for listener in listeners:
            if not listener.hostNames:
                if self.basic is None:
                    self.basic = listener
                continue
            exact = [h for h in listener.hostNames if not _isWildcard(h)]
            wild = [h for h in listener.hostNames if _isWildcard(h)]
            if exact:
                self.exact.append((hostMatcher(exact), listener))
            if wild:
                self.wild.append((hostMatcher(wild), listener))

    def __call__(self, serverName: bytes | str | None) -> HttpListener | None:
        name = _serverName(serverName)
        if name:
            for group in (self.exact, self.wild):
                for match, listener in group:
                    if match(name):
                        return listener
        return self.basic


def selectCertificate(listeners: Sequence[HttpListener], serverName: bytes | str | None) -> str | None:
    """
    The name of the C{sslCertificate} that answers C{serverName} (the SNI
    value, or None) among one port's listeners; None when none does.
    """
    listener = _ListenerSelector(listeners)(serverName)
    return listener.sslCertificate if listener is not None else None


def _selectHttp11(conn: SSL.Connection, offered: list[bytes]) -> bytes:
    return HTTP11 if HTTP11 in offered else SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]


def _serverContext(
    loaded: LoadedCertificate | None,
    sessionId: bytes,
    policy: ResolvedPolicy,
    clientCAs: Sequence[x509.Certificate] = (),
    serverNameCallback: Callable[[SSL.Connection], None] | None = None,
    resumable: bool = True,
) -> SSL.Context:
    """One OpenSSL context: a listener's certificate, policy and trusted client CAs."""
    # Made here rather than by Twisted's CertificateOptions: its TLS 1.2 floor
    # is OP_NO_* flags that set_min_proto_version cannot lift, and Twisted
    # 25.5 makes a Connection from the context before we are done with it.
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_options(
        SSL.OP_NO_SSLv2
        | SSL.OP_NO_SSLv3
        | SSL.OP_NO_COMPRESSION
        | SSL.OP_CIPHER_SERVER_PREFERENCE
        | SSL.OP_SINGLE_DH_USE
        | SSL.OP_SINGLE_ECDH_USE
        # A client certificate is asked for once, in the first handshake; a
        # renegotiation must not bring another one after it was judged.
        | SSL.OP_NO_RENEGOTIATION
    )
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if resumable:
        ctx.set_session_cache_mode(SSL.SESS_CACHE_SERVER)  # and tickets: OP_NO_TICKET is not set
    else:
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        ctx.set_options(SSL.OP_NO_TICKET)
    if loaded is not None:
        _useCertificate(ctx, loaded)
    if clientCAs:
        store = ctx.get_cert_store()
        assert store is not None
        for ca in clientCAs:
            store.add_cert(X509.from_cryptography(ca))
        ctx.set_client_ca_list([X509.from_cryptography(ca).get_subject() for ca in clientCAs])
    # One session id context for every certificate of a port, so that a
    # session resumes whichever context SNI switched to.
    ctx.set_session_id(sessionId)
    ctx.set_alpn_select_callback(_selectHttp11)
    if serverNameCallback is not None:
        ctx.set_tlsext_servername_callback(serverNameCallback)
    # Last: pyOpenSSL's set_cipher_list makes a Connection from the context,
    # after which changing it is deprecated.
    applyPolicy(ctx, policy)
    return ctx


def _useCertificate(ctx: SSL.Context, loaded: LoadedCertificate) -> None:
    """Install the leaf, its chain and its key (cryptography objects where pyOpenSSL takes them)."""
    try:
        ctx.use_certificate(loaded.leaf)
        ctx.use_privatekey(loaded.key)  # type: ignore[arg-type]
        for extra in loaded.chain:
            ctx.add_extra_chain_cert(extra)
    except TypeError:  # pyOpenSSL before 24.3 takes only its own types
        ctx.use_certificate(X509.from_cryptography(loaded.leaf))
        ctx.use_privatekey(PKey.from_cryptography_key(loaded.key))  # type: ignore[arg-type]
        for extra in loaded.chain:
            ctx.add_extra_chain_cert(X509.from_cryptography(extra))
    ctx.check_privatekey()


@dataclass(frozen=True)
class _ListenerTls:
    """One HTTPS listener's TLS: its context, policy and client authentication."""

    listener: HttpListener
    ctx: SSL.Context
    policy: ResolvedPolicy
    auth: ListenerClientAuth


def _recordVerifyError(conn: SSL.Connection, cert: Any, errno: int, depth: int, ok: int) -> bool:
    """
    OpenSSL's verdict on a client certificate, kept for the HTTP layer (a
    refusal is an HTTP 400, as in Azure): the handshake goes on whatever it is.
    """
    if not ok:
        protocol = conn.get_app_data()
        if getattr(protocol, "agwVerifyError", None) is None:
            protocol.agwVerifyError = (errno, depth)
    return True


@implementer(IOpenSSLServerConnectionCreator)
class ServerTls:
    """
    The TLS side of one HTTPS frontend port: a context per listener
    (certificate, policy, client authentication) and the SNI rule that picks
    one.  Immutable once built.
    """

    def __init__(
        self,
        port: str,
        listeners: Sequence[HttpListener],
        certificates: Mapping[str, LoadedCertificate],
        policies: Mapping[str, SslPolicy] | None = None,
        profiles: Mapping[str, SslProfile] | None = None,
        clientCAs: Mapping[str, Sequence[x509.Certificate]] | None = None,
        revocation: Any = None,
    ) -> None:
        self.port = port
        self.revocation = revocation
        """The L{agwtx.tls.ocsp.OcspChecker} of profiles with C{verifyClientRevocation = OCSP}."""
        self.listeners = tuple(listeners)
        self.select = _ListenerSelector(self.listeners)
        sessionId = hashlib.sha256(f"agw:{port}".encode()).hexdigest()[:32].encode("ascii")
        profiles = profiles or {}
        clientCAs = clientCAs or {}
        self.byListener: dict[str, _ListenerTls] = {}
        shared: dict[tuple[str | None, str | None], _ListenerTls] = {}
        for listener in self.listeners:
            key = (listener.sslCertificate, listener.sslProfile)
            built = shared.get(key)
            if built is None:
                profile = profiles.get(listener.sslProfile) if listener.sslProfile else None
                policy = resolvePolicy((policies or {}).get(listener.name) or SslPolicy())
                cas: list[x509.Certificate] = []
                issuers: tuple[bytes, ...] | None = None
                mode = "Off"
                if profile is not None and profile.requestsClientCertificate:
                    mode = profile.verifyClientAuthMode
                    if profile.verifiesClientCertificate:
                        subjects: list[bytes] = []
                        for name in profile.trustedClientCertificates:
                            cas.extend(clientCAs[name])
                            subjects.extend(n.public_bytes() for n in issuingSubjects(list(clientCAs[name])))
                        if profile.verifyClientCertIssuerDN:
                            issuers = tuple(subjects)
                loaded = certificates[listener.sslCertificate] if listener.sslCertificate else None
                ctx = _serverContext(loaded, sessionId, policy, cas)
                auth = ListenerClientAuth(
                    listener.name,
                    listener.sslProfile,
                    mode,
                    issuers,
                    ocsp=mode == "Strict"
                    and profile is not None
                    and profile.verifyClientRevocation == "OCSP",
                )
                built = shared[key] = _ListenerTls(listener, ctx, policy, auth)
            self.byListener[listener.name] = _ListenerTls(
                listener, built.ctx, built.policy, replace(built.auth, listener=listener.name)
            )
        entries = list(self.byListener.values())
        low = min((e.policy.minVersion for e in entries), default=SSL.TLS1_2_VERSION)
        high = max((e.policy.maxVersion for e in entries), default=SSL.TLS1_3_VERSION)
        # The context a connection starts in has no certificate: the SNI
        # callback moves it to a listener's, or the handshake fails with an
        # alert.  Its version range spans the port's listeners, because
        # OpenSSL settles the version before that callback runs.
        # TLS 1.3 suites are Azure's fixed pair everywhere; OpenSSL takes them
        # from the first context, not from the one SNI moves to.
        base = ResolvedPolicy(
            low,
            high,
            (),
            # Never anonymous suites: without a certificate the handshake must fail.
            "ALL:!aNULL:!eNULL:!PSK:!SRP" + (":@SECLEVEL=0" if low < SSL.TLS1_2_VERSION else ""),
            ":".join(TLS13_SUITES) if high >= SSL.TLS1_3_VERSION else "",
        )
        # OpenSSL decides on resumption before the SNI callback, with this
        # context's cache and tickets, and a resumed session is not verified
        # again: on a port with client authentication, sessions do not resume
        # (a session made on one listener, or with a refused certificate,
        # must not stand in for a verification on another connection).
        resumable = all(e.auth.mode == "Off" for e in entries)
        self.default = _serverContext(
            None, sessionId, base, serverNameCallback=self._serverNameReceived, resumable=resumable
        )

    @property
    def contexts(self) -> dict[str, SSL.Context]:
        """The context of each certificate name (the first listener's using it)."""
        out: dict[str, SSL.Context] = {}
        for entry in self.byListener.values():
            if entry.listener.sslCertificate is not None:
                out.setdefault(entry.listener.sslCertificate, entry.ctx)
        return out

    def _serverNameReceived(self, conn: SSL.Connection) -> None:
        try:
            raw = conn.get_servername()
            listener = self.select(raw)
            if listener is None:
                log.info(
                    "frontendPort {port}: no certificate for server name {name}; TLS handshake refused",
                    port=self.port,
                    name=_serverName(raw) or "(none sent)",
                )
                return
            entry = self.byListener[listener.name]
            version = conn.get_protocol_version()
            policy = entry.policy
            if not policy.minVersion <= version <= policy.maxVersion:
                log.info(
                    "frontendPort {port}: listener {listener} does not accept {version} (its SSL policy "
                    "allows {low} to {high}); TLS handshake refused",
                    port=self.port,
                    listener=listener.name,
                    version=versionName(version),
                    low=versionName(policy.minVersion),
                    high=versionName(policy.maxVersion),
                )
                return
            conn.set_context(entry.ctx)
            protocol = conn.get_app_data()
            protocol.agwListenerTls = entry
            if entry.auth.mode != "Off":
                conn.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_CLIENT_ONCE, _recordVerifyError)
        except BaseException:
            # An exception must not escape into OpenSSL's callback machinery.
            log.failure("choosing a certificate by SNI on frontendPort {port}", port=self.port)
            conn.get_app_data().abortConnection()

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        tlsProtocol.agwServerTls = self  # type: ignore[attr-defined]
        conn = SSL.Connection(self.default, None)
        # The callbacks find the protocol here; Twisted 26 sets it too, 25.5 does not.
        conn.set_app_data(tlsProtocol)
        return conn


def buildServerTls(
    config: GatewayConfig, now: datetime.datetime | None = None, revocation: Any = None
) -> dict[str, ServerTls]:
    """
    A L{ServerTls} per frontend port whose listeners are C{Https}, with every
    certificate loaded and checked.  A pure function of the config (and the
    time, for expiry): a reload calls it again and swaps the results in.

    @raise TlsError: listing every certificate that cannot be used.
    """
    byPort: dict[str, list[HttpListener]] = {}
    policies: dict[str, SslPolicy] = {}
    for listener in config.httpListeners.values():
        if listener.protocol == "Https":
            byPort.setdefault(listener.frontendPort, []).append(listener)
            profile = config.sslProfiles.get(listener.sslProfile) if listener.sslProfile else None
            policies[listener.name] = (
                profile.sslPolicy if profile and profile.sslPolicy else config.gateway.sslPolicy
            )
    wanted = {li.sslCertificate for ls in byPort.values() for li in ls if li.sslCertificate}
    loaded: dict[str, LoadedCertificate] = {}
    problems: list[TlsProblem] = []
    for name in sorted(wanted):
        cert, found = _checkCertificate(config.sslCertificates[name], now)
        if cert is None:
            problems.extend(found)
        else:
            loaded[name] = cert
    clientCAs: dict[str, list[x509.Certificate]] = {}
    for name, trusted in config.trustedClientCertificates.items():
        try:
            clientCAs[name] = loadTrustedClientCertificates(trusted)
        except TlsError as e:
            problems.extend(e.problems)
    if problems:
        raise TlsError(problems)
    return {
        port: ServerTls(port, listeners, loaded, policies, config.sslProfiles, clientCAs, revocation)
        for port, listeners in byPort.items()
    }


class HttpsServerProtocol(TLSMemoryBIOFactory.protocol):  # type: ignore[misc, name-defined]
    """
    TLS for an HTTPS listener that answers a plain HTTP request sent to it
    with a readable 400, as nginx does, instead of a TLS failure the client
    reports as an empty reply.  Only the first read is looked at: a TLS
    record starts with 0x16 (0x80 and up for an SSLv2-style hello), an HTTP
    request with a method in capitals.  Later reads go straight to TLS.
    """

    agwServerTls: ServerTls | None = None
    agwListenerTls: _ListenerTls | None = None
    """The listener SNI chose, whose context the handshake used."""
    agwVerifyError: tuple[int, int] | None = None
    agwRevocation: str | None = None
    """Why OCSP refused the client certificate; None when it did not (or was not asked)."""
    _agwClientCertificate: ClientCertificate | None = None
    _agwRevocationAsked = False

    def revocationCheck(self) -> Any:
        """
        A Deferred that fires once the client certificate's OCSP check is
        done, the first time it is called on a connection whose listener
        wants one; else None.  The HTTP channel holds the connection's
        requests until then.
        """
        if self._agwRevocationAsked:
            return None
        self._agwRevocationAsked = True
        entry, serverTls = self.agwListenerTls, self.agwServerTls
        if entry is None or not entry.auth.ocsp or serverTls is None or serverTls.revocation is None:
            return None
        if self.agwVerifyError is not None:
            return None  # refused already
        chain = self._tlsConnection.get_verified_chain()
        if not chain or len(chain) < 2:
            return None  # no certificate, or one that is its own trust anchor
        cert, issuer = chain[0].to_cryptography(), chain[1].to_cryptography()

        def checked(reason: str | None) -> None:
            self.agwRevocation = reason

        return serverTls.revocation.check(cert, issuer).addCallback(checked)

    def clientCertificate(self) -> ClientCertificate:
        """What the client sent and what verification said (computed once per connection)."""
        found = self._agwClientCertificate
        if found is None:
            entry = self.agwListenerTls
            if entry is None or entry.auth.mode == "Off":
                found = NONE
            else:
                found = connectionCertificate(
                    self.getPeerCertificate(), self.agwVerifyError, entry.auth, self.agwRevocation
                )
            self._agwClientCertificate = found
        return found

    def clientAuthRefusal(self, listener: str) -> tuple[int, str] | None:
        """
        None when a request routed to C{listener} may go on over this
        connection, else the (status, message) to answer (logged).
        """
        serverTls = self.agwServerTls
        routed = serverTls.byListener.get(listener) if serverTls is not None else None
        if routed is None or routed.auth.mode == "Off":
            return None
        handshake = self.agwListenerTls
        return clientAuthVerdict(
            routed.auth, handshake.auth if handshake else None, self.clientCertificate(), serverTls.port
        )

    def dataReceived(self, data: bytes) -> None:
        tls = super().dataReceived
        self.dataReceived = tls  # type: ignore[method-assign]
        if data[:1].isupper():
            self._plainHttp()
            return
        tls(data)

    def _plainHttp(self) -> None:
        site = self.factory.wrappedFactory
        sendRefusal(site.ctx, self.transport, PLAIN_HTTP_ON_HTTPS, site.soleListener())
        # What the client still sends is dropped until it closes or the
        # listener's idle timeout closes the connection.
        self.dataReceived = lambda data: None  # type: ignore[method-assign]


@implementer(IOpenSSLServerConnectionCreator)
class TlsServerFactory(TLSMemoryBIOFactory):
    """
    TLS around a listener's Site.  C{serverTls} may be replaced at any time
    (reload); each new connection uses the current one.
    """

    protocol = HttpsServerProtocol

    def __init__(self, serverTls: ServerTls, wrappedFactory: IProtocolFactory, clock: Any = None) -> None:
        self.serverTls = serverTls
        super().__init__(self, False, wrappedFactory, clock)  # type: ignore[arg-type]

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        return self.serverTls.serverConnectionForTLS(tlsProtocol)

    def buildProtocol(self, addr: Any) -> Any:
        # The Site may refuse the connection (a connection limit): then no TLS either.
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None
        return self.protocol(self, inner)


# -- end-to-end TLS (backends) --------------------------------------------------


def describeTlsFailure(reason: Failure) -> str:
    """A short, human explanation of why a backend handshake failed."""
    value = reason.value
    if isinstance(value, SSL.Error):
        details = value.args[0] if value.args else None
        if isinstance(details, list):
            texts = [str(d[2]) for d in details if isinstance(d, tuple) and len(d) >= 3 and d[2]]
            if texts:
                return ", ".join(texts)
        return str(value) or type(value).__name__
    if isinstance(value, VerificationError) and value.errors:
        ids = []
        for m in value.errors:
            mid = m.mismatched_id
            ids.append(str(getattr(mid, "hostname", None) or getattr(mid, "ip", None) or mid))
        return "the certificate is not valid for " + ", ".join(ids)
    if isinstance(value, ConnectionClosed):
        return "the connection closed during the TLS handshake"
    return str(value) or type(value).__name__


@implementer(IHandshakeListener)
class _AfterHandshake(Protocol):
    """
    Sits between TLS and the caller's protocol: the caller's protocol is
    connected only once the handshake (verification included) has completed.
    """

    def __init__(self, factory: _HandshakeFirstFactory, inner: Any) -> None:
        self.factory = factory
        self.inner = inner
        self.established = False
        self.timer: Any = None
        self.timedOut = False

    def connectionMade(self) -> None:
        self.timer = self.factory.clock.callLater(self.factory.timeout, self._timeUp)

    def _timeUp(self) -> None:
        self.timer = None
        self.timedOut = True
        self.transport.abortConnection()  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        if getattr(self.transport, "disconnecting", False):
            # Twisted before 26 checks the host name after OpenSSL's handshake
            # and aborts (failVerification) before telling us it completed: a
            # failed handshake, reported by connectionLost with that reason.
            return
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        self.established = True
        self.factory.established = True
        self.inner.makeConnection(self.transport)
        if IHandshakeListener.providedBy(self.inner):
            self.inner.handshakeCompleted()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self.established:
            self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.established:
            self.inner.connectionLost(reason)
            return
        if self.timedOut:
            detail = f"the TLS handshake did not complete within {self.factory.timeout:g}s"
        else:
            detail = describeTlsFailure(reason)
        self.factory.handshakeFailed(detail)


class _HandshakeFirstFactory(ClientFactory):
    """Wraps the caller's factory for one connection attempt (see L{_AfterHandshake})."""

    noisy = False

    def __init__(self, inner: Any, clock: Any, timeout: float, where: str) -> None:
        self.inner = inner
        self.clock = clock
        self.timeout = timeout
        self.where = where
        self.connector: IConnector | None = None
        self.established = False

    def startFactory(self) -> None:
        self.inner.doStart()

    def stopFactory(self) -> None:
        self.inner.doStop()

    def startedConnecting(self, connector: IConnector) -> None:
        self.connector = connector
        started = getattr(self.inner, "startedConnecting", None)
        if started is not None:
            started(connector)

    def buildProtocol(self, addr: Any) -> Protocol | None:
        inner = self.inner.buildProtocol(addr)
        if inner is None:
            return None
        return _AfterHandshake(self, inner)

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        failed = getattr(self.inner, "clientConnectionFailed", None)
        if failed is not None:
            failed(connector, reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        # Before the handshake, the caller has already heard clientConnectionFailed.
        lost = getattr(self.inner, "clientConnectionLost", None)
        if self.established and lost is not None:
            lost(connector, reason)

    def handshakeFailed(self, detail: str) -> None:
        log.warn("TLS to backend {where} failed: {detail}", where=self.where, detail=detail)
        failed = getattr(self.inner, "clientConnectionFailed", None)
        if failed is not None:
            failed(self.connector, Failure(TlsHandshakeError(None, f"TLS handshake failed: {detail}")))


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """Encrypt without verifying (C{verifyCertificate = false}); SNI still sent."""

    def __init__(self, options: CertificateOptions, serverName: bytes | None) -> None:
        self.options = options
        self.serverName = serverName

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        # Not options.clientConnectionForTLS: CertificateOptions has it only
        # from Twisted 26 on. The TLS factory puts the connection in connect state.
        conn = SSL.Connection(self.options.getContext(), None)
        if self.serverName is not None:
            conn.set_tlsext_host_name(self.serverName)
        return conn


class BackendTls:
    """
    How to reach the members of one C{backendHttpSettings} over TLS.
    L{connect} has the connector signature the upstream pool, the WebSocket
    bridge and the health prober use: C{(host, port, factory, timeout)}.
    """

    def __init__(
        self,
        settings: BackendHttpSettings,
        roots: Sequence[x509.Certificate] | None,
        reactor: Any,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        self.verify = settings.verifyCertificate
        self.trustRoot: Any = None
        if self.verify:
            if roots:
                self.trustRoot = trustRootFromCertificates(
                    [Certificate(X509.from_cryptography(c)) for c in roots]
                )
            else:
                self.trustRoot = platformTrust()
        identity = repr(
            (
                settings.hostName,
                self.verify,
                settings.trustedRootCertificates,
                sorted(_spki(c.public_key()).hex() for c in roots or ()),
            )
        )
        self.key = f"tls:{settings.name}:{hashlib.sha256(identity.encode()).hexdigest()[:12]}"
        """Keys idle upstream connections apart from those made with other TLS settings."""
        self._creators: dict[str, Any] = {}
        self._unverifiedOptions: CertificateOptions | None = None
        if not self.verify:
            self._unverifiedOptions = CertificateOptions(
                raiseMinimumTo=TLSVersion.TLSv1_2, acceptableProtocols=[HTTP11]
            )
            log.warn(
                "backendHttpSettings {settings}: verifyCertificate is false: backend "
                "certificates are NOT verified (encrypted, but not authenticated)",
                settings=settings.name,
            )

    def serverNameFor(self, host: str) -> str:
        """The name sent as SNI and verified: C{hostName}, else the member's host."""
        return self.settings.hostName or host

    def creatorFor(self, host: str) -> Any:
        """The (cached) client connection creator for a member host."""
        creator = self._creators.get(host)
        if creator is None:
            name = self.serverNameFor(host)
            if self._unverifiedOptions is not None:
                sni = None if isIPAddress(name) or isIPv6Address(name) else name.encode("idna")
                creator = _Unverified(self._unverifiedOptions, sni)
            else:
                creator = optionsForClientTLS(
                    name,
                    trustRoot=self.trustRoot,
                    acceptableProtocols=[HTTP11],
                    extraCertificateOptions={"raiseMinimumTo": TLSVersion.TLSv1_2},
                )
            self._creators[host] = creator
        return creator

    def connect(self, host: str, port: int, factory: Any, timeout: float) -> IConnector:
        """Start a TLS connection; C{factory} sees it connected after the handshake."""
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        first = _HandshakeFirstFactory(factory, self.reactor, timeout, where)
        tls = TLSMemoryBIOFactory(self.creatorFor(host), True, first, clock=self.reactor)  # type: ignore[arg-type]
        return self.reactor.connectTCP(host, port, tls, timeout=timeout)  # type: ignore[no-any-return]


class GatewayTls:
    """
    All TLS objects of one configuration, built (and every certificate
    loaded) at once; a reload builds a new one.

    @raise TlsError: from the constructor when a certificate cannot be used.
    """

    def __init__(self, config: GatewayConfig, reactor: Any, now: datetime.datetime | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.revocation: OcspChecker | None = None
        if any(p.verifyClientRevocation == "OCSP" for p in config.sslProfiles.values()):
            self.revocation = OcspChecker(reactor)
        self.server = buildServerTls(config, now, self.revocation)
        problems: list[TlsProblem] = []
        self.roots: dict[str, list[x509.Certificate]] = {}
        for name, root in config.trustedRootCertificates.items():
            try:
                self.roots[name] = loadTrustedRoots(root)
            except TlsError as e:
                problems.extend(e.problems)
        if problems:
            raise TlsError(problems)
        self.backends: dict[str, BackendTls] = {}

    def wrap(self, port: str, factory: IProtocolFactory) -> Any:
        """The factory to listen with on frontend port C{port}: TLS around it for Https."""
        serverTls = self.server.get(port)
        if serverTls is None:
            return factory
        return TlsServerFactory(serverTls, factory, self.reactor)

    def backendTls(self, settings: BackendHttpSettings) -> BackendTls:
        """The (one per settings) L{BackendTls}, whatever the settings' protocol."""
        tls = self.backends.get(settings.name)
        if tls is None or tls.settings != settings:
            roots: list[x509.Certificate] | None = None
            if settings.trustedRootCertificates:
                roots = [c for name in settings.trustedRootCertificates for c in self.roots[name]]
            tls = self.backends[settings.name] = BackendTls(settings, roots, self.reactor)
        return tls

    def connectorFor(self, settings: BackendHttpSettings) -> tuple[Callable[..., Any] | None, str]:
        """
        C{(connector, tlsKey)} for L{agwtx.routing.router.buildRouters}: TLS for
        C{protocol = Https}, C{(None, "")} (plain TCP) otherwise.
        """
        if settings.protocol != "Https":
            return None, ""
        tls = self.backendTls(settings)
        return tls.connect, tls.key

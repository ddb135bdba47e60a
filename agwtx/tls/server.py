"""
HTTPS listeners: certificates chosen by SNI, the listener's SSL policy,
client certificates (mutual TLS) and OCSP.

Everything here is built from a L{GatewayConfig} by pure functions that
return new objects (L{buildServerTls}), so a reload builds a fresh set and
swaps it in (L{TlsServerFactory.serverTls}); connections in flight keep the
contexts they started with.

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
    rather than an alert); with C{[gateway] enableHttp2}, C{h2} first, then
    C{http/1.1} (L{agwtx.http.h2}).
  - The certificate is chosen by SNI among the port's listeners, as routing
    chooses the listener: an exact host name first, then wildcard patterns
    (L{agwtx.routing.router.hostMatcher}), then the basic listener (no host names).
    Without SNI, or for a name no listener serves, the basic listener's
    certificate is used; when the port has no basic listener the handshake
    is refused (a C{handshake_failure} alert and one log line).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet.interfaces import (
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
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
    GatewayConfig,
    HttpListener,
    SslPolicy,
    SslProfile,
)
from agwtx.config.sslpolicy import TLS13_SUITES, ResolvedPolicy, applyPolicy, resolvePolicy, versionName
from agwtx.routing.router import hostMatcher
from agwtx.http.refusal import PLAIN_HTTP_ON_HTTPS, sendRefusal
from agwtx.config.certificates import (
    LoadedCertificate,
    TlsError,
    TlsProblem,
    checkCertificate,
    loadTrustedClientCertificates,
)

log = Logger(namespace="agw.tls")

HTTP11 = b"http/1.1"
H2 = b"h2"


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


def _selectH2(conn: SSL.Connection, offered: list[bytes]) -> bytes:
    # The server's preference (RFC 7301 section 3.2): h2 whenever offered.
    return H2 if H2 in offered else _selectHttp11(conn, offered)


def _serverContext(
    loaded: LoadedCertificate | None,
    sessionId: bytes,
    policy: ResolvedPolicy,
    clientCAs: Sequence[x509.Certificate] = (),
    serverNameCallback: Callable[[SSL.Connection], None] | None = None,
    resumable: bool = True,
    http2: bool = False,
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
    # Every context of a port the same: the SNI callback may switch contexts before ALPN.
    ctx.set_alpn_select_callback(_selectH2 if http2 else _selectHttp11)
    if serverNameCallback is not None:
        ctx.set_tlsext_servername_callback(serverNameCallback)
    # Last: pyOpenSSL's set_cipher_list makes a Connection from the context,
    # after which changing it is deprecated.
    applyPolicy(ctx, policy)
    return ctx


def _useCertificate(ctx: SSL.Context, loaded: LoadedCertificate) -> None:
    """Install the leaf, its chain and its key (cryptography objects where pyOpenSSL takes them)."""
    ctx.use_certificate(loaded.leaf)
    ctx.use_privatekey(loaded.key)  # type: ignore[arg-type]
    for extra in loaded.chain:
        ctx.add_extra_chain_cert(extra)
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
        http2: bool = False,
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
                ctx = _serverContext(loaded, sessionId, policy, cas, http2=http2)
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
            None,
            sessionId,
            base,
            serverNameCallback=self._serverNameReceived,
            resumable=resumable,
            http2=http2,
        )

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
        cert, found = checkCertificate(config.sslCertificates[name], now)
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
        port: ServerTls(
            port,
            listeners,
            loaded,
            policies,
            config.sslProfiles,
            clientCAs,
            revocation,
            http2=config.gateway.enableHttp2,
        )
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
        chain = self.getHandle().get_verified_chain()
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

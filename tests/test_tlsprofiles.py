"""
SSL policies, SSL profiles and mutual TLS, for real: one twistd gateway with
a frontend port per policy or profile, C{openssl s_client} and Python's
C{ssl} as clients, certificates made for the run (L{tests.certs}): a client
CA, a good, an expired and a foreign client certificate, and a CA chain
for the issuer-DN check.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from agwtx.config.model import GatewayConfig, GatewaySettings, HttpListener, SslCertificate, SslPolicy
from agwtx.tls.server import buildServerTls
from tests.certs import CA, Pki, httpsGet, keyPem, sClient, tlsConnect
from tests.rawbackend import PROBE_ANSWER, RawBackend, acceptFor, handshakeHead, headerValue
from tests.support import Proc, freePort, startBackend, startGateway, waitFor, waitForPort

needsOpenssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

POLICY_PORTS = {
    "p15": "sslPolicyName = AppGwSslPolicy20150501",
    "p17": "sslPolicyName = AppGwSslPolicy20170401",
    "p17s": "sslPolicyName = AppGwSslPolicy20170401S",
    "p22": "sslPolicyName = AppGwSslPolicy20220101",
    "p22s": "sslPolicyName = AppGwSslPolicy20220101S",
    "v2tls13": "sslPolicyType = CustomV2\nsslMinProtocolVersion = TLSv1_3",
    "custom": (
        "sslPolicyType = Custom\nsslMinProtocolVersion = TLSv1_2\n"
        "sslCipherSuites = TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, TLS_RSA_WITH_AES_128_GCM_SHA256"
    ),
}

CERT_HEADERS = {
    "X-Client-Cert": "{var_client_certificate}",
    "X-Client-Cert-Fingerprint": "{var_client_certificate_fingerprint}",
    "X-Client-Cert-Serial": "{var_client_certificate_serial}",
    "X-Client-Cert-Subject": "{var_client_certificate_subject}",
    "X-Client-Cert-Issuer": "{var_client_certificate_issuer}",
    "X-Client-Cert-Start": "{var_client_certificate_start_date}",
    "X-Client-Cert-End": "{var_client_certificate_end_date}",
    "X-Client-Cert-Verification": "{var_client_certificate_verification}",
    "X-Tls": "{var_ssl_connection_protocol} {var_ciphers_used} {var_request_scheme}",
}


class ProfilesPki(Pki):
    """
    A server CA (clients trust it), a client CA, a root with an issuing
    intermediate, and an OCSP CA whose responder is to listen on C{ocspPort}.
    """

    def __init__(self, directory: Path) -> None:
        self.serverCA = CA("agw server CA")
        super().__init__(directory, self.serverCA.writeRoot(directory / "server-ca.pem"))
        self.clientCA = CA("agw client CA")
        self.chainRoot = CA("agw chain root CA")
        self.chainInter = CA("agw chain issuing CA", parent=self.chainRoot)
        self.ocspCA = CA("agw OCSP CA")
        self.ocspPort = freePort()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ProfilesPki:
    d = tmp_path_factory.mktemp("pki")
    p = ProfilesPki(d)
    p.clientCA.writeRoot(d / "client-ca.pem")
    (d / "chain.pem").write_bytes(
        p.chainInter.cert.public_bytes(serialization.Encoding.PEM)
        + p.chainRoot.cert.public_bytes(serialization.Encoding.PEM)
    )
    p.add("server", p.serverCA.issue(["localhost", "a.test", "127.0.0.1"], cn="gateway"))
    p.add("good", p.clientCA.issue(["device-1"], cn="device 1", client=True))
    p.add("expired", p.clientCA.issueExpired(["device-2"], cn="device 2", client=True))
    p.add("foreign", CA("someone else's CA").issue(["device-3"], cn="device 3", client=True))
    p.add("byInter", p.chainInter.issue(["device-4"], cn="device 4", client=True))
    p.add("byRoot", p.chainRoot.issue(["device-5"], cn="device 5", client=True))
    # OCSP: the responder (openssl ocsp) on ocspPort; nothing listens on the dead one.
    url = f"http://127.0.0.1:{p.ocspPort}/"
    dead = f"http://127.0.0.1:{freePort()}/"
    p.add("ocspGood", p.ocspCA.issue(["device-6"], cn="device 6", client=True, ocspUrl=url))
    p.add("ocspRevoked", p.ocspCA.issue(["device-7"], cn="device 7", client=True, ocspUrl=url))
    p.add("ocspDead", p.ocspCA.issue(["device-8"], cn="device 8", client=True, ocspUrl=dead))
    p.add("ocspNone", p.ocspCA.issue(["device-10"], cn="device 10", client=True))
    p.ocspCA.writeRoot(d / "ocsp-ca.pem")
    (d / "ocsp-ca.key").write_bytes(keyPem(p.ocspCA.key))
    rows = []
    for stem, status in (("ocspGood", "V"), ("ocspRevoked", "R")):
        cert = p.issued[stem].cert
        expiry = f"{cert.not_valid_after_utc:%y%m%d%H%M%S}Z"
        revoked = f"{cert.not_valid_before_utc:%y%m%d%H%M%S}Z" if status == "R" else ""
        dn = "".join(f"/{a.rfc4514_attribute_name}={a.value}" for a in cert.subject)
        rows.append(f"{status}\t{expiry}\t{revoked}\t{cert.serial_number:X}\tunknown\t{dn}\n")
    (d / "index.txt").write_text("".join(rows))
    return p


@dataclass
class Gw:
    ports: dict[str, int]
    proc: Proc
    tmp: Path
    wsHeads: list[bytes]


def _wsHandler(heads: list[bytes]) -> Any:
    def handle(conn: socket.socket, head: bytes, extra: bytes) -> None:
        if headerValue(head, b"upgrade") is None:  # a health probe
            conn.sendall(PROBE_ANSWER)
            return
        heads.append(head)
        key = headerValue(head, b"sec-websocket-key") or b""
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + acceptFor(key) + b"\r\n\r\n"
        )

    return handle


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, pki: ProfilesPki) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("profilesgw")
    backend, backendPort = startBackend(tmp, "echo")
    heads: list[bytes] = []
    wsBackend = RawBackend(_wsHandler(heads))
    procs = [backend]
    names = [*POLICY_PORTS, "strict", "dn", "nodn", "pass", "sni", "mixed", "ocsp"]
    ports = {name: freePort() for name in names}
    cert, key = pki.files["server"]
    ini = [
        # HTTP/2 offered: the HTTP/1.1 clients below are unaffected; the h2 tests use it.
        "[gateway]\nenableHttp2 = true\n",
        f"[sslCertificate:server]\ncertificate = {cert}\nprivateKey = {key}\n",
        f"[trustedClientCertificate:clients]\ndata = {pki.dir / 'client-ca.pem'}\n",
        f"[trustedClientCertificate:chain]\ndata = {pki.dir / 'chain.pem'}\n",
        f"[backendAddressPool:echo]\nbackendAddresses = 127.0.0.1:{backendPort}\n",
        f"[backendAddressPool:ws]\nbackendAddresses = 127.0.0.1:{wsBackend.port}\n",
        "[backendHttpSettings:plain]\nport = 80\nprotocol = Http\n",
        "[rewriteRuleSet:certHeaders]\n"
        + "".join(f"rule.cert.requestHeader.{h} = {v}\n" for h, v in CERT_HEADERS.items()),
        "[sslProfile:strict]\ntrustedClientCertificates = clients\n",
        "[sslProfile:dn]\ntrustedClientCertificates = chain\nverifyClientCertIssuerDN = true\n",
        "[sslProfile:nodn]\ntrustedClientCertificates = chain\n",
        "[sslProfile:pass]\nverifyClientAuthMode = Passthrough\n",
        f"[trustedClientCertificate:ocspCA]\ndata = {pki.dir / 'ocsp-ca.pem'}\n",
        "[sslProfile:ocsp]\ntrustedClientCertificates = ocspCA\nverifyClientRevocation = OCSP\n",
    ]
    for name, policy in POLICY_PORTS.items():
        ini.append(f"[sslProfile:{name}]\n{policy}\n")
    for priority, name in enumerate(names, start=1):
        ini.append(f"[frontendPort:{name}]\nport = {ports[name]}\ninterface = 127.0.0.1\n")
        profile = {"sni": "strict", "mixed": "v2tls13"}.get(name, name)
        hostNames = "hostNames = a.test\n" if name in ("sni", "mixed") else ""
        ini.append(
            f"[httpListener:{name}]\nfrontendPort = {name}\nprotocol = Https\nsslCertificate = server\n"
            f"sslProfile = {profile}\n{hostNames}"
        )
        ini.append(
            f"[requestRoutingRule:{name}]\npriority = {priority}\nhttpListener = {name}\nruleType = PathBasedRouting\n"
            f"urlPathMap = paths\n"
        )
    # The sni port also has a basic listener without client authentication,
    # the mixed port one with the oldest policy.
    for priority, (name, port, profile) in enumerate(
        [("sniBasic", "sni", ""), ("mixedBasic", "mixed", "sslProfile = p15\n")], start=len(names) + 1
    ):
        ini.append(
            f"[httpListener:{name}]\nfrontendPort = {port}\nprotocol = Https\nsslCertificate = server\n{profile}"
        )
        ini.append(
            f"[requestRoutingRule:{name}]\npriority = {priority}\nhttpListener = {name}\n"
            "backendAddressPool = echo\nbackendHttpSettings = plain\n"
        )
    ini.append(
        "[urlPathMap:paths]\ndefaultBackendAddressPool = echo\ndefaultBackendHttpSettings = plain\n"
        "pathRule.ws = /ws -> ws, plain\n"
    )
    text = "\n".join(ini).replace(
        "urlPathMap = paths\n", "urlPathMap = paths\nrewriteRuleSet = certHeaders\n"
    )
    try:
        if shutil.which("openssl") is not None:
            responder = Proc(
                [
                    "openssl",
                    "ocsp",
                    "-index",
                    str(pki.dir / "index.txt"),
                    "-port",
                    str(pki.ocspPort),
                    "-CA",
                    str(pki.dir / "ocsp-ca.pem"),
                    "-rsigner",
                    str(pki.dir / "ocsp-ca.pem"),
                    "-rkey",
                    str(pki.dir / "ocsp-ca.key"),
                    "-ndays",
                    "1",
                ],
                tmp / "ocsp.log",
            )
            procs.append(responder)
            # Not waitForPort: openssl ocsp (3.0) hangs on a connection that sends nothing.
            waitFor(lambda: "waiting for OCSP client connections" in responder.output(), what="the responder")
        proc = startGateway(tmp, text, ports["strict"])
        procs.append(proc)
        for port in ports.values():
            waitForPort(port, proc.proc)
        yield Gw(ports, proc, tmp, heads)
    finally:
        for p in reversed(procs):
            p.stop()
        wsBackend.close()


# -- clients -------------------------------------------------------------------------------


def negotiated(result: subprocess.CompletedProcess[str]) -> str | None:
    """The cipher s_client reports, None when the handshake failed."""
    if result.returncode != 0:
        return None
    for line in result.stdout.splitlines():
        if "Cipher is " in line:
            cipher = line.split("Cipher is ", 1)[1].strip()
            return None if cipher == "(NONE)" else cipher
    return None


def get(port: int, ctx: ssl.SSLContext, path: str = "/headers", **kwargs: Any) -> tuple[int, bytes]:
    """L{httpsGet}'s status and body; by default of the demo backend's C{/headers}."""
    status, _, body = httpsGet(port, ctx, path, **kwargs)
    return status, body


def backendHeaders(body: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


# -- SSL policies ------------------------------------------------------------------------------


@needsOpenssl
@pytest.mark.parametrize(
    "port, flag, ok",
    [
        ("p15", "-tls1", True),
        ("p15", "-tls1_2", True),
        ("p15", "-tls1_3", False),
        ("p17", "-tls1", False),
        ("p17", "-tls1_1", True),
        ("p17", "-tls1_3", False),
        ("p17s", "-tls1_1", False),
        ("p17s", "-tls1_2", True),
        ("p17s", "-tls1_3", False),
        ("p22", "-tls1_1", False),
        ("p22", "-tls1_2", True),
        ("p22", "-tls1_3", True),
        ("p22s", "-tls1_1", False),
        ("p22s", "-tls1_2", True),
        ("p22s", "-tls1_3", True),
        ("v2tls13", "-tls1_2", False),
        ("v2tls13", "-tls1_3", True),
        ("custom", "-tls1_1", False),
        ("custom", "-tls1_2", True),
        ("custom", "-tls1_3", False),
    ],
)
def test_policy_protocol_versions(gw: Gw, port: str, flag: str, ok: bool) -> None:
    """Each policy's minimum (and maximum) version, with a client that would go lower (SECLEVEL=0)."""
    result = sClient(gw.ports[port], flag, "-cipher", "ALL:@SECLEVEL=0")
    assert (negotiated(result) is not None) == ok, result.stdout[-600:] + result.stderr[-600:]


@needsOpenssl
@pytest.mark.parametrize(
    "port, cipher, ok",
    [
        ("p15", "ECDHE-ECDSA-AES128-SHA", True),
        ("p15", "ECDHE-ECDSA-CHACHA20-POLY1305", False),
        ("p17s", "ECDHE-ECDSA-AES128-SHA", True),
        ("p17s", "ECDHE-ECDSA-AES256-SHA384", True),
        ("p17s", "ECDHE-ECDSA-CHACHA20-POLY1305", False),
        ("p22", "ECDHE-ECDSA-AES128-SHA256", True),
        ("p22", "ECDHE-ECDSA-AES128-SHA", False),
        ("p22s", "ECDHE-ECDSA-AES128-GCM-SHA256", True),
        ("p22s", "ECDHE-ECDSA-AES128-SHA256", False),
        ("custom", "ECDHE-ECDSA-AES256-SHA", True),
        ("custom", "ECDHE-ECDSA-AES128-GCM-SHA256", False),
    ],
)
def test_policy_tls12_cipher_suites(gw: Gw, port: str, cipher: str, ok: bool) -> None:
    result = sClient(gw.ports[port], "-tls1_2", "-cipher", f"{cipher}:@SECLEVEL=0")
    assert negotiated(result) == (cipher if ok else None), result.stdout[-600:] + result.stderr[-600:]


@needsOpenssl
@pytest.mark.parametrize(
    "port, suite, ok",
    [
        ("p22", "TLS_AES_128_GCM_SHA256", True),
        ("p22", "TLS_AES_256_GCM_SHA384", True),
        ("p22", "TLS_CHACHA20_POLY1305_SHA256", False),
        ("v2tls13", "TLS_AES_256_GCM_SHA384", True),
        ("v2tls13", "TLS_CHACHA20_POLY1305_SHA256", False),
    ],
)
def test_policy_tls13_suites_are_azures_fixed_pair(gw: Gw, port: str, suite: str, ok: bool) -> None:
    result = sClient(gw.ports[port], "-tls1_3", "-ciphersuites", suite)
    assert negotiated(result) == (suite if ok else None), result.stdout[-600:] + result.stderr[-600:]


@needsOpenssl
@pytest.mark.parametrize(
    "serverName, flag, ok",
    [
        ("a.test", "-tls1_2", False),
        ("a.test", "-tls1_3", True),
        ("localhost", "-tls1", True),
        ("localhost", "-tls1_3", False),
    ],
)
def test_listeners_of_one_port_keep_their_own_versions(gw: Gw, serverName: str, flag: str, ok: bool) -> None:
    """SNI picks the listener, and that listener's policy decides (CustomV2 TLS 1.3 next to 2015's)."""
    result = sClient(gw.ports["mixed"], flag, "-cipher", "ALL:@SECLEVEL=0", serverName=serverName)
    assert (negotiated(result) is not None) == ok, result.stdout[-600:] + result.stderr[-600:]


@needsOpenssl
def test_refused_version_is_logged(gw: Gw) -> None:
    sClient(gw.ports["mixed"], "-tls1_2", serverName="a.test")
    waitFor(
        lambda: (
            "listener mixed does not accept TLSv1_2 (its SSL policy allows TLSv1_3 to TLSv1_3)"
            in gw.proc.output()
        ),
        what="the refusal log line",
    )


def test_gateway_policy_applies_to_listeners_without_profile(pki: ProfilesPki) -> None:
    cert, key = pki.files["server"]
    config = GatewayConfig(
        path="gw.ini",
        gateway=GatewaySettings(sslPolicy=SslPolicy(policyName="AppGwSslPolicy20170401S")),
        sslCertificates={"c": SslCertificate("c", str(cert), str(key))},
        httpListeners={"l": HttpListener("l", "https", "Https", (), "c")},
    )
    policy = buildServerTls(config)["https"].byListener["l"].policy
    assert (policy.minVersion, policy.maxVersion) == (SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION)
    assert "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA" in policy.suites


# -- mutual TLS --------------------------------------------------------------------------------


def test_trusted_client_certificate_gets_200_and_the_backend_its_fingerprint(
    gw: Gw, pki: ProfilesPki
) -> None:
    status, body = get(gw.ports["strict"], pki.clientContext("good"))
    assert status == 200
    headers = backendHeaders(body)
    cert = pki.issued["good"].cert
    assert headers["x-client-cert-fingerprint"] == pki.fingerprint("good")
    assert headers["x-client-cert-verification"] == "SUCCESS"
    assert headers["x-client-cert-subject"] == "CN=device 1,O=agw tests"
    assert headers["x-client-cert-issuer"] == "CN=agw client CA,O=agw tests"
    assert int(headers["x-client-cert-serial"], 16) == cert.serial_number
    assert headers["x-client-cert-end"].endswith(f"{cert.not_valid_after_utc:%H:%M:%S %Y} GMT")
    assert headers["x-client-cert-start"].startswith(f"{cert.not_valid_before_utc:%b}")
    pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    from urllib.parse import unquote

    assert "\n" not in headers["x-client-cert"] and unquote(headers["x-client-cert"]) == pem
    # The connection's TLS version and cipher, by Azure's variable names.
    assert re.fullmatch(r"TLSv1\.[23] [A-Z0-9_-]+ https", headers["x-tls"]), headers["x-tls"]


def test_client_cannot_inject_certificate_headers(gw: Gw, pki: ProfilesPki) -> None:
    spoof = {"X-Client-Cert-Fingerprint": "00" * 20, "X-Client-Cert-Verification": "SUCCESS"}
    status, body = get(gw.ports["strict"], pki.clientContext("good"), headers=spoof)
    assert status == 200
    headers = backendHeaders(body)
    assert headers["x-client-cert-fingerprint"] == pki.fingerprint("good")
    assert headers["x-client-cert-verification"] == "SUCCESS"
    # Passthrough without a certificate: the variables are empty, the client's values are gone.
    status, body = get(gw.ports["pass"], pki.clientContext(), headers=spoof)
    assert status == 200
    pairs = [(k.lower(), v) for k, v in json.loads(body)["headers"]]
    assert [v for k, v in pairs if k == "x-client-cert-fingerprint"] == [""]
    assert [v for k, v in pairs if k == "x-client-cert-verification"] == ["NONE"]


@pytest.mark.parametrize(
    "stem, message, reason, subject",
    [
        (None, "No required SSL certificate was sent", "no certificate sent", "-"),
        ("expired", "The SSL certificate error", "certificate has expired", "CN=device 2,O=agw tests"),
        (
            "foreign",
            "The SSL certificate error",
            "unable to get local issuer certificate",
            "CN=device 3,O=agw tests",
        ),
    ],
)
def test_strict_listener_refuses_with_400_and_logs(
    gw: Gw, pki: ProfilesPki, stem: str | None, message: str, reason: str, subject: str
) -> None:
    status, body = get(gw.ports["strict"], pki.clientContext(stem))
    assert status == 400
    assert message.encode() in body
    issuer = "CN=someone else's CA,O=agw tests" if stem == "foreign" else "CN=agw client CA,O=agw tests"
    line = (
        f"client certificate refused on listener strict (sslProfile strict): subject {subject!r} "
        f"issuer {issuer if stem else '-'!r}: {reason}"
    )
    waitFor(lambda: line in gw.proc.output(), what=line)


def h2Get(port: int, ctx: ssl.SSLContext, path: str = "/headers") -> tuple[int, bytes]:
    """Status and body of one GET over HTTP/2 (the h2 library on a TLS socket)."""
    import h2.config
    import h2.connection
    import h2.events

    ctx.set_alpn_protocols(["h2"])
    with tlsConnect(port, "localhost", ctx) as sock:
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        conn.send_headers(
            1,
            [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", path)],
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        status, body = 0, b""
        while True:
            data = sock.recv(65536)
            assert data, "closed before the response ended"
            for e in conn.receive_data(data):
                if isinstance(e, h2.events.ResponseReceived):
                    status = int(dict(e.headers)[b":status"])
                elif isinstance(e, h2.events.DataReceived):
                    body += e.data
                    conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
                elif isinstance(e, h2.events.StreamEnded):
                    return status, body
            sock.sendall(conn.data_to_send())


def test_client_certificates_apply_to_http2_streams(gw: Gw, pki: ProfilesPki) -> None:
    status, body = h2Get(gw.ports["strict"], pki.clientContext("good"))
    assert status == 200
    assert backendHeaders(body)["x-client-cert-fingerprint"] == pki.fingerprint("good")
    status, body = h2Get(gw.ports["strict"], pki.clientContext())
    assert status == 400 and b"No required SSL certificate was sent" in body
    assert h2Get(gw.ports["dn"], pki.clientContext("byRoot"))[0] == 400


@pytest.mark.parametrize(
    "port, stem, status",
    [
        ("dn", "byInter", 200),
        ("dn", "byRoot", 400),  # chains to the trusted root, but its issuer is not the issuing CA
        ("nodn", "byRoot", 200),
        ("nodn", "byInter", 200),
    ],
)
def test_verify_client_cert_issuer_dn(gw: Gw, pki: ProfilesPki, port: str, stem: str, status: int) -> None:
    assert get(gw.ports[port], pki.clientContext(stem))[0] == status


def test_issuer_dn_refusal_is_logged(gw: Gw, pki: ProfilesPki) -> None:
    get(gw.ports["dn"], pki.clientContext("byRoot"))
    waitFor(
        lambda: "issuer DN does not match a trusted client CA's subject" in gw.proc.output(),
        what="the issuer DN refusal",
    )


@pytest.mark.parametrize(
    "stem, verification",
    [
        (None, "NONE"),
        ("foreign", "FAILED:unable to get local issuer certificate"),
        ("good", "FAILED:unable to get local issuer certificate"),
    ],
)
def test_passthrough_forwards_whatever_was_sent(
    gw: Gw, pki: ProfilesPki, stem: str | None, verification: str
) -> None:
    status, body = get(gw.ports["pass"], pki.clientContext(stem))
    assert status == 200
    headers = backendHeaders(body)
    assert headers["x-client-cert-verification"] == verification
    assert headers["x-client-cert-fingerprint"] == (pki.fingerprint(stem) if stem else "")


def test_request_for_a_strict_listener_on_another_listeners_connection_is_421(
    gw: Gw, pki: ProfilesPki
) -> None:
    port = gw.ports["sni"]
    # SNI a.test: the strict listener's handshake, good certificate.
    assert get(port, pki.clientContext("good"), host="a.test", serverName="a.test")[0] == 200
    # SNI localhost (the basic listener, no client authentication), Host a.test.
    status, body = get(port, pki.clientContext("good"), host="a.test", serverName="localhost")
    assert status == 421
    assert b"Misdirected Request" in body
    # The basic listener itself needs no certificate.
    assert get(port, pki.clientContext(), host="localhost", serverName="localhost")[0] == 200


def wsHandshake(port: int, ctx: ssl.SSLContext) -> bytes:
    return handshakeHead(
        port, b"localhost", timeout=20, extra=b"X-Client-Cert-Fingerprint: forged\r\n", context=ctx
    )


def test_websocket_handshake_gets_the_variables_and_the_refusal(gw: Gw, pki: ProfilesPki) -> None:
    head = wsHandshake(gw.ports["strict"], pki.clientContext("good"))
    assert head.startswith(b"HTTP/1.1 101"), head
    backendHead = waitFor(lambda: gw.wsHeads and gw.wsHeads[-1], what="the backend's handshake")
    assert headerValue(backendHead, b"x-client-cert-fingerprint") == pki.fingerprint("good").encode()
    assert headerValue(backendHead, b"x-client-cert-verification") == b"SUCCESS"
    refused = wsHandshake(gw.ports["strict"], pki.clientContext())
    assert refused.startswith(b"HTTP/1.1 400"), refused


def test_reload_swaps_trusted_client_cas_and_keeps_open_connections(tmp_path: Path, pki: ProfilesPki) -> None:
    """SIGHUP re-reads a profile's CA file: new connections use the new CAs, open ones go on."""
    backend, backendPort = startBackend(tmp_path, "b1")
    newCA = CA("agw renewed client CA")
    pki.add("renewed", newCA.issue(["device-9"], cn="device 9", client=True))
    caFile = tmp_path / "clients.pem"
    caFile.write_bytes(pki.clientCA.cert.public_bytes(serialization.Encoding.PEM))
    port = freePort()
    cert, key = pki.files["server"]
    ini = f"""
[frontendPort:https]
port = {port}
interface = 127.0.0.1
[sslCertificate:server]
certificate = {cert}
privateKey = {key}
[trustedClientCertificate:clients]
data = {caFile}
[sslProfile:strict]
trustedClientCertificates = clients
[httpListener:l]
frontendPort = https
protocol = Https
sslCertificate = server
sslProfile = strict
[backendAddressPool:pool]
backendAddresses = 127.0.0.1:{backendPort}
[backendHttpSettings:s]
port = 80
[requestRoutingRule:r]
priority = 1
httpListener = l
backendAddressPool = pool
backendHttpSettings = s
"""
    gw = startGateway(tmp_path, ini, port)
    try:
        ctx = pki.clientContext("good")
        kept = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=20)
        kept.sock = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=20), server_hostname="localhost"
        )
        kept.request("GET", "/")
        first = kept.getresponse()
        assert (first.status, first.read()) == (200, b"Hello from agw demo backend b1\n")

        caFile.write_bytes(newCA.cert.public_bytes(serialization.Encoding.PEM))
        gw.proc.send_signal(1)  # SIGHUP
        waitFor(
            lambda: get(port, pki.clientContext("renewed"), path="/")[0] == 200, what="the new CA in force"
        )
        assert get(port, pki.clientContext("good"), path="/")[0] == 400

        kept.request("GET", "/")  # the connection made before the reload is still served
        again = kept.getresponse()
        assert (again.status, again.read()) == (200, b"Hello from agw demo backend b1\n")
        kept.close()
    finally:
        gw.stop()
        backend.stop()


# -- revocation (OCSP) --------------------------------------------------------------------------


@needsOpenssl
def test_ocsp_good_certificate_is_served(gw: Gw, pki: ProfilesPki) -> None:
    status, body = get(gw.ports["ocsp"], pki.clientContext("ocspGood"))
    assert status == 200
    assert backendHeaders(body)["x-client-cert-verification"] == "SUCCESS"


@needsOpenssl
@pytest.mark.parametrize(
    "stem, reason",
    [
        ("ocspRevoked", "certificate revoked (OCSP)"),
        ("ocspDead", "the OCSP responder http://127.0.0.1:"),
        ("ocspNone", "the certificate names no http:// OCSP responder"),
    ],
)
def test_ocsp_refusals_are_400_and_logged(gw: Gw, pki: ProfilesPki, stem: str, reason: str) -> None:
    status, body = get(gw.ports["ocsp"], pki.clientContext(stem))
    assert status == 400
    assert b"The SSL certificate error" in body
    subject = pki.issued[stem].cert.subject.rfc4514_string()
    line = f"client certificate refused on listener ocsp (sslProfile ocsp): subject {subject!r} "
    waitFor(
        lambda: any(line in row and reason in row for row in gw.proc.output().splitlines()),
        what=f"{line}...{reason}",
    )


def test_check_summary_names_the_profile() -> None:
    from agwtx.config.loader import summarize

    config = GatewayConfig(
        path="gw.ini",
        httpListeners={"l": HttpListener("l", "https", "Https", (), sslCertificate="c", sslProfile="strict")},
    )
    assert summarize(config)[0] == "listener l: Https on https (basic), sslCertificate c, sslProfile strict"


def test_predefined_policies_match_azures_table() -> None:
    from agwtx.config.sslpolicy import PREDEFINED

    counts = {name: (low, high, len(suites)) for name, (low, high, suites) in PREDEFINED.items()}
    assert counts == {
        "AppGwSslPolicy20150501": ("TLSv1_0", "TLSv1_2", 28),
        "AppGwSslPolicy20170401": ("TLSv1_1", "TLSv1_2", 16),
        "AppGwSslPolicy20170401S": ("TLSv1_2", "TLSv1_2", 16),
        "AppGwSslPolicy20220101": ("TLSv1_2", "TLSv1_3", 10),
        "AppGwSslPolicy20220101S": ("TLSv1_2", "TLSv1_3", 6),
    }
    for _, _, suites in PREDEFINED.values():
        assert len(set(suites)) == len(suites)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
@pytest.mark.parametrize("port, resumes", [("strict", False), ("pass", False), ("p22", True)])
def test_sessions_do_not_resume_where_client_certificates_are_asked(
    gw: Gw, pki: ProfilesPki, version: ssl.TLSVersion, port: str, resumes: bool
) -> None:
    """A resumed session is not verified again: ports with client authentication do not resume."""
    ctx = pki.clientContext("foreign")
    ctx.minimum_version = ctx.maximum_version = version
    first = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", gw.ports[port]), timeout=20), server_hostname="localhost"
    )
    first.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    first.recv(65536)  # TLS 1.3 tickets come after the handshake
    session = first.session
    first.close()
    raw = socket.create_connection(("127.0.0.1", gw.ports[port]), timeout=20)
    with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as second:
        assert second.session_reused is resumes


def test_what_this_openssl_cannot_do_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import agwtx.config.sslpolicy as tp

    monkeypatch.setattr(tp, "_available", lambda name: name != "DES-CBC3-SHA")
    monkeypatch.setattr(tp, "versionAvailable", lambda version: version >= SSL.TLS1_2_VERSION)
    version = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    custom = SslPolicy(
        "Custom", None, "TLSv1_2", ("TLS_RSA_WITH_3DES_EDE_CBC_SHA", "TLS_RSA_WITH_AES_128_CBC_SHA")
    )
    assert tp.policyProblems(custom) == [
        (
            "sslCipherSuites",
            f"TLS_RSA_WITH_3DES_EDE_CBC_SHA (OpenSSL DES-CBC3-SHA) is not available in this OpenSSL ({version})",
        )
    ]
    # A predefined policy leaves such a suite out instead.
    legacy = SslPolicy(policyName="AppGwSslPolicy20150501")
    assert "TLS_RSA_WITH_3DES_EDE_CBC_SHA" not in tp.resolvePolicy(legacy).suites
    assert tp.policyProblems(legacy) == [
        ("sslPolicyName", "TLSv1_0 cannot be negotiated by this OpenSSL, even at security level 0")
    ]
    old = SslPolicy("Custom", None, "TLSv1_1", ("TLS_RSA_WITH_AES_128_CBC_SHA",))
    assert tp.policyProblems(old) == [
        ("sslMinProtocolVersion", "TLSv1_1 cannot be negotiated by this OpenSSL, even at security level 0")
    ]

"""
The client address: PROXY protocol v1/v2 on frontend ports (plain and TLS)
and trusted forwarders' X-Forwarded-For, against the real twistd gateway,
plus the pure pieces (X-Forwarded-For walking, refusal log rate).
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
from pathlib import Path
from typing import Any, Iterator

import pytest
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from agwtx.config.model import GatewaySettings
from agwtx.config.values import parseNetworks
from agwtx.http.proxyprotocol import ProxyProtocolFactory
from agwtx.http.forwarded import clientAddress, forwardedAddress, rightmostUntrusted
from tests.certs import selfSigned
from tests.support import Proc, basicIni, freePort, startBackend, startGateway, waitFor

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v2Header(src: str, srcPort: int, dst: str = "127.0.0.1", dstPort: int = 80) -> bytes:
    """A PROXY v2 header for a TCP over IPv4 connection from C{src}:C{srcPort}."""
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", srcPort, dstPort)
    return V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(body)) + body


V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"


def v1Header(src: str, srcPort: int, dst: str = "127.0.0.1", dstPort: int = 80) -> bytes:
    return f"PROXY TCP4 {src} {dst} {srcPort} {dstPort}\r\n".encode()


def exchange(
    port: int,
    chunks: list[bytes],
    source: str = "127.0.0.1",
    tlsAfterFirst: bool = False,
) -> bytes:
    """Send C{chunks} (one write each) on a new connection from C{source}; all that comes back."""
    sock: Any = socket.socket()
    sock.settimeout(15)
    sock.bind((source, 0))
    try:
        sock.connect(("127.0.0.1", port))
    except ConnectionResetError:
        # Refused at accept: the reset can beat the connect's return on loopback.
        sock.close()
        return b""
    try:
        if tlsAfterFirst:
            sock.sendall(chunks[0])
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname="pp.test")
            chunks = chunks[1:]
        out = b""
        try:
            for c in chunks:
                sock.sendall(c)
        except ConnectionResetError:
            return out
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not data:
                break
            out += data
        return out
    finally:
        sock.close()


def request(path: str = "/headers", headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: pp.test\r\nConnection: close\r\n{headers}\r\n".encode()


def backendSaw(answer: bytes) -> dict[str, str]:
    """The headers the demo backend's /headers received (last value of each name)."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:300]
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


class Gw:
    def __init__(self, proc: Proc, ports: dict[str, int], accessLog: Path) -> None:
        self.proc = proc
        self.ports = ports
        self.accessLog = accessLog

    def logged(self, *fragments: str) -> list[str]:
        """The access log once it has a line with each of C{fragments}."""

        def found() -> list[str] | None:
            lines = self.accessLog.read_text().splitlines() if self.accessLog.exists() else []
            return lines if all(any(f in line for line in lines) for f in fragments) else None

        return waitFor(found, what=f"access lines with {fragments}")  # type: ignore[no-any-return]


def _section(
    name: str, port: int, extra: str, protocol: str = "Http", cert: str = "", priority: int = 1
) -> str:
    return f"""
[frontendPort:{name}]
port = {port}
interface = 127.0.0.1
{extra}

[httpListener:{name}]
frontendPort = {name}
protocol = {protocol}
{cert}

[requestRoutingRule:{name}]
ruleType = Basic
priority = {priority}
httpListener = {name}
backendAddressPool = pool
backendHttpSettings = s1
rewriteRuleSet = who
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("pp")
    backend, bport = startBackend(tmp, "A")
    certPath, keyPath = selfSigned(["pp.test"]).write(tmp, "pp")
    ports = {name: freePort() for name in ("pp", "ppTls", "strict", "plain")}
    accessLog = tmp / "access.log"
    loopback = "proxyProtocol = true\nproxyProtocolSources = 127.0.0.0/8"
    ini = f"""
[gateway]
accessLog = {accessLog}
requestHeaderTimeout = 2s
trustedProxies = 127.0.0.3, 10.0.0.0/8

[backendAddressPool:pool]
backendAddresses = 127.0.0.1:{bport}

[backendHttpSettings:s1]
port = 80
protocol = Http

[rewriteRuleSet:who]
rule.who.requestHeader.X-Seen = {{var_client_ip}}:{{var_client_port}}

[sslCertificate:pp]
certificate = {certPath}
privateKey = {keyPath}
"""
    ini += _section("pp", ports["pp"], loopback)
    ini += _section("ppTls", ports["ppTls"], loopback, "Https", "sslCertificate = pp", 2)
    strict = "proxyProtocol = true\nproxyProtocolSources = 192.0.2.0/24"
    ini += _section("strict", ports["strict"], strict, priority=3)
    ini += _section("plain", ports["plain"], "", priority=4)
    proc = startGateway(tmp, ini, ports["plain"])
    try:
        yield Gw(proc, ports, accessLog)
    finally:
        proc.stop()
        backend.stop()


def test_proxy_v1_and_v2_address_is_the_client_everywhere(gw: Gw) -> None:
    v1 = backendSaw(exchange(gw.ports["pp"], [v1Header("203.0.113.7", 4242) + request()]))
    assert v1["x-forwarded-for"] == "203.0.113.7"
    assert v1["x-seen"] == "203.0.113.7:4242"
    # v2, and a header that arrives a few bytes at a time
    header = v2Header("198.51.100.20", 5555)
    v2 = backendSaw(exchange(gw.ports["pp"], [header[:5], header[5:14], header[14:], request()]))
    assert v2["x-forwarded-for"] == "198.51.100.20"
    assert v2["x-seen"] == "198.51.100.20:5555"
    gw.logged(' 203.0.113.7 "GET /headers"', ' 198.51.100.20 "GET /headers"')


def test_proxy_header_comes_before_the_tls_handshake(gw: Gw) -> None:
    saw = backendSaw(
        exchange(gw.ports["ppTls"], [v2Header("192.0.2.99", 6000), request()], tlsAfterFirst=True)
    )
    assert saw["x-forwarded-for"] == "192.0.2.99"
    assert saw["x-seen"] == "192.0.2.99:6000"
    assert saw["x-forwarded-proto"] == "https"


def test_local_and_unknown_keep_the_balancers_address(gw: Gw) -> None:
    """A balancer's own health check (v2 LOCAL, v1 UNKNOWN) is served as coming from the balancer."""
    local = backendSaw(exchange(gw.ports["pp"], [V2_LOCAL + request()], source="127.0.0.2"))
    assert local["x-forwarded-for"] == "127.0.0.2"
    unknown = backendSaw(exchange(gw.ports["pp"], [b"PROXY UNKNOWN\r\n" + request()], source="127.0.0.2"))
    assert unknown["x-forwarded-for"] == "127.0.0.2"


@pytest.mark.parametrize(
    "port, chunks, why",
    [
        ("strict", [v1Header("203.0.113.7", 4242) + request()], "source not in proxyProtocolSources"),
        ("pp", [request()], "no PROXY header"),
        ("pp", [b"PROXY TCP4 300.1.1.1 127.0.0.1 1 80\r\n" + request()], "malformed PROXY header"),
        ("pp", [b"PROXY TCP4 1.2.3.4 127.0.0.1 x 80\r\n" + request()], "malformed PROXY header"),
        ("pp", [V2_SIGNATURE + b"\x21\x11\x00\x03abc" + request()], "malformed PROXY header"),
        ("pp", [b"PROXY TCP4 1.2.3.4"], "no complete PROXY header within 2s"),
        ("ppTls", [b"\x16\x03\x01\x00\x05hello"], "no PROXY header"),
    ],
)
def test_untrusted_source_or_bad_header_is_closed_and_logged_never_served(
    gw: Gw, port: str, chunks: list[bytes], why: str
) -> None:
    # Marker requests before and after, so the access log (written in
    # batches) shows nothing was served in between.
    exchange(gw.ports["plain"], [request("/headers?before")])
    assert exchange(gw.ports[port], chunks) == b""
    exchange(gw.ports["plain"], [request("/headers?after")])
    lines = gw.logged('"GET /headers?after"')
    between = "".join(lines).split('"GET /headers?before"')[-1].split('"GET /headers?after"')[0]
    assert '"GET' not in between
    # Logged (the first of a burst for each reason, then at most one line per
    # 10 s: see the Clock test).
    waitFor(lambda: why in gw.proc.output(), what=why)
    assert gw.proc.proc.poll() is None


def test_trusted_forwarder_names_the_client(gw: Gw) -> None:
    # From a trusted proxy: the right-most untrusted entry is the client.
    saw = backendSaw(
        exchange(
            gw.ports["plain"],
            [request(headers="X-Forwarded-For: 192.0.2.1, 198.51.100.1, 10.1.1.1\r\n")],
            source="127.0.0.3",
        )
    )
    assert saw["x-seen"] == "198.51.100.1:"
    assert saw["x-forwarded-for"] == "192.0.2.1, 198.51.100.1, 10.1.1.1, 127.0.0.3"
    # From anyone else: not believed, appended to.
    saw = backendSaw(
        exchange(
            gw.ports["plain"], [request(headers="X-Forwarded-For: 198.51.100.1\r\n")], source="127.0.0.1"
        )
    )
    assert saw["x-seen"].startswith("127.0.0.1:")
    assert saw["x-forwarded-for"] == "198.51.100.1, 127.0.0.1"
    # The PROXY protocol's client is the peer whose trust is decided.
    saw = backendSaw(
        exchange(
            gw.ports["pp"],
            [v1Header("10.2.2.2", 7000) + request(headers="X-Forwarded-For: 198.51.100.9\r\n")],
        )
    )
    assert saw["x-seen"] == "198.51.100.9:"
    assert saw["x-forwarded-for"] == "198.51.100.9, 10.2.2.2"
    gw.logged(' 198.51.100.1 "GET /headers"', ' 198.51.100.9 "GET /headers"')


# -- pure pieces ---------------------------------------------------------------

TRUSTED = GatewaySettings(trustedProxies=parseNetworks("10.0.0.0/8, 2001:db8::/32"))


@pytest.mark.parametrize(
    "chain, client",
    [
        ([b"192.0.2.1"], "192.0.2.1"),
        ([b"192.0.2.1, 10.0.0.5"], "192.0.2.1"),
        ([b"198.51.100.1, 192.0.2.1, 10.0.0.5"], "192.0.2.1"),
        ([b"192.0.2.1", b"10.0.0.5, 10.0.0.6"], "192.0.2.1"),
        ([b"10.0.0.1, 10.0.0.2"], "10.0.0.1"),
        ([b"192.0.2.1:4711, [2001:db8::5]:443"], "192.0.2.1"),
        ([b"2001:db9::1, 2001:db8::5"], "2001:db9::1"),
        ([b"192.0.2.1, junk, 10.0.0.5"], "10.0.0.5"),
        ([b"192.0.2.1,, 10.0.0.5"], "192.0.2.1"),
        ([b"junk"], None),
        ([b"\xff"], None),
    ],
)
def test_rightmost_untrusted(chain: list[bytes], client: str | None) -> None:
    assert rightmostUntrusted(chain, TRUSTED) == client


def test_client_address_believes_only_a_trusted_peer() -> None:
    from twisted.internet.address import IPv4Address

    def address(host: str, headers: Headers, settings: GatewaySettings) -> tuple[str, str, int | None]:
        return clientAddress(IPv4Address("TCP", host, 5), headers, settings, settings.isTrustedProxy(host))

    headers = Headers({b"x-forwarded-for": [b"192.0.2.1"]})
    assert address("10.0.0.9", headers, TRUSTED) == ("10.0.0.9", "192.0.2.1", None)
    assert address("11.0.0.9", headers, TRUSTED) == ("11.0.0.9", "11.0.0.9", 5)
    assert address("10.0.0.9", headers, GatewaySettings()) == ("10.0.0.9", "10.0.0.9", 5)
    assert address("10.0.0.9", Headers(), TRUSTED) == ("10.0.0.9", "10.0.0.9", 5)


@pytest.mark.parametrize(
    "item, ip", [(b"192.0.2.1", "192.0.2.1"), (b"[::1]:80", "::1"), (b"::1", "::1"), (b"unknown", None)]
)
def test_forwarded_address(item: bytes, ip: str | None) -> None:
    assert forwardedAddress(item) == ip


def test_refusals_are_logged_at_most_once_per_interval() -> None:
    from twisted.internet.address import IPv4Address
    from twisted.logger import globalLogPublisher

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        clock = Clock()
        factory = ProxyProtocolFactory(None, (), clock, lambda: 5.0, "fp")
        peer = IPv4Address("TCP", "192.0.2.1", 1)
        for _ in range(5):
            factory.refused(peer, "no PROXY header")
        factory.refused(peer, "malformed PROXY header")
        clock.advance(10)
        factory.refused(peer, "no PROXY header")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [e for e in seen if e.get("log_namespace") == "agw.proxyprotocol"]
    assert [(e["why"], e["unlogged"]) for e in lines] == [
        ("no PROXY header", 0),
        ("malformed PROXY header", 0),
        ("no PROXY header", 4),
    ]


def test_connection_limits_count_the_client_the_proxy_header_names(tmp_path: Path) -> None:
    """
    On a port with the PROXY protocol, maxConnectionsPerClient = 2 counts
    the clients the headers name, not the balancer every connection comes
    from, and maxConnections = 3 holds: a third connection for one client
    and a fourth in all are closed unanswered (counted by reason), the
    others are served, and the gateway stays up.
    """
    from tests.test_security import _exchange, _metric

    def proxiedGet(client: str) -> socket.socket | None:
        # From the balancer (127.0.0.1), naming the client in a PROXY v1 header.
        return _exchange("127.0.0.1", port, v1Header(client, 4000))

    b, pb = startBackend(tmp_path, "A")
    port, admin = freePort(), freePort()
    gateway = f"admin = tcp:{admin}:interface=127.0.0.1\nmaxConnections = 3\nmaxConnectionsPerClient = 2"
    ini = basicIni(port, [pb], gateway=gateway).replace(
        "interface = 127.0.0.1\n",
        "interface = 127.0.0.1\nproxyProtocol = true\nproxyProtocolSources = 127.0.0.0/8\n",
        1,
    )
    gw = startGateway(tmp_path, ini, port)
    held: list[socket.socket] = []
    try:
        first = [proxiedGet("203.0.113.1") for _ in range(3)]
        assert [s is not None for s in first] == [True, True, False]
        second = [proxiedGet("203.0.113.2") for _ in range(2)]
        assert [s is not None for s in second] == [True, False]  # 3 in all
        held = [s for s in first + second if s is not None]
        refused = 'agw_connections_refused_total{reason="%s"}'
        waitFor(lambda: _metric(admin, refused % "maxConnectionsPerClient") == 1, what="per-client refusal")
        waitFor(lambda: _metric(admin, refused % "maxConnections") == 1, what="total refusal")
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")  # still served
            s.close()
        held = []
        again = waitFor(lambda: proxiedGet("203.0.113.1"), what="served after the holders left")
        held.append(again)
        assert gw.proc.poll() is None
        assert "Traceback" not in gw.output()
    finally:
        for s in held:
            s.close()
        gw.stop()
        b.stop()

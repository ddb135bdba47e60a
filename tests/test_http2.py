"""
HTTP/2 on HTTPS listeners (issue 15, L{agwtx.http.h2}): real clients (curl
--http2, nghttp, the C{h2} library on a TLS socket) against the real gateway
(twistd) and demo backends, routed as HTTP/1.1 is; the translation of RFC
9113 section 8; per-stream flow control; the defences.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes

from tests.certs import CA
from tests.rawbackend import readHead
from tests.support import Proc, freePort, startBackend, startGateway, waitFor
from tests.test_tls import httpsIni
from tests.ws_helpers import closesOf, startScriptedBackend


@dataclass
class Gw:
    port: int
    plain: int
    proc: Proc
    log: Path
    ca: Path
    raw: int
    ws: int


PAGE = b"""<!doctype html><title>h2</title><script>
window.__r = {proto: performance.getEntriesByType("navigation")[0].nextHopProtocol};
var ws = new WebSocket("wss://" + location.host + "/ws/echo?id=chrome");
ws.onopen = function () { ws.send("hi from chromium"); };
ws.onmessage = function (e) { window.__r.echo = e.data; ws.close(4003, "done"); };
ws.onclose = function (e) { window.__r.closed = e.code; };
ws.onerror = function () { window.__r.error = true; };
</script>"""
"""The page Chromium loads over h2: its protocol, and a WebSocket through the gateway."""


def _rawBackend() -> tuple[socket.socket, int]:
    """
    A backend answering C{/raw/big/N} with N MiB (zeros, Content-Length) and
    anything else with a response carrying hop-by-hop fields.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)

    def serve(conn: socket.socket) -> None:
        try:
            while True:
                head, _ = readHead(conn)
                target = head.split(b" ")[1]
                if target == b"/raw/stall":
                    time.sleep(20)  # reads nothing of the body (bounded: then it closes)
                    return
                if target == b"/raw/page":
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(PAGE), PAGE)
                    )
                elif target.startswith(b"/raw/big/"):
                    size = int(target[9:]) << 20
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                    block = bytes(1 << 16)
                    for _ in range(size >> 16):
                        conn.sendall(block)
                else:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n"
                        b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\nok"
                    )
        except (OSError, ConnectionError, ValueError):
            pass
        finally:
            conn.close()

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("h2gw")
    ca = CA()
    cert, key = ca.issue(["localhost", "a.test", "b.test", "127.0.0.1"]).write(tmp, "leaf")
    caFile = ca.writeRoot(tmp / "ca.pem")
    b1, p1 = startBackend(tmp, "b1")
    b2, p2 = startBackend(tmp, "b2")
    server, rawPort = _rawBackend()
    wsProc, wsPort = startScriptedBackend(tmp)
    port, plain = freePort(), freePort()
    log = tmp / "access.log"
    ini = f"""
[gateway]
enableHttp2 = true
accessLog = {log}
accessLogFormat = json

[frontendPort:main]
port = {port}
interface = 127.0.0.1

[frontendPort:plain]
port = {plain}
interface = 127.0.0.1

[sslCertificate:main]
certificate = {cert}
privateKey = {key}

[httpListener:lB]
frontendPort = main
protocol = Https
hostNames = b.test
sslCertificate = main

[httpListener:lBasic]
frontendPort = main
protocol = Https
sslCertificate = main

[httpListener:lPlain]
frontendPort = plain
protocol = Http

[backendAddressPool:one]
backendAddresses = 127.0.0.1:{p1}

[backendAddressPool:two]
backendAddresses = 127.0.0.1:{p2}

[backendAddressPool:raw]
backendAddresses = 127.0.0.1:{rawPort}

[backendAddressPool:ws]
backendAddresses = 127.0.0.1:{wsPort}

[backendHttpSettings:s]
port = 80
requestTimeout = 60

[backendHttpSettings:wsSettings]
port = 80
webSocketIdleTimeout = 2
webSocketMaxMessageSize = 100000

[urlPathMap:map]
defaultBackendAddressPool = one
defaultBackendHttpSettings = s
pathRule.two = /two/* -> two, s
pathRule.raw = /raw/* -> raw, s
pathRule.ws = /ws/*, /refuse/* -> ws, wsSettings

[requestRoutingRule:byHost]
ruleType = Basic
priority = 10
httpListener = lB
backendAddressPool = two
backendHttpSettings = s

[requestRoutingRule:byPath]
ruleType = PathBasedRouting
priority = 20
httpListener = lBasic
urlPathMap = map

[requestRoutingRule:plain]
ruleType = Basic
priority = 30
httpListener = lPlain
backendAddressPool = one
backendHttpSettings = s
"""
    proc = startGateway(tmp, ini, port)
    try:
        yield Gw(port, plain, proc, log, caFile, rawPort, wsPort)
    finally:
        proc.stop()
        wsProc.stop()
        b1.stop()
        b2.stop()
        server.close()
    assert "Traceback" not in proc.output(), proc.output()


def _curl(gw: Gw, url: str, *args: str) -> tuple[str, str]:
    """(body, "VERSION STATUS") of one curl request (the names resolve to 127.0.0.1)."""
    resolve = [
        a for n in ("a.test", "b.test", "localhost") for a in ("--resolve", f"{n}:{gw.port}:127.0.0.1")
    ]
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-m",
            "20",
            "--cacert",
            str(gw.ca),
            *resolve,
            *args,
            "-w",
            "\n%{http_version} %{http_code}",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    return body, status


@pytest.mark.parametrize(
    "host, path, backend",
    [("b.test", "/headers", "b2"), ("a.test", "/headers", "b1")],
)
def test_curl_http2_is_routed_like_http11(gw: Gw, host: str, path: str, backend: str) -> None:
    url = f"https://{host}:{gw.port}{path}"
    body2, status2 = _curl(gw, url, "--http2", "-H", "Cookie: a=1", "-H", "Cookie: b=2")
    body1, status1 = _curl(gw, url, "--http1.1")
    assert (status2, status1) == ("2 200", "1.1 200")
    seen2, seen1 = json.loads(body2), json.loads(body1)
    assert seen2["backend"] == seen1["backend"] == backend
    headers = dict(seen2["headers"])
    assert headers["Host"] == f"{host}:{gw.port}"  # :authority to Host
    assert headers["Cookie"] == "a=1; b=2"  # crumbs joined (RFC 9113 section 8.2.3)
    assert seen2["uri"] == path
    ids = [headers["X-Request-Id"], dict(seen1["headers"])["X-Request-Id"]]

    def versions() -> list[str]:
        lines = [json.loads(line) for line in gw.log.read_text().splitlines()]
        return [e["httpVersion"] for i in ids for e in lines if e["transactionId"] == i]

    waitFor(lambda: len(versions()) == 2, what="both requests logged")
    assert versions() == ["HTTP/2.0", "HTTP/1.1"]


def test_curl_http2_follows_path_maps(gw: Gw) -> None:
    body, status = _curl(gw, f"https://a.test:{gw.port}/two/x", "--http2")
    assert (status, body.strip()) == ("2 200", "Hello from agw demo backend b2")


def test_curl_http2_streams_a_body_both_ways(gw: Gw, tmp_path: Path) -> None:
    upload = tmp_path / "up"
    upload.write_bytes(bytes(range(256)) * 4096 * 3)  # 3 MiB
    body = tmp_path / "down"
    _, status = _curl(
        gw, f"https://a.test:{gw.port}/echo", "--http2", "--data-binary", f"@{upload}", "-o", str(body)
    )
    assert status == "2 200"
    assert body.read_bytes() == upload.read_bytes()


def test_upgrade_h2c_is_not_honoured_nor_prior_knowledge_on_plain_listeners(gw: Gw) -> None:
    body, status = _curl(gw, f"http://127.0.0.1:{gw.plain}/headers", "--http2")  # sends Upgrade: h2c
    assert status == "1.1 200"
    assert "h2c" not in body and "HTTP2-Settings" not in body
    with socket.create_connection(("127.0.0.1", gw.plain), timeout=10) as s:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400 ")


@pytest.mark.skipif(shutil.which("nghttp") is None, reason="nghttp (nghttp2-client) not installed")
def test_nghttp(gw: Gw) -> None:
    done = subprocess.run(
        ["nghttp", "-nv", "-H", ":authority: b.test", f"https://127.0.0.1:{gw.port}/headers"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "The negotiated protocol: h2" in done.stdout
    assert ":status: 200" in done.stdout
    assert "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100" in done.stdout


def test_enable_http2_follows_a_reload(tmp_path: Path) -> None:
    """Off by default (HTTP/1.1 by ALPN); a reload that turns it on offers h2 to new connections."""
    import os
    import signal

    ca = CA()
    cert, key = ca.issue(["localhost"]).write(tmp_path, "leaf")
    caFile = ca.writeRoot(tmp_path / "ca.pem")
    backend, backendPort = startBackend(tmp_path, "r1")
    port = freePort()
    body = httpsIni(port, cert, key, backendPort)
    proc = startGateway(tmp_path, body, port)
    try:

        def version() -> str:
            done = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "-m",
                    "20",
                    "--http2",
                    "--cacert",
                    str(caFile),
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_version}",
                    f"https://localhost:{port}/",
                ],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert version() == "1.1"
        (tmp_path / f"gw-{port}.ini").write_text("[gateway]\nenableHttp2 = true\n" + body)
        os.kill(proc.pid, signal.SIGHUP)
        waitFor(lambda: "configuration reloaded" in proc.output(), what="the reload")
        assert version() == "2"
    finally:
        proc.stop()
        backend.stop()


# -- the h2 library as the client -----------------------------------------------------------------


@dataclass
class Client:
    """An HTTP/2 client on a TLS socket to the gateway (h2, blocking, bounded reads)."""

    sock: ssl.SSLSocket
    conn: h2.connection.H2Connection
    events: list[Any] = field(default_factory=list)
    closed: bool = False
    stalled: set[int] = field(default_factory=set)
    """Streams whose window the client never opens (their data still opens the connection's)."""

    @classmethod
    def open(cls, gw: Gw, **settings: int) -> "Client":
        ctx = ssl.create_default_context(cafile=str(gw.ca))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert sock.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        if settings:
            conn.update_settings(settings)
        client = cls(sock, conn)
        client.flush()
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self, path: str, method: str = "GET", authority: str = "a.test", extra: Any = (), end: bool = True
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", method),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
            *extra,
        ]
        self.conn.send_headers(sid, headers, end_stream=end)
        self.flush()
        return sid

    def until(self, predicate: Callable[[Any], bool], timeout: float = 20.0) -> Any:
        """Read until an event satisfies C{predicate}; returns it (None if the connection closed)."""
        for e in self.events:
            if predicate(e):
                return e
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closed:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:  # TimeoutError from Python 3.10, not on PyPy 3.9
                continue
            except (ConnectionError, ssl.SSLError):
                data = b""
            if not data:
                self.closed = True
                break
            for e in self.conn.receive_data(data):
                self.events.append(e)
                if isinstance(e, h2.events.DataReceived):
                    if e.stream_id in self.stalled:
                        if e.flow_controlled_length:
                            self.conn.increment_flow_control_window(e.flow_controlled_length)
                    else:
                        self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            self.flush()
            for e in self.events:
                if predicate(e):
                    return e
        return None

    def response(self, sid: int) -> tuple[dict[bytes, bytes], bytes]:
        ended = self.until(
            lambda e: isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
        )
        assert isinstance(ended, h2.events.StreamEnded), (ended, self.events)
        headers: dict[bytes, bytes] = {}
        body = b""
        for e in self.events:
            if getattr(e, "stream_id", None) != sid:
                continue
            if isinstance(e, h2.events.ResponseReceived):
                headers = dict(e.headers)
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
        return headers, body

    def close(self) -> None:
        self.sock.close()


def _goaway(client: Client) -> Any:
    return client.until(lambda e: isinstance(e, h2.events.ConnectionTerminated))


def test_h2_client_sees_no_hop_by_hop_fields(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        headers, body = client.response(client.request("/raw/x"))
        assert headers[b":status"] == b"200" and body == b"ok"
        assert headers[b"x-kept"] == b"yes"
        assert not {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding"} & set(headers)
        assert headers[b"x-request-id"]
    finally:
        client.close()


def _unchecked(client: Client) -> None:
    """Let the client's h2 send what it would refuse (or strip) itself."""
    client.conn.config.validate_outbound_headers = False
    client.conn.config.normalize_outbound_headers = False


@pytest.mark.parametrize(
    "name, value",
    [
        ("connection", "keep-alive"),
        ("keep-alive", "timeout=5"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("te", "gzip"),
    ],
)
def test_connection_specific_request_field_is_a_protocol_error(gw: Gw, name: str, value: str) -> None:
    """
    A malformed request (RFC 9113 sections 8.1.1 and 8.2.2, as the h2
    library checks it) is a stream error: RST_STREAM PROTOCOL_ERROR for its
    stream, and the connection goes on serving.
    """
    client = Client.open(gw)
    try:
        _unchecked(client)
        sid = client.request("/headers", extra=[(name, value)])
        reset = client.until(lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == sid)
        assert reset is not None and reset.error_code == ErrorCodes.PROTOCOL_ERROR, client.events
        headers, body = client.response(client.request("/headers"))
        assert headers[b":status"] == b"200" and b'"backend": "b1"' in body
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events)
    finally:
        client.close()


def test_control_characters_in_a_value_reset_the_stream_only(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        _unchecked(client)
        bad = client.request("/headers", extra=[("x-bad", "a\x01b")])
        reset = client.until(lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == bad)
        assert reset is not None and reset.error_code == ErrorCodes.PROTOCOL_ERROR
        headers, body = client.response(client.request("/headers", extra=[("te", "trailers")]))
        assert headers[b":status"] == b"200"  # the connection goes on; TE: trailers is taken
        assert b'"TE"' not in body.upper()  # and not forwarded (hop-by-hop)
    finally:
        client.close()


def test_a_refused_request_with_a_body_is_answered_and_the_connection_goes_on(gw: Gw) -> None:
    """An invalid host with a body still coming: 400 at once (GatewaySite.startStreaming's refusal)."""
    client = Client.open(gw)
    try:
        _unchecked(client)
        sid = client.request(
            "/echo", method="POST", authority="bad host", end=False, extra=[("content-length", "10")]
        )
        answer = client.until(lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid)
        assert answer is not None and dict(answer.headers)[b":status"] == b"400"
        client.conn.send_data(sid, b"0123456789", end_stream=True)  # the rest of the body: dropped
        client.flush()
        headers, _ = client.response(client.request("/headers"))
        assert headers[b":status"] == b"200"
    finally:
        client.close()


def test_plain_connect_is_refused_like_http11(gw: Gw) -> None:
    """
    400 as on HTTP/1.1; h2 4.1 (the floor) takes a CONNECT without :path as
    malformed: then its stream is reset (PROTOCOL_ERROR).  Never the whole
    connection.
    """
    client = Client.open(gw)
    try:
        _unchecked(client)
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            sid, [(":method", "CONNECT"), (":authority", "example.com:443")], end_stream=True
        )
        client.flush()
        answer = client.until(
            lambda e: (
                isinstance(
                    e, (h2.events.ConnectionTerminated, h2.events.StreamReset, h2.events.ResponseReceived)
                )
                and getattr(e, "stream_id", sid) == sid
            )
        )
        if isinstance(answer, h2.events.StreamReset):
            assert answer.error_code == ErrorCodes.PROTOCOL_ERROR
        else:
            assert isinstance(answer, h2.events.ResponseReceived), answer
            assert dict(answer.headers)[b":status"] == b"400"
        headers, _ = client.response(client.request("/headers"))
        assert headers[b":status"] == b"200"
    finally:
        client.close()
    _stillServes(gw)


def _stillServes(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        headers, body = client.response(client.request("/headers"))
        assert headers[b":status"] == b"200" and b'"backend": "b1"' in body
    finally:
        client.close()


def test_a_stalled_stream_does_not_hold_back_the_others(gw: Gw) -> None:
    """
    A stream whose window the client never opens (a 64 MiB download) pauses
    its own backend socket; another stream on the same connection is answered,
    and the gateway's memory does not grow by the download.
    """
    client = Client.open(gw)
    try:
        before = gw.proc.rssKiB()
        # The client never opens stream 1's window (65535) again after its first bytes.
        stalled = client.conn.get_next_available_stream_id()
        client.stalled.add(stalled)
        assert client.request("/raw/big/64") == stalled
        client.until(lambda e: isinstance(e, h2.events.DataReceived) and e.stream_id == stalled)
        time.sleep(1)
        headers, body = client.response(client.request("/headers"))
        assert headers[b":status"] == b"200" and b'"backend": "b1"' in body
        got = sum(
            len(e.data)
            for e in client.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == stalled
        )
        assert got <= 65535
        assert gw.proc.rssKiB() - before < 32 * 1024
    finally:
        client.close()


# -- WebSocket over HTTP/2 (RFC 8441) ----------------------------------------------------------


def wsFrame(opcode: int, payload: bytes, rsv1: bool = False) -> bytes:
    """A masked client frame (the mask is fixed: tests only); C{rsv1}: compressed (permessage-deflate)."""
    key = b"\x01\x02\x03\x04"
    n = len(payload)
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def closeFrame(code: int, reason: bytes = b"") -> bytes:
    return wsFrame(0x8, code.to_bytes(2, "big") + reason)


def wsFrames(data: bytes) -> list[tuple[int, bytes]]:
    """The complete unmasked (server) frames in C{data}: (opcode, payload)."""
    out = []
    pos = 0
    while pos + 2 <= len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos : pos + 8], "big"), pos + 8
        if pos + n > len(data):
            break
        out.append((opcode, data[pos : pos + n]))
        pos += n
    return out


class WsOverH2:
    """A WebSocket on an HTTP/2 stream: extended CONNECT, then frames in DATA."""

    def __init__(self, client: Client, path: str, extra: Any = ()) -> None:
        self.client = client
        client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        assert client.conn.remote_settings.enable_connect_protocol == 1
        self.sid = sid = client.conn.get_next_available_stream_id()
        headers = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":authority", "a.test"),
            (":path", path),
            ("sec-websocket-version", "13"),
            *extra,
        ]
        client.conn.send_headers(sid, headers)
        client.flush()
        answer = client.until(
            lambda e: (
                isinstance(e, (h2.events.ResponseReceived, h2.events.StreamReset)) and e.stream_id == sid
            )
        )
        assert isinstance(answer, h2.events.ResponseReceived), client.events
        self.headers = dict(answer.headers)

    def send(self, frame: bytes) -> None:
        conn = self.client.conn
        while frame:
            self.client.until(lambda e: conn.local_flow_control_window(self.sid) > 0)
            n = min(len(frame), conn.max_outbound_frame_size, conn.local_flow_control_window(self.sid))
            conn.send_data(self.sid, frame[:n])
            self.client.flush()
            frame = frame[n:]

    def data(self) -> bytes:
        return b"".join(
            e.data
            for e in self.client.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == self.sid
        )

    def frames(self, count: int) -> list[tuple[int, bytes]]:
        self.client.until(lambda e: len(wsFrames(self.data())) >= count)
        return wsFrames(self.data())

    def ended(self) -> Any:
        return self.client.until(
            lambda e: (
                isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == self.sid
            )
        )


def test_websocket_over_h2_echoes_and_passes_close_codes_both_ways(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        ws = WsOverH2(client, "/ws/echo?id=h2a", [("sec-websocket-protocol", "chat, other")])
        assert ws.headers[b":status"] == b"200"
        assert ws.headers[b"sec-websocket-protocol"] == b"chat"
        assert not {b"upgrade", b"connection", b"sec-websocket-accept"} & set(ws.headers)
        ws.send(wsFrame(0x1, b"hello over h2"))
        ws.send(wsFrame(0x2, bytes(range(256)) * 100))
        assert ws.frames(2)[:2] == [(0x1, b"hello over h2"), (0x2, bytes(range(256)) * 100)]
        # The backend closes with 4001: the client gets 4001, answers it, the stream ends.
        ws.send(wsFrame(0x1, b"!close 4001 bye"))
        assert ws.frames(3)[2] == (0x8, (4001).to_bytes(2, "big") + b"bye")
        ws.send(closeFrame(4001, b"bye"))
        assert isinstance(ws.ended(), h2.events.StreamEnded)
        # A second WebSocket on the same connection: the client closes with 4002.
        other = WsOverH2(client, "/ws/echo?id=h2b")
        other.send(closeFrame(4002, b"client"))
        assert other.frames(1)[0] == (0x8, (4002).to_bytes(2, "big") + b"client")
        waitFor(lambda: "h2b" in closesOf(gw.ws), what="the backend's close")
        assert closesOf(gw.ws)["h2b"][:2] == [4002, "client"]
        # And plain requests still flow on the connection.
        headers, _ = client.response(client.request("/headers"))
        assert headers[b":status"] == b"200"
    finally:
        client.close()
    waitFor(
        lambda: '"httpStatus":200' in gw.log.read_text() and "/ws/echo" in gw.log.read_text(), what="logged"
    )


def test_websocket_over_h2_pings_and_permessage_deflate(gw: Gw) -> None:
    """
    As on HTTP/1.1: a ping is answered with its payload, and
    permessage-deflate is negotiated on the client leg (an HTTP/2 stream):
    a compressed message reaches the backend and comes back compressed.
    Where autobahn cannot bound inflation (DEFLATE false: the PyPy floors)
    the offer is declined and the message goes both ways uncompressed.
    """
    import zlib

    from agwtx.websocket.frames import DEFLATE

    client = Client.open(gw)
    try:
        ws = WsOverH2(client, "/ws/echo?id=h2d", [("sec-websocket-extensions", "permessage-deflate")])
        assert ws.headers[b":status"] == b"200"
        extensions = ws.headers.get(b"sec-websocket-extensions", b"")
        assert extensions.startswith(b"permessage-deflate") == DEFLATE, ws.headers
        ws.send(wsFrame(0x9, b"are you there"))
        assert ws.frames(1)[0] == (0xA, b"are you there")
        text = b"squeeze me, " * 200
        if not DEFLATE:
            ws.send(wsFrame(0x1, text))
            assert ws.frames(2)[1] == (0x1, text)
            return
        packer = zlib.compressobj(wbits=-15)
        packed = packer.compress(text) + packer.flush(zlib.Z_SYNC_FLUSH)
        assert packed.endswith(b"\x00\x00\xff\xff")
        ws.send(wsFrame(0x1, packed[:-4], rsv1=True))

        def inflated() -> bytes:
            # The echo's frames after the pong (autobahn may send it as a
            # text frame and continuations), inflated.
            frames = wsFrames(ws.data())[1:]
            assert all(opcode in (0x0, 0x1) for opcode, _ in frames), frames
            packed = b"".join(payload for _, payload in frames)
            return zlib.decompressobj(wbits=-15).decompress(packed + b"\x00\x00\xff\xff")

        client.until(lambda e: inflated() == text)
        assert inflated() == text
        assert sum(len(p) for _, p in wsFrames(ws.data())[1:]) < len(text)  # compressed on the way back
        ws.send(closeFrame(1000))
        assert isinstance(ws.ended(), h2.events.StreamEnded)
    finally:
        client.close()


def test_websocket_over_h2_survives_a_reload(gw: Gw) -> None:
    """As on HTTP/1.1: a reload (SIGHUP) leaves an open WebSocket over HTTP/2 and its connection working."""
    import os
    import signal

    client = Client.open(gw)
    try:
        ws = WsOverH2(client, "/ws/echo?id=h2r")
        ws.send(wsFrame(0x1, b"before"))
        assert ws.frames(1)[0] == (0x1, b"before")
        reloads = gw.proc.output().count("configuration reloaded")
        os.kill(gw.proc.pid, signal.SIGHUP)
        waitFor(lambda: gw.proc.output().count("configuration reloaded") > reloads, what="the reload")
        ws.send(wsFrame(0x1, b"after"))
        assert ws.frames(2)[1] == (0x1, b"after")
        headers, _ = client.response(client.request("/headers"))
        assert headers[b":status"] == b"200"
        ws.send(closeFrame(1000))
        assert isinstance(ws.ended(), h2.events.StreamEnded)
    finally:
        client.close()


def test_websocket_over_h2_refusal_is_the_backends_status(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        ws = WsOverH2(client, "/refuse/403")
        assert ws.headers[b":status"] == b"403"
        assert isinstance(ws.ended(), h2.events.StreamEnded)
    finally:
        client.close()


def test_websocket_over_h2_size_limit_and_idle_timeout(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        big = WsOverH2(client, "/ws/echo?id=h2big")
        big.send(wsFrame(0x2, bytes(200000)))  # over webSocketMaxMessageSize = 100000
        assert big.frames(1)[0][0] == 0x8
        assert big.frames(1)[0][1][:2] == (1009).to_bytes(2, "big")
        idle = WsOverH2(client, "/ws/echo?id=h2idle")  # webSocketIdleTimeout = 2
        assert idle.frames(1)[0] == (0x8, (1001).to_bytes(2, "big") + idle.frames(1)[0][1][2:])
    finally:
        client.close()


def test_chromium_loads_a_page_over_h2_and_opens_a_websocket(gw: Gw, tmp_path: Path) -> None:
    from tests.test_statuspage import CHROMIUM, Chromium

    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium chromium-driver)")
    browser = Chromium(tmp_path)
    try:
        browser.call("Security.setIgnoreCertificateErrors", ignore=True)
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"https://localhost:{gw.port}/raw/page")
        result = waitFor(
            lambda: (
                (browser.evaluate("JSON.stringify(window.__r || null)") or "null") != "null"
                and json.loads(browser.evaluate("JSON.stringify(window.__r)")).get("closed")
            ),
            what="the page's WebSocket to close",
        )
        assert result
        seen = json.loads(browser.evaluate("JSON.stringify(window.__r)"))
        assert seen == {"proto": "h2", "echo": "hi from chromium", "closed": 4003}, seen
    finally:
        browser.close()
    waitFor(lambda: "chrome" in closesOf(gw.ws), what="the backend's close")
    assert closesOf(gw.ws)["chrome"][:2] == [4003, "done"]
    lines = [json.loads(line) for line in gw.log.read_text().splitlines()]
    wsLines = [e for e in lines if e["requestUri"] == "/ws/echo"]
    # Chromium opens its WebSocket on the page's h2 connection (RFC 8441) when offered.
    assert wsLines and wsLines[-1]["httpVersion"] == "HTTP/2.0", wsLines


def test_an_upload_to_a_stalled_backend_pauses_its_stream_only(gw: Gw) -> None:
    """
    The backend reads nothing of the body: the gateway stops opening that
    stream's window (the client cannot send more than a bounded amount), and
    another stream on the same connection is answered meanwhile.
    """
    client = Client.open(gw)
    try:
        before = gw.proc.rssKiB()
        sid = client.request("/raw/stall", method="POST", end=False)
        conn = client.conn
        sent = 0
        block = bytes(16384)
        while sent < 256 << 20:
            if conn.local_flow_control_window(sid) <= 0:
                # Wait for the gateway to open the window again; it will not, once paused.
                grown = client.until(lambda e: conn.local_flow_control_window(sid) > 0, timeout=3)
                if grown is None:
                    break
            n = min(len(block), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            conn.send_data(sid, block[:n])
            client.flush()
            sent += n
        assert sent < 64 << 20, sent  # paused long before the 256 MiB
        headers, body = client.response(client.request("/headers"))
        assert headers[b":status"] == b"200" and b'"backend": "b1"' in body
        assert gw.proc.rssKiB() - before < 48 * 1024
    finally:
        client.close()


# -- defences ---------------------------------------------------------------------------------------


def test_rapid_reset_ends_in_goaway_enhance_your_calm(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        for _ in range(400):  # RESET_BURST is 200
            sid = client.request("/headers", end=True)
            client.conn.reset_stream(sid, ErrorCodes.CANCEL)
            client.flush()
        ended = _goaway(client)
        assert ended is not None and ended.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    finally:
        client.close()
    waitFor(lambda: "Rapid Reset" in gw.proc.output(), what="the Rapid Reset log line")
    _stillServes(gw)


def test_streams_over_the_advertised_limit_are_refused(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        assert client.conn.remote_settings.max_concurrent_streams == 100
        # The client ignores the limit: its 101st open stream is a protocol error.
        client.conn.remote_settings.max_concurrent_streams = 1000
        client.conn.remote_settings.acknowledge()
        for _ in range(101):
            client.request("/raw/big/64", end=True)
        ended = _goaway(client)
        assert ended is not None and ended.error_code in (
            ErrorCodes.PROTOCOL_ERROR,
            ErrorCodes.REFUSED_STREAM,
        )
    finally:
        client.close()
    _stillServes(gw)


def test_an_oversized_header_list_ends_in_goaway(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        client.conn.max_outbound_frame_size = 16384
        big = [(f"x-big-{i}", "v" * 4000) for i in range(40)]  # 160 KB, over the 64 KiB list
        client.request("/headers", extra=big)
        ended = _goaway(client)
        assert ended is not None and ended.error_code in (
            ErrorCodes.ENHANCE_YOUR_CALM,
            ErrorCodes.PROTOCOL_ERROR,
        )
    finally:
        client.close()
    _stillServes(gw)


def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


def test_a_continuation_flood_ends_in_goaway(gw: Gw) -> None:
    client = Client.open(gw)
    try:
        client.until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        # HEADERS without END_HEADERS, then CONTINUATION frames that never end the block.
        client.sock.sendall(_frame(0x1, 0x0, 1, b"\x82"))  # :method GET, indexed
        try:
            for _ in range(200):  # 2.4 MB; h2 takes 64 CONTINUATION frames per block
                client.sock.sendall(_frame(0x9, 0x0, 1, b"\x40\x01a\x01b" * 2000))
        except OSError:
            pass
        ended = _goaway(client)
        assert ended is not None and ended.error_code == ErrorCodes.PROTOCOL_ERROR
        client.until(lambda e: False, timeout=10)
        assert client.closed
    finally:
        client.close()
    _stillServes(gw)


def test_a_huge_window_does_not_make_the_gateway_buffer_a_slow_readers_download(gw: Gw) -> None:
    """
    A client granting a 2 GiB window that then reads nothing: the stream's
    queue is bounded (STREAM_QUEUE_LIMIT), so its backend socket is paused
    instead of the gateway holding the 256 MiB download.
    """
    client = Client.open(gw)
    try:
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        client.conn.increment_flow_control_window(2**31 - 1 - 65535)
        client.flush()
        before = gw.proc.rssKiB()
        client.request("/raw/big/256")
        time.sleep(3)  # time for the backend to push whatever the gateway will take
        assert gw.proc.rssKiB() - before < 48 * 1024
    finally:
        client.close()
    _stillServes(gw)


def test_a_ping_flood_from_a_client_that_does_not_read_is_cut_off(gw: Gw) -> None:
    """Twisted bounds the PING answers buffered for a client that never reads (17 KiB), then drops it."""
    ctx = ssl.create_default_context(cafile=str(gw.ca))
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=20)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    ping = _frame(0x6, 0x0, 0, b"12345678")
    cut = False
    before = gw.proc.rssKiB()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            sock.sendall(ping * 512)
    except OSError:
        cut = True
    finally:
        sock.close()
    assert cut
    assert gw.proc.rssKiB() - before < 32 * 1024
    _stillServes(gw)


def test_round_robin_scheduler_has_the_priority_tree_interface_twisted_uses() -> None:
    import priority

    from agwtx.http.h2 import _RoundRobin

    rr = _RoundRobin()
    for sid in (1, 3, 5):
        rr.insert_stream(sid)
        rr.block(sid)
    with pytest.raises(priority.DuplicateStreamError):
        rr.insert_stream(3)
    with pytest.raises(priority.MissingStreamError):
        rr.reprioritize(7, weight=200)
    rr.reprioritize(3, weight=200)  # taken, ignored
    with pytest.raises(priority.DeadlockError):
        next(rr)
    rr.unblock(1)
    rr.unblock(5)
    rr.unblock(9)  # unknown: not scheduled
    assert [next(rr) for _ in range(4)] == [1, 5, 1, 5]
    rr.block(1)
    assert [next(rr) for _ in range(2)] == [5, 5]
    rr.remove_stream(5)
    with pytest.raises(priority.DeadlockError):
        next(rr)


def test_idle_timeout_runs_only_while_no_stream_is_open_and_pings_do_not_restart_it() -> None:
    """
    On a controlled clock: an idle connection is timed out however many
    PINGs it sends; a stream that stays open (a slow backend, a WebSocket)
    suspends the timer, which starts again when the last stream is done.
    """
    import types

    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.web.http import Request

    from agwtx.config.model import GatewaySettings
    from agwtx.http.h2 import GatewayH2Connection

    def connect() -> tuple[Clock, StringTransport, GatewayH2Connection, h2.connection.H2Connection]:
        clock = Clock()
        conn = GatewayH2Connection(clock)
        conn.timeOut = 60
        conn.callLater = clock.callLater
        config = types.SimpleNamespace(gateway=GatewaySettings())
        conn.site = types.SimpleNamespace(allowUnderscores=False, ctx=types.SimpleNamespace(config=config))
        conn.factory = None
        conn.requestFactory = Request
        transport = StringTransport()
        conn.makeConnection(transport)
        transport.registerProducer(conn, True)  # as NegotiatingChannel does
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        conn.dataReceived(client.data_to_send())
        return clock, transport, conn, client

    clock, transport, conn, client = connect()
    for _ in range(7):
        clock.advance(10)
        client.ping(b"12345678")
        conn.dataReceived(client.data_to_send())
    assert transport.disconnecting  # 70 s of PINGs: idle all the same

    clock, transport, conn, client = connect()
    client.send_headers(1, [(":method", "POST"), (":scheme", "https"), (":authority", "a"), (":path", "/")])
    conn.dataReceived(client.data_to_send())
    clock.advance(600)
    assert not transport.disconnecting  # a stream is open
    client.reset_stream(1)
    conn.dataReceived(client.data_to_send())
    clock.advance(59)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting


def test_request_limits_apply_to_h2_streams(tmp_path: Path) -> None:
    """
    The [gateway] request limits over HTTP/2: a content-length over
    maxRequestBodySize is answered 413 and the backend sees nothing; a body
    without one that grows past it is cut with 413; header fields over
    maxRequestHeaderSize or maxRequestHeaderCount get 431; the connection
    goes on serving.
    """
    from types import SimpleNamespace

    from tests.rawbackend import RawBackend

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        while b"0\r\n\r\n" not in rest and b"content-length: 0" not in head.lower():
            chunk = conn.recv(65536)
            if not chunk:
                return
            rest += chunk
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    backend = RawBackend(handler)
    ca = CA()
    cert, key = ca.issue(["localhost"]).write(tmp_path, "leaf")
    caFile = ca.writeRoot(tmp_path / "ca.pem")
    port = freePort()
    body = httpsIni(port, cert, key, backend.port)
    proc = startGateway(tmp_path, "[gateway]\nenableHttp2 = true\nmaxRequestBodySize = 1000\n" + body, port)
    client = Client.open(SimpleNamespace(port=port, ca=caFile))  # type: ignore[arg-type]
    try:
        sid = client.request("/up", method="POST", end=False, extra=[("content-length", "5000")])
        headers, text = client.response(sid)
        assert headers[b":status"] == b"413", (headers, text)
        assert b"1000 bytes" in text
        assert backend.requests == 0

        sid = client.request("/up", method="POST", end=False)
        client.conn.send_data(sid, b"a" * 600)
        client.conn.send_data(sid, b"b" * 600)
        client.flush()
        answer = client.until(lambda e: isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid)
        assert answer is not None and dict(answer.headers)[b":status"] == b"413"

        # The head limits ([gateway] maxRequestHeaderSize 32768, maxRequestHeaderCount 500 by
        # default) as on HTTP/1.1: 431 for the stream, under h2's 64 KiB header list.
        seen = backend.requests  # the cut body's request may have reached the backend
        headers, text = client.response(client.request("/big", extra=[("x-big", "a" * 40000)]))
        assert headers[b":status"] == b"431", (headers, text)
        assert b"32768 bytes" in text
        many = [(f"x-f{i}", "1") for i in range(501)]
        headers, text = client.response(client.request("/many", extra=many))
        assert headers[b":status"] == b"431", (headers, text)
        assert b"500 header fields" in text
        assert backend.requests == seen

        headers, text = client.response(client.request("/ok", method="POST", extra=[("content-length", "0")]))
        assert headers[b":status"] == b"200", (headers, text)
        assert proc.proc.poll() is None
        assert "Traceback" not in proc.output(), proc.output()
    finally:
        client.close()
        proc.stop()
        backend.close()

"""
Request IDs, trace context, the JSON access log, log reopening and custom
error pages (docs/observability.rst): pure parts by table, the rest through
the real gateway (twistd) with real backends and clients on loopback.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from twisted.web.http_headers import Headers

from agwtx.ops.accesslog import formatAccessJson
from agwtx.runtime.errorpages import ErrorPages, prefersJson
from agwtx.config.model import CustomErrorPage, GatewayConfig, GatewaySettings, HttpListener
from agwtx.runtime.requestid import RequestTagger, parseTraceparent
from tests.certs import selfSigned
from tests.rawbackend import RawBackend, headerValue, readHead
from tests.support import Proc, basicIni, freePort, startGateway, waitFor
from tests.ws_helpers import startScriptedBackend

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
HEX32 = re.compile(r"[0-9a-f]{32}\Z")


# -- pure parts ------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        ([TRACEPARENT.encode()], (TRACE.encode(), b"01")),
        ([f"00-{TRACE}-{PARENT}-00".encode()], (TRACE.encode(), b"00")),
        ([f" 00-{TRACE}-{PARENT}-01 ".encode()], (TRACE.encode(), b"01")),  # OWS around the value
        (
            [f"01-{TRACE}-{PARENT}-01-future".encode()],
            (TRACE.encode(), b"01"),
        ),  # later version: 4 fields read
        ([f"01-{TRACE}-{PARENT}-01".encode()], (TRACE.encode(), b"01")),
        (None, None),
        ([], None),
        ([TRACEPARENT.encode(), TRACEPARENT.encode()], None),  # two headers
        ([f"00-{TRACE}-{PARENT}-01-x".encode()], None),  # version 00 has nothing after the flags
        ([f"01-{TRACE}-{PARENT}-01x".encode()], None),  # a later version's extra must follow a dash
        ([f"ff-{TRACE}-{PARENT}-01".encode()], None),  # version ff is invalid
        ([f"00-{'0' * 32}-{PARENT}-01".encode()], None),  # all-zero trace id
        ([f"00-{TRACE}-{'0' * 16}-01".encode()], None),  # all-zero parent id
        ([f"00-{TRACE.upper()}-{PARENT}-01".encode()], None),  # upper case hex
        ([f"00-{TRACE[:-1]}-{PARENT}-01".encode()], None),  # short trace id
        ([b"garbage"], None),
    ],
)
def test_traceparent_parsing(values: list[bytes] | None, expected: tuple[bytes, bytes] | None) -> None:
    assert parseTraceparent(values) == expected


@pytest.mark.parametrize(
    "accept, json_",
    [
        (None, False),
        ([b"*/*"], False),
        ([b"text/html"], False),
        ([b"application/json"], True),
        ([b"application/json, text/html"], True),  # same q, JSON named first
        ([b"text/html, application/json"], False),
        ([b"text/html;q=0.5, application/json"], True),  # q decides
        ([b"application/json;q=0.4, text/html;q=0.9"], False),
        ([b"application/json", b"text/html;q=0.1"], True),  # several header lines
        ([b"application/*"], True),  # HTML not acceptable at all
        ([b"application/*, text/html"], False),  # same q, only HTML named
        ([b"application/json, */*;q=0.1"], True),
        ([b"application/json;q=0"], False),  # q=0: not acceptable
        ([b"application/json;q=x"], False),  # malformed q counts as 0
        ([b"text/html, application/json;q=1.0"], False),
    ],
)
def test_accept_prefers_json(accept: list[bytes] | None, json_: bool) -> None:
    assert prefersJson(accept) is json_


def test_listener_pages_replace_the_gateway_pages() -> None:
    """Azure: a listener with pages of its own uses only those; others use the gateway's."""
    config = GatewayConfig(
        path="gw.ini",
        gateway=GatewaySettings(
            customErrorPages=(CustomErrorPage(502, "g502", b"G502"), CustomErrorPage(504, "g504", b"G504"))
        ),
        httpListeners={
            "own": HttpListener("own", "fp", customErrorPages=(CustomErrorPage(502, "l502", b"L502"),)),
            "plain": HttpListener("plain", "fp"),
        },
    )
    pages = ErrorPages(config)
    assert pages.page("own", 502) == b"L502"
    assert pages.page("own", 504) is None
    assert pages.page("plain", 502) == b"G502"
    assert pages.page(None, 504) == b"G504"
    assert pages.body("plain", 503, "Service Unavailable: x", "id1", None) == (
        b"text/plain; charset=utf-8",
        b"503 Service Unavailable: x\n",
    )
    kind, body = pages.body("own", 502, "Bad Gateway: x", "id1", [b"application/json"])
    assert kind == b"application/json"
    assert json.loads(body) == {"status": 502, "reason": "Bad Gateway: x", "requestId": "id1"}


def _request(headers: dict[bytes, list[bytes]], peer: str) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(requestHeaders=Headers(headers), clientIP=peer, peerIP=peer)


@pytest.mark.parametrize(
    "settings, peer, incoming, kept",
    [
        (GatewaySettings(), "192.0.2.1", b"client-id-1", False),
        (GatewaySettings(trustClientRequestId=True), "192.0.2.1", b"client-id-1", True),
        (GatewaySettings(trustClientRequestId=True), "192.0.2.1", b"bad id with spaces", False),
        (GatewaySettings(trustClientRequestId=True), "192.0.2.1", b"x" * 201, False),
    ],
)
def test_incoming_request_id_trust(settings: GatewaySettings, peer: str, incoming: bytes, kept: bool) -> None:
    tagger = RequestTagger(settings)
    request = _request({b"x-request-id": [incoming]}, peer)
    tagger.tag(request)
    if kept:
        assert request.agwRequestId == incoming.decode()
    else:
        assert HEX32.match(request.agwRequestId)


def test_trusted_proxy_id_kept_and_header_name_configurable() -> None:
    from agwtx.config.values import parseNetworks

    tagger = RequestTagger(
        GatewaySettings(trustedProxies=parseNetworks("10.0.0.0/8"), requestIdHeader="X-Correlation-ID")
    )
    request = _request({b"x-correlation-id": [b"abc-123"]}, "10.1.2.3")
    tagger.tag(request)
    assert request.agwRequestId == "abc-123"
    request = _request({b"x-correlation-id": [b"abc-123"]}, "192.0.2.1")
    tagger.tag(request)
    assert request.agwRequestId != "abc-123"
    assert tagger.backendHeaders(request)[0] == (b"X-Correlation-ID", request.agwRequestId.encode())


def test_json_record_from_the_text_event() -> None:
    """One event, two renderings: the text line's event gives the JSON record too."""
    event = {
        "client": "203.0.113.9",
        "method": "GET",
        "uri": "/a?b=1",
        "status": 200,
        "bytes": 31,
        "duration_ms": 1.5,
        "listener": "l1",
        "rule": "r1",
        "pool": "pool",
        "member": "127.0.0.1:8081",
        "error": None,
        "event": "access",
        "requestId": "r" * 32,
        "userAgent": 'quote " and \n newline',
    }
    line = formatAccessJson(event, "2026-01-01T00:00:00Z")
    assert line.count("\n") == 1 and line.endswith("\n")
    assert json.loads(line) == {
        "timeStamp": "2026-01-01T00:00:00Z",
        "logType": "access",
        "instanceId": "",
        "clientIP": "203.0.113.9",
        "clientPort": 0,
        "httpMethod": "GET",
        "requestUri": "/a",
        "requestQuery": "b=1",
        "originalRequestUriWithArgs": "/a?b=1",
        "host": "",
        "userAgent": 'quote " and \n newline',
        "httpStatus": 200,
        "httpVersion": "-",
        "receivedBytes": 0,
        "sentBytes": 31,
        "timeTaken": 0.0015,
        "transactionId": "r" * 32,
        "sslEnabled": "off",
        "sslCipher": "",
        "sslProtocol": "",
        "serverRouted": "127.0.0.1:8081",
        "serverStatus": "-",
        "serverResponseLatency": "-",
        "listenerName": "l1",
        "ruleName": "r1",
        "backendPoolName": "pool",
        "backendSettingName": "",
        "traceId": "",
        "spanId": "",
        "error": "",
    }


# -- through the real gateway -----------------------------------------------------


class Recorder:
    """A raw backend that records each request head and answers it (or, for /slow, never)."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.release = threading.Event()
        self.backend = RawBackend(self.handle)

    def handle(self, conn: socket.socket, head: bytes, rest: bytes) -> None:
        while True:
            self.heads.append(head)
            if head.startswith(b"GET /slow"):
                self.release.wait(10)
                return
            if head.startswith(b"GET /own502"):
                conn.sendall(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n\r\n"
                    b"backend says no"
                )
                return
            body = b"hello"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Request-ID: from-backend\r\n\r\n" + body)
            try:
                head, rest = readHead(conn)
            except (ConnectionError, OSError):
                return

    def header(self, index: int, name: bytes) -> str | None:
        """Header C{name} of the C{index}th recorded head, as text."""
        value = headerValue(self.heads[index], name)
        return None if value is None else value.decode()


@dataclass
class Gw:
    proc: Proc
    http: int
    https: int
    dead: int
    slow: int
    ws: int
    log: Path
    tmp: Path
    recorder: Recorder
    pages: dict[str, Path]
    config: Path


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gw]:
    tmp = tmp_path_factory.mktemp("obs")
    recorder = Recorder()
    wsProc, wsPort = startScriptedBackend(tmp)
    cert, key = selfSigned(["localhost"]).write(tmp, "gw")
    pages = {
        "g502": tmp / "g502.html",
        "g504": tmp / "g504.html",
        "l502": tmp / "l502.html",
        "g400": tmp / "g400.html",
    }
    pages["g400"].write_text("<h1>gateway 400</h1>\n")
    pages["g502"].write_text("<h1>gateway 502 – sorry</h1>\n", encoding="utf-8")
    pages["g504"].write_text("<h1>gateway 504</h1>\n")
    pages["l502"].write_text("<h1>listener 502</h1>\n")
    deadPort = freePort()  # nothing listens there
    ports = {name: freePort() for name in ("http", "https", "dead", "slow", "ws")}
    log = tmp / "access.json"
    ini = f"""
[gateway]
accessLog = {log}
accessLogFormat = json
trustedProxies = 127.0.0.2/32
customErrorPage.502 = g502.html
customErrorPage.504 = g504.html
customErrorPage.400 = g400.html
"""
    for name, port in ports.items():
        ini += f"\n[frontendPort:{name}]\nport = {port}\ninterface = 127.0.0.1\n"
    ini += f"""
[sslCertificate:c]
certificate = {cert}
privateKey = {key}

[httpListener:lHttp]
frontendPort = http

[httpListener:lHttps]
frontendPort = https
protocol = Https
sslCertificate = c

[httpListener:lDead]
frontendPort = dead
customErrorPage.502 = l502.html

[httpListener:lSlow]
frontendPort = slow

[httpListener:lWs]
frontendPort = ws

[backendAddressPool:rec]
backendAddresses = 127.0.0.1:{recorder.backend.port}

[backendAddressPool:dead]
backendAddresses = 127.0.0.1:{deadPort}

[backendAddressPool:ws]
backendAddresses = 127.0.0.1:{wsPort}

[backendHttpSettings:s]
port = 80

[backendHttpSettings:quick]
port = 80
requestTimeout = 1
"""
    for i, (listener, pool, settings) in enumerate(
        (
            ("lHttp", "rec", "s"),
            ("lHttps", "rec", "s"),
            ("lDead", "dead", "s"),
            ("lSlow", "rec", "quick"),
            ("lWs", "ws", "s"),
        )
    ):
        ini += f"""
[requestRoutingRule:r{listener[1:]}]
priority = {100 + i}
httpListener = {listener}
backendAddressPool = {pool}
backendHttpSettings = {settings}
"""
    proc = startGateway(tmp, ini, ports["ws"])
    config = tmp / f"gw-{ports['ws']}.ini"
    try:
        yield Gw(
            proc,
            ports["http"],
            ports["https"],
            ports["dead"],
            ports["slow"],
            ports["ws"],
            log,
            tmp,
            recorder,
            pages,
            config,
        )
    finally:
        proc.stop()
        recorder.release.set()
        recorder.backend.close()
        wsProc.stop()


def get(
    port: int,
    path: str = "/",
    headers: dict[str, str] | None = None,
    source: str = "127.0.0.1",
    tls: bool = False,
) -> tuple[int, dict[str, str], bytes]:
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=15, context=ctx, source_address=(source, 0)
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def records(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def recordOf(log: Path, requestId: str, logType: str = "access") -> dict[str, Any]:
    """The JSON record with C{transactionId} C{requestId} (the writer flushes within a second)."""

    def find() -> dict[str, Any] | None:
        for record in records(log):
            if record["transactionId"] == requestId and record["logType"] == logType:
                return record
        return None

    found: dict[str, Any] = waitFor(find, 10, f"access record {requestId}")
    return found


def test_request_id_round_trip_to_backend_client_and_log(gw: Gw) -> None:
    before = len(gw.recorder.heads)
    status, headers, body = get(gw.http, "/a?x=1", {"User-Agent": "obs-test"})
    assert status == 200 and body == b"hello"
    requestId = headers["x-request-id"]
    assert HEX32.match(requestId)  # made by the gateway, replacing the backend's own
    assert gw.recorder.header(before, b"x-request-id") == requestId
    record = recordOf(gw.log, requestId)
    assert record["requestUri"] == "/a" and record["requestQuery"] == "x=1"
    assert record["userAgent"] == "obs-test" and record["httpStatus"] == 200
    assert record["serverStatus"] == "200" and record["listenerName"] == "lHttp"


def test_incoming_id_replaced_from_a_client_kept_from_a_trusted_proxy(gw: Gw) -> None:
    before = len(gw.recorder.heads)
    _, fromClient, _ = get(gw.http, "/", {"X-Request-ID": "spoofed-1"}, source="127.0.0.1")
    _, fromProxy, _ = get(gw.http, "/", {"X-Request-ID": "edge-42"}, source="127.0.0.2")
    assert fromClient["x-request-id"] != "spoofed-1" and HEX32.match(fromClient["x-request-id"])
    assert gw.recorder.header(before, b"x-request-id") == fromClient["x-request-id"]
    assert fromProxy["x-request-id"] == "edge-42"
    assert gw.recorder.header(before + 1, b"x-request-id") == "edge-42"
    assert recordOf(gw.log, "edge-42")["clientIP"] == "127.0.0.2"


def test_traceparent_kept_with_a_new_parent_renewed_and_replaced(gw: Gw) -> None:
    before = len(gw.recorder.heads)
    _, kept, _ = get(gw.http, "/", {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"})
    _, fresh, _ = get(gw.http, "/")
    _, invalid, _ = get(gw.http, "/", {"traceparent": f"00-{'0' * 32}-{PARENT}-01", "tracestate": "vendor=x"})
    shape = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
    first = shape.match(gw.recorder.header(before, b"traceparent") or "")
    assert first is not None
    assert first.group(1) == TRACE and first.group(3) == "01"  # same trace and flags
    assert first.group(2) != PARENT  # the gateway's own span as the parent
    assert gw.recorder.header(before, b"tracestate") == "vendor=abc"
    record = recordOf(gw.log, kept["x-request-id"])
    assert record["traceId"] == TRACE and record["spanId"] == first.group(2)
    for index, headers in ((before + 1, fresh), (before + 2, invalid)):
        m = shape.match(gw.recorder.header(index, b"traceparent") or "")
        assert m is not None and m.group(1) != TRACE and m.group(1) != "0" * 32
        assert gw.recorder.header(index, b"tracestate") is None  # no state without its trace
        assert recordOf(gw.log, headers["x-request-id"])["traceId"] == m.group(1)


AZURE_TYPES: dict[str, type | tuple[type, ...]] = {
    "timeStamp": str,
    "instanceId": str,
    "clientIP": str,
    "clientPort": int,
    "httpMethod": str,
    "requestUri": str,
    "requestQuery": str,
    "originalRequestUriWithArgs": str,
    "host": str,
    "userAgent": str,
    "httpStatus": int,
    "httpVersion": str,
    "receivedBytes": int,
    "sentBytes": int,
    "timeTaken": float,
    "transactionId": str,
    "sslEnabled": str,
    "sslCipher": str,
    "sslProtocol": str,
    "serverRouted": str,
    "serverStatus": str,
    "serverResponseLatency": str,
    "listenerName": str,
    "ruleName": str,
    "backendPoolName": str,
    "backendSettingName": str,
    "traceId": str,
    "spanId": str,
    "error": str,
    "logType": str,
}
WS_TYPES: dict[str, type | tuple[type, ...]] = {
    "webSocketClosedBy": str,
    "webSocketClientCloseCode": (int, type(None)),
    "webSocketBackendCloseCode": (int, type(None)),
    "webSocketDuration": float,
    "webSocketMessagesUp": int,
    "webSocketBytesUp": int,
    "webSocketMessagesDown": int,
    "webSocketBytesDown": int,
}


def checkTypes(record: dict[str, Any], types: dict[str, Any]) -> None:
    for name, kind in types.items():
        assert name in record, name
        value = record[name]
        assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), (name, value)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["timeStamp"])


def test_json_fields_on_http_https_and_websocket(gw: Gw) -> None:
    _, plain, _ = get(gw.http, "/p?q=2")
    _, secure, _ = get(gw.https, "/s", tls=True)
    record = recordOf(gw.log, plain["x-request-id"])
    checkTypes(record, AZURE_TYPES)
    assert record["sslEnabled"] == "off" and record["sslCipher"] == "" and record["httpVersion"] == "HTTP/1.1"
    assert record["receivedBytes"] > 0 and record["sentBytes"] == 5 and record["clientPort"] > 0
    assert float(record["serverResponseLatency"]) >= 0 and record["serverRouted"].startswith("127.0.0.1:")
    record = recordOf(gw.log, secure["x-request-id"])
    checkTypes(record, AZURE_TYPES)
    assert record["sslEnabled"] == "on" and record["listenerName"] == "lHttps"
    assert record["sslProtocol"].startswith("TLSv1.") and record["sslCipher"]

    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{gw.ws}/headers", open_timeout=15) as ws:
        requestId = ws.response.headers["X-Request-ID"]
        seen = json.loads(ws.recv(timeout=15))
        ws.send("ping")
        assert ws.recv(timeout=15) == "ping"
    sent = {name.lower(): value for name, value in seen["headers"]}
    assert sent["x-request-id"] == requestId and sent["traceparent"].startswith("00-")
    opened = recordOf(gw.log, requestId)
    checkTypes(opened, AZURE_TYPES)
    assert opened["httpStatus"] == 101 and opened["serverStatus"] == "101"
    closed = recordOf(gw.log, requestId, "webSocketClose")
    checkTypes(closed, {**AZURE_TYPES, **WS_TYPES})
    assert closed["webSocketClientCloseCode"] == 1000 and closed["webSocketClosedBy"] == "client"
    assert closed["webSocketMessagesUp"] == 1 and closed["webSocketBytesUp"] == 4
    assert closed["webSocketMessagesDown"] == 2
    assert closed["traceId"] == opened["traceId"]
    # The close is in the twistd log with the request ID too.
    waitFor(lambda: f"request={requestId}: WebSocket closed" in gw.proc.output(), 10, "close logged")


def test_custom_502_page_for_no_healthy_member_and_the_json_variant(gw: Gw) -> None:
    for _ in range(2):  # unreachable (refused), then no healthy member (taken out at once)
        status, headers, body = get(gw.dead, "/", {"Accept": "text/html,*/*;q=0.8"})
        assert status == 502
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert body == gw.pages["l502"].read_bytes()  # the listener's page wins
        assert HEX32.match(headers["x-request-id"])
    errors = [recordOf(gw.log, headers["x-request-id"])["error"]]
    assert errors == ["Bad Gateway: no healthy backend is available"]
    status, headers, body = get(gw.dead, "/", {"Accept": "application/json, text/html;q=0.9"})
    assert status == 502 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "status": 502,
        "reason": "Bad Gateway: no healthy backend is available",
        "requestId": headers["x-request-id"],
    }


def test_custom_504_page_and_gateway_page_where_the_listener_has_none(gw: Gw) -> None:
    status, headers, body = get(gw.slow, "/slow")
    assert status == 504 and headers["content-type"] == "text/html; charset=utf-8"
    assert body == gw.pages["g504"].read_bytes()
    requestId = headers["x-request-id"]
    waitFor(lambda: f"request={requestId}: backend" in gw.proc.output(), 10, "timeout logged with the ID")
    status, headers, body = get(gw.slow, "/slow", {"Accept": "application/json"})
    assert status == 504 and json.loads(body)["requestId"] == headers["x-request-id"]


def test_a_backends_own_error_passes_through_untouched(gw: Gw) -> None:
    """As in Azure: the custom 502 page is for the gateway's answers only."""
    status, headers, body = get(gw.http, "/own502", {"Accept": "text/html"})
    assert status == 502 and body == b"backend says no"
    assert headers["content-type"] == "text/plain" and HEX32.match(headers["x-request-id"])


def refuse(port: int) -> bytes:
    """The answer to a head that cannot be parsed (a header line without a colon)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_head_refusal_gets_the_port_listeners_page_and_a_request_id(gw: Gw) -> None:
    data = refuse(gw.http)  # lHttp has no pages of its own: the gateway's 400 page
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nContent-Type: text/html; charset=utf-8\r\n" in data
    assert data.endswith(b"\r\n\r\n" + gw.pages["g400"].read_bytes())
    found = re.search(rb"\r\nX-Request-ID: ([0-9a-f]{32})\r\n", data)
    assert found is not None
    assert recordOf(gw.log, found.group(1).decode())["httpStatus"] == 400
    data = refuse(gw.dead)  # lDead has pages of its own, none for 400: plain text
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nContent-Type: text/plain; charset=utf-8\r\n" in data
    assert re.search(rb"\r\nX-Request-ID: [0-9a-f]{32}\r\n", data)


def test_reload_picks_up_a_changed_page(gw: Gw) -> None:
    page = gw.pages["g504"]
    old = page.read_bytes()
    page.write_text("<h1>gateway 504, changed</h1>\n")
    try:
        gw.proc.proc.send_signal(signal.SIGHUP)
        waitFor(lambda: "configuration reloaded" in gw.proc.output(), 15, "reload")
        status, _, body = get(gw.slow, "/slow")
        assert status == 504 and body == b"<h1>gateway 504, changed</h1>\n"
    finally:
        page.write_bytes(old)


def test_sigusr1_reopens_the_access_log_after_rotation(gw: Gw) -> None:
    _, headers, _ = get(gw.http, "/before")
    recordOf(gw.log, headers["x-request-id"])
    rotated = gw.log.with_name("access.json.1")
    os.rename(gw.log, rotated)
    gw.proc.proc.send_signal(signal.SIGUSR1)
    waitFor(lambda: "access log reopened" in gw.proc.output(), 10, "reopen")
    _, headers, _ = get(gw.http, "/after")
    record = recordOf(gw.log, headers["x-request-id"])
    assert record["requestUri"] == "/after"
    assert all(r["requestUri"] != "/after" for r in records(rotated))


def test_workers_each_reopen_on_sigusr1(tmp_path: Path) -> None:
    """Every worker writes the file through its own descriptor: SIGUSR1 must reach them all."""
    recorder = Recorder()
    port = freePort()
    log = tmp_path / "access.json"
    ini = basicIni(
        port,
        [recorder.backend.port],
        gateway=f"accessLog = {log}\naccessLogFormat = json\nworkers = 2",
    )
    gw = startGateway(tmp_path, ini, port)
    try:
        waitFor(lambda: "started worker 1" in gw.output(), 15, "worker started")

        def instances(path: Path) -> set[str]:
            return {r["instanceId"] for r in records(path)}

        def both(path: Path) -> bool:
            for _ in range(20):  # new connections: the kernel spreads them over the workers
                get(port, "/")
            time.sleep(1.2)  # each writer flushes within a second
            return len(instances(path)) == 2

        waitFor(lambda: both(log), 30, "both workers logging")
        rotated = tmp_path / "access.json.1"
        os.rename(log, rotated)
        gw.proc.send_signal(signal.SIGUSR1)
        waitFor(lambda: gw.output().count("access log reopened") >= 2, 15, "both reopened")
        count = len(records(rotated))
        waitFor(lambda: both(log), 30, "both workers logging to the new file")
        assert len(records(rotated)) == count
        assert all(i.endswith(("/0", "/1")) for i in instances(log))
    finally:
        gw.stop()
        recorder.backend.close()

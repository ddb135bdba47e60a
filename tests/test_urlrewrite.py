"""
URL rewrites and capture groups through the real gateway (C{twistd agw}
as a subprocess) to scripted backends that answer with what they were sent:
the path and query a rewrite sets, reroute into another path rule's pool,
header values from captures, Azure's App Service Location fix, a WebSocket
handshake with a rewritten path, and the access log keeping the client's
own request line.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.rawbackend import RawBackend, acceptFor, handshakeHead, headerValue
from tests.support import Proc, freePort, startGateway, waitFor

APP_SERVICE_LOCATION = b"https://contoso.azurewebsites.net/path2?from=app"


def echoHandler(name: str) -> object:
    """
    A backend that answers with its name, the request line and headers it
    got (JSON); a redirect like an App Service's under C{/appservice}; a 101
    naming the request line for a WebSocket handshake.
    """

    def handle(conn: socket.socket, head: bytes, rest: bytes) -> None:
        lines = head.split(b"\r\n")
        requestLine = lines[0]
        if b"\r\nupgrade: websocket" in head.lower():
            key = headerValue(head, b"Sec-WebSocket-Key") or b""
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + acceptFor(key) + b"\r\n"
                b"X-Request-Line: " + requestLine + b"\r\nX-Backend: " + name.encode() + b"\r\n\r\n"
            )
            conn.settimeout(5)
            try:
                conn.recv(1)  # until the gateway lets go
            except OSError:
                pass
            return
        if requestLine.split(b" ")[1].startswith(b"/appservice"):
            conn.sendall(
                b"HTTP/1.1 302 Found\r\nLocation: " + APP_SERVICE_LOCATION + b"\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        body = json.dumps(
            {
                "backend": name,
                "line": requestLine.decode("latin-1"),
                "headers": [line.decode("latin-1").split(": ", 1) for line in lines[1:]],
            }
        ).encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )

    return handle


GATEWAY_INI = r"""
[gateway]
accessLog = {log}

[frontendPort:fp]
port = {port}
interface = 127.0.0.1

[httpListener:main]
frontendPort = fp
protocol = Http

[backendAddressPool:A]
backendAddresses = 127.0.0.1:{a}

[backendAddressPool:B]
backendAddresses = 127.0.0.1:{b}

[backendHttpSettings:s]
port = 80
protocol = Http

[urlPathMap:site]
defaultBackendAddressPool = A
defaultBackendHttpSettings = s
pathRule.listing1 = /listing1 -> B, s
pathRule.moved = /moved/* -> redirect:moved

[redirectConfiguration:moved]
redirectType = Found
targetUrl = https://new.contoso.test
includePath = true
includeQueryString = true

[rewriteRuleSet:rw]
; Azure's "rewrite query string parameters based on the URL"
rule.shop.condition = {{var_uri_path}} ~ ^/shop/(.+)/(.+)$
rule.shop.modifiedPath = /buy.aspx
rule.shop.modifiedQueryString = category={{var_uri_path_1}}&product={{var_uri_path_2}}
; Azure's "parameter based path selection": reroute into another path rule
rule.shoes.condition = {{var_query_string}} ~ category=shoes
rule.shoes.modifiedPath = /listing1
rule.shoes.reroute = true
; the same path without reroute: routed by the original path
rule.bags.condition = {{var_query_string}} ~ category=bags
rule.bags.modifiedPath = /listing1
; rerouted into a redirect path rule: the redirect carries the new path
rule.legacy.condition = {{var_uri_path}} ~ ^/legacy/(.*)$
rule.legacy.modifiedPath = /moved/{{var_uri_path_1}}
rule.legacy.reroute = true
rule.noquery.condition = {{var_uri_path}} ~ ^/noquery
rule.noquery.modifiedQueryString =
rule.agent.condition = {{http_req_User-Agent}} ~ ^(\w+)/([0-9.]+)
rule.agent.requestHeader.X-Agent = {{http_req_User-Agent_1}} v{{http_req_User-Agent_2}} {{http_req_User-Agent_7}}.
; Azure's App Service fix, as its documentation writes it
rule.appService.condition = {{http_resp_Location}} ~ (https?):\/\/.*azurewebsites\.net(.*)$
rule.appService.responseHeader.Location = {{http_resp_Location_1}}://contoso.com{{http_resp_Location_2}}
rule.chat.condition = {{var_uri_path}} ~* ^/chat/(\w+)$
rule.chat.modifiedPath = /ws/{{var_uri_path_1}}
rule.vars.condition = {{var_http_method}} ~ ^(GET|POST)$
rule.vars.requestHeader.X-Vars = {{var_http_method_1}} {{var_request_scheme}} {{var_server_port}} {{var_cookie_sid}} {{var_add_x_forwarded_for_proxy}}

[requestRoutingRule:r]
ruleType = PathBasedRouting
httpListener = main
urlPathMap = site
rewriteRuleSet = rw
"""


class Gateway:
    def __init__(self, proc: Proc, port: int, log: Path, a: RawBackend, b: RawBackend) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.a = a
        self.b = b

    def get(
        self, path: str, headers: Mapping[str, str] | None = None
    ) -> tuple[int, http.client.HTTPResponse, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request("GET", path, headers={"Host": "www.contoso.test", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp, resp.read()
        finally:
            conn.close()

    def sent(self, path: str, headers: Mapping[str, str] | None = None) -> dict[str, object]:
        """What the backend got for C{GET path}: its name, request line and headers."""
        status, _, body = self.get(path, headers)
        assert status == 200, body
        doc: dict[str, object] = json.loads(body)
        return doc


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("urlrewrite")
    a, b = RawBackend(echoHandler("A")), RawBackend(echoHandler("B"))  # type: ignore[arg-type]
    port = freePort()
    log = tmp / "access.log"
    gw = None
    try:
        gw = startGateway(tmp, GATEWAY_INI.format(port=port, a=a.port, b=b.port, log=log), port)
        yield Gateway(gw, port, log, a, b)
    finally:
        if gw is not None:
            gw.stop()
        a.close()
        b.close()


def header(doc: Mapping[str, object], name: str) -> list[str]:
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]  # type: ignore[attr-defined]


def test_path_and_query_from_captures(gateway: Gateway) -> None:
    doc = gateway.sent("/shop/fashion/shirts?ignored=1")
    assert doc["backend"] == "A"
    assert doc["line"] == "GET /buy.aspx?category=fashion&product=shirts HTTP/1.1"


def test_reroute_goes_to_the_path_rule_of_the_new_path(gateway: Gateway) -> None:
    doc = gateway.sent("/listing?category=shoes")
    assert doc["backend"] == "B"  # the path rule /listing1's pool, not the default's
    assert doc["line"] == "GET /listing1?category=shoes HTTP/1.1"


def test_without_reroute_the_original_path_routes(gateway: Gateway) -> None:
    doc = gateway.sent("/listing?category=bags")
    assert doc["backend"] == "A"  # routed by /listing: the default
    assert doc["line"] == "GET /listing1?category=bags HTTP/1.1"


def test_empty_modified_query_string_removes_the_query(gateway: Gateway) -> None:
    assert gateway.sent("/noquery/x?a=1&b=2")["line"] == "GET /noquery/x HTTP/1.1"
    assert gateway.sent("/other?a=1")["line"] == "GET /other?a=1 HTTP/1.1"  # no rule acts


def test_header_value_from_captures(gateway: Gateway) -> None:
    doc = gateway.sent("/", {"User-Agent": "curl/8.5.0 (x86_64)"})
    # group 7 does not exist: empty
    assert header(doc, "X-Agent") == ["curl v8.5.0 ."]
    doc = gateway.sent("/", {"User-Agent": "no version here"})
    assert header(doc, "X-Agent") == []  # the condition does not hold


def test_server_variables(gateway: Gateway) -> None:
    doc = gateway.sent("/", {"Cookie": "a=1; sid=s3cr3t", "X-Forwarded-For": "203.0.113.9"})
    assert header(doc, "X-Vars") == [f"GET http {gateway.port} s3cr3t 203.0.113.9, 127.0.0.1"]


def test_app_service_location_fix(gateway: Gateway) -> None:
    status, resp, _ = gateway.get("/appservice/login")
    assert status == 302
    assert resp.getheader("Location") == "https://contoso.com/path2?from=app"


def test_websocket_handshake_path_is_rewritten(gateway: Gateway) -> None:
    head = handshakeHead(gateway.port, b"www.contoso.test", b"/CHAT/room42")
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert headerValue(head, b"X-Request-Line") == b"GET /ws/room42 HTTP/1.1"


def test_access_log_keeps_the_clients_request_line(gateway: Gateway) -> None:
    gateway.sent("/shop/garden/rakes")
    lines = waitFor(
        lambda: [line for line in gateway.log.read_text().splitlines() if "/shop/garden/rakes" in line],
        what="the access log line",
    )
    assert "buy.aspx" not in lines[0]


def test_reroute_into_a_redirect_path_rule_redirects_to_the_new_path(gateway: Gateway) -> None:
    status, resp, _ = gateway.get("/legacy/a/b?c=1")
    assert status == 302
    assert resp.getheader("Location") == "https://new.contoso.test/moved/a/b?c=1"

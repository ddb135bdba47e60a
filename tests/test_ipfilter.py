"""
The C{ipFilter} routing plugin and the L{agwtx.interfaces.Answer} decision:
the plugin's address matching (IPv4, IPv6, IPv4-mapped, deny over allow),
then through the real gateway (twistd in a subprocess, a raw-socket backend
on loopback), the client address set by a trusted forwarder's
X-Forwarded-For and by a PROXY protocol header: 403 for a denied range
(HTTP, a request with a body, a WebSocket handshake; the backend never sees
them), a pass for an allowed one, and the answers access-logged.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from agwtx.interfaces import Answer, Candidates
from agwtx.plugins.agw_ipfilter import allowed, ipFilter
from agwtx.routing.plugin import PluginTarget
from tests.rawbackend import RawBackend, handshakeRequest
from tests.support import freePort, startGateway, waitFor
from tests.test_routing import FakeRequest


class _Answering:
    """A plugin that answers every request with the same L{Answer}."""

    name = "answering"

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def route(self, request: object, candidates: object) -> object:
        return self.answer


def _answer(answer: object) -> FakeRequest:
    target = PluginTarget("r", _Answering(answer), Candidates(rule="r", options=None))  # type: ignore[arg-type]
    request = FakeRequest()
    assert target.resolve(request) is None  # type: ignore[arg-type]  # nothing to route to
    target.render(request)  # type: ignore[arg-type]
    assert request.finished
    return request


def test_an_answer_with_the_gateways_page_or_a_body_of_its_own() -> None:
    request = _answer(Answer(403, "not you", headers=(("X-Why", "policy\r\nInjected: 1"),)))
    assert (request.code, b"".join(request.written)) == (403, b"403 Forbidden: not you\n")
    assert request.agwError == "Forbidden: not you"
    assert request.responseHeaders.getRawHeaders(b"x-why") == [b"policy  Injected: 1"]
    request = _answer(
        Answer(
            429,
            "slow down",
            headers=(("Content-Type", "application/json"), ("Retry-After", "5"), ("Content-Length", "1")),
            body=b'{"retry": 5}',
        )
    )
    assert (request.code, b"".join(request.written)) == (429, b'{"retry": 5}')
    headers = request.responseHeaders
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert headers.getRawHeaders(b"content-length") == [b"12"]  # the plugin's is dropped
    assert headers.getRawHeaders(b"retry-after") == [b"5"]
    assert request.agwError == "Too Many Requests: slow down"
    request = _answer(Answer(200, body="h\u00e9"))
    assert b"".join(request.written) == "h\u00e9".encode()
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"text/plain; charset=utf-8"]


@pytest.mark.parametrize("answer", [Answer(99), Answer(600), Answer(403, body=42)])  # type: ignore[arg-type]
def test_an_answer_agw_cannot_send_is_a_plugin_failure(answer: Answer) -> None:
    request = _answer(answer)
    assert (request.code, b"".join(request.written)) == (502, b"502 Bad Gateway: the routing plugin failed\n")


def _options(**options: str) -> object:
    return ipFilter.configure(options, "requestRoutingRule:r").options


@pytest.mark.parametrize(
    "address,expected",
    [
        ("10.1.2.3", True),
        ("10.6.6.7", False),  # deny wins over allow
        ("192.0.2.1", False),  # in no allow range
        ("2001:db8::5", True),
        ("2001:db8:bad::1", False),
        ("2001:db9::1", False),
        ("::ffff:10.1.2.3", True),  # IPv4-mapped: the IPv4 address
        ("::ffff:10.6.6.1", False),
        ("fe80::1%eth0", False),
        ("-", False),  # no IP address: refused when there is an allow list
    ],
)
def test_allow_and_deny_ranges(address: str, expected: bool) -> None:
    opts = _options(allow="10.0.0.0/8, 2001:db8::/32", deny="10.6.6.0/24, 2001:db8:bad::/48")
    assert allowed(opts, address) is expected  # type: ignore[arg-type]


def test_deny_only_allows_every_other_address() -> None:
    opts = _options(deny="10.6.6.0/24, ::ffff:192.0.2.0/120")
    assert allowed(opts, "10.1.2.3") and allowed(opts, "2001:db8::1") and allowed(opts, "-")  # type: ignore[arg-type]
    assert not allowed(opts, "10.6.6.1")  # type: ignore[arg-type]
    assert not allowed(opts, "192.0.2.9")  # type: ignore[arg-type]  # a mapped range is the IPv4 range
    assert _options(deny="10.0.0.0/8", status="404").refusal == Answer(  # type: ignore[attr-defined]
        404, "the client address is not allowed"
    )


def _config(port: int, proxyPort: int, backend: int) -> str:
    rule = """
ruleType = Plugin
plugin = ipFilter
plugin.allow = 10.0.0.0/8, 2001:db8::/32
plugin.deny = 10.6.6.0/24, 2001:db8:bad::/48
backendAddressPool = pool
backendHttpSettings = s1
"""
    return f"""
[gateway]
trustedProxies = 127.0.0.1/32

[frontendPort:fp]
port = {port}
interface = 127.0.0.1

[frontendPort:pp]
port = {proxyPort}
interface = 127.0.0.1
proxyProtocol = true
proxyProtocolSources = 127.0.0.0/8

[httpListener:l1]
frontendPort = fp

[httpListener:l2]
frontendPort = pp

[backendAddressPool:pool]
backendAddresses = 127.0.0.1:{backend}

[backendHttpSettings:s1]
port = 80

[requestRoutingRule:r1]
priority = 10
httpListener = l1
{rule}
[requestRoutingRule:r2]
priority = 20
httpListener = l2
{rule}
"""


def _exchange(port: int, data: bytes) -> bytes:
    """Send C{data}; the response that comes back (up to its Content-Length, or the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(data)
        answer = b""
        while True:
            head, blank, body = answer.partition(b"\r\n\r\n")
            lengths = [ln for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")]
            if blank and lengths and len(body) >= int(lengths[0].split(b":")[1]):
                return answer
            try:
                chunk = s.recv(65536)
            except ConnectionError:
                break
            if not chunk:
                break
            answer += chunk
        return answer


def _get(port: int, client: str, prefix: bytes = b"") -> bytes:
    xff = f"X-Forwarded-For: {client}\r\n".encode() if client else b""
    return _exchange(port, prefix + b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + xff + b"\r\n")


def test_ipfilter_through_the_gateway(tmp_path: Path) -> None:
    seen: list[bytes] = []
    lock = threading.Lock()

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        with lock:
            seen.append(head)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    backend = RawBackend(handler)
    port, proxyPort = freePort(), freePort()
    gw = startGateway(tmp_path, _config(port, proxyPort, backend.port), port)
    denied = b"403 Forbidden: the client address is not allowed\n"
    try:
        # A trusted forwarder names the client (IPv4 and IPv6).
        for client in ("10.1.2.3", "2001:db8::5", "::ffff:10.9.9.9"):
            answer = _get(port, client)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"ok"), (client, answer)
        passed = len(seen)
        for client in ("10.6.6.7", "192.0.2.1", "2001:db8:bad::1", "2001:db9::1", ""):
            answer = _get(port, client)  # "": the peer itself, 127.0.0.1, in no allow range
            assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), (client, answer)
            assert answer.endswith(denied)
        # a request with a body, and a WebSocket handshake: the same answer, not a 101
        answer = _exchange(
            port,
            b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Forwarded-For: 10.6.6.7\r\n"
            b"Content-Length: 5\r\n\r\nhello",
        )
        assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n") and answer.endswith(denied), answer
        answer = _exchange(port, handshakeRequest(b"x", extra=b"X-Forwarded-For: 192.0.2.1\r\n"))
        assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
        # The PROXY protocol names the client on the other port.
        answer = _get(proxyPort, "", b"PROXY TCP4 10.1.2.3 127.0.0.1 4242 80\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
        answer = _get(proxyPort, "", b"PROXY TCP4 10.6.6.9 127.0.0.1 4242 80\r\n")
        assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
        answer = _get(proxyPort, "", b"PROXY TCP6 2001:db8::7 ::1 4242 80\r\n")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
        assert len(seen) == passed + 2  # no refused request reached the backend
        assert all(b"10.6.6" not in head and b"192.0.2.1" not in head for head in seen)
        waitFor(  # the access log is flushed every second
            lambda: gw.output().count('error="Forbidden: the client address is not allowed"') == 8,
            what="the 8 refusals in the access log",
        )
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        backend.close()

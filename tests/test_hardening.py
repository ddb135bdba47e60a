"""
Request framing and header hardening, end to end: the real twistd entry point
before a raw backend that records every request head it gets, and raw-socket
clients sending what public smuggling research and other proxies' test
suites send.  See docs/hardening.rst.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.rawbackend import RawBackend, handshakeHead
from tests.support import Proc, basicIni, freePort, startGateway

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Recorder:
    """A raw backend that keeps every request head it receives and answers 200."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.lock = threading.Lock()
        self.backend = RawBackend(self.handle)

    def handle(self, conn: socket.socket, head: bytes, rest: bytes) -> None:
        with self.lock:
            self.heads.append(head)
        conn.sendall(ANSWER)

    def names(self, index: int = -1) -> list[bytes]:
        """The lowercased header names of a recorded head."""
        return [line.partition(b":")[0].lower() for line in self.heads[index].split(b"\r\n")[1:]]


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    yield rec
    rec.backend.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, recorder: Recorder) -> Iterator[tuple[int, Proc]]:
    tmp = tmp_path_factory.mktemp("hardening")
    port = freePort()
    gw = startGateway(tmp, basicIni(port, [recorder.backend.port]), port)
    yield port, gw
    gw.stop()


def exchange(port: int, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send C{raw}; everything the gateway sends until it closes (a timeout fails the test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(raw)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize(
    "coding",
    [
        b"identity",  # twisted.web took it as no coding: the body was read as the next request
        b"gzip",
        b"chunked, identity",
        b"gzip, chunked",
        b"chunked;q=1",
        b"x-custom",
        b"",
    ],
)
def test_a_transfer_coding_other_than_chunked_is_501_and_not_forwarded(
    gateway: tuple[int, Proc], recorder: Recorder, coding: bytes
) -> None:
    port, _ = gateway
    before = len(recorder.heads)
    data = exchange(
        port,
        b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding + b"\r\nContent-Length: 38\r\n\r\n"
        b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), data[:200]
    assert b"\r\nConnection: close" in head
    assert body == b"501 Not Implemented: the only transfer coding supported is chunked\n"
    assert len(recorder.heads) == before


def test_chunked_alone_in_any_case_is_still_taken(gateway: tuple[int, Proc], recorder: Recorder) -> None:
    port, _ = gateway
    data = exchange(
        port,
        b"POST /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert recorder.heads[-1].startswith(b"POST /chunked ")


UNDERSCORED = (
    b"X_Forwarded_For: 203.0.113.9\r\nTransfer_Encoding: chunked\r\nMy_Header: 1\r\nX_Forwarded_For: 2\r\n"
)


def test_header_names_with_underscores_are_dropped_and_logged_once(
    gateway: tuple[int, Proc], recorder: Recorder
) -> None:
    port, gw = gateway
    data = exchange(
        port,
        b"GET /underscores HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + UNDERSCORED + b"X-Kept: 1\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    names = recorder.names()
    assert b"x-kept" in names
    assert not [n for n in names if b"_" in n], recorder.heads[-1]
    assert names.count(b"x-forwarded-for") == 1
    line = "Dropped 4 request header field(s) with '_' in the name from"
    assert gw.output().count(line) == 1, gw.output()[-2000:]
    assert "X_Forwarded_For, Transfer_Encoding, My_Header, X_Forwarded_For" in gw.output()


def test_header_names_with_underscores_are_dropped_from_websocket_handshakes(
    gateway: tuple[int, Proc], recorder: Recorder
) -> None:
    port, _ = gateway
    answer = handshakeHead(port, b"x", extra=b"X_Auth_User: admin\r\nX-Kept: 1\r\n")
    # The recorder answers 200 to the handshake: a refusal passed on to the client.
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    head = recorder.heads[-1]
    assert head.startswith(b"GET /ws "), head
    assert b"x-kept" in recorder.names()
    assert not [n for n in recorder.names() if b"_" in n], head


def test_underscores_are_forwarded_when_allowed(tmp_path: Path) -> None:
    recorder = Recorder()
    port = freePort()
    gw = startGateway(
        tmp_path, basicIni(port, [recorder.backend.port], gateway="allowUnderscoresInHeaders = true"), port
    )
    try:
        data = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nMy_Header: 1\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        assert b"my_header" in recorder.names()
        assert "Dropped" not in gw.output()
    finally:
        gw.stop()
        recorder.backend.close()


@pytest.mark.parametrize(
    "size",
    [
        b"10000000000000000\r\n",  # 17 digits, line complete
        b"ffffffffffffffff",  # 16 digits, no line end yet: refused without waiting for it
        b"00000fffffffffffffffff;ext=1\r\n",
    ],
)
def test_a_chunk_size_of_16_or_more_hex_digits_is_400_at_once(gateway: tuple[int, Proc], size: bytes) -> None:
    port, _ = gateway
    # The 10 s socket timeout is far below the 60 s the gateway would wait for such a body.
    data = exchange(
        port, b"POST /huge HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + size, timeout=10
    )
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]


def test_a_long_chunk_size_with_leading_zeros_is_taken(gateway: tuple[int, Proc], recorder: Recorder) -> None:
    port, _ = gateway
    data = exchange(
        port,
        b"POST /zeros HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"00000000000000000002\r\nok\r\n0\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert recorder.heads[-1].startswith(b"POST /zeros ")


@pytest.mark.parametrize("connection", [b"Upgrade", b"Upgrade, HTTP2-Settings", b"keep-alive"])
def test_h2c_upgrade_and_http2_settings_never_reach_the_backend(
    gateway: tuple[int, Proc], recorder: Recorder, connection: bytes
) -> None:
    port, _ = gateway
    data = exchange(
        port,
        b"GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: " + connection + b", close\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Kept: 1\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    names = recorder.names()
    assert recorder.heads[-1].startswith(b"GET /h2c ")
    assert b"x-kept" in names
    for gone in (b"upgrade", b"http2-settings", b"connection"):
        assert gone not in names, recorder.heads[-1]


def test_a_backend_switching_protocols_for_h2c_is_not_honoured(tmp_path: Path) -> None:
    # A backend that would take the h2c upgrade anyway: its 101 is not
    # relayed (informational), and nothing switches.
    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n" + ANSWER
        )

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        data = exchange(
            port,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\n"
            b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        assert data.startswith(b"HTTP/1.1 200 "), data[:200]
        assert b"101" not in data.partition(b"\r\n")[0]
        assert data.endswith(b"ok")
    finally:
        gw.stop()
        backend.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /x\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",  # twisted.web lets 0x7f-0xb0 through
        b"GET /del\x7f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x0bb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7f\r\nX-B: b\r\n\r\n",
    ],
)
def test_non_ascii_targets_and_control_characters_in_values_are_400_and_not_forwarded(
    gateway: tuple[int, Proc], recorder: Recorder, raw: bytes
) -> None:
    port, _ = gateway
    before = len(recorder.heads)
    data = exchange(port, raw)
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert len(recorder.heads) == before


def test_values_with_tabs_and_non_ascii_text_are_kept(gateway: tuple[int, Proc], recorder: Recorder) -> None:
    port, _ = gateway
    data = exchange(port, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-A: a\tb \xc3\xa9\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]
    assert b"\r\nX-A: a\tb \xc3\xa9" in recorder.heads[-1] + b"\r\n"


def test_no_traceback_in_the_log(gateway: tuple[int, Proc]) -> None:
    _, gw = gateway
    assert "Traceback" not in gw.output()

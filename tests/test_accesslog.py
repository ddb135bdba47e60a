"""The access log: its line format, its config key, and lines from a real gateway."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path

from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher

from agwtx.ops.accesslog import AccessLogWriter, accessPublisher, formatAccessLine
from tests.support import basicIni, freePort, startBackend, startGateway

EVENT = {
    "client": "203.0.113.9",
    "method": "GET",
    "uri": "/a?b=1",
    "status": 200,
    "bytes": 31,
    "duration_ms": 1.234,
    "listener": "l1",
    "rule": "r1",
    "pool": "pool",
    "member": "127.0.0.1:8081",
    "error": None,
}


def test_line_format() -> None:
    assert formatAccessLine(EVENT, "T") == (
        'T 203.0.113.9 "GET /a?b=1" 200 31 1.2ms listener=l1 rule=r1 pool=pool member=127.0.0.1:8081\n'
    )
    assert formatAccessLine({**EVENT, "status": 502, "error": "Bad Gateway: x"}, "T").endswith(
        ' error="Bad Gateway: x"\n'
    )


def test_writer_buffers_and_flushes_within_a_second(tmp_path: Path) -> None:
    clock = MemoryReactorClock()
    path = tmp_path / "access.log"
    writer = AccessLogWriter(clock, str(path))
    writer({**EVENT, "log_time": 1_700_000_000.5})
    assert path.read_text() == ""  # buffered, not a syscall per request
    clock.advance(1.0)
    text = path.read_text()
    assert text.count("\n") == 1 and '"GET /a?b=1" 200 31' in text
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(1_700_000_000))
    assert text.startswith(f"{stamp} 203.0.113.9 ")
    writer.close()


def test_publisher_targets(tmp_path: Path) -> None:
    clock = MemoryReactorClock()
    seen = EventLoggingObserver()
    globalLogPublisher.addObserver(seen)
    try:
        toLog, writer = accessPublisher(clock, "log")
        assert writer is None
        toLog(EVENT)
        assert list(seen) == [EVENT]  # into the twistd log
        off, writer = accessPublisher(clock, "off")
        assert writer is None
        off(EVENT)
        assert len(seen) == 1
    finally:
        globalLogPublisher.removeObserver(seen)
    path = tmp_path / "a.log"
    toFile, writer = accessPublisher(clock, str(path))
    assert isinstance(writer, AccessLogWriter)
    toFile(EVENT)
    toFile({"log_format": "not an access event"})
    writer.close()
    assert path.read_text().count("\n") == 1


def test_gateway_writes_access_lines_to_file(tmp_path: Path) -> None:
    b, pb = startBackend(tmp_path, "A")
    port = freePort()
    log = tmp_path / "access.log"
    gw = startGateway(tmp_path, basicIni(port, [pb], gateway=f"accessLog = {log}"), port)
    try:
        for path in ("/", "/status/404"):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", path)
            c.getresponse().read()
            c.close()
        # A request refused while its head is read is logged too, as nginx does.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            while s.recv(65536):
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and log.read_text().count("\n") < 3:
            time.sleep(0.1)
        lines = log.read_text().splitlines()
        assert len(lines) == 3
        assert '127.0.0.1 "GET /" 200 30 ' in lines[0]
        assert f"listener=l1 rule=r1 pool=pool member=127.0.0.1:{pb}" in lines[0]
        assert '"GET /status/404" 404 0 ' in lines[1]
        assert '127.0.0.1 "- -" 414 62 0.0ms listener=None rule=None pool=None member=None' in lines[2]
        assert lines[2].endswith('error="URI Too Long: the request line is longer than 32768 bytes"')
        assert "[agw.access" not in gw.output()  # not duplicated into the twistd log
    finally:
        gw.stop()
        b.stop()

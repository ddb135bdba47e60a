"""
Backend connections end to end: the real gateway (twistd) before a real
keep-alive backend on loopback that counts the connections it accepts, with
real clients.  The connection cap and its queue (maxConnectionsPerServer,
maxQueuedRequestsPerServer, queueTimeout) and idle-connection reuse.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tests.rawbackend import RawBackend, headerValue, readHead
from tests.support import basicIni, freePort, httpGet, metric, startGateway, waitFor

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class CountingBackend:
    """
    A keep-alive backend: answers every request on a connection until the
    gateway closes it, after C{delay} seconds and once C{gate} is open.  It
    counts the connections the gateway sends requests on (C{accepted}) and
    the most requests it held at once (C{peak}).
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        self.accepted = 0
        self.open = 0
        self.peakOpen = 0
        self.busy = 0
        self.peak = 0
        self.served = 0
        self.paths: list[str] = []
        self.raw = RawBackend(self._connection)

    @property
    def port(self) -> int:
        return self.raw.port

    def _connection(self, conn: socket.socket, head: bytes, rest: bytes) -> None:
        with self.lock:
            self.accepted += 1
            self.open += 1
            self.peakOpen = max(self.peakOpen, self.open)
        try:
            while True:
                length = int(headerValue(head, b"content-length") or b"0")
                while len(rest) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                rest = rest[length:]
                with self.lock:
                    self.busy += 1
                    self.peak = max(self.peak, self.busy)
                    self.paths.append(head.split(b" ")[1].decode())
                try:
                    if self.delay:
                        time.sleep(self.delay)
                    self.gate.wait(30)
                finally:
                    with self.lock:
                        self.busy -= 1
                        self.served += 1
                conn.sendall(OK)
                try:
                    if b"\r\n\r\n" in rest:
                        head, _, rest = rest.partition(b"\r\n\r\n")
                    else:
                        more_head, more = readHead(conn)
                        head, rest = rest + more_head, more
                except (ConnectionError, OSError):
                    return
        finally:
            with self.lock:
                self.open -= 1

    def close(self) -> None:
        self.gate.set()
        self.raw.close()


@contextmanager
def gatewayBefore(
    tmp_path: Path, backends: list[CountingBackend], settings: str
) -> Iterator[tuple[int, int]]:
    """A gateway (its port and its admin port) before C{backends}, with extra backendHttpSettings lines."""
    port, admin = freePort(), freePort()
    ini = basicIni(
        port,
        [b.port for b in backends],
        settings=settings,
        gateway=f"admin = tcp:{admin}:interface=127.0.0.1",
    )
    gw = startGateway(tmp_path, ini, port)
    try:
        yield port, admin
    finally:
        for b in backends:
            b.close()
        gw.stop()


@contextmanager
def firstRequestHeld(tmp_path: Path, settings: str) -> Iterator[tuple[int, int, CountingBackend, Any, Any]]:
    """
    A gateway before a backend that holds its requests until
    C{backend.gate} is set, with C{/first} under way at the backend: (port,
    admin port, backend, a thread pool for more requests, C{/first}'s future).
    """
    backend = CountingBackend()
    backend.gate.clear()
    with gatewayBefore(tmp_path, [backend], settings) as (port, admin):
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpGet, port, "/first", 60)
            waitFor(lambda: backend.busy == 1, what="the first request at the backend")
            yield port, admin, backend, pool, first


def member(admin: int) -> dict[str, Any]:
    """The one backend member's row of status.json."""
    status, body = httpGet(admin, "/status.json")
    assert status == 200
    [pool] = json.loads(body)["pools"]
    [m] = pool["members"]
    return m  # type: ignore[no-any-return]


def sendHead(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def test_fifty_slow_requests_share_five_backend_connections(tmp_path: Path) -> None:
    backend = CountingBackend(delay=0.05)
    with gatewayBefore(tmp_path, [backend], "maxConnectionsPerServer = 5\nqueueTimeout = 60") as (
        port,
        admin,
    ):
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda i: httpGet(port, f"/{i}", 60), range(50)))
        assert results == [(200, b"ok")] * 50
        assert backend.served == 50
        assert backend.accepted <= 5
        assert backend.peak <= 5
        m = member(admin)
        assert m["connects"] == backend.accepted
        assert (m["activeConnections"], m["queued"], m["inflight"]) == (0, 0, 0)
        assert m["queueWaits"] >= 45 - 5  # most waited; the histogram saw them
        labels = f'member="127.0.0.1:{backend.port}",pool="pool"'
        assert (
            metric(admin, f'agw_backend_queue_wait_seconds_count{{{labels},settings="s1"}}')
            == m["queueWaits"]
        )
        assert metric(admin, f'agw_backend_connects_total{{{labels},settings="s1"}}') == backend.accepted


def test_a_full_queue_answers_503_and_counts_it(tmp_path: Path) -> None:
    settings = "maxConnectionsPerServer = 1\nmaxQueuedRequestsPerServer = 1\nqueueTimeout = 60"
    with firstRequestHeld(tmp_path, settings) as (port, admin, backend, pool, first):
        second = pool.submit(httpGet, port, "/second", 60)
        waitFor(lambda: member(admin)["queued"] == 1, what="the second request queued")
        status, body = httpGet(port, "/third", 60)
        assert status == 503
        assert (
            body == b"503 Service Unavailable: the backend is at its connection limit and its queue is full\n"
        )
        assert member(admin)["queueRejected"] == {"full": 1, "timeout": 0}
        labels = f'member="127.0.0.1:{backend.port}",pool="pool"'
        assert (
            metric(admin, f'agw_backend_queue_rejections_total{{{labels},reason="full",settings="s1"}}') == 1
        )
        assert metric(admin, f'agw_backend_queue_length{{{labels},settings="s1"}}') == 1
        backend.gate.set()
        assert first.result() == (200, b"ok")
        assert second.result() == (200, b"ok")
        assert backend.paths == ["/first", "/second"]
        assert backend.accepted == 1


def test_a_queue_timeout_answers_503(tmp_path: Path) -> None:
    settings = "maxConnectionsPerServer = 1\nqueueTimeout = 200ms"
    with firstRequestHeld(tmp_path, settings) as (port, admin, backend, pool, first):
        status, body = httpGet(port, "/late", 60)
        assert status == 503
        assert (
            body == b"503 Service Unavailable: no backend connection became free within the queue timeout\n"
        )
        m = member(admin)
        assert m["queueRejected"] == {"full": 0, "timeout": 1}
        assert m["queued"] == 0
        backend.gate.set()
        assert first.result() == (200, b"ok")
        assert backend.paths == ["/first"]


def test_a_client_leaving_the_queue_frees_its_place(tmp_path: Path) -> None:
    settings = "maxConnectionsPerServer = 1\nmaxQueuedRequestsPerServer = 1\nqueueTimeout = 60"
    with firstRequestHeld(tmp_path, settings) as (port, admin, backend, pool, first):
        leaving = sendHead(port, "/leaving")
        waitFor(lambda: member(admin)["queued"] == 1, what="the request queued")
        leaving.close()
        waitFor(lambda: member(admin)["queued"] == 0, what="the queue emptied")
        after = pool.submit(httpGet, port, "/after", 60)  # would be refused if the place were still taken
        waitFor(lambda: member(admin)["queued"] == 1, what="the next request queued")
        backend.gate.set()
        assert first.result() == (200, b"ok")
        assert after.result() == (200, b"ok")
        assert backend.paths == ["/first", "/after"]
        assert member(admin)["queueRejected"] == {"full": 0, "timeout": 0}


def trickledUpload(port: int, i: int, pieces: int = 4, pause: float = 0.05) -> tuple[int, bytes]:
    body = b"x" * 1000
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        s.sendall(
            f"POST /up{i} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        step = len(body) // pieces
        for n in range(pieces):
            time.sleep(pause)
            s.sendall(body[n * step : (n + 1) * step])
        resp = http.client.HTTPResponse(s, method="POST")
        resp.begin()
        return resp.status, resp.read()
    finally:
        s.close()


def test_twenty_trickled_uploads_use_at_most_five_backend_connections(tmp_path: Path) -> None:
    backend = CountingBackend()
    with gatewayBefore(tmp_path, [backend], "maxConnectionsPerServer = 5\nqueueTimeout = 60") as (
        port,
        admin,
    ):
        with ThreadPoolExecutor(20) as pool:
            results = list(pool.map(lambda i: trickledUpload(port, i), range(20)))
        assert results == [(200, b"ok")] * 20
        assert backend.served == 20
        assert backend.accepted <= 5
        assert backend.peakOpen <= 5
        assert member(admin)["activeConnections"] == 0


def test_idle_connections_are_reused_by_the_next_burst(tmp_path: Path) -> None:
    # More than the 64 idle connections the pool used to keep: the second
    # burst used to reconnect for every request past 64.
    burst = 80
    backend = CountingBackend()
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port]), port)
    try:
        for round in range(2):
            backend.gate.clear()
            with ThreadPoolExecutor(burst) as pool:
                futures = [pool.submit(httpGet, port, f"/{round}-{i}", 60) for i in range(burst)]
                waitFor(lambda: backend.busy == burst, what=f"{burst} requests held at the backend")
                backend.gate.set()
                assert [f.result() for f in futures] == [(200, b"ok")] * burst
            assert backend.accepted == burst, f"round {round}"
    finally:
        backend.close()
        gw.stop()


def test_a_member_at_its_cap_gets_no_more_requests_while_another_has_room(tmp_path: Path) -> None:
    # Round robin alone would send every second request to the slow member
    # and leave it waiting there.
    slow, fast = CountingBackend(), CountingBackend()
    slow.gate.clear()
    settings = "maxConnectionsPerServer = 1\nqueueTimeout = 60"
    with gatewayBefore(tmp_path, [slow, fast], settings) as (port, admin):
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(httpGet, port, "/held", 60)
            waitFor(lambda: slow.busy == 1, what="the first request at the slow member")
            for i in range(6):
                assert httpGet(port, f"/next{i}", 60) == (200, b"ok")
            assert fast.paths == [f"/next{i}" for i in range(6)]
            slow.gate.set()
            assert held.result() == (200, b"ok")
        assert slow.paths == ["/held"]


def test_websockets_do_not_count_against_the_cap(tmp_path: Path) -> None:
    from contextlib import ExitStack

    from websockets.sync.client import connect

    from tests.support import startBackend

    backend, backendPort = startBackend(tmp_path)
    port = freePort()
    settings = "maxConnectionsPerServer = 1\nmaxQueuedRequestsPerServer = 0"
    gw = startGateway(tmp_path, basicIni(port, [backendPort], settings=settings), port)
    try:
        with ExitStack() as stack:
            for i in range(2):  # both open although the cap is one and nothing may queue
                ws = stack.enter_context(connect(f"ws://127.0.0.1:{port}/ws{i}", open_timeout=30, proxy=None))
                ws.send(f"hello {i}")
                assert f"hello {i}" in str(ws.recv(timeout=30))
            assert httpGet(port, "/", 60)[0] == 200  # and the one slot is free for HTTP
    finally:
        gw.stop()
        backend.stop()

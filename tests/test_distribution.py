"""
Load distribution policies (C{[loadDistributionPolicy:NAME]}), first on the
picker alone (L{agwtx.proxy.distribution.Distributor}: weights, health,
least connections, the share an added member takes from IpHash), then
through the real gateway (twistd in a subprocess, raw-socket backends on
loopback, the client address set by a trusted forwarder's
X-Forwarded-For): weighted targets over 1,000 requests, IpHash stability
and the clients moved when a member is added by a reload, and
LeastConnections under held WebSockets when a member restarts.
"""

from __future__ import annotations

import http.client
import math
import os
import select
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

from agwtx.proxy.distribution import Distributor
from agwtx.proxy.pool import UNHEALTHY, Member
from tests.rawbackend import RawBackend, acceptFor, handshakeRequest, headerValue, readHead
from tests.support import freePort, metric, startGateway, waitFor


def _target(*members: Member) -> Any:
    return SimpleNamespace(state=SimpleNamespace(members=list(members)))


def _members(n: int, port: int = 80) -> list[Member]:
    return [Member(f"10.0.0.{i + 1}", port) for i in range(n)]


def _clients(n: int) -> list[str]:
    return [f"198.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(n)]


def _tolerance(n: int, p: float) -> float:
    """4.5 standard deviations of a binomial count (n draws, probability p)."""
    return 4.5 * math.sqrt(n * p * (1 - p))


# -- the picker ------------------------------------------------------------------------


def test_round_robin_is_smooth_and_weighted_per_server() -> None:
    a, b, c = _members(3)
    heavy, light = _target(a), _target(b, c)
    d = Distributor("p", "RoundRobin", [(heavy, 2), (light, 1)])
    picks = [d.pick("")[0] for _ in range(40)]  # type: ignore[index]
    # a weighs 2 (its pool's weight per server), b and c 1 each: 2:1:1, interleaved
    assert Counter(id(m) for m in picks) == {id(a): 20, id(b): 10, id(c): 10}
    assert all(picks[i] is not picks[i + 1] or picks[i] is a for i in range(39))
    assert d.pick("")[1] in (heavy, light)  # type: ignore[index]
    b.health = UNHEALTHY
    c.draining = True
    assert {id(d.pick("")[0]) for _ in range(5)} == {id(a)}  # type: ignore[index]
    a.health = UNHEALTHY
    assert d.pick("") is None


def test_least_connections_goes_to_the_least_loaded_for_its_weight() -> None:
    a, b = _members(2)
    d = Distributor("p", "LeastConnections", [(_target(a, b), 1)])
    a.inflight = 3  # e.g. three open WebSockets
    for expected in (b, b, b):
        member = d.pick("")[0]  # type: ignore[index]
        assert member is expected
        member.inflight += 1
    seen = set()
    for _ in range(2):  # even: each in turn
        member = d.pick("")[0]  # type: ignore[index]
        seen.add(id(member))
        member.inflight += 1
    assert seen == {id(a), id(b)}
    # with weights: b (weight 3) takes three times a's connections
    a2, b2 = _members(2, 81)
    d = Distributor("p", "LeastConnections", [(_target(a2), 1), (_target(b2), 3)])
    for _ in range(40):
        d.pick("")[0].inflight += 1  # type: ignore[index]
    assert (a2.inflight, b2.inflight) == (10, 30)


def test_ip_hash_is_stable_and_moves_few_clients_when_a_member_is_added() -> None:
    members = _members(4)
    before = Distributor("p", "IpHash", [(_target(*members), 1)])
    clients = _clients(4000)
    first = {c: before.pick(c)[0] for c in clients}  # type: ignore[index]
    assert all(before.pick(c)[0] is first[c] for c in clients)  # type: ignore[index]
    counts = Counter(id(m) for m in first.values())
    assert all(abs(counts[id(m)] - 1000) <= _tolerance(4000, 0.25) for m in members)
    added = Member("10.0.0.99", 80)
    after = Distributor("p", "IpHash", [(_target(*members, added), 1)])
    moved = [c for c in clients if after.pick(c)[0] is not first[c]]  # type: ignore[index]
    assert all(after.pick(c)[0] is added for c in moved)  # type: ignore[index]  # only to the new member
    assert abs(len(moved) - 800) <= _tolerance(4000, 0.2)  # its share, 1/5
    # a member going away moves only its own clients
    members[0].health = UNHEALTHY
    moved = [c for c in clients if before.pick(c)[0] is not first[c]]  # type: ignore[index]
    assert {id(first[c]) for c in moved} == {id(members[0])}


def test_ip_hash_weights() -> None:
    a, b, c = _members(3)
    d = Distributor("p", "IpHash", [(_target(a), 3), (_target(b, c), 1)])
    counts = Counter(id(d.pick(client)[0]) for client in _clients(5000))  # type: ignore[index]
    for member, p in ((a, 0.6), (b, 0.2), (c, 0.2)):
        assert abs(counts[id(member)] - 5000 * p) <= _tolerance(5000, p)


# -- through the gateway ---------------------------------------------------------------


class _Named:
    """Keep-alive HTTP backends answering with their name, counting requests per name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def backend(self, name: str) -> RawBackend:
        body = name.encode()

        def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
            buffer = rest
            while True:
                with self.lock:
                    self.counts[name] += 1
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")

        return RawBackend(handler)


def _ini(port: int, pools: dict[str, list[int]], policies: str, rules: str, gateway: str = "") -> str:
    text = f"""
[gateway]
trustedProxies = 127.0.0.1/32
{gateway}

[frontendPort:fp]
port = {port}
interface = 127.0.0.1

[backendHttpSettings:s]
port = 80
"""
    for name, ports in pools.items():
        addresses = ", ".join(f"127.0.0.1:{p}" for p in ports)
        text += f"\n[backendAddressPool:{name}]\nbackendAddresses = {addresses}\n"
    return text + policies + rules


def _asker(port: int) -> Callable[[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def ask(host: str, client: str) -> str:
        conn.request("GET", "/x", headers={"Host": host, "X-Forwarded-For": client})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body)
        return body.decode()

    return ask


def test_weighted_targets_and_ip_hash_through_the_gateway(tmp_path: Path) -> None:
    """
    Listener rr: RoundRobin over pool a (one member, weight 3) and pool b
    (one member, weight 1): 1,000 requests split 750/250.  Listener ip:
    IpHash over pool c (members C1..C3): 300 client addresses each stay on
    their member; a reload adds C4, and the clients that move (about a
    quarter, fewer than half) all move to C4.  Listener wip: IpHash over
    pool a at weight 3 and pool b at weight 1, 1,000 clients: shares within
    4.5 binomial standard deviations of 3/4 and 1/4.  Listener sticky:
    RoundRobin over pools a and b with cookie affinity: the cookie keeps a
    client on its member.
    """
    named = _Named()
    backends = {name: named.backend(name) for name in ("A", "B", "C1", "C2", "C3", "C4")}
    port = freePort()
    pools = {
        "a": [backends["A"].port],
        "b": [backends["B"].port],
        "c": [backends[n].port for n in ("C1", "C2", "C3")],
    }
    policies = """
[loadDistributionPolicy:weighted]
target.heavy = a, 3
target.light = b
[loadDistributionPolicy:byClient]
loadDistributionAlgorithm = IpHash
target.all = c
[loadDistributionPolicy:weightedByClient]
loadDistributionAlgorithm = IpHash
target.heavy = a, 3
target.light = b, 1
[loadDistributionPolicy:even]
target.one = a
target.other = b
[backendHttpSettings:sticky]
port = 80
cookieBasedAffinity = Enabled
"""
    rules = ""
    for priority, (listener, policy, settings) in enumerate(
        (
            ("rr", "weighted", "s"),
            ("ip", "byClient", "s"),
            ("wip", "weightedByClient", "s"),
            ("sticky", "even", "sticky"),
        ),
        1,
    ):
        rules += f"""
[httpListener:{listener}]
frontendPort = fp
hostNames = {listener}.test
[requestRoutingRule:{listener}]
priority = {priority}
httpListener = {listener}
loadDistributionPolicy = {policy}
backendHttpSettings = {settings}
"""
    gw = startGateway(tmp_path, _ini(port, pools, policies, rules), port)
    try:
        ask = _asker(port)
        picks = Counter(ask("rr.test", "192.0.2.1") for _ in range(1000))
        # smooth weighted round robin is exact over whole rounds of 4
        assert picks == {"A": 750, "B": 250}

        clients = _clients(300)
        first = {c: ask("ip.test", c) for c in clients}
        assert set(first.values()) == {"C1", "C2", "C3"}
        assert all(ask("ip.test", c) == first[c] for c in clients[:100])  # stable
        pools["c"].append(backends["C4"].port)
        (tmp_path / f"gw-{port}.ini").write_text(_ini(port, pools, policies, rules))
        before = gw.output().count("configuration reloaded")
        os.kill(gw.pid, signal.SIGHUP)
        waitFor(lambda: gw.output().count("configuration reloaded") > before, what="the reload")
        ask = _asker(port)
        after = {c: ask("ip.test", c) for c in clients}
        moved = [c for c in clients if after[c] != first[c]]
        assert {after[c] for c in moved} == {"C4"}  # every client that moved went to the new member
        assert 0 < len(moved) < 2 * len(clients) / 4  # about 1/4 is expected

        shares = Counter(ask("wip.test", c) for c in _clients(1000))
        assert abs(shares["A"] - 750) <= _tolerance(1000, 0.75), shares
        assert shares["A"] + shares["B"] == 1000

        # An affinity cookie wins over the policy's round robin, across its pools.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/x", headers={"Host": "sticky.test"})
        response = conn.getresponse()
        pinned = response.read().decode()
        cookie = response.getheader("Set-Cookie", "").split(";")[0]
        assert cookie.startswith("ApplicationGatewayAffinity="), cookie
        for _ in range(6):
            conn.request("GET", "/x", headers={"Host": "sticky.test", "Cookie": cookie})
            assert conn.getresponse().read().decode() == pinned
        unpinned = set()
        for _ in range(4):
            conn.request("GET", "/x", headers={"Host": "sticky.test"})
            unpinned.add(conn.getresponse().read().decode())
        assert unpinned == {"A", "B"}
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        for backend in backends.values():
            backend.close()


class _WebSocketBackend:
    """
    A backend accepting WebSocket handshakes and holding them; L{stop} and
    L{start} stop and start it as a restarted process does (its listening
    socket closed and opened again on the same port, its connections gone).
    """

    def __init__(self) -> None:
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        self.backend = RawBackend(self._handler)

    def _handler(self, conn: socket.socket, head: bytes, rest: bytes) -> None:
        key = headerValue(head, b"Sec-WebSocket-Key") or b""
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + acceptFor(key) + b"\r\n\r\n"
        )
        with self.lock:
            self.open.append(conn)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        with self.lock:
            if conn in self.open:
                self.open.remove(conn)

    def count(self) -> int:
        with self.lock:
            return len(self.open)

    def stop(self) -> None:
        """Stop listening and drop every WebSocket."""
        self.backend.close()
        with self.lock:
            dropped, self.open = self.open, []
        for conn in dropped:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def start(self) -> None:
        """Listen again on the same port."""
        self.backend = RawBackend(self._handler, self.backend.port)


def _openWebSocket(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(handshakeRequest(b"ws.test"))
    head, _ = readHead(s)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return s


def test_least_connections_sends_new_websockets_to_a_restarted_member(tmp_path: Path) -> None:
    """
    Six WebSockets spread 3/3 over A and B; B's process restarts (its
    listening socket and its three WebSockets gone, then listening again on
    the same port); the next three new WebSockets all go to B, until the
    counts are even again, then one each (round robin would have sent two of
    the three to A).
    """
    a, b = _WebSocketBackend(), _WebSocketBackend()
    port, admin = freePort(), freePort()
    policies = (
        "\n[loadDistributionPolicy:least]\nloadDistributionAlgorithm = LeastConnections\ntarget.all = pool\n"
    )
    rules = """
[httpListener:l1]
frontendPort = fp
[requestRoutingRule:r1]
httpListener = l1
loadDistributionPolicy = least
backendHttpSettings = s
"""
    ini = _ini(
        port,
        {"pool": [a.backend.port, b.backend.port]},
        policies,
        rules,
        gateway=f"admin = tcp:{admin}:interface=127.0.0.1",
    )
    gw = startGateway(tmp_path, ini, port)
    inflightB = (
        f'agw_backend_inflight_requests{{member="127.0.0.1:{b.backend.port}",pool="pool",settings="s"}}'
    )
    clients: list[socket.socket] = []
    try:
        for _ in range(6):
            clients.append(_openWebSocket(port))
        waitFor(lambda: (a.count(), b.count()) == (3, 3), what="3 WebSockets on each member")
        assert metric(admin, inflightB) == 3
        b.stop()
        # The gateway closes the clients of B's WebSockets (a close frame with
        # 1011), which close in turn: B then holds nothing at the gateway.
        deadline = time.monotonic() + 10
        while len(clients) > 3 and time.monotonic() < deadline:
            readable, _, _ = select.select(clients, [], [], 0.5)
            for s in readable:
                s.recv(65536)
                s.close()
                clients.remove(s)
        assert len(clients) == 3
        waitFor(lambda: metric(admin, inflightB) == 0, what="B's WebSockets ended at the gateway")
        b.start()
        for expected in ((3, 1), (3, 2), (3, 3)):
            clients.append(_openWebSocket(port))
            waitFor(lambda e=expected: (a.count(), b.count()) == e, what=f"WebSockets at {expected}")
        clients.append(_openWebSocket(port))
        clients.append(_openWebSocket(port))
        waitFor(lambda: (a.count(), b.count()) == (4, 4), what="one more each")
        assert gw.proc.poll() is None
    finally:
        for s in clients:
            s.close()
        gw.stop()
        a.backend.close()
        b.backend.close()

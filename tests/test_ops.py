"""
Operations: reload on SIGHUP, graceful stop, systemd notifications and
metrics, against the real twistd process.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import threading
import time
from pathlib import Path

from tests.rawbackend import RawBackend
from tests.support import Proc, basicIni, freePort, startBackend, startGateway, waitFor


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, body


def test_reload_swaps_routing_and_rejects_invalid_files(tmp_path: Path) -> None:
    a, pa = startBackend(tmp_path, "A")
    b, pb = startBackend(tmp_path, "B")
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [pa]), port)
    cfg = tmp_path / f"gw-{port}.ini"
    try:
        assert get(port)[1] == b"Hello from agw demo backend A\n"
        # a valid change goes live on SIGHUP
        cfg.write_text(basicIni(port, [pb]))
        os.kill(gw.pid, signal.SIGHUP)
        waitFor(lambda: get(port)[1] == b"Hello from agw demo backend B\n")
        # an invalid file changes nothing, and says why
        cfg.write_text(basicIni(port, [pa]) + "\n[probe:p1]\ninterval = 0\n")
        os.kill(gw.pid, signal.SIGHUP)
        waitFor(lambda: "reload rejected" in gw.output())
        assert "[probe:p1] interval: expected 1..86400" in gw.output()
        for _ in range(5):
            assert get(port)[1] == b"Hello from agw demo backend B\n"
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        a.stop()
        b.stop()


def test_sigterm_lets_inflight_request_finish_and_exits_0(tmp_path: Path) -> None:
    release = threading.Event()

    def handler(conn: socket.socket, head: bytes, rest: bytes) -> None:
        release.wait(10)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")

    backend = RawBackend(handler)
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [backend.port], gateway="shutdownGracePeriod = 10"), port)
    try:
        result: dict[str, object] = {}

        def client() -> None:
            try:
                result["resp"] = get(port, "/slow")
            except Exception as e:  # recorded for the assertion
                result["error"] = e

        t = threading.Thread(target=client)
        t.start()
        waitFor(lambda: backend.requests >= 1)
        gw.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # no longer accepting new connections
        refused = False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        except OSError:
            refused = True
        assert refused
        assert gw.proc.poll() is None  # still finishing the request
        release.set()
        t.join(15)
        assert result.get("resp") == (200, b"done"), result
        assert gw.proc.wait(15) == 0
    finally:
        release.set()
        gw.stop()
        backend.close()


def test_systemd_notify_ready_reloading_stopping(tmp_path: Path) -> None:
    b, pb = startBackend(tmp_path, "A")
    sockPath = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sockPath)
    sock.settimeout(20)
    port = freePort()
    cfg = tmp_path / "gw.ini"
    cfg.write_text(basicIni(port, [pb]))
    from tests.support import TWISTD

    gw = Proc(
        [TWISTD, "-n", "--pidfile=", "agw", "--config", str(cfg)],
        tmp_path / "gw.log",
        env={"NOTIFY_SOCKET": sockPath},
    )
    try:
        messages: list[str] = []
        messages.append(sock.recv(4096).decode())
        assert "READY=1" in messages[-1]
        os.kill(gw.pid, signal.SIGHUP)
        messages.append(sock.recv(4096).decode())
        assert "RELOADING=1" in messages[-1] and "MONOTONIC_USEC=" in messages[-1]
        messages.append(sock.recv(4096).decode())
        assert "READY=1" in messages[-1]
        gw.proc.send_signal(signal.SIGTERM)
        messages.append(sock.recv(4096).decode())
        assert "STOPPING=1" in messages[-1]
        assert gw.proc.wait(15) == 0
    finally:
        sock.close()
        gw.stop()
        b.stop()


def test_metrics_endpoint(tmp_path: Path) -> None:
    b, pb = startBackend(tmp_path, "A")
    port, admin = freePort(), freePort()
    gw = startGateway(
        tmp_path, basicIni(port, [pb], gateway=f"admin = tcp:{admin}:interface=127.0.0.1"), port
    )
    try:
        for _ in range(3):
            assert get(port)[0] == 200
        assert get(port, "/status/503")[0] == 503
        status, text = get(admin, "/metrics")
        assert status == 200
        body = text.decode()
        assert 'agw_requests_total{listener="l1",pool="pool",rule="r1",status="2xx"} 3.0' in body
        assert 'agw_requests_total{listener="l1",pool="pool",rule="r1",status="5xx"} 1.0' in body
        assert "agw_request_duration_seconds_bucket" in body
        assert f'agw_backend_health{{member="127.0.0.1:{pb}",pool="pool",settings="s1"}}' in body
        assert "agw_websockets_active 0.0" in body
    finally:
        gw.stop()
        b.stop()


def _workerPids(configPath: Path) -> list[int]:
    import subprocess

    out = subprocess.run(
        ["pgrep", "-f", "--", f"--config {configPath} --worker"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def test_workers_share_ports_restart_reload_and_affinity(tmp_path: Path) -> None:
    a, pa = startBackend(tmp_path, "A")
    b, pb = startBackend(tmp_path, "B")
    port = freePort()
    # no affinitySecret configured: the supervisor generates one all workers share
    gw = startGateway(
        tmp_path,
        basicIni(port, [pa, pb], gateway="workers = 2", settings="cookieBasedAffinity = Enabled"),
        port,
    )
    cfg = tmp_path / f"gw-{port}.ini"
    try:
        waitFor(lambda: len(_workerPids(cfg)) == 1)
        first = _workerPids(cfg)[0]
        # a cookie minted by whichever process answered pins the member in every process
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        r = conn.getresponse()
        pinnedBody = r.read()
        cookie = r.getheader("Set-Cookie").split(";")[0]
        conn.close()
        for _ in range(20):  # new connection each time: the kernel spreads them over both processes
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/", headers={"Cookie": cookie})
            assert c.getresponse().read() == pinnedBody
            c.close()
        # a worker that dies is restarted
        os.kill(first, signal.SIGKILL)
        waitFor(lambda: _workerPids(cfg) not in ([], [first]), timeout=20)
        # reload reaches every worker
        cfg.write_text(basicIni(port, [pb], gateway="workers = 2"))
        os.kill(gw.pid, signal.SIGHUP)
        time.sleep(1.0)
        waitFor(lambda: all(get(port)[1] == b"Hello from agw demo backend B\n" for _ in range(20)))
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(20) == 0
        waitFor(lambda: _workerPids(cfg) == [], timeout=10)
    finally:
        gw.stop()
        for pid in _workerPids(cfg):
            os.kill(pid, signal.SIGKILL)
        a.stop()
        b.stop()


def test_socket_activation_systemd_endpoint(tmp_path: Path) -> None:
    """A frontendPort with a systemd: endpoint listens on the socket systemd passes (LISTEN_FDS)."""
    import subprocess

    from tests.support import TWISTD

    b, pb = startBackend(tmp_path, "A")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    ini = basicIni(port, [pb]).replace(
        f"port = {port}\ninterface = 127.0.0.1", "endpoint = systemd:domain=INET:index=0"
    )
    cfg = tmp_path / "gw.ini"
    cfg.write_text(ini)
    os.set_inheritable(sock.fileno(), True)
    # systemd passes the socket as fd 3 with LISTEN_FDS=1, LISTEN_FDNAMES and LISTEN_PID=<the service pid>.
    script = f'exec 3<&{sock.fileno()}; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec "$0" "$@"'
    log = open(tmp_path / "gw.log", "wb")
    proc = subprocess.Popen(
        ["bash", "-c", script, TWISTD, "-n", "--pidfile=", "agw", "--config", str(cfg)],
        pass_fds=(sock.fileno(),),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    sock.close()  # only the gateway holds it now
    try:
        try:
            waitFor(lambda: _tryGet(port) == b"Hello from agw demo backend A\n", timeout=20)
        except TimeoutError:
            raise AssertionError((tmp_path / "gw.log").read_text()) from None
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
        b.stop()


def _tryGet(port: int) -> bytes | None:
    try:
        return get(port)[1]
    except OSError:
        return None


def test_admin_post_reload(tmp_path: Path) -> None:
    a, pa = startBackend(tmp_path, "A")
    b, pb = startBackend(tmp_path, "B")
    port, admin = freePort(), freePort()
    adminLine = f"admin = tcp:{admin}:interface=127.0.0.1"
    gw = startGateway(tmp_path, basicIni(port, [pa], gateway=adminLine), port)
    cfg = tmp_path / f"gw-{port}.ini"
    try:
        assert get(port)[1] == b"Hello from agw demo backend A\n"
        cfg.write_text(basicIni(port, [pb], gateway=adminLine))
        conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        conn.request("POST", "/reload")
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b'{\n  "ok": true,\n  "errors": []\n}\n')
        assert get(port)[1] == b"Hello from agw demo backend B\n"
        cfg.write_text(basicIni(port, [pa], gateway=adminLine + "\nbogus = 1"))
        conn.request("POST", "/reload")
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 400 and "[gateway] bogus: unknown key 'bogus'" in body
        assert get(port)[1] == b"Hello from agw demo backend B\n"
        conn.request("GET", "/reload")
        assert conn.getresponse().status == 405  # never on a GET
        conn.close()
    finally:
        gw.stop()
        a.stop()
        b.stop()


def test_slow_request_head_gets_408_from_the_real_gateway(tmp_path: Path) -> None:
    """
    A client that sends its head a few bytes at a time is answered 408 and
    closed at C{requestHeaderTimeout} (1 s here), long before the 60 s idle
    timeout; a keep-alive connection idle longer than that is not, and a
    head finished in time is proxied.
    """
    b, pb = startBackend(tmp_path, "A")
    port = freePort()
    gw = startGateway(tmp_path, basicIni(port, [pb], gateway="requestHeaderTimeout = 1"), port)
    try:
        # idle keep-alive: the deadline counts from a head's first byte only
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            time.sleep(1.5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
        # a head trickled for longer than the deadline: 408 (the 60 s idle
        # timer, restarted by every byte, would close without an answer)
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            received = b""
            for _ in range(100):  # at most 20 s of trickling
                try:
                    s.sendall(b"X")
                    time.sleep(0.2)
                    chunk = s.recv(4096, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:  # reset: the gateway closed before this byte
                    break
                received += chunk
                if not chunk:
                    break
            assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), received
        assert get(port)[0] == 200
        assert gw.proc.poll() is None
    finally:
        gw.stop()
        b.stop()


def test_out_of_file_descriptors_is_502_and_leaves_backends_healthy(tmp_path: Path) -> None:
    # The gateway's own descriptor limit reached (RLIMIT_NOFILE lowered on the
    # running process): requests on connections it did accept are answered
    # 502 (no socket for the backend), not 500 with a traceback, and neither
    # those failures nor skipped probes put the healthy backend out of
    # rotation: once descriptors are free it serves at once.
    import resource

    backend, backendPort = startBackend(tmp_path)
    port = freePort()
    # One probe a minute, threshold 3: only the proxy's failures could mark it.
    gw = startGateway(
        tmp_path,
        basicIni(port, [backendPort], probe="interval = 60\ntimeout = 5\nunhealthyThreshold = 3"),
        port,
    )
    clients: list[socket.socket] = []
    try:
        fds = lambda: len(os.listdir(f"/proc/{gw.pid}/fd"))  # noqa: E731
        hard = resource.prlimit(gw.pid, resource.RLIMIT_NOFILE)[1]
        limit = fds() + 5
        resource.prlimit(gw.pid, resource.RLIMIT_NOFILE, (limit, hard))
        # Connect until every descriptor the gateway may have is in use (a
        # probe's socket may still be closing): bounded at 40 connections.
        for _ in range(40):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            time.sleep(0.05)
            if len(clients) >= 8 and fds() >= limit:
                break
        assert fds() >= limit
        answers = []
        for s in clients:
            try:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                resp = http.client.HTTPResponse(s)
                resp.begin()
                answers.append((resp.status, resp.read()))
            except (OSError, http.client.HTTPException):
                answers.append(None)  # closed by Twisted's EMFILE recovery: never accepted
        answered = [a for a in answers if a is not None]
        assert len(answered) >= 3, answers
        assert all(status == 502 for status, _ in answered), answered
        assert all(b"could not be reached" in body for _, body in answered), answered
    finally:
        for s in clients:
            s.close()
    try:
        waitFor(lambda: get(port)[0] == 200, 10, "a 200 once descriptors are free")
        assert "Traceback" not in gw.output()
        assert "Unhealthy" not in gw.output()
    finally:
        gw.stop()
        backend.stop()

"""
Helpers for the integration tests: real processes on loopback.

The gateway runs as the real twistd entry point in a subprocess; backends are
the demo backend (another subprocess) or small servers the test starts.  Every
wait is bounded.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TWISTD = str(BIN / "twistd") if (BIN / "twistd").exists() else "twistd"


_GIVEN: set[int] = set()


def freePort() -> int:
    """A free loopback port, never one this process was given before: the
    kernel may hand the same port to two binds in a row once the first is
    closed (seen: one gateway given the same port for two listeners)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise RuntimeError("no fresh free port after 100 tries")


def waitFor(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll C{predicate} until it returns something true (returned), or raise after C{timeout}."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not met within {timeout}s")
        time.sleep(0.02)


def stubResult(treq: Any, d: Any) -> Any:
    """The result of a treq.testing.StubTreq Deferred, after flushing it (never a Failure)."""
    from twisted.python.failure import Failure

    out: list[Any] = []
    d.addBoth(out.append)
    treq.flush()
    assert len(out) == 1 and not isinstance(out[0], Failure), out
    return out[0]


def waitForPort(port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def httpGet(
    port: int, path: str = "/", timeout: float = 10.0, method: str = "GET", body: bytes | None = None
) -> tuple[int, bytes]:
    """One request (GET unless C{method}) to 127.0.0.1:C{port} on a new connection: status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def sampleValue(text: str, sample: str) -> float:
    """The value of C{sample} (a metric name with its labels, as the exposition writes it) in C{text}."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in /metrics:\n{text}")


def metric(admin: int, sample: str) -> float:
    """The value of C{sample} on the admin endpoint's C{/metrics} (see L{sampleValue})."""
    status, body = httpGet(admin, "/metrics")
    assert status == 200, (status, body)
    return sampleValue(body.decode(), sample)


def refused(port: int) -> bool:
    """Whether a connection to 127.0.0.1:C{port} is refused (other errors are raised)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def backendOf(port: int, https: bool = False) -> str:
    """GET / on a new connection (HTTPS: any certificate): the name of the demo backend that answered."""
    if https:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=10, context=context
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 200, (r.status, body)
    m = re.fullmatch(rb"Hello from agw demo backend (\w+)\n", body)
    assert m is not None, body
    return m.group(1).decode()


def writeDropIn(base: Path, modules: Mapping[str, str]) -> Path:
    """A C{BASE/agwtx/plugins/} drop-in directory (no __init__.py) holding C{modules}."""
    directory = base / "agwtx" / "plugins"
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        (directory / f"{name}.py").write_text(source)
    return directory


def listeningSockets(pid: int, port: int) -> set[int]:
    """
    The inodes of the sockets process C{pid} holds listening on TCP C{port}
    (any address, IPv4 or IPv6), from C{/proc}: the same set before and after
    an event means the very same listening sockets were kept, not re-bound.
    """
    listening: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                listening.add(inode)
    held: set[int] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed since the listing
            continue
        if target.startswith("socket:["):
            held.add(int(target[len("socket:[") : -1]))
    return listening & held


class Proc:
    """A subprocess that is always cleaned up, with its output in a file."""

    def __init__(self, args: list[str], logPath: Path, env: dict[str, str] | None = None) -> None:
        self.logPath = logPath
        self.log: IO[bytes] = open(logPath, "wb")
        self.proc = subprocess.Popen(
            args,
            cwd=str(ROOT),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.logPath.read_text(errors="replace")

    def rssKiB(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


def startBackend(tmp: Path, name: str = "b1", port: int | None = None) -> tuple[Proc, int]:
    port = port or freePort()
    proc = Proc(
        [
            sys.executable,
            "-m",
            "agwtx.tools.demo",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--name",
            name,
        ],
        tmp / f"backend-{name}-{port}.log",
    )
    waitForPort(port, proc.proc)
    return proc, port


def startGateway(tmp: Path, ini: str, port: int, extra: list[str] | None = None) -> Proc:
    cfg = tmp / f"gw-{port}.ini"
    cfg.write_text(ini)
    proc = Proc(
        [TWISTD, "-n", "--pidfile=", "agw", "--config", str(cfg), *(extra or [])],
        tmp / f"gw-{port}.log",
    )
    try:
        waitForPort(port, proc.proc)
    except Exception:
        proc.stop()
        raise RuntimeError("gateway did not start:\n" + proc.output())
    return proc


def basicIni(
    gwPort: int,
    backends: list[int] | list[str],
    settings: str = "",
    gateway: str = "",
    probe: str = "",
) -> str:
    """A one-listener, one-rule config routing to C{backends} on loopback."""
    addresses = ", ".join(b if isinstance(b, str) else f"127.0.0.1:{b}" for b in backends)
    text = f"""
[gateway]
{gateway}
[frontendPort:fp]
port = {gwPort}
interface = 127.0.0.1

[httpListener:l1]
frontendPort = fp
protocol = Http

[backendAddressPool:pool]
backendAddresses = {addresses}

[backendHttpSettings:s1]
port = 80
protocol = Http
{settings}

[requestRoutingRule:r1]
ruleType = Basic
priority = 100
httpListener = l1
backendAddressPool = pool
backendHttpSettings = s1
"""
    if probe:
        text += f"\n[probe:p1]\n{probe}\n"
    return text

#!/usr/bin/env python3
"""WebSocket benchmark: agw against nginx and a direct backend, on loopback.

Usage::

    npm ci --prefix bench                       # once: Node packages ws, bufferutil
    .venv/bin/python bench/ws_bench.py          # 10 s per run, --idle 10000
    .venv/bin/python bench/ws_bench.py --only direct,nginx --duration 3 --idle 0
    .venv/bin/python bench/ws_bench.py --idle 50000 --json /tmp/ws.json

Part 1, round trips. ``--connections`` (20) WebSockets each send a binary
message, wait for its echo and send the next, for ``--duration`` s (10)
after a ``--warmup`` (1 s), once per message size of ``--sizes`` (64 B and
1 MiB). Rows:

``direct``  the echo backend itself: ``bench/ws_echo.mjs``, a Node ``ws``
            server with permessage-deflate off (every row ends there)
``nginx``   Debian's nginx, 1 worker, ``proxy_http_version 1.1``,
            Upgrade/Connection forwarded, ``proxy_read_timeout 3600s``,
            ``proxy_buffering off``, upstream keepalive
``agw``     ``twistd -n --pidfile= agw --config <generated gw.ini>``: the
            same generated Basic-rule config as ``http_bench.py``'s,
            pointing at the echo backend (WebSocket needs no setting)

The load comes from ``bench/ws_client.mjs`` (Node ``ws``, permessage-deflate
off), one Node process per row and size, so the client is not the
bottleneck; ``ws`` masks with the ``bufferutil`` native addon (both are in
``bench/package.json``; without the addon 1 MiB round trips are ~3x slower
on the client and backend side, and a warning is printed). All servers are
started first; then, for each size, the rows run one after another (so agw
and nginx are measured seconds apart). Every echo is checked (length and a
sequence number). Printed per row and size: round trips/s, p50/p99 latency
(ms), MiB/s each way, the CPU use (% of one core) over the measured seconds
of the proxy (nginx: master + worker; agw), the echo backend and the client
(when a row's proxy is well below 100 % while its round trips are lower,
the machine, not the proxy, was the limit), errors; then the ratios
agw/nginx of round trips/s for 64 B (target >= 0.7) and 1 MiB (target >=
0.5), and agw's RSS after the round trips.

Part 2, idle capacity (``--idle N``, default 10000; 0 skips it). A fresh
agw (same config; with N > 25000 the echo backend listens on several ports
and the pool lists them all, since one destination port gives only ~28k
ephemeral source ports) gets a short warm-up (20 WebSockets opened, echoed,
closed); its VmRSS is read; then one Node client opens N WebSockets through
it, bound round-robin to source addresses 127.0.0.2 .. 127.0.0.K (at most
``--idle-per-source`` = 20000 each, so N can exceed 28k), at most
``--idle-concurrency`` handshakes in flight. After ``--idle-settle`` s
(3) agw's VmRSS and open fds are read again: printed are the RSS before and
with N idle WebSockets, and the difference per connection in KB (target
<= 60 KB). Then ``--idle-check`` (100) random idle sockets must each echo a
message, all are closed with 1000 and the closing handshakes counted.

RLIMIT_NOFILE is raised (``resource.setrlimit``; as root also the hard
limit) to 2 N + 4096 before anything is started: agw holds two fds per
bridged WebSocket, the echo backend and the client one each, and children
inherit the limit (each child's limit is read back from /proc/PID/limits).
Where the hard limit cannot be raised (root in a container without
CAP_SYS_RESOURCE) and is too low for N, the bench says so, names the
largest N that fits, and exits 2 before starting anything.

Everything listens on 127.0.0.1 on free ephemeral ports; every wait has a
deadline; servers and clients are always stopped (SIGTERM, SIGKILL after
5 s), on errors, Ctrl-C and SIGTERM too. Generated configs and logs live in
a temp dir (kept with ``--keep-tmp``).

Options:
    --only ROWS / --skip ROWS   comma lists of rows (direct,nginx,agw)
    --sizes LIST          message sizes, e.g. ``64,16K,1M`` (default 64,1M)
    --connections N       round-trip connections per run (default 20)
    --duration S          measured seconds per run (default 10)
    --warmup S            warm-up seconds per run, not counted (default 1)
    --idle N              idle WebSockets through agw (default 10000; 0 = skip)
    --idle-per-source N   idle sockets per source address (default 20000)
    --idle-concurrency N  handshakes in flight while opening (default 64)
    --idle-settle S       wait before reading RSS (default 3)
    --idle-check N        idle sockets that must echo at the end (default 100)
    --idle-open-timeout S bound for opening them (default 60 + N/100)
    --twistd / --nginx / --node PATH   tool paths
    --start-timeout S     bound for a server to come up (default 15)
    --json PATH           also write all figures as JSON
    --keep-tmp            keep the temp dir and print its path

Exit status: 0 everything measured (targets missed are reported, not
failed); 1 a row or the idle part failed; 2 bad usage or missing tools
(the install commands are printed); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
CLIENT_JS = BENCH_DIR / "ws_client.mjs"
ECHO_JS = BENCH_DIR / "ws_echo.mjs"
NODE_MODULES = ("ws", "bufferutil")

ROWS = ("direct", "nginx", "agw")
#: agw/nginx round trips/s targets by message size.
TARGETS = {64: 0.7, 1024 * 1024: 0.5}
IDLE_TARGET_KB = 60.0
#: Backend connections per backend port (one destination gives ~28k
#: ephemeral source ports on 127.0.0.1).
CONNS_PER_BACKEND_PORT = 25_000
ECHO_BODY = b"ok\n"
#: File descriptors agw needs besides two per idle WebSocket.
FD_MARGIN = 64
#: Slack added to every client's own time bounds before it is killed.
CLIENT_SLACK_S = 30.0

_SIZE_RE = re.compile(r"^(\d+)\s*(b|k|kb|kib|m|mb|mib)?$", re.IGNORECASE)
_SIZE_UNIT = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
}


def size_label(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1024 and size % 1024 == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def _sizes_arg(text: str) -> list[int]:
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        match = _SIZE_RE.match(part)
        if not match:
            raise argparse.ArgumentTypeError(f"bad size {part!r} (e.g. 64, 16K, 1M)")
        size = int(match.group(1)) * _SIZE_UNIT[(match.group(2) or "").lower()]
        if not 1 <= size <= 64 << 20:
            raise argparse.ArgumentTypeError(f"size {part!r} must be 1 B .. 64 MiB")
        sizes.append(size)
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return list(dict.fromkeys(sizes))


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="WebSocket benchmark: agw vs nginx vs direct (see module docstring).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--only", type=h.rows_arg(ROWS), help="rows to run, e.g. agw,nginx")
    parser.add_argument("--skip", type=h.rows_arg(ROWS), default=[], help="rows to leave out")
    parser.add_argument("--sizes", type=_sizes_arg, default=[64, 1 << 20], help="e.g. 64,1M")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--duration", type=h.positive_seconds, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--idle", type=_count, default=10_000, help="0 skips the idle part")
    parser.add_argument("--idle-per-source", type=int, default=20_000)
    parser.add_argument("--idle-concurrency", type=int, default=64)
    parser.add_argument("--idle-settle", type=float, default=3.0)
    parser.add_argument("--idle-check", type=_count, default=100)
    parser.add_argument("--idle-open-timeout", type=h.positive_seconds)
    parser.add_argument("--twistd", help="twistd executable for agw")
    parser.add_argument("--nginx", help="nginx executable")
    parser.add_argument("--node", help="node executable")
    parser.add_argument("--start-timeout", type=h.positive_seconds, default=15.0)
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 10_000:
        parser.error("--connections must be 1..10000")
    if not 0 <= args.warmup <= 600:
        parser.error("--warmup must be 0..600")
    if not 1 <= args.idle_per_source <= 28_000:
        parser.error("--idle-per-source must be 1..28000")
    if not 1 <= args.idle_concurrency <= 1000:
        parser.error("--idle-concurrency must be 1..1000")
    if not 0 <= args.idle_settle <= 600:
        parser.error("--idle-settle must be 0..600")
    if args.idle > 253 * args.idle_per_source:  # 127.0.0.2 .. 127.0.0.254
        parser.error(
            f"--idle at most {253 * args.idle_per_source} with --idle-per-source {args.idle_per_source}"
        )
    selected = args.only or list(ROWS)
    args.rows = [row for row in ROWS if row in selected and row not in args.skip]
    if not args.rows and not args.idle:
        parser.error("nothing to run (no rows and --idle 0)")
    if args.idle_open_timeout is None:
        args.idle_open_timeout = 60.0 + args.idle / 100.0
    return args


def idle_sources(count: int, per_source: int) -> list[str]:
    """127.0.0.2 .. 127.0.0.K, enough for ``count`` sockets at ``per_source`` each."""
    k = max(1, math.ceil(count / per_source))
    return [f"127.0.0.{2 + i}" for i in range(k)]


class ClientError(h.HarnessError):
    pass


class NodeClient:
    """A ws_client.mjs process, read (and in ``idle`` mode driven) over its
    stdin/stdout; its stderr goes to a log file."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
            cwd=BENCH_DIR,
        )
        self._buf = b""
        self.log_path = log_path

    def command(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError as exc:
            raise ClientError(f"client gone: {self._tail()}") from exc

    def _tail(self) -> str:
        self._log.flush()
        return h.tail_file(self.log_path, 10)

    def read_event(self, expected: str, timeout: float) -> dict[str, Any]:
        """The next JSON line of event ``expected`` within ``timeout`` s."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in self._buf:
                    line, self._buf = self._buf.split(b"\n", 1)
                    try:
                        event: dict[str, Any] = json.loads(line)
                    except ValueError:
                        continue
                    if not isinstance(event, dict):
                        continue
                    if event.get("event") == "error":
                        raise ClientError(f"client: {event.get('error')}")
                    if event.get("event") == expected:
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ClientError(f"no '{expected}' from the client within {timeout:.0f} s")
                if sel.select(timeout=min(remaining, 1.0)):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise ClientError(
                            f"client exited ({self.proc.wait(timeout=5)}) before '{expected}': {self._tail()}"
                        )
                    self._buf += chunk

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=h.STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, 9)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=h.STOP_GRACE_S)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log.close()


class Bench:
    def __init__(self, args: argparse.Namespace, tools: dict[str, str], workdir: Path) -> None:
        self.args = args
        self.tools = tools
        self.workdir = workdir
        self.used_ports: set[int] = set()
        self.backend_ports: list[int] = []
        self.backend_proc: h.ManagedProcess | None = None
        self.targets: dict[str, tuple[int, h.ManagedProcess | None]] = {}
        self.rtt: dict[str, dict[str, dict[str, Any]]] = {}  # size label -> row -> data
        self.row_errors: dict[str, str] = {}
        self.agw_rss: dict[str, int | None] = {}
        self.idle: dict[str, Any] | None = None

    # -- servers -------------------------------------------------------------

    def port(self) -> int:
        port = h.free_port(h.LOOPBACK, self.used_ports)
        self.used_ports.add(port)
        return port

    def report_nofile(self, name: str, pid: int, need: int) -> None:
        limit = h.read_proc_limit(pid)
        if limit is not None and limit < need:
            h.log(f"WARNING: {name} (pid {pid}) may open only {limit} fds, needs ~{need}")

    def start_backend(self, stack: ExitStack) -> None:
        n_ports = max(1, math.ceil(self.args.idle / CONNS_PER_BACKEND_PORT))
        self.backend_ports = [self.port() for _ in range(n_ports)]
        argv = [
            self.tools["node"],
            str(ECHO_JS),
            "--host",
            h.LOOPBACK,
            "--port",
            ",".join(map(str, self.backend_ports)),
        ]
        proc = h.ManagedProcess("echo backend", argv, self.workdir / "echo.log", cwd=BENCH_DIR)
        stack.enter_context(proc)
        for port in self.backend_ports:
            body = h.wait_for_http(h.LOOPBACK, port, self.args.start_timeout, process=proc)
            if body != ECHO_BODY:
                raise h.HarnessError(f"echo backend answered {body[:80]!r} on GET /")
        self.backend_proc = proc
        self.report_nofile("echo backend", proc.pid, self.args.idle + FD_MARGIN)
        h.log(f"started echo backend pid {proc.pid} on {h.LOOPBACK}:{','.join(map(str, self.backend_ports))}")

    def start_nginx(self, stack: ExitStack) -> tuple[int, h.ManagedProcess]:
        port = self.port()
        conf = h.write_nginx_conf(
            self.workdir,
            "proxy",
            port,
            [h.proxy_location("backend", websocket=True, buffering=False)],
            {"backend": [f"{h.LOOPBACK}:{self.backend_ports[0]}"]},
        )
        proc = h.ManagedProcess("nginx", h.nginx_argv(self.tools["nginx"], conf), self.workdir / "nginx.log")
        stack.enter_context(proc)
        h.log(f"started nginx pid {proc.pid} on {h.LOOPBACK}:{port}")
        h.wait_for_http(h.LOOPBACK, port, self.args.start_timeout, process=proc)
        return port, proc

    def start_agw(
        self, stack: ExitStack, name: str, backend_ports: list[int]
    ) -> tuple[int, h.ManagedProcess]:
        port = self.port()
        config = h.write_agw_config(self.workdir / f"{name}.ini", port, backend_ports)
        proc = h.ManagedProcess(
            name,
            h.agw_argv(self.tools["twistd"], config),
            self.workdir / f"{name}.log",
            cwd=h.repo_root(),
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        stack.enter_context(proc)
        h.log(f"started {name} pid {proc.pid} on {h.LOOPBACK}:{port}: {' '.join(proc.argv)}")
        body = h.wait_for_http(h.LOOPBACK, port, self.args.start_timeout, process=proc)
        if body != ECHO_BODY:
            raise h.HarnessError(f"GET / through {name} answered {body[:80]!r}")
        return port, proc

    # -- part 1: round trips ---------------------------------------------------

    def client_argv(self, mode: str, url: str, **options: Any) -> list[str]:
        argv = [self.tools["node"], str(CLIENT_JS), mode, "--url", url]
        for key, value in options.items():
            argv += [f"--{key.replace('_', '-')}", str(value)]
        return argv

    def server_pgids(self, row: str) -> dict[str, int]:
        """Process groups whose CPU use is shown for ``row``."""
        pgids = {"echo": self.backend_proc.pid} if self.backend_proc else {}
        _, proc = self.targets[row]
        if proc is not None:
            pgids["proxy"] = proc.pid
        return pgids

    def run_rtt(self, row: str, size: int) -> dict[str, Any]:
        port, proc = self.targets[row]
        url = f"ws://{h.LOOPBACK}:{port}/"
        argv = self.client_argv(
            "rtt",
            url,
            connections=self.args.connections,
            size=size,
            duration=self.args.duration,
            warmup=self.args.warmup,
        )
        label = size_label(size).replace(" ", "")
        client = NodeClient(argv, self.workdir / f"client-{row}-{label}.log")
        pgids = self.server_pgids(row)
        try:
            # The client's own bounds: open 30 s, drain 15 s, close 10 s.
            client.read_event("measure_start", 30 + self.args.warmup + CLIENT_SLACK_S)
            t0 = time.monotonic()
            cpu0 = {name: h.process_group_cpu_seconds(pgid) for name, pgid in pgids.items()}
            client.read_event("measure_end", self.args.duration + CLIENT_SLACK_S)
            t1 = time.monotonic()
            cpu1 = {name: h.process_group_cpu_seconds(pgid) for name, pgid in pgids.items()}
            event = client.read_event("rtt", 15 + 10 + CLIENT_SLACK_S)
            returncode = client.proc.wait(timeout=CLIENT_SLACK_S)
        except subprocess.TimeoutExpired as exc:
            raise ClientError("ws_client.mjs did not exit after its result") from exc
        finally:
            client.stop()
        data = {k: v for k, v in event.items() if k != "event"}
        for name in pgids:
            before, after = cpu0[name], cpu1[name]
            data[f"{name}_cpu_percent"] = (
                round((after - before) / (t1 - t0) * 100, 1)
                if before is not None and after is not None and t1 > t0
                else None
            )
        if not data.get("native_masking"):
            h.log("WARNING: the client masks in JS (bufferutil not loaded): run npm ci --prefix bench")
        data["ok"] = returncode == 0 and not data["errors"]
        if proc is not None and not proc.alive:
            data["ok"] = False
            data["errors"]["server exited"] = proc.returncode
        return data

    def run_round_trips(self, stack: ExitStack) -> None:
        for row in self.args.rows:
            try:
                if row == "direct":
                    assert self.backend_proc is not None
                    self.targets[row] = (self.backend_ports[0], None)
                elif row == "nginx":
                    self.targets[row] = self.start_nginx(stack)
                else:
                    self.targets[row] = self.start_agw(stack, "agw", self.backend_ports[:1])
            except h.HarnessError as exc:
                self.fail_row(row, exc)
        for size in self.args.sizes:
            label = size_label(size)
            per_size = self.rtt.setdefault(label, {})
            for row in self.args.rows:
                if row in self.row_errors:
                    per_size[row] = {"ok": False, "error": self.row_errors[row]}
                    continue
                h.log(
                    f"{row}, {label}: {self.args.connections} connections, "
                    f"{self.args.warmup:g} s warm-up + {self.args.duration:g} s"
                )
                try:
                    per_size[row] = self.run_rtt(row, size)
                except h.HarnessError as exc:
                    h.log(f"{row}, {label}: FAILED: {exc}")
                    per_size[row] = {"ok": False, "error": str(exc)}
                    _, proc = self.targets[row]
                    if proc is not None and not proc.alive:
                        self.fail_row(
                            row,
                            h.ProcessStartError(f"{proc.name} exited ({proc.returncode})", proc.log_tail()),
                        )
                    elif proc is not None:
                        h.print_tail(proc.log_tail(15), proc.name)
                if per_size[row].get("errors"):
                    h.log(f"{row}, {label}: errors {per_size[row]['errors']}")
        if "agw" in self.targets:
            _, proc = self.targets["agw"]
            if proc is not None and proc.alive:
                self.agw_rss = {
                    "rss_kb": h.read_proc_status_kb(proc.pid, "VmRSS"),
                    "hwm_kb": h.read_proc_status_kb(proc.pid, "VmHWM"),
                }

    def fail_row(self, row: str, exc: Exception) -> None:
        h.log(f"{row}: FAILED: {exc}")
        h.print_tail(getattr(exc, "log_tail", ""), row)
        self.row_errors[row] = str(exc).splitlines()[0]

    # -- part 2: idle capacity -------------------------------------------------

    def run_idle(self) -> dict[str, Any]:
        args = self.args
        n = args.idle
        result: dict[str, Any] = {"ok": False, "requested": n}
        with ExitStack() as stack:
            port, agw = self.start_agw(stack, "agw-idle", self.backend_ports)
            self.report_nofile("agw-idle", agw.pid, 2 * n + FD_MARGIN)
            url = f"ws://{h.LOOPBACK}:{port}/"
            result["backend_ports"] = len(self.backend_ports)

            # Warm-up: exercise the bridge once so that lazily built state
            # (imports, factories) is not charged to the idle sockets.
            warm = NodeClient(
                self.client_argv("idle", url, count=min(20, n), concurrency=20, open_timeout=30),
                self.workdir / "idle-warmup.log",
            )
            try:
                opened = warm.read_event("opened", 30 + CLIENT_SLACK_S)
                if opened["opened"] == 0:
                    raise ClientError(f"warm-up: no WebSocket opened through agw: {opened['failures']}")
                warm.command(f"check {opened['opened']}")
                checked = warm.read_event("checked", 15 + CLIENT_SLACK_S)
                if checked["ok"] != checked["sampled"]:
                    raise ClientError(f"warm-up: echo check failed: {checked['outcomes']}")
                warm.command("close")
                warm.read_event("closed", 10 + CLIENT_SLACK_S)
            finally:
                warm.stop()
            time.sleep(1.0)

            rss_before = h.read_proc_status_kb(agw.pid, "VmRSS")
            fds_before = h.count_proc_fds(agw.pid)
            backend_before = (
                h.read_proc_status_kb(self.backend_proc.pid, "VmRSS") if self.backend_proc else None
            )
            sources = idle_sources(n, args.idle_per_source)
            result.update(rss_before_kb=rss_before, fds_before=fds_before, sources=sources)
            h.log(
                f"idle: agw-idle RSS {rss_before} kB; opening {n} WebSockets from "
                f"{sources[0]}..{sources[-1]} ({args.idle_concurrency} in flight, "
                f"bound {args.idle_open_timeout:.0f} s)"
            )
            client = NodeClient(
                self.client_argv(
                    "idle",
                    url,
                    count=n,
                    sources=",".join(sources),
                    concurrency=args.idle_concurrency,
                    open_timeout=args.idle_open_timeout,
                    close_timeout=30 + n / 1000,
                    max_life=args.idle_open_timeout + args.idle_settle + 300 + n / 500,
                ),
                self.workdir / "idle-client.log",
            )
            stack.callback(client.stop)
            opened = client.read_event("opened", args.idle_open_timeout + CLIENT_SLACK_S)
            result["open"] = {k: v for k, v in opened.items() if k != "event"}
            h.log(
                f"idle: {opened['opened']} open, {opened['failed']} failed, "
                f"{opened['not_attempted']} not attempted, in {opened['seconds']:.1f} s"
                + (f"; failures {opened['failures']}" if opened["failures"] else "")
            )
            time.sleep(args.idle_settle)
            if not agw.alive:
                raise h.ProcessStartError(f"agw-idle exited ({agw.returncode})", agw.log_tail())
            rss_idle = h.read_proc_status_kb(agw.pid, "VmRSS")
            result.update(
                rss_idle_kb=rss_idle,
                hwm_kb=h.read_proc_status_kb(agw.pid, "VmHWM"),
                fds_idle=h.count_proc_fds(agw.pid),
                backend_rss_before_kb=backend_before,
                backend_rss_idle_kb=(
                    h.read_proc_status_kb(self.backend_proc.pid, "VmRSS") if self.backend_proc else None
                ),
            )
            if opened["opened"] and rss_before is not None and rss_idle is not None:
                result["kb_per_connection"] = (rss_idle - rss_before) / opened["opened"]

            if args.idle_check:
                client.command(f"check {args.idle_check}")
                checked = client.read_event("checked", 15 + CLIENT_SLACK_S)
                result["check"] = {k: v for k, v in checked.items() if k != "event"}
                h.log(
                    f"idle: echo check {checked['ok']}/{checked['sampled']} ok, "
                    f"{checked['still_open']} still open, {checked['closed_early']} closed early"
                )
            client.command("close")
            closed = client.read_event("closed", 30 + n / 1000 + CLIENT_SLACK_S)
            result["close"] = {k: v for k, v in closed.items() if k != "event"}
            client.stop()
            time.sleep(1.0)
            result["rss_after_close_kb"] = h.read_proc_status_kb(agw.pid, "VmRSS")
            result["fds_after_close"] = h.count_proc_fds(agw.pid)
            check = result.get("check", {"ok": 0, "sampled": 0})
            result["ok"] = bool(
                opened["opened"] == n
                and check["ok"] == check["sampled"]
                and closed["forced"] == 0
                and agw.alive
            )
        return result

    # -- all -----------------------------------------------------------------

    def run(self) -> None:
        with ExitStack() as stack:
            self.start_backend(stack)
            if self.args.rows:
                with ExitStack() as rows_stack:  # nginx and agw stop before the idle part
                    self.run_round_trips(rows_stack)
            if self.args.idle:
                try:
                    self.idle = self.run_idle()
                except h.HarnessError as exc:
                    h.log(f"idle: FAILED: {exc}")
                    h.print_tail(getattr(exc, "log_tail", ""), "agw-idle")
                    self.idle = {"ok": False, "requested": self.args.idle, "error": str(exc)}


# --------------------------------------------------------------------------
# report


def summarize(bench: Bench) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    for size in bench.args.sizes:
        label = size_label(size)
        rows = bench.rtt.get(label, {})
        agw, nginx = rows.get("agw"), rows.get("nginx")
        ratio = None
        if agw and nginx and agw.get("ok") and nginx.get("ok") and nginx["round_trips_per_sec"]:
            ratio = agw["round_trips_per_sec"] / nginx["round_trips_per_sec"]
        target = TARGETS.get(size)
        ratios[label] = {
            "agw_nginx_ratio": ratio,
            "target": target,
            "meets_target": None if ratio is None or target is None else ratio >= target,
        }
    return {"ratios": ratios}


def print_report(bench: Bench, summary: dict[str, Any]) -> None:
    args = bench.args
    if args.rows:
        print(
            f"WebSocket round trips: {args.connections} connections, binary messages, "
            f"{args.duration:g} s per run after {args.warmup:g} s warm-up"
        )
        print(
            f"{'size':<8} {'row':<7} {'rt/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'MiB/s':>8} "
            f"{'proxy%':>7} {'echo%':>6} {'client%':>7}  errors"
        )
        for size in args.sizes:
            label = size_label(size)
            for row in args.rows:
                data = bench.rtt.get(label, {}).get(row, {"ok": False, "error": "not run"})
                if "round_trips_per_sec" not in data:
                    print(f"{label:<8} {row:<7} {'FAILED':>10}  {data.get('error', '')[:110]}")
                    continue
                errors = data.get("errors") or {}
                n_errors = sum(v if isinstance(v, int) else 1 for v in errors.values())
                failed = "" if data["ok"] else f" (FAILED: {json.dumps(errors)[:80]})"
                print(
                    f"{label:<8} {row:<7} {data['round_trips_per_sec']:>10.1f} "
                    f"{h.fmt(data['p50_ms'], '.3f'):>9} {h.fmt(data['p99_ms'], '.3f'):>9} "
                    f"{data['mib_per_sec_each_way']:>8.1f} "
                    f"{h.fmt(data.get('proxy_cpu_percent'), '.0f'):>7} "
                    f"{h.fmt(data.get('echo_cpu_percent'), '.0f'):>6} "
                    f"{h.fmt(data.get('client_cpu_percent'), '.0f'):>7}  "
                    f"{n_errors}{failed}"
                )
        ratio_items = summary["ratios"].items() if {"agw", "nginx"} <= set(args.rows) else []
        if ratio_items or "agw" in args.rows:
            print()
        for label, info in ratio_items:
            target = info["target"]
            verdict = ""
            if target is not None and info["agw_nginx_ratio"] is not None:
                verdict = f" (target >= {target}: {'met' if info['meets_target'] else 'MISSED'})"
            elif target is not None:
                verdict = f" (target >= {target})"
            print(f"agw/nginx round trips/s, {label}: {h.fmt(info['agw_nginx_ratio'], '.3f')}{verdict}")
        if "agw" in args.rows:
            rss, hwm = bench.agw_rss.get("rss_kb"), bench.agw_rss.get("hwm_kb")
            print(
                f"agw RSS after the round trips: {h.fmt(rss / 1024 if rss else None, '.1f')} MiB "
                f"(peak {h.fmt(hwm / 1024 if hwm else None, '.1f')} MiB)"
            )
    idle = bench.idle
    if idle is not None:
        if args.rows:
            print()
        n = idle["requested"]
        if "open" not in idle:
            print(f"Idle WebSockets through agw: {n} requested: FAILED: {idle.get('error', '')[:200]}")
        else:
            opened = idle["open"]
            sources = idle["sources"]
            print(
                f"Idle WebSockets through agw: {n} requested, {opened['opened']} open "
                f"({opened['failed']} failed, {opened['not_attempted']} not attempted) from "
                f"{sources[0]}..{sources[-1]} in {opened['seconds']:.1f} s"
            )
            if opened["failures"]:
                print(f"  open failures: {json.dumps(opened['failures'])}")
            before, during = idle.get("rss_before_kb"), idle.get("rss_idle_kb")
            per = idle.get("kb_per_connection")
            verdict = (
                ""
                if per is None
                else f" (target <= {IDLE_TARGET_KB:g} KB: {'met' if per <= IDLE_TARGET_KB else 'MISSED'})"
            )
            print(
                f"  agw RSS: {h.fmt(before / 1024 if before else None, '.1f')} MiB before, "
                f"{h.fmt(during / 1024 if during else None, '.1f')} MiB with them idle -> "
                f"{h.fmt(per, '.1f')} KB per connection{verdict}"
            )
            print(f"  agw open fds: {idle.get('fds_before')} before, {idle.get('fds_idle')} with them idle")
            bb, bi = idle.get("backend_rss_before_kb"), idle.get("backend_rss_idle_kb")
            if bb and bi and opened["opened"]:
                print(
                    f"  echo backend (Node ws) RSS: {bb / 1024:.1f} -> {bi / 1024:.1f} MiB "
                    f"({(bi - bb) / opened['opened']:.1f} KB per connection)"
                )
            check = idle.get("check")
            if check:
                print(
                    f"  echo check at the end: {check['ok']}/{check['sampled']} ok; "
                    f"{check['still_open']} still open, {check['closed_early']} closed early"
                    + (f" {json.dumps(check['closed_early_codes'])}" if check["closed_early"] else "")
                )
            close = idle.get("close")
            if close:
                after = idle.get("rss_after_close_kb")
                print(
                    f"  closed: {close['clean']} clean (1000), {close['unclean']} other "
                    f"{json.dumps(close['codes'])}, {close['forced']} forced; "
                    f"agw RSS after closing {h.fmt(after / 1024 if after else None, '.1f')} MiB, "
                    f"fds {idle.get('fds_after_close')}"
                )
            if idle.get("error"):
                print(f"  FAILED: {idle['error'][:200]}")
    sys.stdout.flush()


def find_tools(args: argparse.Namespace) -> tuple[dict[str, str], list[str]]:
    """The tools this run needs; returns (found, install commands for the missing)."""
    tools: dict[str, str] = {}
    commands: list[str] = []
    apt: list[str] = []
    node = h.find_executable(args.node) if args.node else h.find_node()
    if node:
        tools["node"] = node
    else:
        apt += ["nodejs", "npm"]
    if "nginx" in args.rows:
        nginx = h.find_executable(args.nginx) if args.nginx else h.find_nginx()
        if nginx:
            tools["nginx"] = nginx
        else:
            apt.append("nginx")
    if apt:
        commands.append(f"apt-get install -y {' '.join(apt)}")
    if not node or h.missing_node_modules(BENCH_DIR, NODE_MODULES):
        commands.append(f"npm ci --prefix {os.path.relpath(BENCH_DIR)}")
    if "agw" in args.rows or args.idle:
        twistd = args.twistd or h.find_twistd()
        if twistd:
            tools["twistd"] = twistd
        else:
            commands.append("make setup   # then pass --twistd .venv/bin/twistd")
    return tools, commands


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tools, commands = find_tools(args)
    if commands:
        print("missing tools; install with:", file=sys.stderr)
        for command in commands:
            print(f"    {command}", file=sys.stderr)
        return 2
    # agw holds 2 fds per bridged WebSocket (client and backend legs) plus a
    # few of its own; the echo backend and the client one each.
    soft, hard = h.raise_nofile_limit(2 * args.idle + 4096)
    if args.idle and soft < 2 * args.idle + FD_MARGIN:
        print(
            f"RLIMIT_NOFILE is {soft} (hard {hard}) and could not be raised to "
            f"{2 * args.idle + 4096}: agw needs 2 fds per idle WebSocket, so --idle "
            f"{args.idle} cannot work here; the most is --idle {max(0, (soft - FD_MARGIN) // 2)}.\n"
            f"Raising the hard limit needs CAP_SYS_RESOURCE (root outside a container), "
            f"e.g. run the bench under: prlimit --nofile={2 * args.idle + 4096} -- ...",
            file=sys.stderr,
        )
        return 2
    h.install_sigterm_handler()

    workdir = Path(tempfile.mkdtemp(prefix="agw-ws-bench-"))
    os.chmod(workdir, 0o755)
    started = time.time()
    measuredOn = h.machine()
    h.log(h.describe_machine(measuredOn))
    bench = Bench(args, tools, workdir)
    interrupted = False
    failed_early: str | None = None
    try:
        bench.run()
    except KeyboardInterrupt:
        interrupted = True
        h.log("interrupted; servers stopped")
    except h.HarnessError as exc:  # the echo backend failed
        failed_early = str(exc)
        h.log(f"FAILED: {exc}")
        h.print_tail(getattr(exc, "log_tail", ""))
    finally:
        if args.keep_tmp:
            h.log(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130

    summary = summarize(bench)
    print_report(bench, summary)
    ok = failed_early is None and all(
        bench.rtt.get(size_label(size), {}).get(row, {}).get("ok") for size in args.sizes for row in args.rows
    )
    if args.idle and not (bench.idle and bench.idle.get("ok")):
        ok = False
    if args.json:
        ws_version = ""
        try:
            ws_version = json.loads((BENCH_DIR / "node_modules/ws/package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            pass
        report = {
            "started": started,
            "settings": {
                "rows": args.rows,
                "sizes": args.sizes,
                "connections": args.connections,
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "idle": args.idle,
                "idle_per_source": args.idle_per_source,
                "idle_concurrency": args.idle_concurrency,
                "nofile_limit": soft,
                "node": h.tool_version([tools["node"], "--version"]),
                "ws": ws_version,
                "nginx": h.tool_version([tools["nginx"], "-v"]) if "nginx" in tools else None,
                "python": sys.version.split()[0],
            },
            "machine": measuredOn,
            "error": failed_early,
            "round_trips": bench.rtt,
            "agw_rss_after_round_trips": bench.agw_rss,
            **summary,
            "idle": bench.idle,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        h.log(f"wrote {args.json}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

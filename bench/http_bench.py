#!/usr/bin/env python3
"""HTTP throughput/latency benchmark: agw next to nginx, on loopback.

Usage (from anywhere; the gateway is run from the repo root, bench/..)::

    .venv/bin/python bench/http_bench.py                 # all rows, 10 s each
    python3 bench/http_bench.py --only direct,nginx --duration 3
    python3 bench/http_bench.py --twistd .venv/bin/twistd --json /tmp/http.json
    .venv/bin/python bench/http_bench.py --only nginx-tls,agw-tls --duration 5

Needs the Debian packages ``nginx`` (/usr/sbin/nginx) and ``wrk``; when one
is missing the script prints the ``apt-get install -y ...`` line and exits 2.

Rows, run one after the other (never at the same time), each for the same
``--duration`` with ``wrk -t1 -c<--connections> --latency`` (keep-alive),
after an unreported warm-up run (``--warmup``, 5 s: PyPy's JIT is still
compiling agw's hot path for the first seconds) against the same target:

``direct``
    The backend alone: nginx, 1 worker, ``return 200 "hello\\n";``. It is
    started first and stays up for the whole run, as every row uses it.
``nginx``
    A second nginx (1 worker) as reverse proxy to the backend: ``upstream``
    with ``keepalive 64``, ``proxy_http_version 1.1``,
    ``proxy_set_header Connection ""``.
``agw``
    The gateway, one process: ``<twistd> -n --pidfile= agw --config gw.ini``
    run with cwd = the repo root, on a generated Basic-rule gw.ini
    (127.0.0.1:<agw port> -> 127.0.0.1:<backend port>). Its output goes to
    ``agw.log`` in the temp dir; if it does not come up, the last 30 lines
    are printed. Its RSS (VmRSS, and peak VmHWM) is read after its run.
``agw-w2``
    The same with ``[gateway] workers = 2``.
``agw-pypy``
    The ``agw`` row's gateway and config, one process, run by PyPy: the
    ``twistd`` of ``--pypy-twistd`` (default ``.venv-pypy/bin/twistd``, made
    by ``make setup-pypy`` from Debian's ``pypy3``), with the environment
    that ``make run-pypy`` and ``etc/agw.service`` give it:
    ``PYPY_GC_NURSERY=32MB`` (``--pypy-gc-nursery``; ``default`` leaves
    PyPy's own, half the L2 cache; docs/pypy.rst, for what that buys and
    costs). Without that twistd the row fails with a hint and the other
    rows still run.
``nginx-tls``
    The ``nginx`` row's proxy (same upstream keepalive) behind an HTTPS
    server block: ``listen 127.0.0.1:PORT ssl``, ``ssl_protocols TLSv1.2
    TLSv1.3``, ``ssl_session_cache shared:SSL:10m``.
``agw-tls``
    The ``agw`` row's gateway with an Https listener (``protocol = Https``,
    ``sslCertificate = bench``; the backend leg stays plain HTTP).

Each plain row (not the TLS ones) then gets a paced pass of the same
``--duration``: the same connections, but every connection waits
``--paced-delay`` ms (20) before each request (a wrk Lua ``delay()``
script), so the server is not saturated (about 2,300 req/s at 50
connections) and its p50 is the latency it adds rather than queueing;
wrk's latency excludes the wait. ``--paced-delay 0`` skips it.

The two TLS rows share one self-signed EC P-256 certificate for 127.0.0.1
made at run time in the temp dir (``agwtx.tools.democert``; ``openssl req`` when
agw is not importable). Each is measured twice, for ``--duration`` each:

1. keep-alive: ``wrk`` on ``https://`` with the same connections as the
   other rows (req/s, p50, p99), after the warm-up;
2. new TLS connections per second: ``--tls-clients`` (4) client processes
   (Python ``ssl``), each looping connect, full handshake, ``GET /`` with
   ``Connection: close``, read to EOF; no session resumption (checked: the
   ``resumed`` column must be 0). Only 200 responses count. The server's
   CPU time over that run, divided by the connections, is printed too: on
   a small machine the client processes need CPU as well, so connections/s
   can be client bound while CPU ms per connection is not.
   (``wrk -H 'Connection: close'`` is not used for this: wrk reconnects but
   resumes its previous TLS session on almost every reconnection.)

All nginx processes get ``access_log off`` and ``keepalive_requests`` raised
to 1000000 (client side and upstream), so nginx does not recycle keep-alive
connections every 1000 requests, which the gateway does not do either.

Ports are free ephemeral ports on 127.0.0.1 picked at run time. Before a row
is loaded, its server must accept connections and answer GET / with 200
within ``--start-timeout`` (15 s). All generated files live in a temp dir
(kept with ``--keep-tmp``). Servers are always stopped (SIGTERM, SIGKILL
after 5 s), on errors, Ctrl-C and SIGTERM too.

Output: a table (req/s, p50 and p99 in ms, non-2xx/3xx responses, socket
errors), then::

    agw/nginx req/s ratio: X.XXX
    agw-pypy/nginx req/s ratio: X.XXX
    added p50 over direct: agw X.XX ms, agw-pypy Z.ZZ ms, nginx Y.YY ms

then the paced pass's table (req/s, p50, p99) and::

    paced: added p50 over direct: agw X.XX ms, agw-pypy Z.ZZ ms, nginx Y.YY ms
    agw RSS after run: N.N MiB (peak N.N MiB)
    agw-pypy RSS after run: N.N MiB (peak N.N MiB)

(figures that need a row that was skipped or failed print as ``n/a``).
When a TLS row runs, an HTTPS part follows: the keep-alive table of the TLS
rows, a table of new connections (conn/s, p50 and p99 of connect to end of
response, errors, resumed sessions, server CPU ms per connection), then::

    agw-tls/nginx-tls keep-alive req/s ratio: X.XXX
    agw-tls/nginx-tls new connections/s ratio: X.XXX
    server CPU per new connection: agw-tls X.XX ms, nginx-tls Y.YY ms
    agw-tls RSS after run: N.N MiB (peak N.N MiB)

Only the parts whose rows run are printed.

Connection-scaling pass (``--scaling 10,100,1000,4000``): instead of the
rows above, the ``nginx`` proxy and ``agw`` rows are each loaded with wrk at
every listed number of client connections (warm-up, then ``--duration``),
and the backend connections each opened per request are read from the
backend nginx's ``stub_status`` (``accepts`` and ``requests`` before and
after the measured run).  The open-files limit is raised to the hard limit
first (the servers started inherit it); nginx gets ``worker_connections
16384`` and the proxy ``keepalive 1024``.  ``--agw-setting
maxConnectionsPerServer=64`` (repeatable) adds backendHttpSettings lines to
agw's config.  Printed::

    row     conns      req/s    p50 ms    p99 ms  errors  backend connects   requests  connects/req
    agw       100    ...

    agw backend connects per request: 10: X, 100: X, 1000: X, 4000: X
    agw req/s at 4000 / at 100: X.XXX

Options:
    --duration S        seconds per measured row (default 10)
    --warmup S          warm-up seconds per row, not reported (default 5; 0 = none)
    --connections N     wrk connections (default 50)
    --paced-delay MS    wait per connection before each request in the paced
                        pass (default 20; 0 = no paced pass)
    --threads N         wrk threads (default 1)
    --scaling LIST      the connection-scaling pass with these connection counts
    --agw-setting K=V   a backendHttpSettings line for agw (repeatable)
    --tls-clients N     client processes for new TLS connections (default 4)
    --only ROWS         comma list of rows to run, e.g. ``agw,direct``
    --skip ROWS         comma list of rows to leave out
    --twistd PATH       twistd to run agw with (default: next to
                        sys.executable, else on PATH)
    --pypy-twistd PATH  twistd of the agw-pypy row (default: .venv-pypy/bin/twistd)
    --pypy-gc-nursery SIZE
                        PYPY_GC_NURSERY for the agw-pypy row (default 32MB;
                        "default": not set, PyPy's own choice)
    --nginx PATH / --wrk PATH   tool paths (default: found on PATH / /usr/sbin)
    --start-timeout S   bound for a server to come up (default 15)
    --json PATH         also write all figures as JSON
    --keep-tmp          keep the temp dir (configs, logs) and print its path

Exit status: 0 all rows measured; 1 a row failed; 2 bad usage or missing
tools; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

PLAIN_ROWS = ("direct", "nginx", "agw", "agw-w2", "agw-pypy")
AGW_ROWS = ("agw", "agw-w2", "agw-pypy", "agw-tls")
TLS_ROWS = ("nginx-tls", "agw-tls")
ROWS = PLAIN_ROWS + TLS_ROWS
BODY = "hello\n"
PYPY_GC_NURSERY = "32MB"
"""What make run-pypy and etc/agw.service give the gateway under PyPy."""


SCALING_ROWS = ("nginx", "agw")
SCALING_WORKER_CONNECTIONS = 16384
"""nginx's worker_connections in the scaling pass: 4,000 clients plus as many upstream connections."""
SCALING_KEEPALIVE = 1024
"""The nginx proxy's upstream keepalive in the scaling pass: agw's default maxConnectionsPerServer."""


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of connection counts, got {text!r}"
        ) from None
    if not counts or not all(1 <= c <= 100_000 for c in counts):
        raise argparse.ArgumentTypeError(f"expected connection counts in 1..100000, got {text!r}")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark agw against nginx on loopback with wrk (see module docstring).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=h.positive_seconds, default=10.0, help="seconds per row")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds per row")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument(
        "--paced-delay",
        type=float,
        default=20.0,
        help="ms each connection waits between requests in the paced pass (0: no paced pass)",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--scaling",
        type=_counts,
        help="run the connection-scaling pass instead of the rows, with these wrk connection counts "
        "(e.g. 10,100,1000,4000)",
    )
    parser.add_argument(
        "--tls-clients",
        type=int,
        default=4,
        help="client processes for the new-TLS-connections test",
    )
    parser.add_argument("--only", type=h.rows_arg(ROWS), help="rows to run, e.g. agw,direct")
    parser.add_argument("--skip", type=h.rows_arg(ROWS), default=[], help="rows to leave out")
    parser.add_argument("--twistd", help="twistd executable for the agw row")
    parser.add_argument(
        "--agw-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a backendHttpSettings line for the agw rows, e.g. maxConnectionsPerServer=128 (repeatable)",
    )
    parser.add_argument(
        "--pypy-twistd",
        default=str(h.repo_root() / ".venv-pypy" / "bin" / "twistd"),
        help="twistd executable (under PyPy) for the agw-pypy row",
    )
    parser.add_argument(
        "--pypy-gc-nursery",
        default=PYPY_GC_NURSERY,
        help="PYPY_GC_NURSERY for the agw-pypy row ('default': leave it unset)",
    )
    parser.add_argument("--nginx", help="nginx executable")
    parser.add_argument("--wrk", help="wrk executable")
    parser.add_argument("--start-timeout", type=h.positive_seconds, default=15.0)
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.threads < 1 or args.connections < args.threads:
        parser.error("need 1 <= --threads <= --connections")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    if not 0 <= args.paced_delay <= 10000:
        parser.error("need 0 <= --paced-delay <= 10000")
    if not 1 <= args.tls_clients <= 64:
        parser.error("need 1 <= --tls-clients <= 64")
    selected = args.only or list(ROWS)
    if args.scaling:
        selected = [row for row in selected if row in SCALING_ROWS]
    args.rows = [row for row in ROWS if row in selected and row not in args.skip]
    if not args.rows:
        parser.error("no rows left to run")
    return args


class Bench:
    """One benchmark run: the shared backend plus one target per row."""

    def __init__(self, args: argparse.Namespace, nginx: str, wrk: str, workdir: Path) -> None:
        self.args = args
        self.nginx = nginx
        self.wrk = wrk
        self.workdir = workdir
        self.used_ports: set[int] = set()
        self.backend_port = 0
        self.backend_proc: h.ManagedProcess | None = None
        self.results: dict[str, dict[str, Any]] = {}
        self._tls: h.TlsFiles | None = None

    def tls(self) -> h.TlsFiles:
        """The TLS rows' certificate, made on first use."""
        if self._tls is None:
            self._tls = h.make_tls_files(self.workdir / "tls")
            h.log(f"self-signed certificate by {self._tls.how}: {self._tls.certificate}")
        return self._tls

    def port(self) -> int:
        port = h.free_port(h.LOOPBACK, self.used_ports)
        self.used_ports.add(port)
        return port

    def start_nginx(
        self,
        stack: ExitStack,
        name: str,
        port: int,
        locations: list[str],
        upstreams: dict[str, list[str]] | None = None,
        tls: h.TlsFiles | None = None,
        **conf_options: Any,
    ) -> h.ManagedProcess:
        conf = h.write_nginx_conf(self.workdir, name, port, locations, upstreams, tls=tls, **conf_options)
        proc = h.ManagedProcess(
            f"nginx[{name}]", h.nginx_argv(self.nginx, conf), self.workdir / f"{name}.log"
        )
        stack.enter_context(proc)
        h.log(f"started {proc.name} pid {proc.pid} on {h.LOOPBACK}:{port}")
        return proc

    def ready(self, port: int, proc: h.ManagedProcess | None, tls: h.TlsFiles | None = None) -> list[str]:
        """Wait for a 200 on GET /; returns warnings (e.g. unexpected body).
        With ``tls``, over HTTPS, verifying that certificate and 127.0.0.1."""
        context = h.client_ssl_context(tls.certificate) if tls else None
        body = h.wait_for_http(h.LOOPBACK, port, self.args.start_timeout, process=proc, ssl_context=context)
        if body != BODY.encode():
            return [f"GET / answered 200 with body {body[:80]!r}, expected {BODY!r}"]
        return []

    def start_backend(self, stack: ExitStack) -> None:
        self.backend_port = self.port()
        proc = self.start_nginx(stack, "backend", self.backend_port, [h.static_location(BODY)])
        self.backend_proc = proc
        warnings = self.ready(self.backend_port, proc)
        if warnings:
            raise h.HarnessError(f"backend: {warnings[0]}")

    def start_target(self, stack: ExitStack, row: str) -> tuple[int, h.ManagedProcess | None]:
        """Start the server of ``row``; returns (port to load, its process)."""
        if row == "direct":
            return self.backend_port, None
        tls = self.tls() if row in TLS_ROWS else None
        port = self.port()
        if row in ("nginx", "nginx-tls"):
            proc = self.start_nginx(
                stack,
                "proxy" if row == "nginx" else "proxy-tls",
                port,
                [h.proxy_location("backend")],
                {"backend": [f"{h.LOOPBACK}:{self.backend_port}"]},
                tls=tls,
            )
            return port, proc
        assert row in AGW_ROWS
        if row == "agw-pypy":
            twistd = self.args.pypy_twistd
            if not Path(twistd).exists():
                raise h.HarnessError(f"no PyPy twistd at {twistd}: run 'make setup-pypy'")
        else:
            twistd = self.args.twistd or h.find_twistd()
        if not twistd:
            raise h.HarnessError(
                "no twistd found (none next to sys.executable, none on PATH): "
                "run 'make setup' and pass --twistd .venv/bin/twistd"
            )
        extra = "\n[gateway]\nworkers = 2\n" if row == "agw-w2" else ""
        config = h.write_agw_config(
            self.workdir / f"{row}.ini",
            port,
            [self.backend_port],
            extra=extra,
            tls=tls,
            settings=[line.replace("=", " = ", 1) for line in self.args.agw_setting],
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if row == "agw-pypy":
            env.pop("PYPY_GC_NURSERY", None)
            if self.args.pypy_gc_nursery != "default":
                env["PYPY_GC_NURSERY"] = self.args.pypy_gc_nursery
            h.log(f"agw-pypy: PYPY_GC_NURSERY={env.get('PYPY_GC_NURSERY', '(PyPy default)')}")
        proc = h.ManagedProcess(
            row,
            h.agw_argv(twistd, config),
            self.workdir / f"{row}.log",
            cwd=h.repo_root(),
            env=env,
        )
        stack.enter_context(proc)
        h.log(f"started {proc.name} pid {proc.pid} on {h.LOOPBACK}:{port}: {' '.join(proc.argv)}")
        return port, proc

    def pacing_script(self) -> Path:
        """A wrk Lua script: every connection waits --paced-delay ms before each request."""
        path = self.workdir / "paced.lua"
        if not path.exists():
            path.write_text(f"function delay()\n  return {self.args.paced_delay:g}\nend\n")
        return path

    def run_row(self, row: str) -> dict[str, Any]:
        args = self.args
        with ExitStack() as stack:  # the row's own server stops with the row
            port, proc = self.start_target(stack, row)
            tls = self.tls() if row in TLS_ROWS else None
            warnings = self.ready(port, proc or self.backend_proc, tls)
            url = f"{'https' if tls else 'http'}://{h.LOOPBACK}:{port}/"
            if args.warmup > 0:
                h.log(f"{row}: warm-up {args.warmup:g} s")
                h.run_wrk(self.wrk, url, args.warmup, args.connections, args.threads)
            h.log(f"{row}: measuring {args.duration:g} s, {args.connections} connections")
            result = h.run_wrk(self.wrk, url, args.duration, args.connections, args.threads)
            row_data: dict[str, Any] = {"ok": True, "url": url, **result.as_dict()}
            if args.paced_delay > 0 and row in PLAIN_ROWS:
                h.log(f"{row}: paced pass {args.duration:g} s, {args.paced_delay:g} ms between requests")
                paced = h.run_wrk(
                    self.wrk,
                    url,
                    args.duration,
                    args.connections,
                    args.threads,
                    extra_args=["-s", str(self.pacing_script())],
                )
                row_data["paced"] = paced.as_dict()
                if paced.errors:
                    warnings.append(f"paced pass: {paced.non_2xx_3xx} non-2xx/3xx, {paced.socket_errors}")
            if result.errors:
                warnings.append(
                    f"{result.non_2xx_3xx} non-2xx/3xx responses, socket errors {result.socket_errors}"
                )
            if tls is not None and proc is not None:
                row_data["handshake"] = self.measure_handshakes(row, port, proc, warnings)
            if proc is not None and not proc.alive:
                warnings.append(f"{proc.name} exited during the run ({proc.returncode})")
            if row in ("agw", "agw-pypy", "agw-tls") and proc is not None:
                row_data["rss_kb"] = h.read_proc_status_kb(proc.pid, "VmRSS")
                row_data["hwm_kb"] = h.read_proc_status_kb(proc.pid, "VmHWM")
            row_data["warnings"] = warnings
            for warning in warnings:
                h.log(f"{row}: WARNING: {warning}")
            return row_data

    def measure_handshakes(
        self, row: str, port: int, proc: h.ManagedProcess, warnings: list[str]
    ) -> dict[str, Any]:
        """New TLS connections per second (see the module docstring), with
        the server's CPU seconds (its whole process group) over the run."""
        args = self.args
        h.log(f"{row}: new TLS connections for {args.duration:g} s, {args.tls_clients} client processes")
        cpu_before = h.process_group_cpu_seconds(proc.pid)
        result = h.run_tls_handshakes(h.LOOPBACK, port, args.duration, args.tls_clients)
        cpu_after = h.process_group_cpu_seconds(proc.pid)
        data = result.as_dict()
        cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
        data["server_cpu_s"] = cpu
        data["server_cpu_ms_per_conn"] = (
            cpu * 1000.0 / result.connections if cpu is not None and result.connections else None
        )
        if result.connections == 0:
            raise h.HarnessError(f"no TLS connection succeeded: errors {result.errors}")
        if result.errors:
            warnings.append(f"new TLS connections: errors {result.errors}")
        if result.session_reused:
            warnings.append(f"{result.session_reused} TLS sessions were resumed (expected 0)")
        h.log(
            f"{row}: {result.per_sec:.1f} new connections/s, "
            f"{', '.join(f'{k} x{v}' for k, v in result.protocols.items())}"
        )
        return data

    def run_scaling(self) -> None:
        """
        The connection-scaling pass: each row (agw, nginx as the proxy) at
        each of C{--scaling}'s client connection counts, with the backend
        connections opened per request read from the backend's stub_status.
        """
        args = self.args
        wide = {"worker_connections": SCALING_WORKER_CONNECTIONS}
        with ExitStack() as stack:
            self.backend_port = self.port()
            self.backend_proc = self.start_nginx(
                stack,
                "backend",
                self.backend_port,
                [h.static_location(BODY), h.stub_status_location()],
                **wide,
            )
            warnings = self.ready(self.backend_port, self.backend_proc)
            if warnings:
                raise h.HarnessError(f"backend: {warnings[0]}")
            for row in args.rows:
                try:
                    self.results[row] = self.scale_row(row, wide)
                except h.HarnessError as exc:
                    h.log(f"{row}: FAILED: {exc}")
                    tail = getattr(exc, "log_tail", "")
                    h.print_tail(tail, row)
                    self.results[row] = {"ok": False, "error": str(exc), "log_tail": tail}

    def scale_row(self, row: str, wide: dict[str, Any]) -> dict[str, Any]:
        args = self.args
        with ExitStack() as stack:
            if row == "nginx":
                port = self.port()
                proc: h.ManagedProcess | None = self.start_nginx(
                    stack,
                    "proxy",
                    port,
                    [h.proxy_location("backend")],
                    {"backend": [f"{h.LOOPBACK}:{self.backend_port}"]},
                    keepalive=SCALING_KEEPALIVE,
                    **wide,
                )
            else:
                port, proc = self.start_target(stack, row)
            warnings = self.ready(port, proc)
            url = f"http://{h.LOOPBACK}:{port}/"
            passes: dict[str, Any] = {}
            for connections in args.scaling:
                threads = min(args.threads, connections)
                if args.warmup > 0:
                    h.log(f"{row}: warm-up {args.warmup:g} s, {connections} connections")
                    h.run_wrk(self.wrk, url, args.warmup, connections, threads)
                before = h.read_stub_status(h.LOOPBACK, self.backend_port)
                h.log(f"{row}: measuring {args.duration:g} s, {connections} connections")
                result = h.run_wrk(self.wrk, url, args.duration, connections, threads)
                after = h.read_stub_status(h.LOOPBACK, self.backend_port)
                # the second reading's own connection and request are in its totals
                connects = after["accepts"] - before["accepts"] - 1
                requests = after["requests"] - before["requests"] - 1
                data = {
                    **result.as_dict(),
                    "errors": result.errors,
                    "backend_connects": connects,
                    "backend_requests": requests,
                    "connects_per_request": connects / requests if requests else None,
                }
                passes[str(connections)] = data
                h.log(
                    f"{row} c={connections}: {result.requests_per_sec:.0f} req/s, "
                    f"{connects} backend connects for {requests} requests, errors {result.errors}"
                )
                if result.errors:
                    warnings.append(
                        f"c={connections}: {result.non_2xx_3xx} non-2xx/3xx, socket errors {result.socket_errors}"
                    )
                if proc is not None and not proc.alive:
                    raise h.HarnessError(f"{proc.name} exited ({proc.returncode})", proc.log_tail())
            if proc is not None:
                fds = h.read_proc_limit(proc.pid)
                h.log(f"{row}: open-files limit {fds}")
            for warning in warnings:
                h.log(f"{row}: WARNING: {warning}")
            return {"ok": True, "url": url, "scaling": passes, "warnings": warnings}

    def run(self) -> None:
        if self.args.scaling:
            self.run_scaling()
            return
        with ExitStack() as stack:
            self.start_backend(stack)
            for row in self.args.rows:
                try:
                    self.results[row] = self.run_row(row)
                except h.HarnessError as exc:
                    h.log(f"{row}: FAILED: {exc}")
                    tail = getattr(exc, "log_tail", "")
                    h.print_tail(tail, row)
                    self.results[row] = {"ok": False, "error": str(exc), "log_tail": tail}


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def ok(row: str) -> dict[str, Any] | None:
        data = results.get(row)
        return data if data and data.get("ok") else None

    direct, nginx, agw, pypy = ok("direct"), ok("nginx"), ok("agw"), ok("agw-pypy")

    def ratio(row: dict[str, Any] | None) -> float | None:
        return float(row["requests_per_sec"] / nginx["requests_per_sec"]) if row and nginx else None

    def added(row: dict[str, Any] | None) -> float | None:
        if row is None or direct is None or row["p50_ms"] is None or direct["p50_ms"] is None:
            return None
        return float(row["p50_ms"] - direct["p50_ms"])

    def paced_added(row: dict[str, Any] | None) -> float | None:
        if row is None or direct is None or "paced" not in row or "paced" not in direct:
            return None
        mine, base = row["paced"]["latency_ms"].get("50"), direct["paced"]["latency_ms"].get("50")
        return None if mine is None or base is None else float(mine - base)

    nginx_tls, agw_tls = ok("nginx-tls"), ok("agw-tls")

    def shake(row: dict[str, Any] | None, key: str) -> float | None:
        value = row.get("handshake", {}).get(key) if row else None
        return None if value is None else float(value)

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    return {
        "agw_nginx_rps_ratio": ratio(agw),
        "agw_pypy_nginx_rps_ratio": ratio(pypy),
        "added_p50_ms": {"agw": added(agw), "agw-pypy": added(pypy), "nginx": added(nginx)},
        "paced_added_p50_ms": {
            "agw": paced_added(agw),
            "agw-pypy": paced_added(pypy),
            "nginx": paced_added(nginx),
        },
        "agw_rss_kb": agw.get("rss_kb") if agw else None,
        "agw_hwm_kb": agw.get("hwm_kb") if agw else None,
        "agw_pypy_rss_kb": pypy.get("rss_kb") if pypy else None,
        "agw_pypy_hwm_kb": pypy.get("hwm_kb") if pypy else None,
        "tls": {
            "keepalive_rps_ratio": div(
                agw_tls["requests_per_sec"] if agw_tls else None,
                nginx_tls["requests_per_sec"] if nginx_tls else None,
            ),
            "new_conn_per_sec_ratio": div(shake(agw_tls, "per_sec"), shake(nginx_tls, "per_sec")),
            "server_cpu_ms_per_conn": {
                "agw-tls": shake(agw_tls, "server_cpu_ms_per_conn"),
                "nginx-tls": shake(nginx_tls, "server_cpu_ms_per_conn"),
            },
            "agw_rss_kb": agw_tls.get("rss_kb") if agw_tls else None,
            "agw_hwm_kb": agw_tls.get("hwm_kb") if agw_tls else None,
        },
    }


def _print_failed(row: str, data: dict[str, Any], width: int) -> None:
    error = (data.get("error", "not run").splitlines() or [""])[0][:100]
    print(f"{row:<{width}} {'FAILED':>10}  {error}")


def _print_wrk_table(rows: list[str], results: dict[str, dict[str, Any]], width: int) -> None:
    print(f"{'row':<{width}} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'non-2xx':>8} {'sock-err':>8}")
    for row in rows:
        data = results.get(row, {"ok": False, "error": "not run"})
        if not data.get("ok"):
            _print_failed(row, data, width)
            continue
        print(
            f"{row:<{width}} {data['requests_per_sec']:>10.1f} {h.fmt(data['p50_ms'], '.3f'):>9} "
            f"{h.fmt(data['p99_ms'], '.3f'):>9} {data['non_2xx_3xx']:>8} "
            f"{sum(data['socket_errors'].values()):>8}"
        )


def _mib(kb: float | None) -> str:
    return h.fmt(kb / 1024 if kb else None, ".1f")


def summarize_scaling(counts: list[int], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets for agw: connects per request at 100 and 4,000, and the rate kept at 4,000."""
    agw = results.get("agw", {})
    passes = agw.get("scaling", {}) if agw.get("ok") else {}

    def figure(c: int, key: str) -> Any:
        return passes.get(str(c), {}).get(key)

    low, high = figure(100, "requests_per_sec"), figure(4000, "requests_per_sec")
    return {
        "agw_connects_per_request": {str(c): figure(c, "connects_per_request") for c in counts},
        "agw_rate_kept_4000_vs_100": high / low if low and high else None,
        "agw_errors": {str(c): figure(c, "errors") for c in counts},
    }


def print_scaling_report(counts: list[int], rows: list[str], results: dict[str, dict[str, Any]]) -> None:
    print("connection scaling (wrk keep-alive; backend connects from the backend's stub_status):")
    print(
        f"{'row':<6} {'conns':>6} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7} "
        f"{'backend connects':>17} {'requests':>10} {'connects/req':>13}"
    )
    for row in rows:
        data = results.get(row, {})
        if not data.get("ok"):
            _print_failed(row, data, 6)
            continue
        for c in counts:
            p = data["scaling"].get(str(c))
            if p is None:
                continue
            print(
                f"{row:<6} {c:>6} {p['requests_per_sec']:>10.1f} {h.fmt(p['p50_ms'], '.2f'):>9} "
                f"{h.fmt(p['p99_ms'], '.2f'):>9} {p['errors']:>7} {p['backend_connects']:>17} "
                f"{p['backend_requests']:>10} {h.fmt(p['connects_per_request'], '.4f'):>13}"
            )
    summary = summarize_scaling(counts, results)
    if "agw" in rows:
        per = summary["agw_connects_per_request"]
        print()
        print(
            "agw backend connects per request: "
            + ", ".join(f"{c}: {h.fmt(per[str(c)], '.4f')}" for c in counts)
        )
        print(f"agw req/s at 4000 / at 100: {h.fmt(summary['agw_rate_kept_4000_vs_100'], '.3f')}")
    sys.stdout.flush()


def print_report(rows: list[str], results: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
    plain = [row for row in rows if row in PLAIN_ROWS]
    tls_rows = [row for row in rows if row in TLS_ROWS]
    if plain:
        print_plain_report(plain, results, summary)
    if tls_rows:
        if plain:
            print()
        print_tls_report(tls_rows, results, summary["tls"])
    sys.stdout.flush()


def print_tls_report(rows: list[str], results: dict[str, dict[str, Any]], tls: dict[str, Any]) -> None:
    print("HTTPS keep-alive (wrk):")
    _print_wrk_table(rows, results, 10)
    print()
    clients = next(
        (results[r]["handshake"]["processes"] for r in rows if "handshake" in results.get(r, {})),
        None,
    )
    print(
        "new TLS connections (full handshake + GET, Connection: close, no resumption; "
        f"{clients if clients is not None else '?'} client processes):"
    )
    print(
        f"{'row':<10} {'conn/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>8} "
        f"{'resumed':>8} {'srv CPU ms/conn':>16}"
    )
    for row in rows:
        data = results.get(row, {})
        shake = data.get("handshake") if data.get("ok") else None
        if shake is None:
            _print_failed(row, data, 10)
            continue
        print(
            f"{row:<10} {shake['per_sec']:>10.1f} {h.fmt(shake['p50_ms'], '.3f'):>9} "
            f"{h.fmt(shake['p99_ms'], '.3f'):>9} {sum(shake['errors'].values()):>8} "
            f"{shake['session_reused']:>8} {h.fmt(shake['server_cpu_ms_per_conn'], '.3f'):>16}"
        )
    print()
    print(f"agw-tls/nginx-tls keep-alive req/s ratio: {h.fmt(tls['keepalive_rps_ratio'], '.3f')}")
    print(f"agw-tls/nginx-tls new connections/s ratio: {h.fmt(tls['new_conn_per_sec_ratio'], '.3f')}")
    cpu = tls["server_cpu_ms_per_conn"]
    print(
        f"server CPU per new connection: agw-tls {h.fmt(cpu['agw-tls'], '.2f')} ms, "
        f"nginx-tls {h.fmt(cpu['nginx-tls'], '.2f')} ms"
    )
    if "agw-tls" in rows:
        print(f"agw-tls RSS after run: {_mib(tls['agw_rss_kb'])} MiB (peak {_mib(tls['agw_hwm_kb'])} MiB)")


def print_plain_report(rows: list[str], results: dict[str, dict[str, Any]], summary: dict[str, Any]) -> None:
    _print_wrk_table(rows, results, 8)
    print()
    print(f"agw/nginx req/s ratio: {h.fmt(summary['agw_nginx_rps_ratio'], '.3f')}")
    if "agw-pypy" in rows:
        print(f"agw-pypy/nginx req/s ratio: {h.fmt(summary['agw_pypy_nginx_rps_ratio'], '.3f')}")
    print(f"added p50 over direct: {_added(summary['added_p50_ms'], rows)}")
    paced = [row for row in rows if "paced" in results.get(row, {})]
    if paced:
        print()
        print("paced pass (each connection waits between requests; latency excludes the wait):")
        print(f"{'row':<8} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
        for row in paced:
            data = results[row]["paced"]
            print(
                f"{row:<8} {data['requests_per_sec']:>10.1f} {h.fmt(data['latency_ms'].get('50'), '.3f'):>9} "
                f"{h.fmt(data['latency_ms'].get('99'), '.3f'):>9}"
            )
        print(f"paced: added p50 over direct: {_added(summary['paced_added_p50_ms'], rows)}")
    if "agw" in rows:
        print(
            f"agw RSS after run: {_mib(summary['agw_rss_kb'])} MiB (peak {_mib(summary['agw_hwm_kb'])} MiB)"
        )
    if "agw-pypy" in rows:
        print(
            f"agw-pypy RSS after run: {_mib(summary['agw_pypy_rss_kb'])} MiB "
            f"(peak {_mib(summary['agw_pypy_hwm_kb'])} MiB)"
        )


def _added(added: dict[str, float | None], rows: list[str]) -> str:
    """'agw X ms, [agw-pypy Z ms, ]nginx Y ms' (agw-pypy only when that row ran)."""
    names = ["agw", "agw-pypy", "nginx"] if "agw-pypy" in rows else ["agw", "nginx"]
    return ", ".join(f"{name} {h.fmt(added[name], '.2f')} ms" for name in names)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nginx = h.find_executable(args.nginx) if args.nginx else h.find_nginx()
    wrk = h.find_executable(args.wrk) if args.wrk else h.find_wrk()
    missing = h.missing_apt_packages({"nginx": nginx, "wrk": wrk})
    if missing:
        print(
            f"missing {', '.join(missing)}; install with:\n    apt-get install -y {' '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    assert nginx and wrk
    h.install_sigterm_handler()
    if args.scaling:
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        soft, hard = h.raise_nofile_limit(max(want, 2 * max(args.scaling) + 1024))
        h.log(f"open-files limit raised to {soft} (hard {hard}); the servers started inherit it")

    measuredOn = h.machine()
    h.log(h.describe_machine(measuredOn))
    workdir = Path(tempfile.mkdtemp(prefix="agw-http-bench-"))
    started = time.time()
    bench = Bench(args, nginx, wrk, workdir)
    interrupted = False
    try:
        bench.run()
    except KeyboardInterrupt:
        interrupted = True
        h.log("interrupted; servers stopped")
    except h.HarnessError as exc:  # the shared backend failed
        h.log(f"FAILED: {exc}")
        h.print_tail(getattr(exc, "log_tail", ""))
        for row in args.rows:
            bench.results.setdefault(row, {"ok": False, "error": f"backend: {exc}"})
    finally:
        if args.keep_tmp:
            h.log(f"temp dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        return 130

    if args.scaling:
        summary = summarize_scaling(args.scaling, bench.results)
        print_scaling_report(args.scaling, args.rows, bench.results)
    else:
        summary = summarize(bench.results)
        print_report(args.rows, bench.results, summary)
    if args.json:
        report = {
            "started": started,
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "connections": args.connections,
                "threads": args.threads,
                "paced_delay_ms": args.paced_delay,
                "scaling": args.scaling,
                "agw_settings": args.agw_setting,
                "tls_clients": args.tls_clients,
                "rows": args.rows,
                "nginx": h.tool_version([nginx, "-v"]),
                "wrk": h.tool_version([wrk, "-v"]),
                "python": sys.version.split()[0],
                "twistd": h.tool_version([args.twistd or h.find_twistd() or "twistd", "--version"]),
                "pypy_twistd": args.pypy_twistd if "agw-pypy" in args.rows else None,
                "pypy_gc_nursery": args.pypy_gc_nursery if "agw-pypy" in args.rows else None,
            },
            "machine": measuredOn,
            "rows": bench.results,
            **summary,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        h.log(f"wrote {args.json}")
    return 0 if all(bench.results.get(r, {}).get("ok") for r in args.rows) else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""HTTP/2 benchmark: agw next to nginx over HTTPS, HTTP/2 and HTTP/1.1 rows of one run.

Usage (from anywhere; the gateway is run from the repo root, bench/..)::

    .venv/bin/python bench/h2_bench.py                       # 10 s per row
    .venv/bin/python bench/h2_bench.py --duration 5 --streams 10

Needs the Debian packages ``nginx``, ``wrk`` and ``nghttp2-client`` (h2load).

One backend (nginx, 1 worker, ``return 200 "hello\\n";``) and, one after the
other, each row's server in front of it on an HTTPS port with the same
self-signed certificate:

``nginx-h2``
    nginx (1 worker) as reverse proxy (``keepalive 64`` upstream, HTTP/1.1 to
    the backend) with ``listen ... ssl http2``, loaded with
    ``h2load -c<connections> -m<streams> -D<duration>``.
``agw-h2``
    agw (``twistd agw``, one process) with ``[gateway] enableHttp2 = true``,
    loaded the same way.
``nginx-tls`` / ``agw-tls``
    The same two servers loaded over HTTP/1.1 with ``wrk`` (keep-alive, the
    same connection count), for the HTTP/1.1 rows of the same run.

Each row gets an unreported warm-up of ``--warmup`` seconds first.  Output:
a table of req/s, mean latency and errors per row, then the agw/nginx
ratios for h2 and for HTTP/1.1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h  # noqa: E402

BODY = "hello\n"
ROWS = ("nginx-h2", "agw-h2", "nginx-tls", "agw-tls")

_FINISHED = re.compile(r"finished in ([\d.]+)s, ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored"
)
_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_REQUEST_TIME = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)")


def parse_h2load(text: str) -> dict[str, Any]:
    """req/s, counts and mean request time of h2load's report."""
    finished = _FINISHED.search(text)
    counts = _REQUESTS.search(text)
    status = _STATUS.search(text)
    timing = _REQUEST_TIME.search(text)
    if not (finished and counts and status):
        raise h.HarnessError(f"cannot parse h2load's output:\n{text}")
    return {
        "requests_per_sec": float(finished.group(2)),
        "succeeded": int(counts.group(4)),
        "failed": int(counts.group(5)),
        "errored": int(counts.group(6)),
        "non_2xx": sum(int(status.group(i)) for i in (2, 3, 4)),
        "mean": timing.group(3) if timing else "?",
    }


def run_h2load(h2load: str, url: str, duration: float, connections: int, streams: int) -> dict[str, Any]:
    argv = [h2load, f"-c{connections}", f"-m{streams}", f"-D{max(1, round(duration))}", url]
    try:
        out = subprocess.run(argv, capture_output=True, timeout=duration + 60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise h.HarnessError("h2load did not finish in time") from exc
    text = out.stdout.decode("utf-8", "replace") + out.stderr.decode("utf-8", "replace")
    if out.returncode != 0:
        raise h.HarnessError(f"h2load exited with status {out.returncode}: {' '.join(argv)}\n{text}")
    return parse_h2load(text)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="agw vs nginx over HTTP/2 (h2load) and HTTPS/1.1 (wrk).")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per row (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unreported warm-up seconds per row")
    parser.add_argument("--connections", type=int, default=10, help="client connections (default 10)")
    parser.add_argument(
        "--streams", type=int, default=10, help="h2load streams per connection (-m, default 10)"
    )
    parser.add_argument("--twistd", help="twistd of the venv to run agw with (default: found)")
    parser.add_argument("--only", type=h.rows_arg(ROWS), help="rows to run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nginx, wrk = h.find_nginx(), h.find_wrk()
    h2load = h.find_executable("h2load", ["/usr/bin/h2load"])
    missing = h.missing_apt_packages({"nginx": nginx, "wrk": wrk})
    if h2load is None:
        missing.append("nghttp2-client")
    if missing:
        print(
            f"missing {', '.join(missing)}; install with:\n    apt-get install -y {' '.join(missing)}",
            file=sys.stderr,
        )
        return 2
    assert nginx and wrk and h2load
    twistd = args.twistd or h.find_twistd()
    if not twistd:
        print("no twistd found: run 'make setup' and pass --twistd .venv/bin/twistd", file=sys.stderr)
        return 2
    h.install_sigterm_handler()
    h.log(h.describe_machine(h.machine()))
    workdir = Path(tempfile.mkdtemp(prefix="agw-h2-bench-"))
    used: set[int] = set()

    def port() -> int:
        p = h.free_port(h.LOOPBACK, used)
        used.add(p)
        return p

    results: dict[str, dict[str, Any]] = {}
    try:
        tls = h.make_tls_files(workdir / "tls")
        context = h.client_ssl_context(tls.certificate)
        with ExitStack() as stack:
            backend = port()
            conf = h.write_nginx_conf(workdir, "backend", backend, [h.static_location(BODY)])
            proc = h.ManagedProcess("nginx[backend]", h.nginx_argv(nginx, conf), workdir / "backend.log")
            stack.enter_context(proc)
            h.wait_for_http(h.LOOPBACK, backend, 20, process=proc)
            for row in args.only or ROWS:
                with ExitStack() as rowStack:
                    target = port()
                    if row.startswith("nginx"):
                        conf = h.write_nginx_conf(
                            workdir,
                            row,
                            target,
                            [h.proxy_location("backend")],
                            {"backend": [f"{h.LOOPBACK}:{backend}"]},
                            tls=tls,
                        )
                        if row == "nginx-h2":  # nginx 1.22 (Debian 12): "listen ... ssl http2"
                            conf.write_text(
                                conf.read_text().replace(f":{target} ssl;", f":{target} ssl http2;")
                            )
                        server = h.ManagedProcess(row, h.nginx_argv(nginx, conf), workdir / f"{row}.log")
                    else:
                        config = h.write_agw_config(
                            workdir / f"{row}.ini",
                            target,
                            [backend],
                            extra="\n[gateway]\nenableHttp2 = true\n" if row == "agw-h2" else "",
                            tls=tls,
                        )
                        server = h.ManagedProcess(
                            row,
                            h.agw_argv(twistd, config),
                            workdir / f"{row}.log",
                            cwd=h.repo_root(),
                            env=dict(os.environ, PYTHONUNBUFFERED="1"),
                        )
                    rowStack.enter_context(server)
                    h.wait_for_http(h.LOOPBACK, target, 30, process=server, ssl_context=context)
                    url = f"https://{h.LOOPBACK}:{target}/"
                    h.log(f"{row}: warm-up {args.warmup:g} s, then {args.duration:g} s")
                    if row.endswith("-h2"):
                        run_h2load(h2load, url, args.warmup, args.connections, args.streams)
                        results[row] = run_h2load(h2load, url, args.duration, args.connections, args.streams)
                    else:
                        h.run_wrk(wrk, url, args.warmup, args.connections)
                        done = h.run_wrk(wrk, url, args.duration, args.connections).as_dict()
                        results[row] = {
                            "requests_per_sec": done["requests_per_sec"],
                            "errored": sum((done.get("socket_errors") or {}).values()),
                            "non_2xx": done.get("non_2xx_3xx", 0),
                            "mean": f"{h.fmt(done['latency_ms'].get('50'), '.3f')}ms (p50)",
                        }
    except h.HarnessError as exc:
        h.log(f"FAILED: {exc}")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"HTTPS, {args.connections} connections; h2 rows: h2load -m{args.streams} (streams per connection); "
        "tls rows: wrk (HTTP/1.1 keep-alive)"
    )
    print(f"{'row':<10} {'req/s':>10} {'errors':>8} {'non-2xx':>8} {'mean latency':>18}")
    for row, r in results.items():
        errors = r.get("errored", 0) + r.get("failed", 0)
        print(f"{row:<10} {r['requests_per_sec']:>10.1f} {errors:>8} {r['non_2xx']:>8} {r['mean']:>18}")
    for a, b in (("agw-h2", "nginx-h2"), ("agw-tls", "nginx-tls")):
        if a in results and b in results and results[b]["requests_per_sec"]:
            print(
                f"{a}/{b} req/s ratio: {results[a]['requests_per_sec'] / results[b]['requests_per_sec']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Run the Autobahn WebSocket Testsuite against the demo echo backend, directly
and through the gateway, and compare the two.

Modes (both by default, with the same case list):

  direct  wstest's fuzzingclient against the echo backend
          (``python -m agwtx.tools.demo``) at ws://127.0.0.1:BACKEND_PORT/
  agw     the same, through the gateway (``twistd -n agw --config ...``)
          at ws://127.0.0.1:AGW_PORT/, which proxies to that backend

Per mode it reads wstest's report index.json and prints the count of each
behaviour; then it lists every case where agw is worse than direct, ordering
behaviours OK > NON-STRICT > INFORMATIONAL > UNIMPLEMENTED > FAILED (and the
closing behaviours likewise, see CLOSE_ORDER).

Exit status: 0 conformant; 1 if agw has a FAILED case or a case worse than
direct whose id is not in conformance/expected-differences.txt (with
``--only direct``/``--only agw``: if that mode has a FAILED case), or if the
gateway died during the run; 2 if the harness itself could not run (no wstest,
a server did not start, wstest timed out or crashed, the backend died,
SIGINT/SIGTERM).

wstest needs Python 2: ``bash conformance/setup-wstest.sh`` builds it.
Stdlib only.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "conformance"
DEFAULT_CASES = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,10.*,12.*,13.*"
DEFAULT_VENV = Path(os.environ.get("WSTEST_VENV", str(ROOT / ".cache" / "wstest-venv")))
EXPECTED_FILE = HERE / "expected-differences.txt"
MODES = ("direct", "agw")

BEHAVIOR_ORDER: tuple[str, ...] = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")
"""wstest's per-case behaviours, best first. Anything else (e.g. NO_CLOSE) ranks as FAILED."""

CLOSE_ORDER: tuple[str, ...] = (
    "OK",
    "NON-STRICT",
    "FAILED BY CLIENT",
    "WRONG CODE",
    "INFORMATIONAL",
    "UNIMPLEMENTED",
    "UNCLEAN",
    "FAILED",
)
"""wstest's closing behaviours, best first. Anything else ranks as FAILED."""

MISSING = "MISSING"
"""Shown for a case that a mode's report lacks; ranks below everything."""

GATEWAY_INI = """\
[frontendPort:ws]
port = {agw_port}
interface = 127.0.0.1

[backendAddressPool:echo]
backendAddresses = 127.0.0.1:{backend_port}

[backendHttpSettings:echo]
port = {backend_port}

[httpListener:ws]
frontendPort = ws
protocol = Http

[requestRoutingRule:ws]
httpListener = ws
backendAddressPool = echo
backendHttpSettings = echo
"""


class HarnessError(Exception):
    """The harness could not produce a result (exit status 2)."""


class Terminated(Exception):
    """SIGTERM or SIGHUP arrived; unwinds through the finally blocks."""


# --------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class CaseResult:
    behavior: str
    behaviorClose: str
    remoteCloseCode: int | None = None


def rank(value: str, order: Sequence[str]) -> int:
    if value == MISSING:
        return len(order)
    try:
        return order.index(value)
    except ValueError:
        return len(order) - 1


def case_key(case_id: str) -> tuple[int | str, ...]:
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def load_index(path: Path, agent: str) -> dict[str, CaseResult]:
    """The per-case results of *agent* in wstest's report index.json."""
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as e:
        raise HarnessError(f"cannot read wstest report {path}: {e}") from e
    cases = data.get(agent)
    if not isinstance(cases, dict):
        raise HarnessError(f"{path} has no results for agent {agent!r}")
    out: dict[str, CaseResult] = {}
    for case_id, r in cases.items():
        out[str(case_id)] = CaseResult(
            behavior=str(r.get("behavior", MISSING)),
            behaviorClose=str(r.get("behaviorClose", MISSING)),
            remoteCloseCode=r.get("remoteCloseCode"),
        )
    return out


def is_failed(r: CaseResult) -> bool:
    """A FAILED case: a behaviour that is not one of the four passing-or-neutral ones."""
    return rank(r.behavior, BEHAVIOR_ORDER) >= BEHAVIOR_ORDER.index("FAILED")


@dataclass(frozen=True)
class Expected:
    pattern: str
    reason: str


def load_expected(path: Path) -> list[Expected]:
    out: list[Expected] = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        out.append(Expected(parts[0], parts[1].strip() if len(parts) > 1 else ""))
    return out


def find_expected(case_id: str, expected: Iterable[Expected]) -> Expected | None:
    for e in expected:
        if e.pattern == case_id or fnmatch.fnmatchcase(case_id, e.pattern):
            return e
    return None


@dataclass
class Finding:
    case_id: str
    direct: CaseResult | None
    agw: CaseResult
    why: str
    expected: Expected | None = None


def compare(
    direct: Mapping[str, CaseResult], agw: Mapping[str, CaseResult], expected: Sequence[Expected]
) -> list[Finding]:
    """Every agw case that FAILED or is worse than direct (in behaviour or closing behaviour)."""
    findings: list[Finding] = []
    missing = CaseResult(MISSING, MISSING)
    for case_id in sorted(set(direct) | set(agw), key=case_key):
        d = direct.get(case_id, missing)
        a = agw.get(case_id, missing)
        why: list[str] = []
        if rank(a.behavior, BEHAVIOR_ORDER) > rank(d.behavior, BEHAVIOR_ORDER):
            why.append(f"behavior {d.behavior} -> {a.behavior}")
        if rank(a.behaviorClose, CLOSE_ORDER) > rank(d.behaviorClose, CLOSE_ORDER):
            why.append(f"close {d.behaviorClose} -> {a.behaviorClose}")
        if not why and is_failed(a):
            why.append(f"behavior {a.behavior} (also {d.behavior} direct)")
        if why:
            findings.append(
                Finding(
                    case_id,
                    direct.get(case_id),
                    a,
                    "; ".join(why),
                    find_expected(case_id, expected),
                )
            )
    return findings


def count(results: Mapping[str, CaseResult], attr: str, order: Sequence[str]) -> dict[str, int]:
    counts = {k: 0 for k in order}
    for r in results.values():
        v = getattr(r, attr)
        counts[v] = counts.get(v, 0) + 1
    return counts


def print_summary(results: Mapping[str, Mapping[str, CaseResult]], out: IO[str]) -> None:
    modes = list(results)
    for title, attr, order in (
        ("behavior", "behavior", BEHAVIOR_ORDER),
        ("behaviorClose", "behaviorClose", CLOSE_ORDER),
    ):
        counts = {m: count(results[m], attr, order) for m in modes}
        keys = list(order) + sorted({k for c in counts.values() for k in c} - set(order))
        if attr == "behaviorClose":
            keys = [k for k in keys if any(counts[m].get(k, 0) for m in modes)]
        print(f"\n{title:<18}" + "".join(f"{m:>10}" for m in modes), file=out)
        for k in keys:
            print(f"  {k:<16}" + "".join(f"{counts[m].get(k, 0):>10}" for m in modes), file=out)
        print(f"  {'total':<16}" + "".join(f"{len(results[m]):>10}" for m in modes), file=out)


# --------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    logfh: IO[bytes] = field(repr=False)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Child processes, each in its own session; stop() ends them all (TERM, then KILL)."""

    def __init__(self) -> None:
        self.procs: list[Proc] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        cwd: Path,
        env: Mapping[str, str] | None = None,
    ) -> Proc:
        logfh = log.open("wb")
        try:
            popen = subprocess.Popen(
                list(argv),
                cwd=str(cwd),
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=logfh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            logfh.close()
            raise HarnessError(f"cannot start {name} ({argv[0]}): {e}") from e
        proc = Proc(name, popen, log, logfh)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        p = proc.popen
        if p.poll() is None:
            self._signal(p, signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(p, signal.SIGKILL)
                try:
                    p.wait(grace)
                except subprocess.TimeoutExpired:
                    print(f"warning: {proc.name} (pid {p.pid}) did not die", file=sys.stderr)
        else:
            # The leader is gone; make sure nothing it started lingers.
            self._signal(p, signal.SIGKILL)
        proc.logfh.close()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)

    @staticmethod
    def _signal(p: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        try:
            os.killpg(p.pid, sig)  # its own session: pgid == pid
        except ProcessLookupError:
            pass
        except PermissionError:
            pass


def wait_listening(proc: Proc, port: int, timeout: float) -> None:
    """Wait until 127.0.0.1:port accepts a connection, or fail if *proc* exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.popen.poll() is not None:
            raise HarnessError(
                f"{proc.name} exited with status {proc.popen.returncode} before listening "
                f"on port {port}; its log ({proc.log}):\n{proc.tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise HarnessError(
                f"{proc.name} did not listen on port {port} within {timeout:g} s; "
                f"its log ({proc.log}):\n{proc.tail()}"
            )
        time.sleep(0.1)


def clean_env() -> dict[str, str]:
    """The environment for wstest (Python 2): none of the caller's Python settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    }
    env["PYTHONWARNINGS"] = "ignore"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------
# running


@dataclass
class Options:
    python: str
    wstest: str
    cases: list[str]
    exclude: list[str]
    modes: list[str]
    outdir: Path
    timeout: float
    start_timeout: float
    expected_file: Path


def split_list(value: str) -> list[str]:
    return [p.strip() for p in value.replace(" ", ",").split(",") if p.strip()]


def write_spec(path: Path, agent: str, url: str, opts: Options, outdir: Path) -> None:
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": url, "options": {"version": 18}}],
        "cases": opts.cases,
        "exclude-cases": opts.exclude,
        "exclude-agent-cases": {},
    }
    path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def run_wstest(procs: Processes, agent: str, url: str, opts: Options) -> dict[str, CaseResult]:
    mode_dir = opts.outdir / agent
    reports = mode_dir / "reports"
    if reports.exists():
        shutil.rmtree(reports)
    mode_dir.mkdir(parents=True, exist_ok=True)
    spec = mode_dir / "spec.json"
    write_spec(spec, agent, url, opts, reports)
    argv = [opts.wstest, "-m", "fuzzingclient", "-s", str(spec)]
    print(
        f"[{agent}] wstest fuzzingclient -> {url} (cases {','.join(opts.cases)}"
        + (f"; excluding {','.join(opts.exclude)}" if opts.exclude else "")
        + ")",
        flush=True,
    )
    started = time.monotonic()
    proc = procs.start(f"wstest ({agent})", argv, mode_dir / "wstest.log", mode_dir, clean_env())
    try:
        rc = proc.popen.wait(opts.timeout)
    except subprocess.TimeoutExpired:
        raise HarnessError(
            f"wstest ({agent}) did not finish within --timeout {opts.timeout:g} s; "
            f"its log ({proc.log}):\n{proc.tail()}"
        ) from None
    finally:
        procs.stop(proc)
    elapsed = time.monotonic() - started
    if rc != 0:
        raise HarnessError(f"wstest ({agent}) exited with status {rc}; its log ({proc.log}):\n{proc.tail()}")
    results = load_index(reports / "index.json", agent)
    if not results:
        raise HarnessError(f"wstest ({agent}) ran no case (case list {opts.cases}, exclude {opts.exclude})")
    print(
        f"[{agent}] {len(results)} cases in {elapsed:.1f} s; report {reports / 'index.html'}",
        flush=True,
    )
    return results


def run(opts: Options, died: list[str]) -> dict[str, dict[str, CaseResult]]:
    """Run the modes; the names of servers that exited before the end go into *died*."""
    procs = Processes()
    results: dict[str, dict[str, CaseResult]] = {}
    try:
        backend_port = free_port()
        backend = procs.start(
            "echo backend",
            [
                opts.python,
                "-m",
                "agwtx.tools.demo",
                "--listen",
                f"tcp:{backend_port}:interface=127.0.0.1",
            ],
            opts.outdir / "backend.log",
            ROOT,
        )
        wait_listening(backend, backend_port, opts.start_timeout)
        print(f"echo backend on 127.0.0.1:{backend_port} (pid {backend.popen.pid})", flush=True)

        if "direct" in opts.modes:
            results["direct"] = run_wstest(procs, "direct", f"ws://127.0.0.1:{backend_port}/", opts)

        if "agw" in opts.modes:
            twistd = str(Path(opts.python).parent / "twistd")
            if not os.access(twistd, os.X_OK):
                raise HarnessError(f"no twistd next to {opts.python} ({twistd})")
            agw_port = free_port()
            ini = opts.outdir / "agw.ini"
            ini.write_text(GATEWAY_INI.format(agw_port=agw_port, backend_port=backend_port), encoding="utf-8")
            gateway = procs.start(
                "gateway",
                [twistd, "-n", "--pidfile=", "agw", "--config", str(ini)],
                opts.outdir / "agw.log",
                ROOT,
            )
            wait_listening(gateway, agw_port, opts.start_timeout)
            print(f"gateway on 127.0.0.1:{agw_port} (pid {gateway.popen.pid})", flush=True)
            results["agw"] = run_wstest(procs, "agw", f"ws://127.0.0.1:{agw_port}/", opts)
        for proc in list(procs.procs):
            if proc.popen.poll() is not None:
                died.append(proc.name)
                print(
                    f"error: {proc.name} exited (status {proc.popen.returncode}) during the run; "
                    f"its log ({proc.log}):\n{proc.tail()}",
                    file=sys.stderr,
                )
    finally:
        procs.stop_all()
    return results


def verdict(
    results: Mapping[str, Mapping[str, CaseResult]], expected: Sequence[Expected], out: IO[str]
) -> int:
    print_summary(results, out)
    if "direct" in results and "agw" in results:
        findings = compare(results["direct"], results["agw"], expected)
        bad = [f for f in findings if f.expected is None]
        print(
            f"\nagw worse than direct, or FAILED: {len(findings)} case(s)"
            f" ({len(findings) - len(bad)} listed in {EXPECTED_FILE.name})",
            file=out,
        )
        for f in findings:
            note = f"  [expected: {f.expected.reason or f.expected.pattern}]" if f.expected else ""
            print(f"  {f.case_id:<10} {f.why}{note}", file=out)
        stale = [e for e in expected if not any(f.expected is e for f in findings)]
        for e in stale:
            print(f"note: {EXPECTED_FILE.name} lists {e.pattern}, which no longer differs", file=out)
        return 1 if bad else 0
    ((mode, res),) = results.items()
    failed = sorted((c for c, r in res.items() if is_failed(r)), key=case_key)
    print(
        f"\n{mode}: {len(failed)} FAILED case(s)" + (": " + " ".join(failed) if failed else ""),
        file=out,
    )
    return 1 if failed else 0


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(
        description="Autobahn WebSocket Testsuite: echo backend direct vs. through agw.",
        epilog="Exit status: 0 ok, 1 conformance failure, 2 harness error.",
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help="Python 3 with agw installed; runs agwtx.tools.demo, and its twistd runs the "
        "gateway (default: this interpreter)",
    )
    p.add_argument(
        "--wstest",
        default=os.environ.get("WSTEST", str(DEFAULT_VENV / "bin" / "wstest")),
        help="wstest to run (default: $WSTEST, else $WSTEST_VENV/bin/wstest, "
        "else <repo>/.cache/wstest-venv/bin/wstest)",
    )
    p.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help=f"comma-separated wstest case patterns (default {DEFAULT_CASES}; "
        "the long UTF-8/performance run is --cases '9.*')",
    )
    p.add_argument("--exclude", default="", help="comma-separated case patterns to skip")
    p.add_argument("--only", choices=MODES, help="run one mode only")
    p.add_argument(
        "--outdir",
        type=Path,
        default=None,
        help="where to put specs, logs and wstest reports (kept); "
        "default a temporary directory, removed when the run passes",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        help="bound on each wstest run, seconds (default 1800)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=15.0,
        help="bound on a server's start, seconds (default 15)",
    )
    p.add_argument(
        "--expected",
        type=Path,
        default=EXPECTED_FILE,
        help=f"expected-differences file (default {EXPECTED_FILE})",
    )
    a = p.parse_args(argv)
    cases = split_list(a.cases)
    if not cases:
        p.error("--cases is empty")
    return Options(
        python=os.path.abspath(a.python) if os.sep in a.python else (shutil.which(a.python) or a.python),
        wstest=a.wstest,
        cases=cases,
        exclude=split_list(a.exclude),
        modes=[a.only] if a.only else list(MODES),
        outdir=a.outdir.resolve() if a.outdir else Path(),
        timeout=a.timeout,
        start_timeout=a.start_timeout,
        expected_file=a.expected,
    )


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if not os.access(opts.wstest, os.X_OK):
        print(
            f"error: no wstest at {opts.wstest}; run: bash conformance/setup-wstest.sh",
            file=sys.stderr,
        )
        return 2
    temp = opts.outdir == Path()
    if temp:
        opts.outdir = Path(tempfile.mkdtemp(prefix="agw-autobahn-"))
    else:
        opts.outdir.mkdir(parents=True, exist_ok=True)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    status = 2
    started = time.monotonic()
    try:
        expected = load_expected(opts.expected_file)
        died: list[str] = []
        results = run(opts, died)
        status = verdict(results, expected, sys.stdout)
        if "gateway" in died:  # the gateway crashed: a gateway failure
            status = max(status, 1)
        if "echo backend" in died:  # results measured against a dead backend mean nothing
            status = 2
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        status = 2
    except (KeyboardInterrupt, Terminated) as e:
        print(f"interrupted ({e or 'SIGINT'})", file=sys.stderr)
        status = 2
    finally:
        elapsed = time.monotonic() - started
        if temp and status == 0:
            shutil.rmtree(opts.outdir, ignore_errors=True)
            where = ""
        else:
            where = f"; logs and reports in {opts.outdir}"
        print(
            f"\n{'PASS' if status == 0 else 'FAIL'} (exit {status}) in {elapsed:.0f} s{where}",
            flush=True,
        )
    return status


if __name__ == "__main__":
    sys.exit(main())

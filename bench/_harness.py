"""Reusable pieces for the agw benchmarks (Python 3 stdlib only).

Everything a loopback benchmark needs, kept apart from any one benchmark so
that the HTTP bench (``http_bench.py``) and later ones (WebSocket) share it:

* cli/report: :func:`log`, :func:`print_tail`, :func:`fmt`, :func:`rows_arg`,
              :func:`positive_seconds`
* ports:      :func:`free_port` (ephemeral range, 127.0.0.1),
              :func:`wait_for_port`, :func:`wait_for_http`, :func:`http_get`
              (both also over HTTPS, given an ``ssl.SSLContext``)
* processes:  :class:`ManagedProcess` (own session, output to a log file,
              SIGTERM then SIGKILL after a grace period, context manager),
              :func:`install_sigterm_handler`, :func:`read_proc_status_kb`
* tools:      :func:`find_executable`, :func:`find_twistd`,
              :func:`missing_apt_packages`
* nginx:      :func:`write_nginx_conf` with :func:`static_location` and
              :func:`proxy_location`, :func:`nginx_argv`
* agw:        :func:`write_agw_config`, :func:`agw_argv`
* TLS:        :class:`TlsFiles`, :func:`make_tls_files` (a self-signed
              certificate), :func:`client_ssl_context`,
              :func:`run_tls_handshakes` / :class:`HandshakeResult` (new TLS
              connections per second, no session resumption)
* wrk:        :func:`run_wrk`, :func:`parse_wrk_output`, :class:`WrkResult`
* node:       :func:`find_node`, :func:`missing_node_modules`
* limits:     :func:`raise_nofile_limit`, :func:`read_proc_limit`,
              :func:`count_proc_fds`, :func:`process_group_cpu_seconds`

Every wait in here has a deadline; nothing loops forever.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import multiprocessing
import os
import platform
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

LOOPBACK = "127.0.0.1"

#: Grace period between SIGTERM and SIGKILL when stopping a process.
STOP_GRACE_S = 5.0

#: Debian package that provides each tool the benchmarks need.
APT_PACKAGES: Mapping[str, str] = {
    "nginx": "nginx",
    "wrk": "wrk",
    "node": "nodejs",
    "npm": "npm",
}


class HarnessError(Exception):
    """A benchmark step failed (a server did not start, wrk failed, ...)."""


class ProcessStartError(HarnessError):
    """A managed server did not come up; ``log_tail`` holds its last output."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


# --------------------------------------------------------------------------
# command line and report


def log(message: str) -> None:
    """A progress line on stderr (stdout carries only the report)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def print_tail(tail: str, whose: str = "") -> None:
    """Print a process's last output lines (e.g. a ``ProcessStartError``'s
    ``log_tail``) on stderr; nothing when ``tail`` is empty."""
    if tail:
        title = f"last lines of {whose}'s output" if whose else "last lines"
        print(f"--- {title} ---\n{tail}\n---", file=sys.stderr, flush=True)


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``, or 'n/a' for a figure not measured."""
    return "n/a" if value is None else format(value, spec)


def rows_arg(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse ``type`` for ``--only``/``--skip``: a comma list of ``choices``."""

    def parse(text: str) -> list[str]:
        rows = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [row for row in rows if row not in choices]
        if unknown or not rows:
            raise argparse.ArgumentTypeError(
                f"unknown row(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(choices)}"
            )
        return rows

    return parse


def positive_seconds(text: str) -> float:
    """An argparse ``type``: seconds, more than 0 and at most a day."""
    value = float(text)
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError("must be > 0 (and at most 86400)")
    return value


# --------------------------------------------------------------------------
# ports


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (``ip_local_port_range``)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        low, high = (int(part) for part in text.split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = LOOPBACK, avoid: Collection[int] = ()) -> int:
    """Pick a free TCP port on ``host`` by binding port 0 and closing.

    The port is checked to be in the ephemeral range and not in ``avoid``
    (ports already handed out in this run); at most 50 attempts.
    """
    low, high = ephemeral_port_range()
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if low <= port <= high and port not in avoid:
            return port
    raise HarnessError(f"could not find a free ephemeral port on {host}")


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 15.0,
    process: ManagedProcess | None = None,
) -> None:
    """Wait (at most ``timeout`` s) until ``host:port`` accepts connections.

    When ``process`` is given and exits first, fail at once with its log tail.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and not process.alive:
            raise ProcessStartError(
                f"{process.name} exited with status {process.returncode} "
                f"before {host}:{port} accepted connections",
                process.log_tail(),
            )
        if port_accepts(host, port, timeout=0.5):
            return
        if time.monotonic() >= deadline:
            raise ProcessStartError(
                f"{host}:{port} did not accept connections within {timeout:.0f} s"
                + (f" ({process.name} still running)" if process else ""),
                process.log_tail() if process else "",
            )
        time.sleep(0.05)


def http_get(
    host: str,
    port: int,
    path: str = "/",
    timeout: float = 2.0,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, bytes]:
    """One GET (over HTTPS when ``ssl_context`` is given); returns (status,
    body). Raises OSError/HTTPException (ssl.SSLError is an OSError)."""
    conn: http.client.HTTPConnection
    if ssl_context is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": f"{host}:{port}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_for_http(
    host: str,
    port: int,
    timeout: float = 15.0,
    path: str = "/",
    expect_status: int = 200,
    process: ManagedProcess | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> bytes:
    """Wait until ``host:port`` accepts, then until GET ``path`` answers
    ``expect_status``; both within ``timeout`` s in total. Returns the body.
    With ``ssl_context`` the GET goes over HTTPS.
    """
    scheme = "https" if ssl_context is not None else "http"
    deadline = time.monotonic() + timeout
    wait_for_port(host, port, timeout, process)
    last = "no answer"
    while True:
        if process is not None and not process.alive:
            raise ProcessStartError(
                f"{process.name} exited with status {process.returncode}",
                process.log_tail(),
            )
        remaining = deadline - time.monotonic()
        try:
            status, body = http_get(
                host, port, path, timeout=max(0.2, min(2.0, remaining)), ssl_context=ssl_context
            )
            if status == expect_status:
                return body
            last = f"HTTP {status} {body[:200]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise ProcessStartError(
                f"GET {scheme}://{host}:{port}{path} did not answer {expect_status} "
                f"within {timeout:.0f} s (last: {last})",
                process.log_tail() if process else "",
            )
        time.sleep(0.1)


# --------------------------------------------------------------------------
# processes


def tail_file(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file ('' when unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 256 * 1024))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def read_proc_status_kb(pid: int, field: str = "VmRSS") -> int | None:
    """A ``kB`` field (VmRSS, VmHWM, ...) of /proc/PID/status, or None."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{re.escape(field)}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


class ManagedProcess:
    """A server process started for a benchmark, always cleaned up.

    The process gets its own session (so a Ctrl-C in the terminal reaches
    only the benchmark, which then stops it in order) and its stdout and
    stderr go to ``log_path``. :meth:`stop` sends SIGTERM, waits up to
    ``grace`` s, then SIGKILLs the whole process group (nginx workers
    included). Use as a context manager or call :meth:`stop` in a finally.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        grace: float = STOP_GRACE_S,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.grace = grace
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        if self._proc is not None:
            raise HarnessError(f"{self.name} already started")
        self._log = open(self.log_path, "ab")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        except OSError as exc:
            self._log.close()
            self._log = None
            raise ProcessStartError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc
        return self

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise HarnessError(f"{self.name} not started")
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 30) -> str:
        if self._log is not None:
            self._log.flush()
        return tail_file(self.log_path, lines)

    def _killpg(self, sig: int) -> None:
        assert self._proc is not None
        try:
            # start_new_session: the group id is the process id.
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self) -> int | None:
        """Stop the process (TERM, then KILL after ``grace`` s); idempotent."""
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=self.grace)
                except subprocess.TimeoutExpired:
                    print(
                        f"[bench] {self.name} (pid {proc.pid}) ignored SIGTERM for "
                        f"{self.grace:.0f} s; killing",
                        file=sys.stderr,
                    )
                    self._killpg(signal.SIGKILL)
                    try:
                        proc.wait(timeout=self.grace)
                    except subprocess.TimeoutExpired:
                        print(
                            f"[bench] {self.name} (pid {proc.pid}) survived SIGKILL",
                            file=sys.stderr,
                        )
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None
        return proc.poll()

    def __enter__(self) -> ManagedProcess:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def install_sigterm_handler() -> None:
    """Make SIGTERM (and SIGHUP) raise KeyboardInterrupt, so ``finally``
    blocks and context managers clean up exactly as on Ctrl-C."""

    def handler(signum: int, frame: FrameType | None) -> Any:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # respect nohup
        signal.signal(signal.SIGHUP, handler)


# --------------------------------------------------------------------------
# tools


def find_executable(name: str, candidates: Sequence[str] = ()) -> str | None:
    """``name`` on PATH, else the first existing executable of ``candidates``."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_nginx() -> str | None:
    return find_executable("nginx", ["/usr/sbin/nginx", "/usr/local/sbin/nginx"])


def find_wrk() -> str | None:
    return find_executable("wrk", ["/usr/bin/wrk", "/usr/local/bin/wrk"])


def find_twistd() -> str | None:
    """The ``twistd`` next to ``sys.executable`` (a venv's), else on PATH."""
    beside = Path(sys.executable).parent / "twistd"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("twistd")


def missing_apt_packages(tools: Mapping[str, str | None]) -> list[str]:
    """Debian packages to install for the tools (name -> path) not found."""
    return [APT_PACKAGES.get(name, name) for name, path in tools.items() if path is None]


def machine() -> dict[str, Any]:
    """
    What the figures were measured on: CPU model, cores, load average and
    kernel, printed at the start of a run and kept in its JSON (figures
    from different machines differ by more than the noise).
    """
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
    }


def describe_machine(info: Mapping[str, Any]) -> str:
    load = ", ".join(f"{x:.2f}" for x in info["loadavg"])
    return f"machine: {info['cpu']}, {info['cores']} cores, kernel {info['kernel']}, load average {load}"


def tool_version(argv: Sequence[str], timeout: float = 5.0) -> str:
    """First line of a tool's version output ('' on failure)."""
    try:
        out = subprocess.run(list(argv), capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (out.stdout + out.stderr).decode("utf-8", "replace").strip()
    return text.splitlines()[0].strip() if text else ""


# --------------------------------------------------------------------------
# nginx


def static_location(body: str = "hello\n", path: str = "/") -> str:
    """A location answering ``200 body`` to everything under ``path``."""
    escaped = body.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'location {path} {{\n            return 200 "{escaped}";\n        }}'


def proxy_location(upstream: str, path: str = "/", websocket: bool = False, buffering: bool = True) -> str:
    """A location proxying to ``upstream`` over pooled HTTP/1.1 connections.

    ``websocket=True`` forwards Upgrade/Connection instead of clearing
    Connection (needs the ``$connection_upgrade`` map that
    :func:`write_nginx_conf` always defines). ``buffering=False`` adds
    ``proxy_buffering off``.
    """
    if websocket:
        headers = (
            "proxy_set_header Upgrade $http_upgrade;\n"
            "            proxy_set_header Connection $connection_upgrade;\n"
            "            proxy_read_timeout 3600s;"
        )
    else:
        headers = 'proxy_set_header Connection "";'
    if not buffering:
        headers += "\n            proxy_buffering off;"
    return (
        f"location {path} {{\n"
        f"            proxy_pass http://{upstream};\n"
        f"            proxy_http_version 1.1;\n"
        f"            {headers}\n"
        f"        }}"
    )


def write_nginx_conf(
    workdir: Path,
    name: str,
    listen_port: int,
    locations: Sequence[str],
    upstreams: Mapping[str, Sequence[str]] | None = None,
    keepalive: int = 64,
    worker_processes: int = 1,
    keepalive_requests: int = 1_000_000,
    tls: TlsFiles | None = None,
    worker_connections: int = 4096,
) -> Path:
    """Write ``<workdir>/<name>/nginx.conf``; everything nginx writes (pid,
    error log, temp dirs) stays in ``<workdir>/<name>``. Returns the path.

    With ``tls`` the server listens with ``ssl`` on that certificate,
    ``ssl_protocols TLSv1.2 TLSv1.3`` and ``ssl_session_cache
    shared:SSL:10m`` (nginx's default ciphers and session tickets).

    ``upstreams`` maps an upstream name to its ``host:port`` servers; each
    gets ``keepalive <keepalive>``. ``keepalive_requests`` is raised well
    above nginx's default of 1000 (on both the client side and upstreams), so
    that neither wrk's connections nor the pooled upstream connections are
    closed and reopened every 1000 requests: the other proxies under test do
    not do that either.
    """
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    # When run as root, nginx workers run as an unprivileged user: they must
    # be able to reach their temp dirs.
    for path in (workdir, home):
        os.chmod(path, 0o755)
    upstream_blocks = []
    for up_name, servers in (upstreams or {}).items():
        lines = "".join(f"        server {server};\n" for server in servers)
        upstream_blocks.append(
            f"    upstream {up_name} {{\n{lines}"
            f"        keepalive {keepalive};\n"
            f"        keepalive_requests {keepalive_requests};\n"
            f"    }}\n"
        )
    location_text = "\n        ".join(locations)
    if tls is not None:
        listen = (
            f"listen {LOOPBACK}:{listen_port} ssl;\n"
            f"        ssl_certificate {tls.certificate};\n"
            f"        ssl_certificate_key {tls.private_key};\n"
            f"        ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"        ssl_session_cache shared:SSL:10m;"
        )
    else:
        listen = f"listen {LOOPBACK}:{listen_port};"
    conf = f"""\
# generated by agw bench/_harness.py
worker_processes {worker_processes};
daemon off;
master_process on;
pid {home}/nginx.pid;
error_log {home}/error.log warn;

events {{
    worker_connections {worker_connections};
}}

http {{
    access_log off;
    default_type text/plain;
    keepalive_requests {keepalive_requests};
    client_body_temp_path {home}/client_body;
    proxy_temp_path {home}/proxy;
    fastcgi_temp_path {home}/fastcgi;
    uwsgi_temp_path {home}/uwsgi;
    scgi_temp_path {home}/scgi;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}

{"".join(upstream_blocks)}
    server {{
        {listen}
        {location_text}
    }}
}}
"""
    conf_path = home / "nginx.conf"
    conf_path.write_text(conf)
    return conf_path


STUB_STATUS_PATH = "/nginx_status"


def stub_status_location(path: str = STUB_STATUS_PATH) -> str:
    """A location serving nginx's ``stub_status`` (connection and request counters)."""
    return f"location = {path} {{\n            stub_status;\n        }}"


def read_stub_status(host: str, port: int, path: str = STUB_STATUS_PATH) -> dict[str, int]:
    """nginx's ``stub_status`` counters: ``accepts``, ``handled``, ``requests`` (totals so far)
    and ``active``.  The reading itself counts as one accepted connection and one request."""
    status, body = http_get(host, port, path)
    if status != 200:
        raise HarnessError(f"stub_status on {host}:{port}{path} answered {status}")
    text = body.decode("ascii", "replace")
    active = re.search(r"Active connections:\s*(\d+)", text)
    totals = re.search(r"server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)", text)
    if not active or not totals:
        raise HarnessError(f"unreadable stub_status: {text!r}")
    accepts, handled, requests = map(int, totals.groups())
    return {"active": int(active.group(1)), "accepts": accepts, "handled": handled, "requests": requests}


def nginx_argv(nginx_bin: str, conf_path: Path) -> list[str]:
    """Command line running nginx in the foreground on ``conf_path``."""
    home = conf_path.parent
    return [nginx_bin, "-p", f"{home}/", "-e", str(home / "error.log"), "-c", str(conf_path)]


# --------------------------------------------------------------------------
# agw


def write_agw_config(
    path: Path,
    agw_port: int,
    backend_ports: Sequence[int],
    name: str = "bench",
    extra: str = "",
    tls: TlsFiles | None = None,
    settings: Sequence[str] = (),
) -> Path:
    """Write the minimal Basic-rule gw.ini (one listener, one pool) of the
    configuration format: 127.0.0.1:agw_port -> 127.0.0.1:backend_ports.

    With ``tls`` the listener is ``protocol = Https`` with an
    ``[sslCertificate:<name>]`` on those files (the backend leg stays Http).
    ``settings`` are extra ``key = value`` lines for the backendHttpSettings.
    """
    addresses = ", ".join(f"{LOOPBACK}:{port}" for port in backend_ports)
    if tls is not None:
        certificate = (
            f"\n[sslCertificate:{name}]\ncertificate = {tls.certificate}\nprivateKey = {tls.private_key}\n"
        )
        listener_tls = f"protocol = Https\nsslCertificate = {name}"
    else:
        certificate = ""
        listener_tls = "protocol = Http"
    text = f"""\
; generated by agw bench/_harness.py
[frontendPort:{name}]
port = {agw_port}
interface = {LOOPBACK}
{certificate}
[backendAddressPool:{name}]
backendAddresses = {addresses}

[backendHttpSettings:{name}]
port = {backend_ports[0]}
protocol = Http
{"".join(line + chr(10) for line in settings)}
[httpListener:{name}]
frontendPort = {name}
{listener_tls}

[requestRoutingRule:{name}]
ruleType = Basic
priority = 100
httpListener = {name}
backendAddressPool = {name}
backendHttpSettings = {name}
{extra}"""
    path.write_text(text)
    return path


def agw_argv(twistd: str, config: Path) -> list[str]:
    """Command line running the gateway in the foreground, no pidfile."""
    return [twistd, "-n", "--pidfile=", "agw", "--config", str(config)]


def repo_root() -> Path:
    """The agw repository root: the parent of this bench/ directory."""
    return Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# TLS


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate and its unencrypted private key."""

    certificate: Path
    private_key: Path
    how: str = ""  # what made it (for the report)


def make_tls_files(directory: Path, timeout: float = 30.0) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 / localhost in ``directory``.

    Made with ``agwtx.tools.democert.ensureDemoCertificate`` (EC P-256, the
    ``cryptography`` package) when agw is importable (the repo root is added
    to sys.path), else with ``openssl req`` (also EC P-256, same names).
    """
    directory.mkdir(parents=True, exist_ok=True)
    root = str(repo_root())
    if root not in sys.path:
        sys.path.append(root)
    try:
        from agwtx.tools.democert import ensureDemoCertificate
    except ImportError as exc:
        reason = f"agwtx.tools.democert not importable ({exc})"
    else:
        cert, key = ensureDemoCertificate(directory)
        return TlsFiles(Path(cert), Path(key), "agwtx.tools.democert (EC P-256)")
    openssl = find_executable("openssl", ["/usr/bin/openssl"])
    if openssl is None:
        raise HarnessError(f"cannot make a certificate: {reason}, and no openssl found")
    cert, key = directory / "bench-cert.pem", directory / "bench-key.pem"
    argv = [
        openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "7", "-subj", "/O=agw bench/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    try:
        out = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HarnessError(f"cannot make a certificate with openssl: {exc}") from exc
    if out.returncode != 0:
        raise HarnessError("openssl req failed: " + (out.stdout + out.stderr).decode("utf-8", "replace"))
    return TlsFiles(cert, key, "openssl req (EC P-256)")


def client_ssl_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A TLS 1.2+ client context: verifying against ``cafile`` (and the
    host name), or verifying nothing when ``cafile`` is None."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(cafile))
    return ctx


@dataclasses.dataclass
class HandshakeResult:
    """Figures from :func:`run_tls_handshakes` (latencies in ms)."""

    connections: int  # completed: full handshake + one 200 response + close
    duration_s: float
    per_sec: float
    processes: int
    latency_ms: dict[str, float]  # "50", "99": connect to end of response
    errors: dict[str, int]  # error kind -> count (bad status included)
    session_reused: int  # handshakes that resumed a session: must be 0
    protocols: dict[str, int]  # "TLSv1.3 TLS_AES_256_GCM_SHA384" -> count

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["p50_ms"] = self.latency_ms.get("50")
        data["p99_ms"] = self.latency_ms.get("99")
        return data


def _percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def _tls_worker_init() -> None:
    """Pool worker set-up: die on SIGTERM (Pool.terminate) without the
    bench's KeyboardInterrupt handler; leave Ctrl-C to the parent."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _tls_handshake_worker(job: tuple[str, int, str, float, float, float]) -> dict[str, Any]:
    """One client process of :func:`run_tls_handshakes`: from ``start_at``
    until ``end_at`` (time.monotonic, the same clock in every process on
    Linux), one new TCP + TLS connection after another, each with a full
    handshake (a fresh SSLSocket, no session passed: nothing to resume), one
    ``GET`` with ``Connection: close``, and the response read to EOF."""
    host, port, path, start_at, end_at, timeout = job
    ctx = client_ssl_context(None)  # no verification: keep the client cheap
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    ok = 0
    reused = 0
    errors: dict[str, int] = {}
    protocols: dict[str, int] = {}
    latencies: list[float] = []
    while True:
        began = time.monotonic()
        if began >= end_at:
            break
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as conn:
                    conn.sendall(request)
                    data = bytearray()
                    while len(data) < 1 << 20:  # bounded: 1 MiB, each recv <= timeout
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    if conn.session_reused:
                        reused += 1
                    cipher = conn.cipher()
                    protocol = f"{conn.version()} {cipher[0] if cipher else '?'}"
        except (OSError, ValueError) as exc:  # ssl.SSLError, timeouts: OSError
            kind = type(exc).__name__
            errors[kind] = errors.get(kind, 0) + 1
            time.sleep(0.005)  # do not spin on a refusing port
            continue
        if not data.startswith(b"HTTP/1.1 200 "):
            kind = "status " + bytes(data[9:12]).decode("latin-1", "replace")
            errors[kind] = errors.get(kind, 0) + 1
            continue
        ok += 1
        latencies.append((time.monotonic() - began) * 1000.0)
        protocols[protocol] = protocols.get(protocol, 0) + 1
    return {
        "ok": ok,
        "reused": reused,
        "errors": errors,
        "protocols": protocols,
        "latencies": latencies,
        "finished": time.monotonic(),
    }


def run_tls_handshakes(
    host: str,
    port: int,
    duration_s: float,
    processes: int = 4,
    path: str = "/",
    timeout: float = 5.0,
    lead_s: float = 0.5,
    slack_s: float = 30.0,
) -> HandshakeResult:
    """New TLS connections per second against ``https://host:port``.

    ``processes`` forked client processes (Python ``ssl``, the system
    OpenSSL) each loop for ``duration_s``: connect, full TLS handshake (no
    session resumption: every connection is a fresh SSLSocket given no
    session), ``GET path`` with ``Connection: close``, read the response to
    EOF. Only connections that got a 200 count. All processes start at the
    same instant (``lead_s`` after the call). Bounded: the pool is
    terminated if the results are not in ``slack_s`` after the end.

    Why not ``wrk -H 'Connection: close'``: wrk does reconnect then, but it
    keeps the TLS session of each connection slot (SSL_clear keeps it) and
    resumes it, so almost every reconnection is an abbreviated handshake.
    """
    if processes < 1:
        raise HarnessError("need at least one client process")
    context = multiprocessing.get_context("fork")
    start_at = time.monotonic() + lead_s
    end_at = start_at + duration_s
    jobs = [(host, port, path, start_at, end_at, timeout)] * processes
    pool = context.Pool(processes, initializer=_tls_worker_init)
    try:
        pending = pool.map_async(_tls_handshake_worker, jobs)
        try:
            parts = pending.get(timeout=lead_s + duration_s + slack_s)
        except multiprocessing.TimeoutError as exc:
            raise HarnessError(
                f"TLS clients did not finish within {lead_s + duration_s + slack_s:.0f} s"
            ) from exc
        pool.close()
    finally:
        pool.terminate()
        pool.join()
    ok = sum(part["ok"] for part in parts)
    elapsed = max(max(part["finished"] for part in parts), end_at) - start_at
    errors: dict[str, int] = {}
    protocols: dict[str, int] = {}
    for part in parts:
        for kind, count in part["errors"].items():
            errors[kind] = errors.get(kind, 0) + count
        for kind, count in part["protocols"].items():
            protocols[kind] = protocols.get(kind, 0) + count
    latencies = sorted(value for part in parts for value in part["latencies"])
    latency_ms: dict[str, float] = {}
    for pct in (50, 99):
        value = _percentile(latencies, pct)
        if value is not None:
            latency_ms[str(pct)] = value
    return HandshakeResult(
        connections=ok,
        duration_s=elapsed,
        per_sec=ok / elapsed if elapsed > 0 else 0.0,
        processes=processes,
        latency_ms=latency_ms,
        errors=errors,
        session_reused=sum(part["reused"] for part in parts),
        protocols=protocols,
    )


# --------------------------------------------------------------------------
# wrk

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME_RE = r"([0-9]+(?:\.[0-9]+)?)(us|ms|s|m|h)"


def wrk_time_to_ms(text: str) -> float:
    """Convert a wrk duration ('386.67us', '1.20ms', '2.01s', '1.00m') to ms."""
    match = re.fullmatch(_TIME_RE, text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNIT_MS[match.group(2)]


@dataclasses.dataclass
class WrkResult:
    """Figures from one ``wrk --latency`` run (latencies in ms)."""

    requests_per_sec: float
    latency_ms: dict[str, float]  # percentile label ("50", "99", ...) -> ms
    latency_avg_ms: float | None
    requests: int
    duration_s: float
    non_2xx_3xx: int
    socket_errors: dict[str, int]  # connect, read, write, timeout
    raw: str = dataclasses.field(repr=False, default="")

    @property
    def p50_ms(self) -> float | None:
        return self.latency_ms.get("50")

    @property
    def p99_ms(self) -> float | None:
        return self.latency_ms.get("99")

    @property
    def errors(self) -> int:
        return self.non_2xx_3xx + sum(self.socket_errors.values())

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("raw")
        data["p50_ms"] = self.p50_ms
        data["p99_ms"] = self.p99_ms
        return data


def parse_wrk_output(text: str) -> WrkResult:
    """Parse the text wrk prints (with ``--latency``); raises HarnessError."""
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.MULTILINE)
    if not rps:
        raise HarnessError("wrk output has no 'Requests/sec:' line:\n" + text)
    latency: dict[str, float] = {}
    dist = re.search(r"Latency Distribution\n((?:\s+[0-9.]+%\s+\S+\n?)+)", text)
    if dist:
        for match in re.finditer(r"([0-9.]+)%\s+" + _TIME_RE, dist.group(1)):
            label = match.group(1)
            label = label[:-2] if label.endswith(".0") else label
            latency[label] = float(match.group(2)) * _UNIT_MS[match.group(3)]
    avg = re.search(r"^\s+Latency\s+" + _TIME_RE, text, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in " + _TIME_RE, text, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        requests_per_sec=float(rps.group(1)),
        latency_ms=latency,
        latency_avg_ms=float(avg.group(1)) * _UNIT_MS[avg.group(2)] if avg else None,
        requests=int(total.group(1)) if total else 0,
        duration_s=(float(total.group(2)) * _UNIT_MS[total.group(3)] / 1000.0) if total else 0.0,
        non_2xx_3xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=(
            dict(zip(("connect", "read", "write", "timeout"), map(int, sock.groups()), strict=True))
            if sock
            else {"connect": 0, "read": 0, "write": 0, "timeout": 0}
        ),
        raw=text,
    )


def run_wrk(
    wrk_bin: str,
    url: str,
    duration_s: float,
    connections: int = 50,
    threads: int = 1,
    latency: bool = True,
    extra_args: Sequence[str] = (),
    slack_s: float = 30.0,
) -> WrkResult:
    """Run wrk (keep-alive, its default) against ``url`` and parse it.

    Killed (and HarnessError raised) if it runs ``slack_s`` past its
    duration; on Ctrl-C, subprocess.run kills it before re-raising.
    """
    argv = [
        wrk_bin,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration_s))}s",
        *(["--latency"] if latency else []),
        *extra_args,
        url,
    ]
    try:
        out = subprocess.run(
            argv,
            capture_output=True,
            timeout=duration_s + slack_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"wrk did not finish within {duration_s + slack_s:.0f} s") from exc
    except OSError as exc:
        raise HarnessError(f"cannot run wrk ({wrk_bin}): {exc}") from exc
    stdout = out.stdout.decode("utf-8", "replace")
    stderr = out.stderr.decode("utf-8", "replace")
    if out.returncode != 0:
        raise HarnessError(f"wrk exited with status {out.returncode}: {' '.join(argv)}\n{stdout}{stderr}")
    return parse_wrk_output(stdout)


# --------------------------------------------------------------------------
# node


def find_node() -> str | None:
    return find_executable("node", ["/usr/bin/node", "/usr/local/bin/node"])


def missing_node_modules(package_dir: Path, names: Sequence[str]) -> list[str]:
    """The npm packages of ``names`` not installed in ``package_dir``/node_modules."""
    return [name for name in names if not (package_dir / "node_modules" / name / "package.json").is_file()]


# --------------------------------------------------------------------------
# limits


def raise_nofile_limit(want: int) -> tuple[int, int]:
    """Raise this process's RLIMIT_NOFILE soft limit to at least ``want``
    (and the hard limit too when allowed, i.e. as root, up to
    /proc/sys/fs/nr_open). Children started afterwards inherit it.
    Returns the (soft, hard) limits in force afterwards.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft >= want:
        return soft, hard
    try:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
    except (OSError, ValueError):
        nr_open = 1 << 20
    target = min(want, nr_open)
    if hard != resource.RLIM_INFINITY and hard < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, target))
        except (ValueError, OSError):  # not privileged: go as far as hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def read_proc_limit(pid: int, name: str = "Max open files") -> int | None:
    """The soft value of a /proc/PID/limits row (None when unreadable or
    unlimited)."""
    try:
        text = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name):
            soft = line[len(name) :].split()[0]
            return int(soft) if soft.isdigit() else None
    return None


def count_proc_fds(pid: int) -> int | None:
    """How many file descriptors process ``pid`` has open (None if unknown)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def process_group_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU seconds used so far by the live processes of
    process group ``pgid`` (a :class:`ManagedProcess` is the leader of its
    own group: nginx's master and workers, for example). None if none found.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    found = False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the ")" that ends the command name: state ppid pgrp
        # session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 13 or int(fields[2]) != pgid:
            continue
        found = True
        total += int(fields[11]) + int(fields[12])
    return total / ticks if found else None

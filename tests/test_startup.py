"""
Start-up failures a user can cause are one line naming what failed and why,
and exit status 1, never a traceback: the real twistd entry point, in the
foreground (-n) and as a daemon.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import ROOT, TWISTD, basicIni, freePort


def twistd(ini: Path, daemon: bool = False) -> tuple[int, str, str, str]:
    """Run twistd agw on C{ini}; exit status, stdout, stderr and (daemon) the log file."""
    logFile = ini.with_suffix(".log")
    args = ["--pidfile=", f"--logfile={logFile}"] if daemon else ["-n", "--pidfile="]
    out = subprocess.run(
        [TWISTD, *args, "agw", "--config", str(ini)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    log = logFile.read_text() if daemon and logFile.exists() else ""
    return out.returncode, out.stdout, out.stderr, log


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def assertOneLine(ini: Path, expected: str) -> None:
    status, out, err, _ = twistd(ini)
    assert status == 1, (out, err)
    assert err == f"agw: {expected}\n", err
    assert "Traceback" not in out + err, out


def assertDaemonReports(ini: Path, expected: str) -> None:
    # twistd's parent process says it in its own words (at most 100 bytes of it).
    status, out, err, log = twistd(ini, daemon=True)
    assert status == 1, (out, err)
    assert err.startswith("An error has occurred: b'agw.StartupError: " + expected[:60]), err
    assert f"agw: {expected}" in log, log
    assert "Traceback" not in out + err + log, log


def test_a_frontend_port_already_taken(tmp_path: Path, taken: int) -> None:
    ini = tmp_path / "gw.ini"
    ini.write_text(basicIni(taken, [freePort()]))
    expected = f"cannot listen on 127.0.0.1:{taken} (frontendPort:fp): address already in use"
    assertOneLine(ini, expected)
    assertDaemonReports(ini, expected)


def test_the_admin_endpoint_port_already_taken(tmp_path: Path, taken: int) -> None:
    ini = tmp_path / "gw.ini"
    ini.write_text(basicIni(freePort(), [freePort()], gateway=f"admin = tcp:{taken}:interface=127.0.0.1"))
    assertOneLine(ini, f"cannot listen on 127.0.0.1:{taken} (admin endpoint): address already in use")


def test_an_interface_the_machine_does_not_have(tmp_path: Path) -> None:
    ini = tmp_path / "gw.ini"
    port = freePort()
    ini.write_text(basicIni(port, [freePort()]).replace("interface = 127.0.0.1", "interface = 192.0.2.1"))
    assertOneLine(
        ini, f"cannot listen on 192.0.2.1:{port} (frontendPort:fp): cannot assign requested address"
    )


def test_a_unix_socket_in_a_missing_directory(tmp_path: Path) -> None:
    ini = tmp_path / "gw.ini"
    endpoint = f"unix:{tmp_path}/missing/gw.sock"
    ini.write_text(
        basicIni(freePort(), [freePort()])
        .replace("port = ", "endpoint = " + endpoint + "\n; port = ", 1)
        .replace("interface = 127.0.0.1", "", 1)
    )
    expected = f"cannot listen on {endpoint} (frontendPort:fp): no such file or directory"
    assertOneLine(ini, expected)
    assertDaemonReports(ini, expected)


def test_a_systemd_endpoint_without_the_socket(tmp_path: Path) -> None:
    # The unit's config run by hand: systemd passed no sockets (LISTEN_FDS).
    ini = tmp_path / "gw.ini"
    endpoint = "systemd:domain=INET:index=0"
    ini.write_text(
        basicIni(freePort(), [freePort()])
        .replace("port = ", "endpoint = " + endpoint + "\n; port = ", 1)
        .replace("interface = 127.0.0.1", "", 1)
    )
    expected = (
        f"cannot listen on {endpoint} (frontendPort:fp): systemd passed no socket with that index "
        "(LISTEN_FDS); start it from its .socket unit"
    )
    assertOneLine(ini, expected)
    status, out, err, _ = twistd(ini, daemon=True)  # found before twistd daemonises
    assert (status, err) == (1, f"agw: {expected}\n"), out


def test_an_access_log_that_cannot_be_opened(tmp_path: Path) -> None:
    # Found while the service is built, before twistd daemonises: said once, in both modes.
    ini = tmp_path / "gw.ini"
    ini.write_text(basicIni(freePort(), [freePort()], gateway=f"accessLog = {tmp_path}"))
    expected = f"cannot open the access log {tmp_path}: is a directory"
    assertOneLine(ini, expected)
    status, out, err, _ = twistd(ini, daemon=True)
    assert (status, err) == (1, f"agw: {expected}\n"), out


def _unprivilegedPortStart() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        return 1024


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the gateway as nobody (setpriv)")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@pytest.mark.skipif(_unprivilegedPortStart() <= 81, reason="this kernel lets anyone bind port 81")
def test_a_low_port_without_the_capability() -> None:
    work = Path(tempfile.mkdtemp(prefix="agw-lowport-"))
    try:
        work.chmod(0o755)
        ini = work / "gw.ini"
        ini.write_text(basicIni(81, [freePort()]))
        ini.chmod(0o644)
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            + [TWISTD, "-n", "--pidfile=", "agw", "--config", str(ini)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    finally:
        shutil.rmtree(work)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert out.stderr == (
        "agw: cannot listen on 127.0.0.1:81 (frontendPort:fp): permission denied"
        " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)\n"
    )
    assert "Traceback" not in out.stdout

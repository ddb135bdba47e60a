"""
The installed entry point: twistd finds the plugin, --check validates, and a
bad configuration stops start-up with the errors and exit status 1.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin, getPlugins
from zope.interface.verify import verifyObject

from agwtx.config.loader import loadConfig
from agwtx.tools.democert import ensureDemoCertificate
from tests.support import ROOT, TWISTD, basicIni, freePort


def test_twistd_plugin_is_discoverable() -> None:
    makers = {m.tapname: m for m in getPlugins(IServiceMaker)}
    assert "agw" in makers
    assert verifyObject(IServiceMaker, makers["agw"])
    assert verifyObject(IPlugin, makers["agw"])


def test_twistd_help_lists_agw() -> None:
    out = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "agw" in out.stdout


def test_check_ok_prints_summary(tmp_path: Path) -> None:
    ini = tmp_path / "gw.ini"
    ini.write_text(basicIni(freePort(), [freePort()]))
    out = subprocess.run(
        [TWISTD, "agw", "--config", str(ini), "--check"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "configuration OK"
    assert "  listener l1: Http on tcp:" in out.stdout
    assert "  rule r1 (Basic, priority 100): l1 -> pool pool (1 member), settings s1" in out.stdout


def test_sample_config_checks_wherever_it_is_copied(tmp_path: Path) -> None:
    # As etc/agw.service's install steps do: copied alone to /etc/agw, and
    # checked without --demo by ExecStartPre.
    shutil.copy(ROOT / "etc" / "gw.ini", tmp_path / "gw.ini")
    out = subprocess.run(
        [TWISTD, "agw", "--config", str(tmp_path / "gw.ini"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "rule rule1" in out.stdout
    assert list(tmp_path.iterdir()) == [tmp_path / "gw.ini"]  # --check creates nothing


def test_demo_config_checks_with_demo() -> None:
    out = subprocess.run(
        [TWISTD, "agw", "--config", str(ROOT / "etc" / "gw-demo.ini"), "--demo", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "rule rule1" in out.stdout and "rule rule2" in out.stdout


def test_the_samples_bind_loopback_only() -> None:
    # The README says the demo listens on localhost.
    ensureDemoCertificate(str(ROOT / "etc" / "demo-tls"))  # as --demo does
    for name in ("gw.ini", "gw-demo.ini"):
        config = loadConfig(str(ROOT / "etc" / name))
        for port in config.frontendPorts.values():
            assert port.endpoint.endswith(":interface=127.0.0.1"), (name, port.endpoint)
        assert config.gateway.admin == "tcp:9901:interface=127.0.0.1"


def test_bad_config_stops_startup_with_errors_not_traceback(tmp_path: Path) -> None:
    ini = tmp_path / "gw.ini"
    bad = basicIni(freePort(), [freePort()], probe="interval = 0", settings="requestTimeout = 0")
    plugin = basicIni(freePort(), [freePort()]).replace(
        "ruleType = Basic", "ruleType = Plugin\nplugin = nosuch"
    )
    cases = [
        (
            bad,
            2,
            [
                "[backendHttpSettings:s1] requestTimeout: expected 1..86400",
                "[probe:p1] interval: expected 1..86400",
            ],
        ),
        (
            plugin,
            1,
            ["[requestRoutingRule:r1] plugin: unknown routing plugin 'nosuch'; available: headerRoute"],
        ),
    ]
    for text, count, expected in cases:
        ini.write_text(text)
        for args in (["-n", "--pidfile="], []):
            out = subprocess.run(
                [TWISTD, *args, "agw", "--config", str(ini)],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=tmp_path,
            )
            assert out.returncode == 1
            assert "Traceback" not in out.stdout + out.stderr
            lines = out.stderr.splitlines()
            assert lines[0] == f"agw: configuration has {count} error(s):"
            for message in expected:
                assert any(line.startswith(f"{ini}:") and message in line for line in lines), (message, lines)
            assert not (tmp_path / "twistd.pid").exists()  # it never daemonised


def test_missing_config_file(tmp_path: Path) -> None:
    out = subprocess.run(
        [TWISTD, "agw", "--config", str(tmp_path / "nope.ini"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "nope.ini" in out.stderr


def test_demo_certificate_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the config directory should be\n")
    out = subprocess.run(
        [TWISTD, "agw", "--demo", "--config", str(blocker / "gw.ini"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert f"agw: --demo: cannot create the demo certificate in {blocker / 'demo-tls'}" in out.stderr

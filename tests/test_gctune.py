"""
The collector settings of the real entry point: applied once the service
tree is built, so the freeze covers the routing tables too (checked in a
subprocess, which may install the reactor and change its collector).
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, basicIni, freePort

SCRIPT = """
import gc, sys
from agwtx.tap import Options, makeService
options = Options()
options.parseOptions(["--config", sys.argv[1]])
service = makeService(options)
router = next(iter(service.routers.values()))
tracked = any(o is router for o in gc.get_objects())
print(gc.get_threshold()[0], gc.get_freeze_count() > 0, tracked)
"""


@pytest.mark.skipif(platform.python_implementation() != "CPython", reason="PyPy's collector is left alone")
def test_make_service_freezes_the_built_routing_tables(tmp_path: Path) -> None:
    from agwtx.ops.gctune import YOUNG_THRESHOLD

    cfg = tmp_path / "gw.ini"
    cfg.write_text(basicIni(freePort(), [freePort()]))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    # The router exists before the freeze, so the collector no longer walks it.
    assert out == [str(YOUNG_THRESHOLD), "True", "False"]

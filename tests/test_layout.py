"""
The package layout (docs/development.rst): every package is installed, no
module is over 800 lines, and the plugin helpers' old import path still
works, with a warning.  The layer contracts themselves are checked by
import-linter in C{make lint}.
"""

from __future__ import annotations

import configparser
import importlib
import sys
import warnings

from tests.support import ROOT

AGWTX = ROOT / "agwtx"


def test_every_package_is_listed_in_setup_cfg() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in AGWTX.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found - listed == set(), "add these to setup.cfg [options] packages"


def test_no_module_is_over_800_lines() -> None:
    long = []
    for path in sorted(AGWTX.rglob("*.py")):
        lines = path.read_text().count("\n")
        if lines > 800:
            long.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert long == [], "split these by job (docs/development.rst)"


def test_the_flat_plugin_helpers_module_is_a_deprecated_alias() -> None:
    import agwtx.interfaces

    sys.modules.pop("agwtx.plugin", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("agwtx.plugin")
    assert [w.category for w in caught] == [DeprecationWarning]
    assert "agwtx.interfaces" in str(caught[0].message)
    assert old.checkOptionKeys is agwtx.interfaces.checkOptionKeys
    assert old.boolOption is agwtx.interfaces.boolOption

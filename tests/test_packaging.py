"""
The dependency floors agw declares are the ones CI installs.

setup.cfg's C{install_requires} gives each runtime dependency a floor;
C{constraints/floors.txt} pins exactly those versions, and the PyPy venv
(C{make setup-pypy}, run by C{.ci/run}) is built with it, so the whole suite
runs on the oldest releases agw claims.  These tests keep the two files from
drifting apart and check that the running interpreter, when it is the floors
venv, really has them.
"""

from __future__ import annotations

import configparser
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declaredFloors() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    floors = {}
    for line in cfg["options"]["install_requires"].strip().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)", line.strip())
        assert match, f"setup.cfg install_requires: {line!r} has no '>=' floor"
        floors[_norm(match.group(1))] = match.group(2)
    return floors


def _pinnedFloors() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints" / "floors.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[_norm(name)] = version.strip()
    return pins


def test_every_declared_floor_is_pinned_in_the_floors_constraints() -> None:
    assert _declaredFloors() == _pinnedFloors()


def test_the_floors_venv_runs_the_floor_versions() -> None:
    if not Path(sys.prefix).name.endswith("-pypy"):
        pytest.skip("not the floors venv (.venv-pypy); the CPython venv runs the newest releases")
    installed = {name: metadata.version(name) for name in _pinnedFloors()}
    assert installed == _pinnedFloors()

#!/usr/bin/env python3
"""Write a hash-pinned requirements file for the Python 2 wstest virtualenv.

Input: ``name==version`` lines (e.g. ``pip freeze`` of a scratch Python 2
virtualenv in which ``pip install autobahntestsuite==0.8.2`` was run).
Output (stdout): the same pins, each with the sha256 of every file of that
release that a Linux CPython 2.7 could install (sdist, ``py2``/``cp27``
wheels for ``any``/``manylinux``/``linux``), read from PyPI's simple index.

    python3 conformance/lock_py2.py freeze.txt > conformance/requirements-py2.txt

Stdlib only; needs to reach PyPI.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.request

INDEX = "https://pypi.org/simple/"
ACCEPT = "application/vnd.pypi.simple.v1+json"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wanted(filename: str, name: str, version: str) -> bool:
    """True if *filename* is a file of name==version usable by Linux CPython 2.7."""
    base = re.sub(r"[-_.]+", "_", name).lower()
    fn = filename.lower()
    for ext in (".tar.gz", ".tar.bz2", ".zip", ".tgz"):
        if fn.endswith(ext):
            stem = re.sub(r"[-_.]+", "_", fn[: -len(ext)])
            return stem == base + "_" + re.sub(r"[-_.]+", "_", version.lower())
    if not fn.endswith(".whl"):
        return False
    parts = filename[:-4].split("-")
    if len(parts) not in (5, 6):
        return False
    if normalize(parts[0]) != normalize(name) or parts[1] != version:
        return False
    pytags, platforms = parts[-3].split("."), parts[-1].split(".")
    if not any(t.startswith("py2") or t == "cp27" for t in pytags):
        return False
    return any(p == "any" or p.startswith(("manylinux", "linux")) for p in platforms)


def hashes(name: str, version: str) -> list[str]:
    req = urllib.request.Request(INDEX + normalize(name) + "/", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(req, timeout=120) as resp:
        data = json.load(resp)
    out = sorted({f["hashes"]["sha256"] for f in data["files"] if wanted(f["filename"], name, version)})
    if not out:
        raise SystemExit(f"no Python 2 file found for {name}=={version}")
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    pins: list[tuple[str, str]] = []
    with open(argv[1], encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-"):
                continue
            name, _, version = line.partition("==")
            if not version:
                raise SystemExit(f"not pinned: {line}")
            pins.append((name.strip(), version.strip()))
    for name, version in sorted(pins, key=lambda p: normalize(p[0])):
        hs = hashes(name, version)
        print(f"{name}=={version} \\")
        print(" \\\n".join(f"    --hash=sha256:{h}" for h in hs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

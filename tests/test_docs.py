"""
docs/configuration.rst against the loader's key table, both ways, so the
reference and the loader cannot drift apart.
"""

from __future__ import annotations

import re

from agwtx.config.keys import _KEYS, _PATTERN_KEYS
from tests.support import ROOT

DOC = ROOT / "docs" / "configuration.rst"
SECTION = re.compile(r"\[(\w+)(?::NAME)?\]")
KEY = re.compile(r"``([^`\s]+)``")


def documentedKeys() -> dict[str, list[str]]:
    """Section kind -> keys, from the page's section titles and key terms."""
    lines = DOC.read_text().splitlines()
    out: dict[str, list[str]] = {}
    kind = None
    for i, line in enumerate(lines):
        nextLine = lines[i + 1] if i + 1 < len(lines) else ""
        title = SECTION.fullmatch(line)
        if title and nextLine.startswith("---"):
            kind = title.group(1)
            out.setdefault(kind, [])
        elif kind is not None and KEY.fullmatch(line) and nextLine.startswith("   :type:"):
            out[kind].append(KEY.fullmatch(line).group(1))  # type: ignore[union-attr]
    return out


def sectionTitle(kind: str) -> str:
    return "[gateway]" if kind == "gateway" else f"[{kind}:NAME]"


def test_every_key_of_the_loader_is_documented() -> None:
    documented = documentedKeys()
    missing = [
        f"{key!r} of section {sectionTitle(kind)} is missing from docs/configuration.rst: add it "
        f"under the title {sectionTitle(kind)} (with :type:, :range:, :default:, :Azure:)"
        for kind, keys in _KEYS.items()
        for key in (*keys, *_PATTERN_KEYS.get(kind, ()))
        if key not in documented.get(kind, [])
    ]
    missing += [
        f"section {sectionTitle(kind)} has no title in docs/configuration.rst"
        for kind in _KEYS
        if kind not in documented
    ]
    assert not missing, "\n".join(missing)


def test_every_documented_key_exists() -> None:
    extra = [
        f"docs/configuration.rst documents {key!r} under {sectionTitle(kind)}, "
        "which agwtx/config/keys.py (_KEYS, _PATTERN_KEYS) does not have"
        for kind, keys in documentedKeys().items()
        for key in keys
        if key not in (*_KEYS.get(kind, ()), *_PATTERN_KEYS.get(kind, ()))
    ]
    assert not extra, "\n".join(extra)


def test_each_key_is_documented_once() -> None:
    for kind, keys in documentedKeys().items():
        assert len(keys) == len(set(keys)), (kind, keys)

"""
The private Twisted, autobahn and pyOpenSSL names agw relies on (L{agwtx.compat}):
each is checked against the installed release, so an upgrade that moves
one fails the test named after it; and no agw module outside
L{agwtx.compat} imports a private name from any of them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from agwtx.compat import Private
from agwtx.compat import autobahnprivate, pyopensslprivate, twistedprivate

ROOT = Path(__file__).resolve().parent.parent / "agwtx"


@pytest.mark.parametrize("item", twistedprivate.ITEMS, ids=str)
def test_twisted_private_name_is_still_there(item: Private) -> None:
    assert item.problem() is None, item.problem()


@pytest.mark.parametrize("item", autobahnprivate.ITEMS, ids=str)
def test_autobahn_private_name_is_still_there(item: Private) -> None:
    assert item.problem() is None, item.problem()


@pytest.mark.parametrize("item", pyopensslprivate.ITEMS, ids=str)
def test_pyopenssl_private_name_is_still_there(item: Private) -> None:
    assert item.problem() is None, item.problem()


def test_every_item_says_why() -> None:
    for item in twistedprivate.ITEMS + autobahnprivate.ITEMS + pyopensslprivate.ITEMS:
        assert item.why and item.usedBy, item
    names = [str(i) for i in twistedprivate.ITEMS + autobahnprivate.ITEMS + pyopensslprivate.ITEMS]
    assert len(names) == len(set(names))


def test_a_moved_item_is_reported_by_name() -> None:
    """The check fails loudly, naming the item, for each way an upgrade can move it."""
    gone = Private("twisted.web.http:HTTPChannel", "_noSuchThing", "attribute", "-", "-")
    assert gone.problem() == (
        "twisted.web.http:HTTPChannel._noSuchThing: attribute no longer set by "
        "twisted.web.http:HTTPChannel (nor its bases)"
    )
    renamed = Private(
        "twisted.web.http:HTTPChannel", "_maybeChooseTransferDecoder", "method", "-", "-", ("hdr",)
    )
    problem = renamed.problem()
    assert problem is not None
    assert problem.startswith(
        "twisted.web.http:HTTPChannel._maybeChooseTransferDecoder: signature changed: expected (hdr, ...)"
    )
    module = Private("twisted.protocols.haproxy", "_gone", "module", "-", "-")
    assert (module.problem() or "").startswith("twisted.protocols.haproxy._gone: module gone")
    owner = Private("twisted.web.http:NoSuchClass", "x", "attribute", "-", "-")
    assert (owner.problem() or "").startswith("twisted.web.http:NoSuchClass.x: its owner")


_LIBRARIES = ("twisted", "autobahn", "OpenSSL")


def privateImports(source: str) -> list[str]:
    """Imports of a private Twisted, autobahn or pyOpenSSL module or name (an alias is not a name)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] not in _LIBRARIES:
                continue
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(node.module)
            found.extend(f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_"))
        elif isinstance(node, ast.Import):
            found.extend(
                a.name
                for a in node.names
                if a.name.split(".")[0] in _LIBRARIES and any(p.startswith("_") for p in a.name.split("."))
            )
    return found


def test_private_imports_live_in_the_compat_modules_only() -> None:
    assert privateImports("from twisted.web.http import _ChunkedTransferDecoder") == [
        "twisted.web.http._ChunkedTransferDecoder"
    ]
    assert privateImports("from OpenSSL._util import lib") == ["OpenSSL._util"]
    assert privateImports("from twisted.protocols.haproxy._info import ProxyInfo") == [
        "twisted.protocols.haproxy._info"
    ]
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.parent.name == "compat":
            continue
        offenders.extend(f"{path.name}: {name}" for name in privateImports(path.read_text()))
    assert offenders == []


@pytest.mark.parametrize(
    "pattern",
    [
        r"\._command\b",
        r"\._path\b",
        r"\._version\b",
        r"\._disconnected\b",
        r"\._dataBuffer\b",
        r"\._exitSignal\b",
        r"\._raiseSynchronously\b",
        r"\._tlsConnection\b",
        r"\._poller\b",
        r"\._factory\b",
        r"endpoint\._(?:port|interface|backlog)\b",
        r"\._dataReceived\b",
        r"\._isMessageCompressed\b",
        r"\._perMessageCompress\b",
        r"\.__dict__\.update\(",
        r"\._context\b",
    ],
)
def test_private_attributes_are_reached_through_compat(pattern: str) -> None:
    """The private names that have an accessor (or a public replacement) are not used directly elsewhere."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.parent.name == "compat":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line) and not line.lstrip().startswith("#"):
                found.append(f"{path.name}:{n}: {line.strip()}")
    assert found == []

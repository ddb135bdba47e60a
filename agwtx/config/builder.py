"""
The machinery one configuration load shares: the sections in file order, the
names each kind defines, the objects built so far, the references to check
once every name is known, and the dispatch of a section to its builder after
its keys are checked against the key table.

The builders themselves live by area in L{agwtx.config.gateway},
L{agwtx.config.listeners}, L{agwtx.config.backends} and
L{agwtx.config.rules}, as mixins of L{_Builder}; L{agwtx.config.loader}
puts them together.
"""

from __future__ import annotations

import os
from typing import Any

from agwtx.config.ini import _Errors, _Section, _checkContinuation
from agwtx.config.keys import _KEYS, _KINDS, _PATTERN_KEYS, _isPatternKey
from agwtx.config.model import GatewaySettings
from agwtx.config.values import _got


def _kwargs(**values: Any) -> dict[str, Any]:
    """Only the values that were given, so the model's defaults apply to the rest."""
    return {key: value for key, value in values.items() if value is not None}


_Built = dict[str, tuple[Any, _Section]]


class _Builder:
    """
    One load: sections in file order, name registries, collected errors.
    A section of kind C{KIND} is built by the method C{_KIND}, which the
    area mixins add (see L{agwtx.config.loader._Loader}).
    """

    def __init__(self, path: str, errors: _Errors) -> None:
        self.path = path
        self.errors = errors
        self.baseDir = os.path.dirname(os.path.abspath(path))
        self.names: dict[str, dict[str, tuple[str, int]]] = {kind: {} for kind in _KINDS}
        self.built: dict[str, _Built] = {kind: {} for kind in _KINDS}
        self.gateway: GatewaySettings | None = None
        self.sections: list[_Section] = []
        self.refs: list[tuple[_Section, str, str, str]] = []

    # -- references ---------------------------------------------------------

    def ref(self, sec: _Section, key: str, kind: str) -> str | None:
        """
        Note that C{key} refers to a C{kind} section, to be checked once every
        name is known (so sections may refer forward); return the name.
        """
        return self.refName(sec, key, kind, sec.raw(key))

    def refName(self, sec: _Section, key: str, kind: str, name: str | None) -> str | None:
        """Like L{ref}, for a name that is only part of the key's value."""
        if name is None:
            return None
        name = name.strip()
        self.refs.append((sec, key, kind, name))
        return name

    def canon(self, kind: str, name: str | None) -> str | None:
        """The defined spelling of a reference (references match case-insensitively)."""
        if name is None:
            return None
        return self.names[kind].get(name.lower(), (name, 0))[0]

    def obj(self, kind: str, name: str | None) -> Any:
        if name is None:
            return None
        entry = self.built[kind].get(name)
        return entry[0] if entry else None

    # -- sections -----------------------------------------------------------

    def section(self, sec: _Section) -> None:
        allowed = {key.lower() for key in _KEYS[sec.kind]}
        for entry in sec.entries:
            if entry.key.lower() not in allowed and not _isPatternKey(sec.kind, entry.key):
                expected = sorted(_KEYS[sec.kind] + _PATTERN_KEYS.get(sec.kind, ()), key=str.lower)
                sec.error(
                    entry.key,
                    f"unknown key {_got(entry.key)}; expected one of: {', '.join(expected)}",
                )
            else:
                _checkContinuation(sec, entry)
        built = getattr(self, f"_{sec.kind}")(sec)
        if sec.kind == "gateway":
            if not sec.failed:
                self.gateway = built
        elif built is not None and not sec.failed:
            assert sec.name is not None
            self.built[sec.kind][sec.name] = (built, sec)

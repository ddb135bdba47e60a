"""
Indexes that make routing decisions cost about the same for 1 rule or 400.

Routing semantics stay those of L{agwtx.routing.router}: a port's listeners are
tried in evaluation order and the first whose host names match wins; a path
map's rules are tried in file order and the first whose paths match wins.
These indexes answer "the first one that matches" with dictionary lookups
instead of trying each in turn:

  - host names: exact names in a dict; C{*.suffix} wildcards (the usual
    kind) in a dict probed with each dot-suffix of the host; other
    wildcards (C{?}, C{*} elsewhere) are tried in order, but only those
    before the best match found so far; the basic listener last.
  - paths: exact patterns in a dict; C{/prefix/*} patterns in a dict probed
    with each slash-prefix of the path; other C{*} patterns tried in order,
    again only those before the best match so far.

Both are built once from an immutable routing table and never change.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

__all__ = ["HostIndex", "PathIndex", "hostMatcher"]

_NONE = 1 << 62


class HostIndex:
    """The first route (in evaluation order) whose listener serves a host name."""

    __slots__ = ("routes", "exact", "suffix", "generic", "basic")

    def __init__(self, routes: Sequence[Any]) -> None:
        self.routes = list(routes)
        self.exact: dict[str, int] = {}
        self.suffix: dict[str, int] = {}
        self.generic: list[tuple[int, Callable[[str], bool]]] = []
        self.basic = _NONE
        for index, route in enumerate(self.routes):
            names = route.listener.hostNames
            if not names:
                self.basic = min(self.basic, index)
                continue
            for name in names:
                name = name.lower()
                if "*" not in name and "?" not in name:
                    self.exact.setdefault(name, index)
                elif name.startswith("*.") and "*" not in name[1:] and "?" not in name:
                    self.suffix.setdefault(name[1:], index)
                else:
                    self.generic.append((index, hostMatcher([name])))
        self.generic.sort(key=lambda item: item[0])

    def route(self, host: str) -> Any:
        """The route for C{host} (lowercased, without port), or None."""
        best = self.exact.get(host, _NONE)
        suffix = self.suffix
        if suffix:
            get = suffix.get
            dot = host.find(".")
            while dot != -1:
                index = get(host[dot:], _NONE)
                if index < best:
                    best = index
                dot = host.find(".", dot + 1)
        for index, match in self.generic:
            if index >= best:
                break
            if match(host):
                best = index
                break
        if self.basic < best:
            best = self.basic
        return self.routes[best] if best != _NONE else None


class PathIndex:
    """The first path rule (in file order) whose patterns match a normalised path."""

    __slots__ = ("targets", "exact", "slash", "generic")

    def __init__(self, entries: Sequence[tuple[Any, Sequence[str], Any]]) -> None:
        self.targets = [target for _, _, target in entries]
        self.exact: dict[str, int] = {}
        self.slash: dict[str, int] = {}
        self.generic: list[tuple[int, str]] = []
        for index, (_, patterns, _) in enumerate(entries):
            for pattern in patterns:
                lowered = pattern.lower()
                if not lowered.endswith("*"):
                    self.exact.setdefault(lowered, index)
                elif lowered.endswith("/*"):
                    self.slash.setdefault(lowered[:-1], index)
                else:
                    self.generic.append((index, lowered[:-1]))
        self.generic.sort(key=lambda item: item[0])

    def lookup(self, path: str, default: Any) -> Any:
        """The target for a normalised C{path}, else C{default}."""
        lowered = path.lower()
        best = self.exact.get(lowered, _NONE)
        slash = self.slash
        if slash:
            get = slash.get
            cut = lowered.find("/")
            while cut != -1:
                index = get(lowered[: cut + 1], _NONE)
                if index < best:
                    best = index
                cut = lowered.find("/", cut + 1)
        for index, prefix in self.generic:
            if index >= best:
                break
            if lowered.startswith(prefix):
                best = index
                break
        return self.targets[best] if best != _NONE else default


def hostMatcher(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Match a host against names with C{*} and C{?} wildcards, case-insensitively."""
    exact = {p.lower() for p in patterns if "*" not in p and "?" not in p}
    wild = [
        re.compile(
            "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p.lower()) + r"\Z"
        )
        for p in patterns
        if "*" in p or "?" in p
    ]

    def match(host: str) -> bool:
        if host in exact:
            return True
        return any(w.match(host) for w in wild)

    return match

"""
The private names of the libraries agw is built on, one module per library:
L{agwtx.compat.twistedprivate} and L{agwtx.compat.autobahnprivate}.

Each module lists every private (or undocumented) name agw relies on as a
L{Private} item, saying what it buys, and holds the accessors through which
agw's code reaches it where a function call costs nothing that matters.
Subclass overrides of a private method (C{def _cleanup(self)} in a
twisted.web Request subclass) cannot move: they stay where they are and are
listed here.  C{tests/test_compat.py} checks every item against the
installed release, so an upgrade that moves one fails a test naming it.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["Private"]


@dataclass(frozen=True)
class Private:
    """
    One private name agw uses.

    @ivar owner: where it lives: C{"package.module"} or C{"package.module:Class"}.
    @ivar name: the name as agw spells it (a name-mangled attribute as Python
        stores it, e.g. C{_HTTPChannel__first_line}).
    @ivar kind: C{"module"}, C{"class"}, C{"function"}, C{"method"} (callable
        on the class, with C{params} as its leading parameter names after
        C{self}) or C{"attribute"} (a class attribute, or one the owner's
        code sets on C{self}, found in its source).
    @ivar usedBy: the agw modules that use it.
    @ivar why: what it buys, and why no public API does.
    """

    owner: str
    name: str
    kind: str
    usedBy: str
    why: str
    params: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.owner}.{self.name}"

    def _owner(self) -> Any:
        module, _, cls = self.owner.partition(":")
        obj: Any = importlib.import_module(module)
        for part in filter(None, cls.split(".")):
            obj = getattr(obj, part)
        return obj

    def problem(self) -> str | None:
        """None when the installed library has the item as agw uses it, else what changed (naming it)."""
        try:
            owner = self._owner()
        except (ImportError, AttributeError) as e:
            return f"{self}: its owner {self.owner} is gone: {e}"
        if self.kind == "module":
            try:
                importlib.import_module(f"{owner.__name__}.{self.name}")
            except ImportError as e:
                return f"{self}: module gone: {e}"
            return None
        if self.kind == "attribute":
            if _assigned(owner, self.name):
                return None
            return f"{self}: attribute no longer set by {self.owner} (nor its bases)"
        value = getattr(owner, self.name, None)
        if value is None:
            return f"{self}: {self.kind} gone from {self.owner}"
        if self.kind == "class" and not inspect.isclass(value):
            return f"{self}: no longer a class"
        if self.kind in ("function", "method") and not callable(value):
            return f"{self}: no longer callable"
        if self.kind == "method" and self.params:
            names = [p for p in inspect.signature(value).parameters if p != "self"]
            if names[: len(self.params)] != list(self.params):
                return f"{self}: signature changed: expected ({', '.join(self.params)}, ...), got ({', '.join(names)})"
        return None


def _assigned(owner: Any, name: str) -> bool:
    """Whether C{owner} (a class, or a module) has C{name}, or its code (bases included) assigns C{self.name}."""
    if not inspect.isclass(owner):
        return hasattr(owner, name)
    if any(name in vars(k) for k in owner.__mro__):
        return True
    spelled = name
    for k in owner.__mro__:
        mangled = f"_{k.__name__.lstrip('_')}__"
        if name.startswith(mangled):
            spelled = "__" + name[len(mangled) :]
    # self.name = ..., self.name: T = ..., or one target of a tuple assignment
    pattern = re.compile(r"\bself\." + re.escape(spelled) + r"\b(?:\s*:[^=\n]+)?\s*(?:=(?!=)|,[^\n=]*=(?!=))")
    for k in owner.__mro__:
        if k is object:
            continue
        try:
            source = inspect.getsource(k)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            return True
    return False

"""
What every converter of an Azure element shares: the state of one conversion
(sections by kind, by Azure name, the names taken), naming an element and
reading its references and typed values, NOT CONVERTED notes for what is
left unread, and finding the section a reference names.

The converters themselves live by area in
L{agwtx.tools.armimport.listeners}, L{agwtx.tools.armimport.backends} and
L{agwtx.tools.armimport.rules}, as mixins of L{_ConverterBase};
L{agwtx.tools.armimport.convert} puts them together.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agwtx.config.errors import InvalidValue
from agwtx.config.values import NAME_RE, parseProtocol
from agwtx.tools.armimport.evaluate import ArmEvaluator, _isOpaque, _Literal, _SENTINEL_RE, _why
from agwtx.tools.armimport.read import FoundGateway, _get, _isEmpty, _View
from agwtx.tools.armimport.sections import (
    Part,
    _BACKREFS,
    _ELEMENT_METADATA,
    _ELEMENT_NOT_CONVERTED,
    _Item,
    _Ref,
    _brief,
    _iniProblem,
    _sanitise,
    _unique,
)


SECTION_ORDER = (
    "frontendPort",
    "sslCertificate",
    "trustedRootCertificate",
    "trustedClientCertificate",
    "sslProfile",
    "httpListener",
    "backendAddressPool",
    "probe",
    "backendHttpSettings",
    "loadDistributionPolicy",
    "redirectConfiguration",
    "rewriteRuleSet",
    "urlPathMap",
    "requestRoutingRule",
)


class _ConverterBase:
    """
    The state of one conversion (the sections made so far, by kind and by
    Azure name) and what every section converter uses.  A section of kind
    C{KIND} is converted by the method C{_KIND}, which the area mixins add
    (see L{agwtx.tools.armimport.convert._Converter}).
    """

    def __init__(self, gateway: FoundGateway, evaluator: ArmEvaluator | _Literal, tlsDir: str) -> None:
        self.gateway = gateway
        self.evaluator = evaluator
        self.tlsBase = tlsDir.rstrip("/") + "/"
        self.top: list[str] = []
        self.items: dict[str, list[_Item]] = {kind: [] for kind in SECTION_ORDER}
        self.byAzure: dict[str, dict[str, _Item]] = {kind: {} for kind in SECTION_ORDER}
        self.taken: dict[str, set[str]] = {kind: set() for kind in SECTION_ORDER}
        self.gatewayItem = _Item("gateway", "gateway", "gateway")
        """The C{[gateway]} keys converted from gateway-level properties (the SSL policy)."""

    # -- names and references ----------------------------------------------

    def nameOf(self, value: Any) -> tuple[str | None, str | None]:
        """
        The name a reference or name value stands for: its last path segment.
        The second item is a note when the name was guessed.  (Debris after
        an id, like the C{')]} in Azure's own snippets, is dealt with when
        the reference is looked up: see L{lookup}.)
        """
        if isinstance(value, dict):
            value = _get(value, "id")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return None, None
        note: str | None = None
        segments: list[list[tuple[bool, str]]] = [[]]
        pos = 0

        def literal(text: str) -> None:
            pieces = text.split("/")
            segments[-1].append((False, pieces[0]))
            for piece in pieces[1:]:
                segments.append([(False, piece)])

        for match in _SENTINEL_RE.finditer(value):
            literal(value[pos : match.start()])
            segments[-1].append((True, match.group(1)))
            pos = match.end()
        literal(value[pos:])

        def meaningful(segment: list[tuple[bool, str]]) -> bool:
            return any(opaque or text.strip("'\")]} ") for opaque, text in segment)

        while len(segments) > 1 and not meaningful(segments[-1]):
            segments.pop()
        out: list[str] = []
        for opaque, text in segments[-1]:
            if not opaque:
                out.append(text)
                continue
            kind, what, reason = json.loads(text)
            if kind == "param":
                out.append(what)
                note = f"the name stands in for parameter '{what}': {reason}"
            elif kind == "expr":
                quoted = re.findall(r"'((?:[^']|'')*)'", what)
                guess = ""
                for candidate in reversed(quoted):
                    tail = [s for s in candidate.replace("''", "'").split("/") if s.strip()]
                    if tail:
                        guess = tail[-1]
                        break
                out.append(guess)
                note = f"{reason}; the name was taken from its last quoted string"
            else:
                out.append(re.sub(r"\W+", "", what.split("(")[0]))
                note = f"the name depends on {what}, {reason}"
        name = "".join(out).strip()
        return (name or None), note

    def ref(self, item: _Item, view: _View, key: str, kind: str) -> _Ref | None:
        """A reference property as a L{_Ref}, or None when absent (noted when unusable)."""
        value = view.get(key)
        if _isEmpty(value):
            return None
        name, note = self.nameOf(value)
        if name is None:
            item.notConverted(key, f"cannot read a reference from {_brief(value)}")
            return None
        if note:
            item.comment(f"{key}: {note}")
        return _Ref(kind, name)

    def refList(self, item: _Item, values: list[Any], key: str, kind: str) -> list[Part]:
        """A list of references as comma-separated L{_Ref} parts (unusable ones noted)."""
        refs: list[Part] = []
        for value in values:
            name, note = self.nameOf(value)
            if name is None:
                item.notConverted(f"{key}: {_brief(value)}", "not a reference")
                continue
            if note:
                item.comment(f"{key}: {note}")
            if refs:
                refs.append(", ")
            refs.append(_Ref(kind, name))
        return refs

    def newItem(self, kind: str, element: Any, index: int) -> tuple[_Item, _View] | None:
        """Name an element of a collection and give its properties as a L{_View}."""
        if not isinstance(element, dict):
            self.top.append(f"NOT CONVERTED: {kind} #{index + 1}: expected an object, got {_brief(element)}")
            return None
        props = _get(element, "properties")
        if isinstance(props, dict):
            merged = {k: v for k, v in element.items() if k.lower() != "properties"}
            merged.update(props)
            view = _View(merged)
        else:
            view = _View(element)
        rawName = _get(element, "name")
        azure, note = self.nameOf(rawName)
        if azure is None:
            azure = f"{kind}{index + 1}"
            note = "the input gives no name"
        candidate = _sanitise(azure, NAME_RE, "A-Za-z0-9_.-")
        name = _unique(candidate, self.taken[kind])
        item = _Item(kind, azure, name)
        if note:
            item.comment(f"name: {note}")
        if name != azure:
            why = (
                "is used twice"
                if candidate == azure
                else "is not a valid agw name (1..80 of A-Z a-z 0-9 _ . -)"
            )
            item.comment(f"Azure name {azure!r} {why}: renamed to {name!r}")
        self.byAzure[kind].setdefault(azure.lower(), item)
        self.items[kind].append(item)
        return item, view

    # -- typed values --------------------------------------------------------

    def value(self, item: _Item, view: _View, key: str, label: str | None = None) -> Any:
        """The property, or None (with a NOT CONVERTED note) when it is unresolved."""
        value = view.get(key)
        if _isOpaque(value):
            item.notConverted(f"{label or key} = {_brief(value)}", _why(value))
            return None
        return value

    def text(self, item: _Item, view: _View, key: str, label: str | None = None) -> str | None:
        """A string an INI value can hold, or None (noted unless absent)."""
        value = self.value(item, view, key, label)
        if _isEmpty(value):
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            item.notConverted(f"{label or key} = {_brief(value)}", "expected a string")
            return None
        return self.checked(item, label or key, str(value))

    def checked(self, item: _Item, label: str, text: str) -> str | None:
        """C{text} if an INI value can hold it; else None, noted."""
        problem = _iniProblem(text)
        if problem is not None:
            item.notConverted(f"{label} = {_brief(text)}", problem)
            return None
        return text

    def number(
        self, item: _Item, view: _View, key: str, lo: int, hi: int, label: str | None = None
    ) -> int | None:
        """A whole number in C{lo..hi}, or None (noted unless absent)."""
        value = self.value(item, view, key, label)
        if value is None or value == "":
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value)
        ):
            number = int(value)
        else:
            item.notConverted(f"{label or key} = {_brief(value)}", "expected a whole number")
            return None
        if not lo <= number <= hi:
            item.notConverted(f"{label or key} = {number}", f"expected {lo}..{hi}")
            return None
        return number

    def flag(self, item: _Item, view: _View, key: str, label: str | None = None) -> bool | None:
        """A boolean (true/false, Enabled/Disabled), or None (noted unless absent)."""
        value = self.value(item, view, key, label)
        if value is None or value == "":
            return None
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in (
            "true",
            "enabled",
            "false",
            "disabled",
        ):
            return value.strip().lower() in ("true", "enabled")
        item.notConverted(f"{label or key} = {_brief(value)}", "expected true or false")
        return None

    def protocol(self, item: _Item, view: _View, key: str = "protocol") -> str | None:
        """Http or Https; anything else makes the section unconvertible."""
        value = self.text(item, view, key)
        if value is None:
            return None
        try:
            return parseProtocol(value)
        except InvalidValue:
            item.fail(f"protocol {value}: agw speaks Http and Https only")
            return None

    def hostOrPick(self, item: _Item, view: _View, hostKey: str, pickKey: str) -> tuple[bool, str | None]:
        """C{pickKey = true}, else C{hostKey}: the host name is one or the other."""
        pick = self.flag(item, view, pickKey)
        host = self.text(item, view, hostKey)
        if pick:
            item.add(pickKey, "true")
            if host:
                item.comment(f"{hostKey} {host} ignored: {pickKey} is true")
        elif host:
            item.add(hostKey, host.lower())
        return bool(pick), host

    def leftovers(self, item: _Item, view: _View, label: str = "") -> None:
        """Note every property this converter did not read (of C{label}, a part of the section)."""
        skip = _ELEMENT_METADATA | _BACKREFS[item.kind]
        for key, value in view.leftovers():
            lowered = key.lower()
            if lowered in skip or _isEmpty(value) or value is False:
                continue
            if lowered == "minservers" and value == 0:
                continue
            why = _ELEMENT_NOT_CONVERTED.get(lowered, "agw has no equivalent")
            item.notConverted(f"{label}{key} = {_brief(value)}", why)

    # -- finding sections ------------------------------------------------------

    def lookup(self, kind: str, azure: str) -> _Item | None:
        """
        The section a reference names: by its name, else by the name without
        trailing quote and bracket debris (C{appGatewayHttpListener')]}).
        """
        names = self.byAzure[kind]
        item = names.get(azure.lower())
        if item is None:
            item = names.get(azure.rstrip("'\")]} ").lstrip("'\"[ ").lower())
        return item

"""
Reading the input: JSON (strict, then lenient), case-insensitive access,
and finding the application gateway in an ARM template or az CLI output.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any


GATEWAY_TYPE = "microsoft.network/applicationgateways"
DEPLOYMENT_TYPE = "microsoft.resources/deployments"


class ArmImportError(Exception):
    """The input cannot be imported at all; the text says why, for a person."""


# ---------------------------------------------------------------------------
# Reading JSON (strict, then leniently: ARM templates may have comments, and
# snippets copied from documentation often have trailing commas)
# ---------------------------------------------------------------------------


def _scanJson(text: str, dropComments: bool, dropTrailingCommas: bool) -> str:
    """Remove comments and/or trailing commas outside JSON strings."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
            continue
        if dropComments and text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if dropComments and text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
            continue
        if dropTrailingCommas and c == ",":
            j = i + 1
            while j < n and text[j].isspace():
                j += 1
            if j < n and text[j] in "}]":
                i += 1
                continue
        out.append(c)
        i += 1
    return "".join(out)


def loadJson(text: str) -> tuple[Any, bool]:
    """
    Parse C{text} as JSON.  When it is not strict JSON, try again without
    C{//} and C{/* */} comments and trailing commas (both common in ARM
    templates and documentation snippets).

    @return: the data, and whether the lenient reading was needed.
    @raise ArmImportError: when the text is not JSON even so.
    """
    text = text.lstrip("\ufeff")
    try:
        return json.loads(text), False
    except json.JSONDecodeError as strict:
        relaxed = _scanJson(_scanJson(text, True, False), False, True)
        if relaxed != text:
            try:
                return json.loads(relaxed), True
            except json.JSONDecodeError:
                pass
        raise ArmImportError(
            f"not valid JSON: {strict.msg} at line {strict.lineno} column {strict.colno}"
        ) from None


# ---------------------------------------------------------------------------
# Case-insensitive access (Azure's own examples write "Id", "Protocol", ...)
# ---------------------------------------------------------------------------


def _get(obj: Any, key: str) -> Any:
    """C{obj[key]} for a dict, matching the key case-insensitively; else None."""
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    lowered = key.lower()
    for k, v in obj.items():
        if isinstance(k, str) and k.lower() == lowered:
            return v
    return None


class _View:
    """A dict whose keys are read case-insensitively and remembered, to list the rest."""

    def __init__(self, data: dict[str, Any], used: set[str] | None = None) -> None:
        self.data = data
        self.used: set[str] = used if used is not None else set()

    def get(self, key: str) -> Any:
        self.used.add(key.lower())
        return _get(self.data, key)

    def leftovers(self) -> list[tuple[str, Any]]:
        """Keys never read, with their values, in input order."""
        return [(k, v) for k, v in self.data.items() if k.lower() not in self.used]


def _isEmpty(value: Any) -> bool:
    """None, an empty string, list or object: nothing to convert."""
    return value is None or value == "" or value == [] or value == {}


# ---------------------------------------------------------------------------
# Finding the gateway
# ---------------------------------------------------------------------------


@dataclass
class FoundGateway:
    """One application gateway in the input."""

    name: str
    outer: dict[str, Any]
    """The resource object (for az CLI output: the whole flattened object)."""
    props: dict[str, Any]
    """Its properties (the same object as C{outer} when flattened)."""
    template: dict[str, Any] | None
    """The ARM template whose parameters and variables are in scope, or None."""
    where: str
    """Where it was found, for messages: C{resources[1]}, C{the az CLI object}, ..."""


def _resources(template: dict[str, Any]) -> list[tuple[str, Any]]:
    """A template's resources with where each is (a list, or Bicep's object)."""
    resources = _get(template, "resources")
    if isinstance(resources, list):
        return [(f"resources[{i}]", r) for i, r in enumerate(resources)]
    if isinstance(resources, dict):  # Bicep symbolic names (languageVersion 2.0)
        return [(f"resources.{k}", r) for k, r in resources.items()]
    return []


def _templateGateways(template: dict[str, Any], prefix: str) -> Iterator[FoundGateway]:
    """Gateways in a template, including nested deployment templates."""
    for where, resource in _resources(template):
        if not isinstance(resource, dict):
            continue
        type_ = _get(resource, "type")
        if not isinstance(type_, str):
            continue
        if type_.lower() == GATEWAY_TYPE:
            props = _get(resource, "properties")
            yield FoundGateway(
                name=str(_get(resource, "name") or "?"),
                outer=resource,
                props=props if isinstance(props, dict) else {},
                template=template,
                where=prefix + where,
            )
        elif type_.lower() == DEPLOYMENT_TYPE:
            nested = _get(_get(resource, "properties"), "template")
            if isinstance(nested, dict):
                yield from _templateGateways(nested, f"{prefix}{where}.properties.template.")


def _looksLikeGateway(obj: dict[str, Any]) -> bool:
    """Whether an object is an application gateway as the az CLI or REST API returns it."""
    type_ = _get(obj, "type")
    if isinstance(type_, str):
        return type_.lower() == GATEWAY_TYPE
    props = _get(obj, "properties")
    for candidate in (props, obj):
        if isinstance(candidate, dict) and any(
            _get(candidate, key) is not None
            for key in ("httpListeners", "requestRoutingRules", "backendAddressPools")
        ):
            return True
    return False


def findGateways(data: Any) -> list[FoundGateway]:
    """Every application gateway in an ARM template or az CLI / REST output."""
    if isinstance(data, list):
        found: list[FoundGateway] = []
        for i, item in enumerate(data):
            if isinstance(item, dict) and _looksLikeGateway(item):
                found.extend(_atIndex(g, i) for g in findGateways(item))
        return found
    if not isinstance(data, dict):
        return []
    if _get(data, "resources") is not None and not _looksLikeGateway(data):
        return list(_templateGateways(data, ""))
    if _looksLikeGateway(data):
        props = _get(data, "properties")
        if isinstance(props, dict):
            where = "the object's properties"
        else:
            props, where = data, "the az CLI object"
        return [
            FoundGateway(
                name=str(_get(data, "name") or "?"),
                outer=data,
                props=props,
                template=None,
                where=where,
            )
        ]
    return []


def _atIndex(gateway: FoundGateway, index: int) -> FoundGateway:
    """The same gateway, found in item C{index} of a list."""
    return replace(gateway, where=f"[{index}] {gateway.where}")

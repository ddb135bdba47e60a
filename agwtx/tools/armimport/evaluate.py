"""
Evaluating ARM template expressions as far as they can be without a
deployment; what cannot be evaluated becomes an opaque, readable value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any


from agwtx.tools.armimport.read import _get, _isEmpty

# ---------------------------------------------------------------------------
# Unresolved values: a sentinel embedded in strings, so that concatenation
# keeps whatever is known (the last path segment of an id, typically)
# ---------------------------------------------------------------------------

_SENTINEL_RE = re.compile("\x00([^\x00]*)\x00")


def _opaque(kind: str, text: str, reason: str) -> str:
    """
    A stand-in for a value that is not known.  C{kind} is C{param} (C{text}
    is the parameter's name), C{deploy} (known only at deployment; C{text}
    names the function) or C{expr} (C{text} is an expression that could not
    be evaluated).
    """
    return "\x00" + json.dumps([kind, text, reason]) + "\x00"


def _opaqueParts(text: str) -> list[tuple[str, str, str]]:
    """The (kind, text, reason) of each unresolved part embedded in C{text}."""
    parts: list[tuple[str, str, str]] = []
    for match in _SENTINEL_RE.finditer(text):
        kind, what, reason = json.loads(match.group(1))
        parts.append((str(kind), str(what), str(reason)))
    return parts


def _isOpaque(value: Any) -> bool:
    """Whether C{value} (or anything inside it) holds an unresolved part."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_isOpaque(v) for v in value)
    if isinstance(value, dict):
        return any(_isOpaque(v) for v in value.values())
    return False


def _firstOpaque(value: Any) -> tuple[str, str, str] | None:
    """The first unresolved part inside C{value}, if any."""
    if isinstance(value, str):
        parts = _opaqueParts(value)
        return parts[0] if parts else None
    if isinstance(value, list):
        items: Iterable[Any] = value
    elif isinstance(value, dict):
        items = value.values()
    else:
        return None
    for item in items:
        found = _firstOpaque(item)
        if found is not None:
            return found
    return None


def _readable(text: str) -> str:
    """The text with each unresolved part written the way ARM writes it."""

    def show(match: re.Match[str]) -> str:
        kind, what, _ = _opaqueParts(match.group(0))[0]
        if kind == "param":
            return f"[parameters('{what}')]"
        if kind == "expr":
            return what
        return f"[{what}]"

    return _SENTINEL_RE.sub(show, text)


def _why(value: Any) -> str:
    """Why C{value} is unresolved, for a NOT CONVERTED comment."""
    found = _firstOpaque(value)
    return found[2] if found is not None else "unknown value"


def _deepReadable(value: Any) -> Any:
    """L{_readable} applied to every string in a JSON value."""
    if isinstance(value, str):
        return _readable(value)
    if isinstance(value, list):
        return [_deepReadable(v) for v in value]
    if isinstance(value, dict):
        return {k: _deepReadable(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------
# ARM template expressions
# ---------------------------------------------------------------------------


class _ArmError(Exception):
    """An expression cannot be evaluated; the text says why."""


_TOKEN_RE = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?[0-9]+(?:\.[0-9]+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)|(?P<punct>[()\[\],.]))"
)

_Node = tuple[Any, ...]


def _tokenize(text: str) -> list[tuple[str, Any]]:
    """Split an ARM expression (without its brackets) into tokens."""
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN_RE.match(text, pos)
        if match is None or match.end() == pos:
            raise _ArmError(f"cannot parse the expression at {text[pos : pos + 20]!r}")
        kind = match.lastgroup
        assert kind is not None
        value = match.group(kind)
        if kind == "str":
            tokens.append(("str", value[1:-1].replace("''", "'")))
        elif kind == "num":
            tokens.append(("num", float(value) if "." in value else int(value)))
        else:
            tokens.append((kind, value))
        pos = match.end()
    return tokens


class _ExprParser:
    """Recursive descent over ARM's expression grammar (calls, literals, .prop, [index])."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        token = self.peek()
        if token is None:
            raise _ArmError("the expression ends too early")
        self.pos += 1
        return token

    def expect(self, punct: str) -> None:
        token = self.take()
        if token != ("punct", punct):
            raise _ArmError(f"expected {punct!r}, got {token[1]!r}")

    def parse(self) -> _Node:
        node = self.expr()
        if self.peek() is not None:
            raise _ArmError(f"unexpected {self.peek()[1]!r}")  # type: ignore[index]
        return node

    def expr(self) -> _Node:
        kind, value = self.take()
        node: _Node
        if kind in ("str", "num"):
            node = ("lit", value)
        elif kind == "name":
            if self.peek() == ("punct", "("):
                self.take()
                args: list[_Node] = []
                if self.peek() != ("punct", ")"):
                    while True:
                        args.append(self.expr())
                        if self.peek() == ("punct", ","):
                            self.take()
                            continue
                        break
                self.expect(")")
                node = ("call", value.lower(), args)
            elif value.lower() in ("true", "false", "null"):
                node = ("lit", {"true": True, "false": False, "null": None}[value.lower()])
            else:
                raise _ArmError(f"unexpected name {value!r}")
        else:
            raise _ArmError(f"unexpected {value!r}")
        while True:
            token = self.peek()
            if token == ("punct", "."):
                self.take()
                kind, name = self.take()
                if kind != "name":
                    raise _ArmError(f"expected a property name after '.', got {name!r}")
                for part in name.split("."):
                    node = ("prop", node, part)
            elif token == ("punct", "["):
                self.take()
                index = self.expr()
                self.expect("]")
                node = ("index", node, index)
            else:
                return node


_RESOURCE_TYPE_RE = re.compile(r"[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)+/[A-Za-z0-9]+(?:/[A-Za-z0-9]+)*")

_DEPLOY_TIME = frozenset(
    {
        "deployment",
        "environment",
        "guid",
        "list",
        "listkeys",
        "listsecrets",
        "managementgroup",
        "newguid",
        "pickzones",
        "reference",
        "tenant",
        "uniquestring",
        "utcnow",
    }
)


def _needConcrete(value: Any) -> Any:
    """C{value}, or L{_ArmError} when a function needs it known and it is not."""
    if _isOpaque(value):
        raise _ArmError(_why(value))
    return value


def _asText(value: Any) -> str:
    """A value as ARM's string() writes it."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, separators=(",", ":"))


def _mapLiteral(text: str, fn: Callable[[str], str]) -> str:
    """Apply C{fn} to the known parts of C{text}, leaving unresolved parts alone."""
    out: list[str] = []
    pos = 0
    for match in _SENTINEL_RE.finditer(text):
        out.append(fn(text[pos : match.start()]))
        out.append(match.group(0))
        pos = match.end()
    out.append(fn(text[pos:]))
    return "".join(out)


class ArmEvaluator:
    """
    Evaluates the ARM template expressions found in a JSON tree, in the scope
    of one template (its parameters and variables).
    """

    def __init__(self, template: Mapping[str, Any], supplied: Mapping[str, Any]) -> None:
        params = _get(template, "parameters")
        variables = _get(template, "variables")
        self.parameters: dict[str, Any] = (
            {k.lower(): v for k, v in params.items()} if isinstance(params, dict) else {}
        )
        self.variables: dict[str, Any] = (
            {k.lower(): v for k, v in variables.items()} if isinstance(variables, dict) else {}
        )
        self.supplied = {k.lower(): v for k, v in supplied.items()}
        self.cache: dict[tuple[str, str], Any] = {}
        self.active: set[tuple[str, str]] = set()

    # -- trees and strings --------------------------------------------------

    def deep(self, value: Any) -> Any:
        """A copy of C{value} with every expression string evaluated."""
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, list):
            return [self.deep(v) for v in value]
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        return value

    def string(self, text: str) -> Any:
        """Evaluate C{[expression]}; other strings (and C{[[...}) are literal."""
        stripped = text.strip()
        if not (stripped.startswith("[") and stripped.endswith("]")):
            return text
        if stripped.startswith("[["):
            return stripped[1:]
        try:
            return self.evaluate(_ExprParser(stripped[1:-1]).parse())
        except _ArmError as e:
            return _opaque("expr", stripped, f"cannot evaluate {stripped}: {e}")
        except RecursionError:
            return _opaque("expr", stripped, f"cannot evaluate {stripped}: nested too deeply")

    # -- evaluation ----------------------------------------------------------

    def evaluate(self, node: _Node) -> Any:
        """Evaluate a parsed expression."""
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "prop":
            return self.member(self.evaluate(node[1]), node[2])
        if kind == "index":
            return self.member(self.evaluate(node[1]), self.evaluate(node[2]))
        name: str = node[1]
        argNodes: list[_Node] = node[2]
        if name == "if":
            if len(argNodes) != 3:
                raise _ArmError("if() takes 3 arguments")
            condition = _needConcrete(self.evaluate(argNodes[0]))
            return self.evaluate(argNodes[1] if condition else argNodes[2])
        args = [self.evaluate(a) for a in argNodes]
        return self.call(name, args)

    def member(self, value: Any, key: Any) -> Any:
        """C{value.key} or C{value[key]}."""
        if isinstance(value, str) and _isOpaque(value):
            found = _firstOpaque(value)
            assert found is not None
            kind, what, reason = found
            return _opaque(kind, f"{what}.{key}" if kind != "expr" else what, reason)
        if isinstance(value, dict) and isinstance(key, str):
            found = _get(value, key)
            if found is None and not any(k.lower() == key.lower() for k in value):
                raise _ArmError(f"no property {key!r}")
            return found
        if isinstance(value, list) and isinstance(key, int) and not isinstance(key, bool):
            if not -len(value) <= key < len(value):
                raise _ArmError(f"index {key} is out of range")
            return value[key]
        raise _ArmError(f"cannot take {key!r} of {_asText(value)[:40]!r}")

    def parameter(self, name: str) -> Any:
        """C{parameters(name)}: a supplied value, else the defaultValue, else unresolved."""
        lowered = name.lower()
        if lowered in self.supplied:
            value = self.supplied[lowered]
            if isinstance(value, dict) and "reference" in value and "value" not in value:
                return _opaque("param", name, f"parameter '{name}' is a Key Vault reference")
            return self.deep(value)
        declared = self.parameters.get(lowered)
        if declared is None:
            raise _ArmError(f"parameter {name!r} is not declared")
        if not isinstance(declared, dict) or "defaultValue" not in declared:
            return _opaque("param", name, f"parameter '{name}' has no defaultValue (pass --parameters FILE)")
        return self.scoped(("p", lowered), lambda: self.deep(declared["defaultValue"]))

    def variable(self, name: str) -> Any:
        """C{variables(name)}, evaluated once."""
        lowered = name.lower()
        if lowered not in self.variables:
            raise _ArmError(f"variable {name!r} is not declared")
        value = self.variables[lowered]
        if lowered == "copy" or (isinstance(value, dict) and _get(value, "copy") is not None):
            raise _ArmError(f"variable {name!r} uses a copy loop, which is not evaluated")
        return self.scoped(("v", lowered), lambda: self.deep(value))

    def scoped(self, key: tuple[str, str], compute: Callable[[], Any]) -> Any:
        """Compute a parameter default or variable once, refusing cycles."""
        if key in self.cache:
            return self.cache[key]
        if key in self.active:
            raise _ArmError(f"{key[1]!r} refers to itself")
        self.active.add(key)
        try:
            value = compute()
        finally:
            self.active.discard(key)
        self.cache[key] = value
        return value

    def call(self, name: str, args: list[Any]) -> Any:
        """One ARM function; C{args} are evaluated (C{if} is handled lazily by L{evaluate})."""

        def text(i: int) -> str:
            if i >= len(args):
                raise _ArmError(f"{name}() needs more arguments")
            return _asText(args[i])

        def concrete(i: int) -> Any:
            if i >= len(args):
                raise _ArmError(f"{name}() needs more arguments")
            return _needConcrete(args[i])

        if name == "parameters":
            return self.parameter(_needConcrete(text(0)))
        if name == "variables":
            return self.variable(_needConcrete(text(0)))
        if name == "concat":
            if args and all(isinstance(a, list) for a in args):
                return [item for a in args for item in a]
            return "".join(_asText(a) for a in args)
        if name == "format":
            fmt = _needConcrete(text(0))
            rest = args[1:]

            def sub(m: re.Match[str]) -> str:
                index = int(m.group(1))
                if index >= len(rest):
                    raise _ArmError(f"format() has no argument {index}")
                return _asText(rest[index])

            return re.sub(r"\{([0-9]+)(?::[^}]*)?\}", sub, fmt)
        if name == "resourceid":
            return self.resourceId([_asText(a) for a in args])
        if name == "subscription":
            return {
                key: _opaque("deploy", f"subscription().{key}", "known only at deployment")
                for key in ("id", "subscriptionId", "tenantId", "displayName")
            }
        if name == "resourcegroup":
            return {
                key: _opaque("deploy", f"resourceGroup().{key}", "known only at deployment")
                for key in ("id", "name", "location", "type", "managedBy", "tags", "properties")
            }
        if name in _DEPLOY_TIME:
            return _opaque("deploy", f"{name}()", f"{name}() is known only at deployment")
        if name in ("tolower", "toupper", "trim"):
            functions: dict[str, Callable[[str], str]] = {
                "tolower": str.lower,
                "toupper": str.upper,
                "trim": str.strip,
            }
            return _mapLiteral(text(0), functions[name])
        if name == "string":
            return text(0)
        if name == "int":
            value = concrete(0)
            try:
                return int(value)
            except (TypeError, ValueError):
                raise _ArmError(f"int() of {value!r}") from None
        if name == "bool":
            value = concrete(0)
            if isinstance(value, str):
                return value.strip().lower() == "true"
            return bool(value)
        if name == "equals":
            return concrete(0) == concrete(1)
        if name == "not":
            return not concrete(0)
        if name == "and":
            return all(_needConcrete(a) for a in args)
        if name == "or":
            return any(_needConcrete(a) for a in args)
        if name == "empty":
            return _isEmpty(concrete(0))
        if name == "length":
            return len(concrete(0))
        if name == "createarray":
            return list(args)
        if name == "createobject":
            return {_asText(args[i]): args[i + 1] for i in range(0, len(args) - 1, 2)}
        if name == "json":
            try:
                return json.loads(_needConcrete(text(0)))
            except json.JSONDecodeError as e:
                raise _ArmError(f"json(): {e.msg}") from None
        if name == "replace":
            old, new = _needConcrete(text(1)), _needConcrete(text(2))
            return _mapLiteral(text(0), lambda s: s.replace(old, new))
        if name == "split":
            return _needConcrete(text(0)).split(_needConcrete(text(1)))
        if name in ("first", "last"):
            value = concrete(0)
            if not value:
                raise _ArmError(f"{name}() of an empty value")
            return value[0] if name == "first" else value[-1]
        if name == "contains":
            container, item = concrete(0), concrete(1)
            if isinstance(container, dict):
                return any(k.lower() == str(item).lower() for k in container)
            return item in container
        if name == "coalesce":
            for a in args:
                if a is not None:
                    return a
            return None
        if name in ("add", "sub", "mul", "div", "mod"):
            a, b = concrete(0), concrete(1)
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (a, b)):
                raise _ArmError(f"{name}() needs integers")
            if name in ("div", "mod") and b == 0:
                raise _ArmError(f"{name}() by zero")
            if name == "add":
                return a + b
            if name == "sub":
                return a - b
            if name == "mul":
                return a * b
            return int(a / b) if name == "div" else a % b
        if name in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[name]
        raise _ArmError(f"the function {name}() is not supported")

    def resourceId(self, args: list[str]) -> str:
        """
        C{resourceId([subscriptionId,] [resourceGroupName,] type, name1, ...)}
        as a C{/subscriptions/...} id (subscription and group unresolved unless given).
        """
        for index, arg in enumerate(args):  # noqa: B007 (index is used after the loop)
            if _RESOURCE_TYPE_RE.fullmatch(arg):
                break
        else:
            raise _ArmError("resourceId() without a resource type")
        prefix, names = args[:index], args[index + 1 :]
        namespace, *types = args[index].split("/")
        subscription = (
            prefix[-2]
            if len(prefix) >= 2
            else _opaque("deploy", "subscription().subscriptionId", "known only at deployment")
        )
        group = (
            prefix[-1] if prefix else _opaque("deploy", "resourceGroup().name", "known only at deployment")
        )
        path = f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{namespace}"
        for i, type_ in enumerate(types):
            path += f"/{type_}/{names[i] if i < len(names) else ''}"
        return path


class _Literal:
    """Stands in for L{ArmEvaluator} where the input has no expressions (az CLI output)."""

    def deep(self, value: Any) -> Any:
        return value

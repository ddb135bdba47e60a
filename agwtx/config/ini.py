"""
Reading the INI file: configparser for the values, agw's own scan for line
numbers and continuation lines, and the per-section bookkeeping that
collects errors with file, line, section and key.
"""

from __future__ import annotations

from typing import TypeVar

import configparser
import io
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field


from agwtx.config.keys import _KINDS
from agwtx.config.errors import ConfigError, InvalidValue
from agwtx.config.values import _got

T = TypeVar("T")


# ---------------------------------------------------------------------------
# Reading the file: configparser for values, our own scan for line numbers
# ---------------------------------------------------------------------------

_NO_DEFAULT_SECTION = "\x00agw: no DEFAULT section"


def _newParser(strict: bool) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None,
        strict=strict,
        inline_comment_prefixes=(";", "#"),
        # [DEFAULT] would silently add its keys to every section; make it an
        # ordinary (unknown) section instead.
        default_section=_NO_DEFAULT_SECTION,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    return parser


@dataclass
class _Scan:
    """Line numbers and structural errors, found by mirroring configparser's reader."""

    headerLines: dict[str, list[int]] = field(default_factory=dict)
    keyLines: dict[tuple[str, str], int] = field(default_factory=dict)
    errors: list[tuple[int, str]] = field(default_factory=list)
    fatal: bool = False


def _scan(text: str, path: str) -> _Scan:
    """
    Walk the text the way C{RawConfigParser._read} does (comments, indented
    continuation lines, section and option patterns) to learn where each
    section and key is, which configparser does not keep.
    """
    scan = _Scan()
    section: str | None = None
    keysHere: dict[str, int] = {}
    inValue = False
    indentLevel = 0
    for lineno, line in enumerate(io.StringIO(text), start=1):
        # Comment stripping exactly as configparser does it (prefix by prefix,
        # round by round), so both agree on what each line holds.
        commentStart = sys.maxsize
        inline = {prefix: -1 for prefix in (";", "#")}
        while commentStart == sys.maxsize and inline:
            following: dict[str, int] = {}
            for prefix, index in inline.items():
                index = line.find(prefix, index + 1)
                if index == -1:
                    continue
                following[prefix] = index
                if index == 0 or line[index - 1].isspace():
                    commentStart = min(commentStart, index)
            inline = following
        if line.strip().startswith(("#", ";")):
            commentStart = 0
        value = line[:commentStart].strip()
        if not value:
            continue
        nonspace = re.search(r"\S", line)
        indent = nonspace.start() if nonspace else 0
        if section is not None and inValue and indent > indentLevel:
            continue
        indentLevel = indent
        header = configparser.RawConfigParser.SECTCRE.match(value)
        if header is not None:
            section = header.group("header")
            scan.headerLines.setdefault(section, []).append(lineno)
            keysHere = {}
            inValue = False
            trailing = value[header.end() :].strip()
            if trailing:
                scan.errors.append(
                    (
                        lineno,
                        f"{path}:{lineno}: unexpected text after the section header: {trailing!r}",
                    )
                )
            continue
        if section is None:
            scan.errors.append(
                (
                    lineno,
                    f"{path}:{lineno}: expected a [section] header before the first key, got {line.strip()!r}",
                )
            )
            scan.fatal = True
            return scan
        option = configparser.RawConfigParser.OPTCRE.match(value)
        if option is None or not option.group("option").rstrip():
            # configparser keeps the previous key open after a bad line
            scan.errors.append((lineno, f"{path}:{lineno}: expected 'key = value', got {line.strip()!r}"))
            if option is not None:
                inValue = False
            continue
        key = option.group("option").rstrip()
        first = keysHere.get(key.lower())
        if first is not None:
            scan.errors.append(
                (
                    lineno,
                    f"{path}:{lineno}: [{section}] {key}: duplicate key (first defined at {path}:{first})",
                )
            )
        else:
            keysHere[key.lower()] = lineno
        scan.keyLines[(section, key)] = lineno
        inValue = True
    return scan


@dataclass
class _Entry:
    key: str
    """As written."""
    value: str
    line: int


class _Errors:
    """Collects (line, message) pairs; sorted into file order at the end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.items: list[tuple[float, int, str]] = []

    def add(self, line: int | None, where: str | None, message: str) -> None:
        if line is None:
            text = f"{self.path}: {message}"
        elif where is None:
            text = f"{self.path}:{line}: {message}"
        else:
            text = f"{self.path}:{line}: {where}: {message}"
        self.items.append((math.inf if line is None else line, len(self.items), text))

    def addRaw(self, line: int, text: str) -> None:
        self.items.append((line, len(self.items), text))

    def lines(self) -> list[str]:
        return [text for _, _, text in sorted(self.items)]


class _Section:
    """One section: its entries (first spelling of each key wins) and where it is."""

    def __init__(
        self,
        kind: str,
        name: str | None,
        header: str,
        line: int,
        entries: list[_Entry],
        errors: _Errors,
        baseDir: str,
    ) -> None:
        self.kind = kind
        self.name = name
        self.header = header
        self.line = line
        self.entries = entries
        self.byKey = {entry.key.lower(): entry for entry in reversed(entries)}
        self.errors = errors
        self.baseDir = baseDir
        self.failed = False

    def where(self, key: str | None = None) -> str:
        if key is None:
            return f"[{self.header}]"
        entry = self.byKey.get(key.lower())
        return f"[{self.header}] {entry.key if entry else key}"

    def lineOf(self, key: str | None) -> int:
        entry = self.byKey.get(key.lower()) if key else None
        return entry.line if entry else self.line

    def error(self, key: str | None, message: str) -> None:
        self.failed = True
        self.errors.add(self.lineOf(key), self.where(key), message)

    def raw(self, key: str) -> str | None:
        """The value, or None when the key is absent or empty."""
        entry = self.byKey.get(key.lower())
        if entry is None or entry.value == "":
            return None
        return entry.value

    def given(self, key: str) -> bool:
        return self.raw(key) is not None

    def get(self, key: str, parse: Callable[[str], T]) -> T | None:
        text = self.raw(key)
        if text is None:
            return None
        try:
            return parse(text)
        except InvalidValue as e:
            self.error(key, str(e))
            return None

    def require(self, key: str, parse: Callable[[str], T]) -> T | None:
        if not self.given(key):
            self.error(key, "required key is missing")
            return None
        return self.get(key, parse)

    def later(self, *keys: str) -> str:
        """Of C{keys}, the one written last (to blame for a conflict)."""
        return max(keys, key=self.lineOf)

    def path(self, key: str) -> str | None:
        """A readable file named by C{key}, resolved against the config's directory."""
        text = self.raw(key)
        if text is None:
            return None
        text = text.strip()
        resolved = os.path.abspath(os.path.join(self.baseDir, text))
        try:
            with open(resolved, "rb"):
                pass
        except OSError as e:
            shown = repr(text) if os.path.isabs(text) else f"{text!r} ({resolved})"
            self.error(key, f"cannot read {shown}: {e.strerror or e}")
            return None
        return resolved


# Keys whose value may go on over indented lines (comma lists).
_MULTILINE_KEYS = frozenset(
    {
        "backendaddresses",
        "hostnames",
        "trustedrootcertificates",
        "match.statuscodes",
        "trustedproxies",
        "affinitysecrets",
        "sslciphersuites",
        "trustedclientcertificates",
    }
)
# Only known kinds, so that an IPv6 list item such as [fd00::4] is not taken for one.
_LOOKS_LIKE_SECTION = re.compile(r"\[\s*(?:" + "|".join(_KINDS) + r")\s*(?::[^\]]*)?\]", re.IGNORECASE)
_LOOKS_LIKE_KEY = re.compile(r"[A-Za-z0-9_.-]+\s*=")


def _checkContinuation(sec: _Section, entry: _Entry) -> None:
    """
    An indented line continues the value above it (configparser's rule), which
    silently swallows an indented key or section header.  Say so, and keep
    the value as it was meant.
    """
    lines = entry.value.split("\n")
    if len(lines) == 1:
        return
    for index, line in enumerate(lines[1:], start=1):
        if _LOOKS_LIKE_SECTION.fullmatch(line) or _LOOKS_LIKE_KEY.match(line):
            sec.error(
                entry.key,
                f"the indented line {_got(line)} continues this value; "
                "unindent it to make it a line of its own",
            )
            entry.value = "\n".join(lines[:index]).rstrip()
            return
    multiline = entry.key.lower() in _MULTILINE_KEYS or entry.key.lower().startswith("pathrule.")
    if not multiline:
        sec.error(entry.key, f"expected a value on one line, got {_got(entry.value)}")
        entry.value = lines[0]


def _readText(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the configuration file: {e.strerror or e}"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: expected UTF-8 text: {e.reason}"]) from None


def _parse(text: str, path: str, scan: _Scan, errors: _Errors) -> configparser.ConfigParser | None:
    parser = _newParser(strict=True)
    try:
        parser.read_file(io.StringIO(text), source=path)
    except (configparser.DuplicateSectionError, configparser.DuplicateOptionError) as e:
        # The scan (keys) and loadConfig (sections) report every duplicate
        # with a clearer message; this is only a safety net.
        known = (
            len(scan.headerLines.get(e.section, [])) > 1
            if isinstance(e, configparser.DuplicateSectionError)
            else any(line == e.lineno for line, _ in scan.errors)
        )
        if not known:
            errors.addRaw(e.lineno or 0, f"{path}:{e.lineno}: {e.message}")
        parser = _newParser(strict=False)
        try:
            parser.read_file(io.StringIO(text), source=path)
        except configparser.ParsingError:
            pass  # reported by the scan, as below
    except configparser.MissingSectionHeaderError as e:
        if not scan.errors:
            errors.addRaw(e.lineno, f"{path}:{e.lineno}: {e.message}")
        return None
    except configparser.ParsingError as e:
        if not scan.errors:
            errors.addRaw(0, f"{path}: {e.message}")
    return parser

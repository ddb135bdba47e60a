"""The two errors of the configuration: a whole file (L{ConfigError}) and one value (L{InvalidValue})."""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(Exception):
    """
    The configuration cannot be used.

    C{errors} holds every problem found, one line each, in file order; the
    exception's text is those lines joined by newlines, ready to print.
    """

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors: list[str] = list(errors)
        super().__init__("\n".join(self.errors))

    def __str__(self) -> str:
        return "\n".join(self.errors)


class InvalidValue(ValueError):
    """
    Raised by the C{parse*} functions.  The text says what was expected and
    what was found (C{expected Http or Https, got 'Htp'}); L{loadConfig} puts
    the file, line, section and key in front of it.
    """

"""
Deprecated alias, kept for routing plugins written against the flat layout.

C{checkOptionKeys} and C{boolOption} are in L{agwtx.interfaces} now, with
the rest of the plugin API; import them from there.  Importing this module
warns (L{DeprecationWarning}).
"""

from __future__ import annotations

import warnings

from agwtx.interfaces import boolOption, checkOptionKeys

__all__ = ["boolOption", "checkOptionKeys"]

warnings.warn(
    "agwtx.plugin is deprecated: import checkOptionKeys and boolOption from agwtx.interfaces",
    DeprecationWarning,
    stacklevel=2,
)

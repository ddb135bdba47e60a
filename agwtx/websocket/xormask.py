"""
WebSocket (un)masking that PyPy's JIT runs fast, for an autobahn without
its native masker.

autobahn 26 masks through NVX, its own CFFI code, on CPython and PyPy
alike. Older releases (24.4 is the last for Python 3.9, so for Debian's
PyPy) fall back to a byte-at-a-time loop over C{array('B')}: about 5.4 ms
per MiB under PyPy here, which made 1 MiB WebSocket messages through the
gateway a quarter of nginx's rate. L{WordMasker} XORs eight bytes at a
time through a CFFI pointer into a bytearray, which the JIT compiles to a
plain machine loop: about 0.7 ms per MiB, copies included.

L{install} puts L{createMasker} in place of autobahn's C{create_xor_masker}
(autobahn's protocol module looks it up at each frame) only on PyPy with
no NVX; anywhere else it changes nothing and returns False. On CPython
the loop would be slower than autobahn's own code.
"""

from __future__ import annotations

import platform
from typing import Any

__all__ = ["WordMasker", "createMasker", "install", "maskWords"]

try:
    from autobahn.websocket import USES_NVX as _NVX
except ImportError:  # autobahn before 26
    _NVX = False

_ffi: Any = None


def _cffi() -> Any:
    global _ffi
    if _ffi is None:
        import cffi

        _ffi = cffi.FFI()
    return _ffi


def maskWords(mask: bytes, offset: int, data: bytes) -> bytes:
    """C{data} XORed with the 4-byte C{mask}, starting C{offset} bytes into it."""
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    n = len(data)
    buf = bytearray(data)
    words = n >> 3
    if words:
        ffi = _cffi()
        p = ffi.cast("int64_t *", ffi.from_buffer(buf))
        # Signed, so every value stays a machine integer in the JIT.
        m = int.from_bytes(mask * 2, "little", signed=True)
        for i in range(words):
            p[i] ^= m
    for i in range(words << 3, n):
        buf[i] ^= mask[i & 3]
    return bytes(buf)


class WordMasker:
    """autobahn's masker interface (C{pointer}, C{reset}, C{process})."""

    __slots__ = ("_mask", "_ptr")

    def __init__(self, mask: bytes) -> None:
        self._mask = bytes(mask)
        self._ptr = 0

    def pointer(self) -> int:
        return self._ptr

    def reset(self) -> None:
        self._ptr = 0

    def process(self, data: bytes) -> bytes:
        out = maskWords(self._mask, self._ptr, data)
        self._ptr += len(data)
        return out


def createMasker(mask: bytes, length: int | None = None) -> WordMasker:
    return WordMasker(mask)


def install() -> bool:
    """Use L{createMasker} for autobahn's masking, on PyPy without NVX only."""
    if _NVX or platform.python_implementation() != "PyPy":
        return False
    import autobahn.websocket.protocol as protocol

    if protocol.create_xor_masker is createMasker:
        return False
    protocol.create_xor_masker = createMasker  # type: ignore[attr-defined]
    return True

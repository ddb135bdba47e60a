"""
Frame-level constants and helpers of the relay: whether permessage-deflate
is negotiated here (L{DEFLATE}), frame sizes, close codes, masking, frame
heads and the flow-control throttle.
"""

from __future__ import annotations

import inspect
import random
from typing import Any

from autobahn.websocket.compress import (
    PerMessageDeflate,
)
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket import protocol as _autobahnProtocol
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from agwtx.websocket import xormask


DEFLATE = "max_output_len" in inspect.signature(PerMessageDeflate.decompress_message_data).parameters
"""
Whether permessage-deflate is negotiated: only with an autobahn that bounds a
compressed frame's inflation by the message limit (the fix for advisory
GHSA-hxp9-w8x3-p566, 2026). Older releases (24.4, the last for Python 3.9 and
so for Debian's PyPy) inflate a whole frame first and do not count what it
inflates to, so the gateway declines every offer there and both legs run
uncompressed, which RFC 7692 allows.
"""


BUFFER_FRAME = 64 * 1024
"""Frames up to this size are relayed whole (one frame in, one frame out)."""
PIECE = 32 * 1024
"""Bigger frames go out in pieces of at least this size as they arrive."""

_OPEN = WebSocketProtocol.STATE_OPEN
_CLOSING = WebSocketProtocol.STATE_CLOSING
_CLOSED = WebSocketProtocol.STATE_CLOSED
_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_ALLOWED_CLOSE = frozenset(WebSocketProtocol.CLOSE_STATUS_CODES_ALLOWED)

GOING_AWAY = 1001
INTERNAL_ERROR = 1011
MESSAGE_TOO_BIG = 1009


# -- masking ------------------------------------------------------------------

SMALL_MASK = 2048
"""Payloads up to this size are (un)masked with Python's big integers: for
small frames that is several times cheaper than setting up autobahn's NVX
masker, which wins for bigger ones."""

_getrandbits = random.getrandbits
xormask.install()  # PyPy with an autobahn before 26 (see agwtx.websocket.xormask)


def xorMask(mask: bytes, offset: int, data: bytes) -> bytes:
    """C{data} (un)masked with C{mask}, starting C{offset} bytes into the frame."""
    n = len(data)
    if not n:
        return data
    shift = offset & 3
    if shift:
        mask = mask[shift:] + mask[:shift]
    if n <= SMALL_MASK:
        key = (mask * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    # autobahn's masker, whichever it is (xormask.install may have replaced it).
    result: bytes = _autobahnProtocol.create_xor_masker(mask, n).process(data)
    return result


def frameHead(opcode: int, length: int, mask: bytes | None) -> bytes:
    """A final frame's header (RFC 6455 5.2)."""
    m = 0x80 if mask is not None else 0
    if length < 126:
        head = bytes((0x80 | opcode, m | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, m | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, m | 127)) + length.to_bytes(8, "big")
    return head + mask if mask is not None else head


# -- flow control -----------------------------------------------------------


@implementer(IPushProducer)
class _Throttle:
    """
    Registered on one leg's transport to pause reading on the other leg
    while this one's send buffer is full.
    """

    __slots__ = ("leg", "paused", "released")

    def __init__(self, leg: Any) -> None:
        self.leg = leg
        self.paused = False
        self.released = False

    def pauseProducing(self) -> None:
        transport = self.leg.transport
        if not self.paused and not self.released and transport is not None:
            self.paused = True
            transport.pauseProducing()

    def release(self) -> None:
        """Closing: the reader must read its peer's close, whatever the writer's buffer."""
        self.released = True
        self.resumeProducing()

    def resumeProducing(self) -> None:
        transport = self.leg.transport
        if self.paused and transport is not None:
            self.paused = False
            transport.resumeProducing()

    def stopProducing(self) -> None:
        # The writing side is gone: the reader must read on, if only its close.
        self.resumeProducing()

"""
Every private or undocumented autobahn name the WebSocket bridge uses (see
L{agwtx.compat}).

The bridge relays frame by frame between two autobahn protocols
(L{agwtx.websocket.bridge}), so it reads autobahn's frame-parser state on the hot
path: those reads stay in place (an accessor per frame would cost a call
each) and are listed in L{ITEMS}, checked like the rest.  The two
underscore names called through here are L{feedFrames} and
L{isMessageCompressed}.

Replaced by public means (issue 23): C{_perMessageCompress} (the bridge
reads C{websocket_extensions_in_use}, set by the same handshake), and the
per-dial factory cloned through C{__dict__} (now C{copy.copy}).
"""

from __future__ import annotations

from typing import Any

from autobahn.websocket.protocol import WebSocketProtocol

from agwtx.compat import Private

__all__ = ["ITEMS", "feedFrames", "isMessageCompressed"]

feedFrames = WebSocketProtocol._dataReceived
"""
Hand received bytes to autobahn's frame parser, as the Twisted adapter's
C{dataReceived} does after formatting the arguments of a debug log event
(C{hltype}/C{hlval}), which it does on every read even with debug logging
off: the bridge calls the parser directly.  Not measured separately.
"""


def isMessageCompressed(leg: Any) -> bool:
    """Whether the message being received is permessage-deflate compressed (its frames' RSV1)."""
    return bool(leg._isMessageCompressed)


_PROTOCOL = "autobahn.websocket.protocol:WebSocketProtocol"
_CLIENT = "autobahn.websocket.protocol:WebSocketClientProtocol"
_FRAMES = (
    "frame-level relaying (agwtx.websocket._Leg): autobahn's message API would buffer each "
    "whole message; its frame state has no public accessor"
)


def _state(name: str, why: str = _FRAMES, owner: str = _PROTOCOL) -> Private:
    return Private(owner, name, "attribute", "agwtx.websocket.bridge", why)


ITEMS: tuple[Private, ...] = (
    Private(
        _PROTOCOL, "_dataReceived", "method", "agwtx.websocket (feedFrames)", "see feedFrames", ("data",)
    ),
    Private(
        _PROTOCOL,
        "_isMessageCompressed",
        "attribute",
        "agwtx.websocket (isMessageCompressed)",
        "a compressed frame's length says nothing about the message's size: the message limit "
        "is then counted as it inflates",
    ),
    Private(
        _PROTOCOL,
        "_max_message_size_exceeded",
        "method",
        "agwtx.websocket (override)",
        "autobahn's own size checks (a frame inflating past the limit) end in the bridge's 1009 "
        "close of both legs instead of one",
        ("msg_size", "max_msg_size", "reason"),
    ),
    Private(
        "autobahn.websocket.protocol",
        "create_xor_masker",
        "function",
        "agwtx.websocket (xorMask, for large payloads)",
        "autobahn's (NVX-accelerated when built) masking, for payloads the pure-Python path would be slow on",
    ),
    _state("state", "the relay checks both legs are open before writing"),
    _state("current_frame"),
    _state("current_frame_masker"),
    _state("inside_message"),
    _state("data", "bytes autobahn holds unparsed: the fast path only runs when there are none"),
    _state("autoPingTimeoutCall", "the fast path leaves pong handling to autobahn"),
    _state("send_queue", "sendData writes directly unless autobahn queued something"),
    _state("failedByMe", "set when the bridge fails a leg (1009, backend gone)"),
    _state("message_data_total_length", "the message-size limit across frames"),
    _state("wasMaxMessagePayloadSizeExceeded", "as autobahn sets it on its own 1009"),
    _state("closedByMe", "the closing handshake relayed leg to leg"),
    _state("remoteCloseCode", "as closedByMe"),
    _state("remoteCloseReason", "as closedByMe"),
    _state("wasClean", "as closedByMe"),
    _state("websocket_protocol_in_use", "the subprotocol the backend chose, answered to the client", _CLIENT),
    _state(
        "websocket_extensions_in_use",
        "whether permessage-deflate runs on a leg (the fast path only relays uncompressed frames)",
        _CLIENT,
    ),
    _state("serverConnectionDropTimeoutCall", "the drop timer of a leg the bridge closes"),
    _state("http_response_data", "the backend's handshake response, relayed to the client", _CLIENT),
    _state("http_status_line", "a refused handshake's status, relayed", _CLIENT),
    _state("http_request_data", "the handshake the bridge writes itself (forwarded headers)", _CLIENT),
    _state("websocket_key", "as http_request_data", _CLIENT),
    Private(
        _CLIENT,
        "startHandshake",
        "method",
        "agwtx.websocket (override)",
        "autobahn's client handshake writes its own Host and User-Agent; the bridge forwards the "
        "client's Host (or the configured one) and headers",
    ),
    Private(
        _CLIENT,
        "failHandshake",
        "method",
        "agwtx.websocket (override)",
        "a backend's refusal (non-101) is relayed with its status",
        ("reason",),
    ),
    Private(
        _PROTOCOL,
        "sendData",
        "method",
        "agwtx.websocket (override)",
        "writes straight to the transport when nothing is queued (autobahn logs per call)",
        ("data", "sync", "chopsize"),
    ),
    Private(
        _PROTOCOL,
        "sendCloseFrame",
        "method",
        "agwtx.websocket.bridge",
        "closes with the relayed (or the gateway's) code and reason",
        ("code", "reasonUtf8", "isReply"),
    ),
    Private(
        _PROTOCOL,
        "onCloseFrame",
        "method",
        "agwtx.websocket (override)",
        "holds a peer's close until the other peer answers it",
        ("code", "reasonRaw"),
    ),
    Private(
        _PROTOCOL,
        "onFrameData",
        "method",
        "agwtx.websocket (override)",
        "the client leg unmasks payloads itself (cheaper for small frames)",
        ("payload",),
    ),
    Private(
        _PROTOCOL,
        "onServerConnectionDropTimeout",
        "method",
        "agwtx.websocket.bridge",
        "the drop timer of a leg the bridge closes",
    ),
    Private(_PROTOCOL, "dropConnection", "method", "agwtx.websocket.bridge", "aborts a leg", ("abort",)),
)
"""Every private or undocumented autobahn name agw uses; checked by C{tests/test_compat.py}."""

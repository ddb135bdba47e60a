"""
The access log: one structured twisted.logger event per request, written by
an observer of its own, as a text line (L{formatAccessLine}) or a JSON object
with Azure's access-log field names (L{accessRecord}), both from the same event.

Why not the twistd log: its text observer formats every event through
C{str.format} and a timezone-aware timestamp, which measured at about a
quarter of the gateway's CPU under load.  The access events go to their own
L{LogPublisher} instead (other observers, e.g. a JSON one, can be added to
it), and L{AccessLogWriter} renders them with one f-string, a timestamp
cached per second, and buffered writes flushed every second.
"""

from __future__ import annotations

import json
import os
import time
from typing import IO, Any, Callable

from twisted.logger import LogPublisher, globalLogPublisher

__all__ = ["AccessLogWriter", "accessPublisher", "accessRecord", "formatAccessLine", "formatAccessJson"]

FLUSH_INTERVAL = 1.0
BUFFER = 64 * 1024


def formatAccessLine(event: dict[str, Any], stamp: str) -> str:
    """C{<time> <client> "<method> <uri>" <status> <bytes> <ms>ms listener=... rule=... pool=... member=...}"""
    line = (
        f'{stamp} {event["client"]} "{event["method"]} {event["uri"]}" {event["status"]} '
        f"{event['bytes']} {event['duration_ms']:.1f}ms listener={event['listener']} "
        f"rule={event['rule']} pool={event['pool']} member={event['member']}"
    )
    error = event.get("error")
    if error:
        line += f' error="{error}"'
    return line + "\n"


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def accessRecord(event: dict[str, Any], stamp: str) -> dict[str, Any]:
    """
    The JSON record of an access event: Azure Application Gateway's access-log
    property names (C{ApplicationGatewayAccessLog}) and types where Azure has
    the field, then agw's own.  A WebSocket's close (C{logType}
    C{webSocketClose}) adds its close codes, duration and traffic.
    """
    uri: str = event["uri"]
    path, _, query = uri.partition("?")
    ssl = event.get("ssl")
    member = event.get("member")
    serverStatus = event.get("serverStatus")
    latency = event.get("serverLatency")
    record: dict[str, Any] = {
        "timeStamp": stamp,
        "logType": "webSocketClose" if event.get("event") == "websocket_close" else "access",
        "instanceId": _or(event.get("instance"), ""),
        "clientIP": event["client"],
        "clientPort": _or(event.get("clientPort"), 0),
        "httpMethod": event["method"],
        "requestUri": path,
        "requestQuery": query,
        "originalRequestUriWithArgs": uri,
        "host": _or(event.get("host"), ""),
        "userAgent": _or(event.get("userAgent"), "-"),
        "httpStatus": event["status"],
        "httpVersion": _or(event.get("httpVersion"), "-"),
        "receivedBytes": _or(event.get("receivedBytes"), 0),
        "sentBytes": event["bytes"],
        "timeTaken": round(event["duration_ms"] / 1000.0, 6),
        "transactionId": _or(event.get("requestId"), ""),
        "sslEnabled": "on" if event.get("secure") else "off",
        "sslCipher": ssl[0] if ssl else "",
        "sslProtocol": ssl[1] if ssl else "",
        "serverRouted": member or "-",
        "serverStatus": "-" if serverStatus is None else str(serverStatus),
        "serverResponseLatency": "-" if latency is None else f"{latency:.3f}",
        "listenerName": event["listener"] or "",
        "ruleName": event["rule"] or "",
        "backendPoolName": event["pool"] or "",
        "backendSettingName": _or(event.get("settings"), ""),
        "traceId": _or(event.get("traceId"), ""),
        "spanId": _or(event.get("spanId"), ""),
        "error": event.get("error") or "",
    }
    if record["logType"] == "webSocketClose":
        record.update(
            webSocketClosedBy=event["closedBy"],
            webSocketClientCloseCode=event["clientCode"],
            webSocketBackendCloseCode=event["backendCode"],
            webSocketDuration=round(event["wsDuration"], 6),
            webSocketMessagesUp=event["upMessages"],
            webSocketBytesUp=event["upBytes"],
            webSocketMessagesDown=event["downMessages"],
            webSocketBytesDown=event["downBytes"],
        )
    return record


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def formatAccessJson(event: dict[str, Any], stamp: str) -> str:
    """One JSON object on one line (strings escaped, so no field can break the line)."""
    return _ENCODE(accessRecord(event, stamp)) + "\n"


def _isoStamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))


def _utcStamp(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))


class AccessLogWriter:
    """
    An observer writing access events to a file or stdout, as text lines
    (request events only: the text format is one line per request) or JSON
    records (requests and WebSocket closes).  L{reopen} (SIGUSR1) reopens
    the file by name, for logrotate.
    """

    def __init__(self, reactor: Any, target: str, format: str = "text") -> None:
        self.reactor = reactor
        self.target = target
        self.format = format
        self.file: IO[bytes] = self._open()
        self._second = -1
        self._stamp = ""
        self._flush: Any = None
        self._render: Callable[[dict[str, Any], str], str]
        if format == "json":
            self._render = formatAccessJson
            self._stampOf = _utcStamp
            self._kinds = frozenset({"access", "websocket_close"})
        else:
            self._render = formatAccessLine
            self._stampOf = _isoStamp
            self._kinds = frozenset({"access"})

    def _open(self) -> IO[bytes]:
        if self.target == "-":
            # fd 1 as the process got it (twistd redirects sys.stdout into its log).
            return os.fdopen(os.dup(1), "ab", buffering=BUFFER)
        return open(self.target, "ab", buffering=BUFFER)

    def __call__(self, event: dict[str, Any]) -> None:
        if "status" not in event or event.get("event", "access") not in self._kinds:
            return
        t = event.get("log_time")
        if t is None:
            t = self.reactor.seconds()
        second = int(t)
        if second != self._second:
            self._second = second
            self._stamp = self._stampOf(second)
        try:
            self.file.write(self._render(event, self._stamp).encode("utf-8", "replace"))
        except (OSError, ValueError):
            return
        if self._flush is None:
            self._flush = self.reactor.callLater(FLUSH_INTERVAL, self.flush)

    def flush(self) -> None:
        self._flush = None
        try:
            self.file.flush()
        except (OSError, ValueError):
            pass

    def reopen(self) -> None:
        """
        Write out what is buffered and open the file again by its name: after
        logrotate renamed it, lines go to the new file (standard output is
        left as it is).
        """
        if self.target == "-":
            self.flush()
            return
        try:
            self.file.flush()
            self.file.close()
        except (OSError, ValueError):
            pass
        try:
            self.file = self._open()
        except OSError:
            # Keep lines going somewhere sane: the next reopen tries again.
            self.file = open(os.devnull, "ab")
            raise

    def close(self) -> None:
        if self._flush is not None and self._flush.active():
            self._flush.cancel()
        self._flush = None
        try:
            self.file.flush()
            self.file.close()
        except (OSError, ValueError):
            pass


def _requestsOnly(event: dict[str, Any]) -> None:
    if event.get("event") != "websocket_close":  # the bridge logs its own close line there
        globalLogPublisher(event)


def accessPublisher(
    reactor: Any, target: str, format: str = "text"
) -> tuple[LogPublisher, AccessLogWriter | None]:
    """
    The observer access events are emitted to, for C{[gateway] accessLog}:
    C{-} or a path (the fast writer, in C{format}), C{log} (the twistd log,
    formatted by it) or C{off}.
    """
    publisher = LogPublisher()
    if target == "log":
        publisher.addObserver(_requestsOnly)
        return publisher, None
    if target == "off":
        return publisher, None
    writer = AccessLogWriter(reactor, target, format)
    publisher.addObserver(writer)
    return publisher, writer

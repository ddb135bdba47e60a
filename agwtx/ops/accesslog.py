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
from typing import IO, TYPE_CHECKING, Any, Callable

from twisted.logger import LogLevel, LogPublisher, globalLogPublisher

if TYPE_CHECKING:
    from agwtx.http.request import GatewayRequest

__all__ = [
    "ACCESS_FORMAT",
    "WEBSOCKET_CLOSE_FORMAT",
    "AccessEvents",
    "AccessLogWriter",
    "accessPublisher",
    "accessRecord",
    "formatAccessLine",
    "formatAccessJson",
]

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


ACCESS_FORMAT = (
    '{client} "{method} {uri}" {status} {bytes} {duration_ms:.1f}ms '
    "listener={listener} rule={rule} pool={pool} member={member}"
)
WEBSOCKET_CLOSE_FORMAT = (
    '{client} "{method} {uri}" WebSocket closed by {closedBy}: client {clientCode} backend {backendCode} '
    "request={requestId}"
)


class AccessEvents:
    """
    The access events of requests, refusals and WebSocket ends: built from
    the request (its routing decision, timings, TLS), written to
    C{observer} (the access log) and counted in the metrics.
    """

    def __init__(
        self, clock: Any, observer: Callable[[dict[str, Any]], None], metrics: Any, instanceId: str = ""
    ) -> None:
        self.clock = clock
        self.observer = observer
        """Where events go; a reload that changes the access log replaces it."""
        self.metrics = metrics
        self.instanceId = instanceId

    def accessLog(self, request: "GatewayRequest", aborted: bool = False) -> None:
        """The access event of an answered (or, C{aborted}, abandoned) request."""
        now = self.clock.seconds()
        event = self._requestEvent(request, now)
        if aborted:
            event["status"] = 499
        self._emit(event)

    def webSocketClosed(self, request: "GatewayRequest", fields: dict[str, Any]) -> None:
        """
        The access event of a WebSocket's end (C{event} C{websocket_close}):
        the handshake's fields plus C{fields} (close codes, duration, traffic).
        The JSON access log writes it; the text line stays one per request.
        """
        event = self._requestEvent(request, self.clock.seconds())
        event["event"] = "websocket_close"
        event["log_format"] = WEBSOCKET_CLOSE_FORMAT
        event.update(fields)
        self.observer(event)

    def refusedLog(self, client: str, status: int, sent: int, error: str, **fields: Any) -> None:
        """
        The access event of a request refused while its head was read (400,
        408, 414, 431): no method, target or route is known, so they are "-"
        and None, as for other requests refused before routing.
        """
        event = self._event(
            self.clock.seconds(), 0.0, client, "-", "-", status, sent, None, None, None, None, error
        )
        event.update(fields)
        self._emit(event)

    def _requestEvent(self, request: "GatewayRequest", now: float) -> dict[str, Any]:
        event = self._event(
            now,
            now - request.agwStart,
            request.clientIP,
            request.method.decode("latin-1"),
            request.uri.decode("latin-1"),
            request.code,
            request.sentLength,
            request.agwListener,
            request.agwRule,
            request.agwPool,
            request.agwMember,
            request.agwError,
        )
        headers = request.requestHeaders
        host = headers.getRawHeaders(b"host")
        agent = headers.getRawHeaders(b"user-agent")
        trace = request.agwTrace
        secure = request.isSecure()
        event.update(
            clientPort=getattr(request.client, "port", 0),
            requestId=request.agwRequestId,
            traceId=trace.traceId.decode("ascii") if trace is not None else None,
            spanId=trace.spanId.decode("ascii") if trace is not None else None,
            host=host[0].decode("latin-1") if host else None,
            userAgent=agent[0].decode("latin-1") if agent else None,
            httpVersion=request.clientproto.decode("latin-1"),
            receivedBytes=request.agwHeadBytes + request.agwBodyBytes,
            secure=secure,
            ssl=request.tlsInfo() if secure else None,
            serverStatus=request.agwStatus if request.agwMember is not None else None,
            serverLatency=request.agwServerLatency,
            settings=request.agwSettings,
        )
        return event

    def _event(
        self,
        now: float,
        duration: float,
        client: str,
        method: str,
        uri: str,
        status: int,
        sent: int,
        listener: str | None,
        rule: str | None,
        pool: str | None,
        member: str | None,
        error: str | None,
    ) -> dict[str, Any]:
        """
        An access event: a twisted.logger event (namespace C{agw.access})
        handed straight to the access observer, without L{Logger}'s per-call
        work (it is on every request's path).
        """
        return {
            "log_format": ACCESS_FORMAT,
            "log_level": LogLevel.info,
            "log_namespace": "agw.access",
            "log_source": None,
            "log_time": now,
            "client": client,
            "method": method,
            "uri": uri,
            "status": status,
            "bytes": sent,
            "duration_ms": duration * 1000,
            "listener": listener,
            "rule": rule,
            "pool": pool,
            "member": member,
            "error": error,
            "event": "access",
            "instance": self.instanceId,
        }

    def _emit(self, event: dict[str, Any]) -> None:
        """Write an access event and count it in the metrics."""
        self.observer(event)
        self.metrics.request(
            event["listener"] or "-",
            event["rule"] or "-",
            event["pool"] or "-",
            event["status"],
            event["duration_ms"] / 1000.0,
        )

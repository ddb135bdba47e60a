"""
A leaner event loop for the epoll reactor (what C{twistd agw} runs on Linux).

Two costs of Twisted's C{EPollReactor} dominate a proxy that forwards many
small requests, and this module removes both from a running reactor
instance (py-spy on bench/http_bench.py's agw row; figures in docs/performance.rst):

1. C{doPoll} wraps every ready descriptor's C{doRead}/C{doWrite} in
   C{log.callWithLogger}: it asks the transport for its C{logPrefix()},
   copies the legacy logging context dict and installs it for the call,
   only so that I{legacy} C{log.msg}/C{log.err} events emitted inside carry
   a C{system} label such as C{HTTPChannel,3,127.0.0.1}.  That was about
   14 % of the gateway's CPU time.  The lean loop calls C{doRead} directly
   for a plain read event and C{_doReadOrWrite} for anything else (hang-up,
   error, write readiness).  Either way an exception from application code
   is logged with C{log.err} and the selectable is disconnected, as before,
   and a half-closed read is still reported as one.  What changes: legacy
   log events raised while handling an I/O event show C{system} as C{-};
   agw's own events use twisted.logger and never carried it.

2. C{transport.write()} only buffers and calls C{startWriting()}, which
   registers the socket for EPOLLOUT (an C{epoll_ctl} system call and set
   bookkeeping); the I{next} C{epoll_wait} reports it writable, C{doWrite}
   sends, and C{stopWriting()} unregisters it (a second C{epoll_ctl}).  For
   a socket that is writable anyway (nearly always, for a short response)
   that is two system calls and one more loop pass per write.  Here
   C{addWriter} of a socket that is not registered for writing only notes
   it, and noted sockets get their C{doWrite} within the same pass of the
   loop, with the poll path's error handling.  Whatever they could not
   send (a full socket buffer) is then registered with epoll exactly as
   before, so flow control and producers behave as they did.  Writes made
   while handling one event are sent together (one C{send} for a
   response's head and body).

   When is "within the same pass": after every L{FLUSH_EVERY} ready events
   and when the pass ends (and before polling, for writes made by timed
   calls).  Only at the end would hold the first of 50 requests that
   arrive together until the fiftieth is parsed.  Measured with
   bench/http_bench.py: the paced pass's p50 went from 4.9 ms (end of the
   pass only) to 1.8 ms (2.4 ms in a full bench run), for about 1.5 %
   of saturated throughput (after every event: 1.4 ms, but 7 % fewer
   requests per second).

Only the epoll reactor is changed; any other reactor is left alone.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from twisted.python import log

from agwtx.compat.twistedprivate import epollInternals

__all__ = ["installLeanPoll"]

_STOPPED = object()

FLUSH_EVERY = 8
"""Pending writes are sent after at most this many I/O events of a batch."""


def installLeanPoll(reactor: Any) -> bool:
    """Give an C{EPollReactor} the lean loop; False (untouched) for any other reactor."""
    try:
        from twisted.internet.epollreactor import EPOLLIN, EPOLLOUT, EPollReactor
    except ImportError:  # not Linux
        return False
    if not isinstance(reactor, EPollReactor) or getattr(reactor, "_agwLeanPoll", False):
        return False
    poller, selectables, writes, doReadOrWrite, disconnect = epollInternals(reactor)
    realAddWriter = reactor.addWriter
    realRemoveWriter = reactor.removeWriter
    realRemoveAll = reactor.removeAll
    realGetWriters = reactor.getWriters
    # Writers that asked for write readiness and have not been flushed yet
    # (a dict: insertion order, so sockets are written in the order they
    # were written to).
    pending: dict[Any, None] = {}
    # The writer whose doWrite is running in flush(), and whether it called
    # stopWriting (everything sent) meanwhile.
    current: list[Any] = [None, None]

    def addWriter(writer: Any) -> None:
        if writer in pending:
            return
        fd = writer.fileno()
        if fd < 0 or fd in writes:
            realAddWriter(writer)
            return
        pending[writer] = None

    def removeWriter(writer: Any) -> None:
        if writer is current[0]:
            current[1] = _STOPPED
            if writer.fileno() not in writes:
                return  # being flushed, never registered: nothing to undo
        if writer in pending:
            del pending[writer]
            return
        realRemoveWriter(writer)

    def handle(selectable: Any, method: Any, isRead: bool) -> None:
        # What _doReadOrWrite does for a plain read or write event, minus its
        # event-mask bookkeeping: log any exception, disconnect on a reason.
        # An exception from the disconnect itself is logged too (Twisted's
        # callWithLogger does that), so it never leaves the pass early.
        try:
            why = method()
        except KeyboardInterrupt:
            raise
        except BaseException:
            why = sys.exc_info()[1]
            log.err()
        if why:
            try:
                disconnect(selectable, why, isRead)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err()

    def readOrWrite(selectable: Any, fd: int, event: int) -> None:
        try:
            doReadOrWrite(selectable, fd, event)
        except KeyboardInterrupt:
            raise
        except BaseException:
            log.err()

    def flush() -> None:
        # Bounded: a writer re-noted while flushing (a producer resumed by
        # its own doWrite) is served again, but never more than this many
        # doWrite calls per batch; the rest wait for epoll as usual.
        budget = 4 * len(pending) + 64
        while pending and budget > 0:
            budget -= 1
            writer = next(iter(pending))
            del pending[writer]
            fd = writer.fileno()
            current[0], current[1] = writer, None
            if fd < 0:
                readOrWrite(writer, fd, EPOLLOUT)  # reports the lost descriptor as usual
            else:
                handle(writer, writer.doWrite, False)
            stopped = current[1] is _STOPPED
            current[0] = current[1] = None
            if not stopped and writer not in pending and writer.fileno() >= 0:
                # Data left over (socket buffer full): wait for EPOLLOUT as Twisted does.
                realAddWriter(writer)
        while pending:
            writer = next(iter(pending))
            del pending[writer]
            realAddWriter(writer)

    def doPoll(timeout: float | None) -> None:
        if pending:
            # Writes made by timed calls (runUntilCurrent) just before this pass.
            flush()
        if timeout is None:
            timeout = -1
        try:
            events = poller.poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        handled = 0
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if event == EPOLLIN:
                # The common case (a closed descriptor fails in recv).
                handle(selectable, selectable.doRead, True)
            else:
                readOrWrite(selectable, fd, event)
            handled += 1
            if handled == FLUSH_EVERY:
                handled = 0
                if pending:
                    flush()
        if pending:
            flush()

    def getWriters() -> list[Any]:
        writers = list(realGetWriters())
        writers.extend(w for w in pending if w not in writers)
        return writers

    def removeAll() -> list[Any]:
        noted = list(pending)
        pending.clear()
        removed = list(realRemoveAll())
        removed.extend(w for w in noted if w not in removed)
        return removed

    reactor.addWriter = addWriter
    reactor.removeWriter = removeWriter
    reactor.getWriters = getWriters
    reactor.removeAll = removeAll
    reactor.doIteration = doPoll
    reactor._agwLeanPoll = True
    return True

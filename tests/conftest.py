"""
Test-process set-up shared by every test module.

PyPy before 7.3.18 has a race in C{threading.Thread.join}: when two threads
join the same finished thread at once, one of them can get C{RuntimeError:
cannot release un-acquired lock} or an C{AssertionError} from
C{Thread._stop} (pypy/pypy#5079; CPython's gh-116372).  The threaded
C{websockets.sync} client the tests use joins its reader thread while closing,
and a CI run on Debian's PyPy 7.3.11 failed a test that way.  PyPy fixed it
in its copy of C{threading.py} (pypy/pypy#5080): ignore the redundant
release and drop the assertion.  The same change is applied here, to the test
process only and only on the PyPy releases that lack it; the gateway under
test runs in its own process and is untouched.
"""

from __future__ import annotations

import platform
import sys
import threading
from typing import Any

# The first PyPy release with pypy/pypy#5080.
PYPY_JOIN_FIXED = (7, 3, 18)


def needsJoinFix() -> bool:
    return platform.python_implementation() == "PyPy" and sys.pypy_version_info[:3] < PYPY_JOIN_FIXED  # type: ignore[attr-defined]


def _releaseQuietly(lock: Any) -> None:
    try:
        lock.release()
    except RuntimeError:  # another joiner released it first
        pass


def _waitForTstateLock(self: Any, block: bool = True, timeout: float = -1) -> None:
    lock = self._tstate_lock
    if lock is None:
        return
    try:
        if lock.acquire(block, timeout):
            _releaseQuietly(lock)
            self._stop()
    except BaseException:
        if lock.locked():
            _releaseQuietly(lock)
            self._stop()
        raise


def _stop(self: Any) -> None:
    self._is_stopped = True
    self._tstate_lock = None
    if not self.daemon:
        with threading._shutdown_locks_lock:  # type: ignore[attr-defined]
            threading._maintain_shutdown_locks()  # type: ignore[attr-defined]


if needsJoinFix():
    threading.Thread._wait_for_tstate_lock = _waitForTstateLock  # type: ignore[attr-defined]
    threading.Thread._stop = _stop  # type: ignore[attr-defined]

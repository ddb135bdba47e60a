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

Under CI (the C{CI} environment variable set, as C{.ci/run} does), a test
that skips fails instead, unless its skip is in L{CI_ALLOWED_SKIPS}: CI
installs every tool the tests need (openssl, haproxy, Chromium,
systemd-analyze, ...), so a skip there means a test that silently did not
run.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
from typing import Any

import pytest

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


CI_ALLOWED_SKIPS: tuple[tuple[str, str, str], ...] = (
    (
        "tests/test_packaging.py::test_the_floors_venv_runs_the_floor_versions",
        "CPython",
        "the floors are installed in the PyPy venv (.venv-pypy), not in the CPython one",
    ),
    ("tests/test_deploy.py", "PyPy", "kubernetes-validate is installed on CPython only (setup.cfg)"),
    ("tests/test_imports.py", "PyPy", "grimp (import-linter) is installed on CPython only (setup.cfg)"),
    (
        "tests/test_gctune.py::test_make_service_freezes_the_built_routing_tables",
        "PyPy",
        "agw tunes CPython's collector only",
    ),
)
"""
The skips CI accepts: (test id, or a module's path for a skip while
collecting it; the Python implementation it may skip on; why).
"""


def underCI() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def skipAllowed(nodeid: str, implementation: str) -> bool:
    return any(nodeid == allowed and implementation == on for allowed, on, _ in CI_ALLOWED_SKIPS)


def _reason(report: Any) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


def _unexpected(report: Any) -> bool:
    """A skip (not an xfail) under CI that L{CI_ALLOWED_SKIPS} does not allow."""
    return (
        underCI()
        and report.skipped
        and not hasattr(report, "wasxfail")
        and not skipAllowed(report.nodeid, platform.python_implementation())
    )


_CI_HINT = "install what it needs in .ci/run, or add the skip to CI_ALLOWED_SKIPS in tests/conftest.py"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    """Under CI, a test's unexpected skip is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    if _unexpected(report):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI ({_reason(report)}): {_CI_HINT}"


_collectionSkips: list[str] = []


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Under CI, a module skipped while collected is remembered, to fail the run at its end."""
    if _unexpected(report):
        _collectionSkips.append(f"{report.nodeid}: {_reason(report)}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _collectionSkips:
        terminalreporter.section("skipped under CI while collecting", red=True)
        for line in _collectionSkips:
            terminalreporter.line(f"{line}: {_CI_HINT}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _collectionSkips and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

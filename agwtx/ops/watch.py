"""
C{[gateway] watchConfig = true}: reload when the config file, or a
certificate or key file it names, changes.

Polling, not inotify: every L{WATCH_INTERVAL} seconds each file is
C{stat}ed through its path (symlinks followed: one system call a file),
so an edit in place, a file replaced by rename, and the atomic swap
Kubernetes does for mounted ConfigMaps and Secrets (the C{..data} symlink
pointed at a new directory, whose files are new inodes) are all seen,
portably, with no extra dependency.  The list of files is made once per
configuration, not per tick.  A change runs the same reload as SIGHUP: an invalid new file
is logged error by error and changes nothing, and is not retried until a
file changes again.  Only the first process watches; it passes the reload
on to its workers as SIGHUP does.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional, Tuple

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from agwtx.config.model import GatewayConfig

__all__ = ["WATCH_INTERVAL", "ConfigWatcher", "watchedFiles", "fileStates"]

WATCH_INTERVAL = 1.0
"""Seconds between two looks at the watched files."""

log = Logger(namespace="agw.watch")

FileState = Optional[Tuple[int, int, int, int]]


def watchedFiles(config: GatewayConfig) -> list[str]:
    """
    The config file and every file it names that is read at load: the
    certificates and keys, trusted root and trusted client CA files, and
    the custom error pages (the admin token file's path is not kept).
    """
    paths = [config.path]
    for cert in config.sslCertificates.values():
        paths += [cert.certificate, cert.privateKey]
    for root in config.trustedRootCertificates.values():
        paths.append(root.certificate)
    for client in config.trustedClientCertificates.values():
        paths.append(client.data)
    pages = list(config.gateway.customErrorPages)
    for listener in config.httpListeners.values():
        pages += listener.customErrorPages
    paths += [page.path for page in pages]
    return list(dict.fromkeys(p for p in paths if p))


def fileStates(paths: list[str]) -> list[FileState]:
    """Per path: (device, inode, size, mtime in ns) of the file it leads to, None when missing."""
    states: list[FileState] = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            states.append(None)
        else:
            states.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return states


class ConfigWatcher(Service):
    """Polls the running configuration's files and reloads on a change."""

    name = "watchConfig"

    def __init__(self, clock: Any, current: Callable[[], GatewayConfig], reload: Callable[[], Any]) -> None:
        self.clock = clock
        self.current = current
        self.reload = reload
        self.seen: list[FileState] | None = None
        self.config: GatewayConfig | None = None
        self.paths: list[str] = []
        """L{watchedFiles} of C{config}, the configuration last looked at."""
        self.loop = LoopingCall(self.tick)
        self.loop.clock = clock

    def startService(self) -> None:
        super().startService()
        self.loop.start(WATCH_INTERVAL, now=True)

    def stopService(self) -> Any:
        if self.loop.running:
            self.loop.stop()
        return super().stopService()

    def tick(self) -> None:
        try:
            self._tick()
        except Exception:
            log.failure("watching the configuration files")

    def _files(self) -> list[str]:
        config = self.current()
        if config is not self.config:
            self.config, self.paths = config, watchedFiles(config)
        return self.paths

    def _tick(self) -> None:
        if not self.current().gateway.watchConfig:
            self.seen = None
            return
        paths = self._files()
        states = fileStates(paths)
        if self.seen is None or states == self.seen:
            self.seen = states
            return
        changed = [path for path, state, old in zip(paths, states, self.seen) if state != old]
        log.info(
            "watchConfig: {files} changed; reloading",
            files=", ".join(changed) or "the set of watched files",
        )
        self.reload()
        # The files named by the configuration now in force (the new one, or
        # the old one when the new file was rejected), as they are now: a
        # rejected file is not tried again until something changes.
        self.seen = fileStates(self._files())

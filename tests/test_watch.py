"""The config watcher's tick: one stat a file, the file list made once per configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet.task import Clock

from agwtx.config.model import GatewayConfig, GatewaySettings
from agwtx.ops import watch


def test_the_file_list_is_made_once_per_configuration_and_a_swap_is_seen(
    tmp_path: Path, monkeypatch: Any
) -> None:
    made: list[GatewayConfig] = []
    real = watch.watchedFiles

    def counting(config: GatewayConfig) -> list[str]:
        made.append(config)
        return real(config)

    monkeypatch.setattr(watch, "watchedFiles", counting)
    # The Kubernetes layout: the file is reached through the ..data symlink.
    first, second = tmp_path / "v1", tmp_path / "v2"
    first.mkdir()
    second.mkdir()
    (first / "gw.ini").write_text("[gateway]\n")
    (second / "gw.ini").write_text("[gateway]\n")
    (tmp_path / "..data").symlink_to(first)
    (tmp_path / "gw.ini").symlink_to(tmp_path / "..data" / "gw.ini")
    config = GatewayConfig(path=str(tmp_path / "gw.ini"), gateway=GatewaySettings(watchConfig=True))
    reloads: list[int] = []
    clock = Clock()
    watcher = watch.ConfigWatcher(clock, lambda: config, lambda: reloads.append(1))
    watcher.startService()
    clock.pump([watch.WATCH_INTERVAL] * 3)
    assert reloads == [] and made == [config]
    # The atomic swap: ..data now points at the other directory (same size, same content).
    (tmp_path / "..data.new").symlink_to(second)
    (tmp_path / "..data.new").rename(tmp_path / "..data")
    clock.advance(watch.WATCH_INTERVAL)
    assert reloads == [1] and made == [config]
    watcher.stopService()

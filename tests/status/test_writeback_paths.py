"""The status write-back pushes to the repository the sync reads, even when
it is given as a relative local path (``gitkube run --repo .``): the path is
made absolute, never read relative to the write-back's cache repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitkube.sync.writeback import StatusWriter


def test_a_relative_local_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    writer = StatusWriter(".", cache_dir=tmp_path / "cache", synced_branch="main")
    assert writer.remote_url == str(tmp_path / "checkout")
    url = "ssh://git@example.com/ops/cluster.git"
    assert StatusWriter(url, cache_dir=tmp_path / "c", synced_branch="main").remote_url == url

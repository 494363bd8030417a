"""Files the sync reads as manifests are the ones `gitkube validate` reads:
hidden files and directories below the tracked path (a CI workflow in
.github/, say) are not manifests; a hidden sub-path that is tracked is read.
"""

from __future__ import annotations

from pathlib import Path

from gitkube.api.objects import Pod
from gitkube.store.objects import ObjectStore
from gitkube.sync.loop import SyncLoop, SyncSettings
from gitkube.sync.source import GitSource
from tests.fixtures.git import GitRemote
from tests.sync.conftest import pod_yaml

WORKFLOW = "name: ci\non: [push]\njobs:\n  test:\n    runs-on: ubuntu-latest\n"


async def test_hidden_directories_are_not_manifests(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("app.yaml", pod_yaml("app"))
    git_remote.write(".github/workflows/ci.yaml", WORKFLOW)
    git_remote.write("k8s/.draft.yaml", "not: a manifest\n")
    git_remote.commit_and_push("app and a workflow")
    loop = SyncLoop(objects, GitSource(git_remote.url, cache_dir=tmp_path / "c"), SyncSettings())
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert result.files == 1
    assert await objects.get(Pod, "default", "app") is not None


async def test_a_tracked_hidden_path_is_read(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write(".deploy/app.yaml", pod_yaml("app"))
    git_remote.commit_and_push("hidden path")
    source = GitSource(git_remote.url, path=".deploy", cache_dir=tmp_path / "c")
    result = await SyncLoop(objects, source, SyncSettings()).reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert await objects.get(Pod, "default", "app") is not None

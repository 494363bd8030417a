"""ConfigMaps and Secrets through the sync (real git remote, SQLite store):

- an immutable ConfigMap or Secret whose data changes in git fails the
  revision with an error at its file and line naming the keys (never a
  value), nothing applied; making it mutable again is refused too; removing
  it in one commit and adding it back in the next works;
- a mutable Secret's change is applied, and ``render_diff`` says which keys
  changed without the values.
"""

from __future__ import annotations

import base64
from pathlib import Path

from gitkube.api.objects import ConfigMap, Secret
from gitkube.store.objects import ObjectStore
from gitkube.sync.diff import render_diff
from tests.fixtures.git import GitRemote
from tests.sync.conftest import make_loop

VALUE = "Pl4nted-Sync-Value-1"


def config_yaml(level: str, *, immutable: bool = True) -> str:
    return f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
immutable: {str(immutable).lower()}
data:
  level: "{level}"
  color: blue
"""


def secret_yaml(password: str, *, immutable: bool = False) -> str:
    return f"""apiVersion: v1
kind: Secret
metadata:
  name: db
immutable: {str(immutable).lower()}
stringData:
  password: "{password}"
"""


async def test_immutable_config_map_data_cannot_change(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("cm.yaml", config_yaml("info"))
    git_remote.commit_and_push()
    loop = make_loop(objects, git_remote, tmp_path)
    assert (await loop.reconcile_once()).outcome == "Succeeded"

    git_remote.write("cm.yaml", config_yaml("debug"))
    git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert result.outcome == "Failed"
    (error,) = result.errors
    assert (error.file, error.line, error.kind, error.field) == ("cm.yaml", 1, "ConfigMap", "data")
    assert "immutable" in error.message and "level" in error.message
    live = await objects.get(ConfigMap, "default", "settings")
    assert live is not None and live.data["level"] == "info"

    git_remote.write("cm.yaml", config_yaml("info", immutable=False))
    git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert result.outcome == "Failed" and result.errors[0].field == "immutable"

    git_remote.remove("cm.yaml")
    git_remote.commit_and_push()
    assert (await loop.reconcile_once()).outcome == "Succeeded"
    git_remote.write("cm.yaml", config_yaml("debug"))
    git_remote.commit_and_push()
    assert (await loop.reconcile_once()).outcome == "Succeeded"
    live = await objects.get(ConfigMap, "default", "settings")
    assert live is not None and live.data["level"] == "debug"


async def test_immutable_secret_error_names_no_value(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("secret.yaml", secret_yaml(VALUE, immutable=True))
    git_remote.commit_and_push()
    loop = make_loop(objects, git_remote, tmp_path)
    assert (await loop.reconcile_once()).outcome == "Succeeded"
    git_remote.write("secret.yaml", secret_yaml(VALUE + "-2", immutable=True))
    git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert result.outcome == "Failed"
    text = " ".join(str(e) for e in result.errors) + result.message
    assert "password" in text
    assert "Pl4nted" not in text and "UGw0bnRl" not in text


async def test_a_secret_change_is_applied_and_the_diff_hides_values(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("secret.yaml", secret_yaml(VALUE))
    git_remote.commit_and_push()
    loop = make_loop(objects, git_remote, tmp_path)
    assert (await loop.reconcile_once()).outcome == "Succeeded"
    git_remote.write("secret.yaml", secret_yaml(VALUE + "-new"))
    git_remote.commit_and_push()
    preview = await loop.preview()
    assert preview.plan is not None
    text = render_diff(preview.plan)
    assert "secret data changed: password" in text
    assert "Pl4nted" not in text and "UGw0bnRl" not in text
    assert (await loop.reconcile_once()).outcome == "Succeeded"
    live = await objects.get(Secret, "default", "db")
    assert live is not None
    assert base64.b64decode(live.data["password"]).decode() == VALUE + "-new"

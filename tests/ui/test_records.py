"""What the sync loop records for the dashboard, with a real git remote and a
real SQLite store:

- each sync that changed something keeps the diff it applied, beside its
  history entry, bounded in size, with Secret values masked (keys kept);
- entries that leave the history take their diff with them;
- with self-heal off, the drifted objects are recorded with git's and the
  cluster's forms side by side; with the drift gone, the record empties;
- the synced commit's message, author and time reach the status report.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from gitkube.api.keys import SYNC_DIFFS_KEY, SYNC_DRIFT_KEY
from gitkube.api.objects import ReplicationController
from gitkube.store.objects import ObjectStore
from gitkube.sync.diff import SyncPlan, bounded_text, recorded_diff, redact_secret
from gitkube.sync.report import build_status_report
from gitkube.sync.state import HISTORY_LENGTH
from tests.fixtures.git import GitRemote
from tests.sync.conftest import make_loop, objects, rc_yaml  # noqa: F401  (fixture)

PASSWORD = "correct-horse-battery"


def secret_yaml(value: str) -> str:
    encoded = base64.b64encode(value.encode()).decode()
    return (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n"
        f"data:\n  password: {encoded}\n  user: {base64.b64encode(b'app').decode()}\n"
    )


async def read(objects: ObjectStore, key: str) -> object:  # noqa: F811
    kv = await objects.store.get(key)
    return json.loads(kv.value) if kv else None


async def test_each_sync_keeps_its_diff_with_secret_values_masked(
    objects: ObjectStore,  # noqa: F811
    git_remote: GitRemote,
    tmp_path: Path,
) -> None:
    git_remote.write("app.yaml", rc_yaml("web", 2))
    git_remote.write("secret.yaml", secret_yaml(PASSWORD))
    first = git_remote.commit_and_push("web and its secret")
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    git_remote.write("app.yaml", rc_yaml("web", 4))
    git_remote.write("secret.yaml", secret_yaml(PASSWORD + "-rotated"))
    second = git_remote.commit_and_push("scale web, rotate the password")
    await loop.reconcile_once()

    diffs = await read(objects, SYNC_DIFFS_KEY)
    assert isinstance(diffs, list)
    assert [d["revision"] for d in diffs] == [first, second]
    report = await build_status_report(objects)
    assert [(h.started_at, h.revision) for h in report.history] == [
        (d["startedAt"], d["revision"]) for d in diffs
    ]
    assert report.history[-1].commit_message == "scale web, rotate the password"
    created, updated = diffs[0]["diff"], diffs[1]["diff"]
    assert "create ReplicationController/default/web" in created
    assert "+  replicas: 4" in updated and "-  replicas: 2" in updated
    assert "update Secret/default/db" in updated
    # the changed key is named and its values masked (gitkube.api.redact)
    assert "-  password: ++++++++" in updated
    assert "+  password: ++++++++ (changed)" in updated
    for text in (created, updated):
        assert PASSWORD not in text
        assert base64.b64encode(PASSWORD.encode()).decode() not in text
        assert base64.b64encode(f"{PASSWORD}-rotated".encode()).decode() not in text
    assert diffs[0]["truncated"] is False
    # the commit reaches the status report
    commit = report.to_dict()["sync"]["commit"]
    assert commit["message"] == "scale web, rotate the password"
    assert commit["author"] and commit["time"]


async def test_diffs_leave_with_their_history_entries(
    objects: ObjectStore,  # noqa: F811
    git_remote: GitRemote,
    tmp_path: Path,
) -> None:
    loop = make_loop(objects, git_remote, tmp_path)
    for replicas in range(1, HISTORY_LENGTH + 4):
        git_remote.write("app.yaml", rc_yaml("web", replicas))
        git_remote.commit_and_push(f"{replicas} replicas")
        await loop.reconcile_once()
    diffs = await read(objects, SYNC_DIFFS_KEY)
    assert isinstance(diffs, list) and len(diffs) == HISTORY_LENGTH
    report = await build_status_report(objects)
    assert [d["revision"] for d in diffs] == [h.revision for h in report.history]


async def test_drift_is_recorded_side_by_side_while_self_heal_is_off(
    objects: ObjectStore,  # noqa: F811
    git_remote: GitRemote,
    tmp_path: Path,
) -> None:
    git_remote.write("app.yaml", rc_yaml("web", 2))
    git_remote.commit_and_push("web")
    loop = make_loop(objects, git_remote, tmp_path, self_heal=False)
    await loop.reconcile_once()
    assert await read(objects, SYNC_DRIFT_KEY) == []
    web = await objects.get(ReplicationController, "default", "web")
    assert web is not None
    web.spec.replicas = 9
    await objects.update(web)
    await loop.reconcile_once()
    drift = await read(objects, SYNC_DRIFT_KEY)
    assert isinstance(drift, list) and len(drift) == 1
    entry = drift[0]
    assert (entry["kind"], entry["name"], entry["path"]) == (
        "ReplicationController",
        "web",
        "app.yaml",
    )
    assert entry["fields"] == ["spec.replicas"]
    assert "replicas: 2" in entry["git"] and "replicas: 9" in entry["cluster"]
    # put back by hand: the record empties
    web = await objects.get(ReplicationController, "default", "web")
    assert web is not None
    web.spec.replicas = 2
    await objects.update(web)
    await loop.reconcile_once()
    assert await read(objects, SYNC_DRIFT_KEY) == []


def test_a_recorded_diff_is_bounded() -> None:
    text = "".join(f"line {i}\n" for i in range(10000))
    cut, truncated = bounded_text(text, 1000)
    assert truncated and len(cut.encode()) < 1100 and cut.endswith("not recorded\n")
    assert all(line.startswith(("line ", "# …")) for line in cut.splitlines())
    assert recorded_diff(SyncPlan()) == {"diff": "", "truncated": False}


def test_secret_values_are_masked_on_both_sides() -> None:
    old = {"kind": "Secret", "data": {"a": "b2xk", "same": "eA=="}}
    new = {"kind": "Secret", "data": {"a": "bmV3", "same": "eA==", "added": "eQ=="}}
    masked_old, masked_new = redact_secret("Secret", old, new)
    assert masked_old == {
        "kind": "Secret",
        "data": {"a": "<redacted old value>", "same": "<redacted>"},
    }
    assert masked_new is not None and masked_new["data"] == {
        "a": "<redacted new value>",
        "same": "<redacted>",
        "added": "<redacted new value>",
    }
    assert redact_secret("ConfigMap", old, new) == (old, new)

"""`gitkube rollout status|history` and `gitkube rollback` against a real
SQLite store and a real git remote (commits pushed with git, the rollback
pushed by gitkube):

- history: one line per revision, revision first, with the commit that made
  it; -o json;
- status: exit 0 for a complete rollout, 1 for an exceeded deadline, 1 when
  --timeout passes, a message for an unknown Deployment, exit 2 for a bad
  target;
- rollback: a commit on the tracked branch (also into a checked-out local
  clone) that puts revision N's template back into the declaring file as
  it was written (other documents and comments kept), the reason in the
  message; the previous revision by default; --dry-run prints the patch
  and pushes nothing; repository and branch from the sync state or
  --repo/--branch; an unknown revision fails; the store is not touched.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gitkube.api.annotations import MANAGED_BY, MANAGED_BY_VALUE, SOURCE_COMMIT, SOURCE_PATH
from gitkube.api.keys import SYNC_STATE_KEY
from gitkube.api.objects import (
    Container,
    Deployment,
    DeploymentCondition,
    DeploymentSpec,
    DeploymentStatus,
    LabelSelector,
    ObjectMeta,
    OwnerReference,
    PodSpec,
    PodTemplateSpec,
    ReplicaSet,
    ReplicaSetSpec,
)
from gitkube.api.rollout import POD_TEMPLATE_HASH, REVISION, REVISION_COMMIT
from gitkube.cli import app
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.state import SyncState
from tests.fixtures.git import GitRemote, git

runner = CliRunner()

MANIFEST = """\
# the web tier
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - port: 80
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: app
        image: {image}   # {comment}
"""


def template(image: str, hash_: str) -> PodTemplateSpec:
    return PodTemplateSpec(
        metadata=ObjectMeta(labels={"app": "web", POD_TEMPLATE_HASH: hash_}),
        spec=PodSpec(containers=[Container(name="app", image=image)]),
    )


class Setup:
    def __init__(self, remote: GitRemote, url: str) -> None:
        self.remote = remote
        self.url = url
        remote.write("k8s/web.yaml", MANIFEST.format(image="app:1", comment="first"))
        self.first = remote.commit_and_push("web at app:1")
        remote.write("k8s/web.yaml", MANIFEST.format(image="app:2", comment="second"))
        self.second = remote.commit_and_push("web at app:2")
        remote.write("k8s/web.yaml", MANIFEST.format(image="bad:3", comment="third"))
        self.third = remote.commit_and_push("web at bad:3")

    async def fill(self, *, complete: bool = False, timed_out: bool = True) -> None:
        store = await open_store(self.url)
        try:
            objects = ObjectStore(store)
            state = SyncState(repo=self.remote.url, ref="main", revision=self.third, phase="Synced")
            await store.put(SYNC_STATE_KEY, state.to_json())
            conditions = [
                DeploymentCondition(
                    type="Progressing",
                    status="False" if timed_out else "True",
                    reason="ProgressDeadlineExceeded" if timed_out else "NewReplicaSetAvailable",
                    message='ReplicaSet "web-ccc" has timed out progressing.',
                )
            ]
            d = await objects.create(
                Deployment(
                    metadata=ObjectMeta(
                        name="web",
                        annotations={
                            SOURCE_PATH: "k8s/web.yaml",
                            SOURCE_COMMIT: self.third,
                            MANAGED_BY: MANAGED_BY_VALUE,
                            REVISION: "3",
                        },
                    ),
                    spec=DeploymentSpec(
                        replicas=2,
                        selector=LabelSelector(match_labels={"app": "web"}),
                        template=PodTemplateSpec(
                            metadata=ObjectMeta(labels={"app": "web"}),
                            spec=PodSpec(containers=[Container(name="app", image="bad:3")]),
                        ),
                    ),
                    status=DeploymentStatus(
                        observed_generation=1,
                        replicas=2 if complete else 3,
                        updated_replicas=2 if complete else 1,
                        available_replicas=2,
                        conditions=conditions,
                    ),
                )
            )
            owner = OwnerReference(
                api_version="apps/v1",
                kind="Deployment",
                name="web",
                uid=d.metadata.uid,
                controller=True,
            )
            for rev, image, commit, hash_ in (
                (1, "app:1", self.first, "aaa"),
                (2, "app:2", self.second, "bbb"),
                (3, "bad:3", self.third, "ccc"),
            ):
                await objects.create(
                    ReplicaSet(
                        metadata=ObjectMeta(
                            name=f"web-{hash_}",
                            labels={"app": "web", POD_TEMPLATE_HASH: hash_},
                            annotations={REVISION: str(rev), REVISION_COMMIT: commit},
                            owner_references=[owner],
                        ),
                        spec=ReplicaSetSpec(
                            replicas=2 if rev == 2 else (1 if rev == 3 else 0),
                            selector=LabelSelector(
                                match_labels={"app": "web", POD_TEMPLATE_HASH: hash_}
                            ),
                            template=template(image, hash_),
                        ),
                    )
                )
        finally:
            await store.close()

    def remote_file(self) -> str:
        return git("show", "main:k8s/web.yaml", cwd=self.remote.bare)

    def remote_head(self) -> str:
        return git("rev-parse", "main", cwd=self.remote.bare)


@pytest.fixture
def setup(git_remote: GitRemote, tmp_path: Path) -> Setup:
    s = Setup(git_remote, f"sqlite:///{tmp_path}/state.db")
    asyncio.run(s.fill())
    return s


class TestHistory:
    def test_one_line_per_revision_with_its_commit(self, setup: Setup) -> None:
        result = runner.invoke(app, ["rollout", "history", "deployment/web", "--store", setup.url])
        assert result.exit_code == 0, result.output
        lines = [line for line in result.output.splitlines() if line[:1].isdigit()]
        assert [line.split()[0] for line in lines] == ["1", "2", "3"]
        for line, commit in zip(lines, (setup.first, setup.second, setup.third), strict=True):
            assert commit in line
        assert "bad:3" in lines[2] and lines[2].rstrip().endswith("*")

    def test_json(self, setup: Setup) -> None:
        result = runner.invoke(
            app, ["rollout", "history", "deploy/web", "-o", "json", "--store", setup.url]
        )
        data = json.loads(result.output)
        assert [r["commit"] for r in data["revisions"]] == [setup.first, setup.second, setup.third]


class TestStatus:
    def test_an_exceeded_deadline_exits_1(self, setup: Setup) -> None:
        result = runner.invoke(app, ["rollout", "status", "deployment/web", "--store", setup.url])
        assert result.exit_code == 1
        assert 'deployment "web" exceeded its progress deadline' in result.output

    def test_complete_exits_0(self, git_remote: GitRemote, tmp_path: Path) -> None:
        s = Setup(git_remote, f"sqlite:///{tmp_path}/done.db")
        asyncio.run(s.fill(complete=True, timed_out=False))
        result = runner.invoke(app, ["rollout", "status", "deployment/web", "--store", s.url])
        assert result.exit_code == 0, result.output
        assert "successfully rolled out" in result.output

    def test_timeout_exits_1(self, git_remote: GitRemote, tmp_path: Path) -> None:
        s = Setup(git_remote, f"sqlite:///{tmp_path}/rolling.db")
        asyncio.run(s.fill(timed_out=False))
        result = runner.invoke(
            app, ["rollout", "status", "deployment/web", "--timeout", "1s", "--store", s.url]
        )
        assert result.exit_code == 1
        assert "1 out of 2 new replicas have been updated" in result.output

    def test_unknown_deployment_and_bad_target(self, setup: Setup) -> None:
        result = runner.invoke(app, ["rollout", "status", "deployment/nope", "--store", setup.url])
        assert result.exit_code == 1 and 'deployment "nope" not found' in result.output
        result = runner.invoke(app, ["rollout", "status", "rc/web", "--store", setup.url])
        assert result.exit_code == 2 and "Deployments only" in result.output


class TestRollback:
    def test_dry_run_prints_the_patch_and_pushes_nothing(self, setup: Setup) -> None:
        head = setup.remote_head()
        result = runner.invoke(
            app, ["rollback", "deployment/web", "--dry-run", "--store", setup.url]
        )
        assert result.exit_code == 0, result.output
        assert "-        image: bad:3   # third" in result.output
        assert "+        image: app:2   # second" in result.output
        assert "Roll back deployment/web to revision 2" in result.output
        assert setup.remote_head() == head

    def test_a_commit_on_the_branch_puts_the_revision_back_as_written(self, setup: Setup) -> None:
        result = runner.invoke(
            app,
            ["rollback", "deployment/web", "--to-revision", "1", "--store", setup.url],
        )
        assert result.exit_code == 0, result.output
        assert setup.remote_file() == MANIFEST.format(image="app:1", comment="first").rstrip()
        message = git("log", "-1", "--format=%B", "main", cwd=setup.remote.bare)
        assert message.startswith("Roll back deployment/web to revision 1")
        assert setup.first[:12] in message and "ProgressDeadlineExceeded" in message
        assert git("rev-parse", "main~1", cwd=setup.remote.bare) == setup.third
        assert setup.remote_head()[:12] in result.output

    def test_the_store_is_not_touched(self, setup: Setup) -> None:
        async def snapshot() -> list[tuple[str, bytes]]:
            store = await open_store(setup.url)
            try:
                kvs, _ = await store.range("/gitkube/")
                return [(kv.key, kv.value) for kv in kvs]
            finally:
                await store.close()

        before = asyncio.run(snapshot())
        result = runner.invoke(app, ["rollback", "deployment/web", "--store", setup.url])
        assert result.exit_code == 0, result.output
        assert asyncio.run(snapshot()) == before
        assert "image: app:2" in setup.remote_file()

    def test_repo_and_branch_flags_and_a_missing_revision(
        self, setup: Setup, git_remote: GitRemote
    ) -> None:
        git("push", "--quiet", "origin", "main:refs/heads/release", cwd=git_remote.work)
        result = runner.invoke(
            app,
            [
                "rollback",
                "deployment/web",
                "--repo",
                git_remote.file_url,
                "--branch",
                "release",
                "--store",
                setup.url,
            ],
        )
        assert result.exit_code == 0, result.output
        assert "app:2" in git("show", "release:k8s/web.yaml", cwd=git_remote.bare)
        assert "bad:3" in setup.remote_file()  # main untouched
        result = runner.invoke(
            app, ["rollback", "deployment/web", "--to-revision", "9", "--store", setup.url]
        )
        assert result.exit_code == 1 and "unable to find revision 9" in result.output

    def test_a_checkout_on_this_machine_gets_the_commit_in_its_work_tree(
        self, setup: Setup, git_remote: GitRemote
    ) -> None:
        # `gitkube run` in a clone syncs that clone, whose branch is checked out
        git("pull", "--quiet", "origin", "main", cwd=git_remote.work)
        result = runner.invoke(
            app,
            [
                "rollback",
                "deployment/web",
                "--repo",
                str(git_remote.work),
                "--branch",
                "main",
                "--store",
                setup.url,
            ],
        )
        assert result.exit_code == 0, result.output
        assert "image: app:2" in (git_remote.work / "k8s/web.yaml").read_text()
        assert git("status", "--porcelain", cwd=git_remote.work) == ""
        assert "Roll back" in git("log", "-1", "--format=%s", cwd=git_remote.work)

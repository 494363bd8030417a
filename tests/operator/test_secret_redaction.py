"""Secret values never appear in any output (`gitkube run` as a subprocess,
process runtime, a real git remote and SQLite store).

A Secret with recognisable values (stringData and base64 data) is synced and
consumed by a pod (env secretKeyRef and envFrom), changed in git (`gitkube
diff` while suspended, then synced), and broken in git (an invalid revision
whose error is about the Secret). Then every output is collected: the
operator's verbose log, `gitkube status` (text and -o json), `gitkube get
secrets` (table, -o json, -o yaml), `gitkube get pods -o json`, `gitkube
diff`, `gitkube validate` of the bad manifest, /metrics, /api/v1/status, the
Kubernetes API (get, list, watch of secrets; events),
and every file of the status branch (status.json, STATUS.md) with its commit
messages. None holds a planted value in any form (plain, base64, a line of
it). `get secrets -o json --show-secrets` does hold it: the control that the
values were there to leak.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from gitkube.api.objects import Pod
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.fixtures.git import GitRemote, git
from tests.operator.helpers import (
    eventually,
    free_port,
    gitkube_env,
    kill_processes_under,
    kill_tree,
    run_gitkube,
    spawn_gitkube,
)

PLANTED = "Pl4nted-Zebra-Quokka-9731"
PLANTED_NEW = "Pl4nted-Otter-Marmot-2468"
PLANTED_BAD = "Pl4nted-Badger-Lynx-1357"
PLANTED_TOKEN = "Pl4nted-Kestrel-Heron-8642"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


#: every form a planted value (or a piece of one, such as a value cut short
#: in a message) could take in output: the common prefix, its base64 (the
#: first 6 bytes encode the same in every value), and each distinct word
FORBIDDEN = sorted(
    {"Pl4nted", b64("Pl4nte")}
    | {
        form
        for value in (PLANTED, PLANTED_NEW, PLANTED_BAD, PLANTED_TOKEN)
        for form in (value, b64(value), *value.split("-")[1:3])
    }
)


def secret_yaml(password: str, *, extra: str = "") -> str:
    return f"""\
apiVersion: v1
kind: Secret
metadata:
  name: db
type: Opaque
stringData:
  password: "{password}"
data:
  token: {b64(PLANTED_TOKEN)}
{extra}"""


POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: app
spec:
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "test -n \\"$PW\\" && exec sleep 600"]
    env:
    - name: PW
      valueFrom:
        secretKeyRef: {name: db, key: password}
    envFrom:
    - prefix: DB_
      secretRef: {name: db}
"""


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    path.mkdir()
    yield path
    kill_processes_under(path)


@pytest.fixture
async def objects(state: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite:///{state}/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


async def pod_running(objects: ObjectStore) -> bool:
    pod = await objects.get(Pod, "default", "app")
    return pod is not None and pod.status.phase == "Running"


def cli(*args: str, store: str) -> str:
    proc = run_gitkube([*args, "--store", store])
    return f"$ gitkube {' '.join(args)} (exit {proc.returncode})\n{proc.stdout}{proc.stderr}"


async def test_no_secret_value_in_any_output(
    git_remote: GitRemote, state: Path, objects: ObjectStore, tmp_path: Path
) -> None:
    git_remote.write("secret.yaml", secret_yaml(PLANTED))
    git_remote.write("pod.yaml", POD)
    git_remote.commit_and_push("app and its secret")
    store = f"sqlite:///{state}/state.db"
    port = free_port()
    log = tmp_path / "run.log"
    env = gitkube_env(GITKUBE_NODE=f"leak-{uuid.uuid4().hex[:6]}")
    proc = spawn_gitkube(
        [
            "run", "--repo", git_remote.url, "--runtime", "process", "--state-dir", str(state),
            "--store", store, "--listen", f"127.0.0.1:{port}", "--interval", "1s", "--verbose",
        ],
        log=log,
        env=env,
    )  # fmt: skip
    outputs: dict[str, str] = {}
    base = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: pod_running(objects), timeout=60, what="the pod running")

        # a change, previewed while suspended
        outputs["suspend"] = cli("suspend", store=store)
        git_remote.write("secret.yaml", secret_yaml(PLANTED_NEW))
        git_remote.commit_and_push("rotate the password")
        diff = run_gitkube(["diff", "--repo", git_remote.url, "--store", store])
        outputs["diff"] = diff.stdout + diff.stderr
        assert "Secret/default/db" in outputs["diff"] and "password" in outputs["diff"]
        assert "changed" in outputs["diff"]
        outputs["resume"] = cli("resume", store=store)

        async def synced(value: str) -> bool:
            proc = run_gitkube(["get", "secrets", "db", "-o", "json", "--show-secrets",
                                "--store", store])  # fmt: skip
            return proc.returncode == 0 and b64(value) in proc.stdout

        await eventually(lambda: synced(PLANTED_NEW), timeout=30, what="the new value synced")

        # a broken revision whose errors are about the Secret
        bad = secret_yaml(PLANTED_NEW, extra=f'  bad: "!{PLANTED_BAD}!"\n')
        git_remote.write("secret.yaml", bad)
        git_remote.commit_and_push("a broken secret")

        async def failed() -> bool:
            proc = run_gitkube(["status", "-o", "json", "--store", store])
            return proc.returncode in (0, 1) and '"Failed"' in proc.stdout

        await eventually(failed, timeout=30, what="the broken revision reported")
        (tmp_path / "bad.yaml").write_text(bad)
        outputs["validate"] = run_gitkube(["validate", str(tmp_path / "bad.yaml")]).stderr
        outputs["validate"] += run_gitkube(["validate", str(tmp_path / "bad.yaml")]).stdout

        for args in (
            ("status",),
            ("status", "-o", "json"),
            ("get", "secrets"),
            ("get", "secrets", "-o", "json"),
            ("get", "secrets", "-o", "yaml"),
            ("get", "secrets", "db", "-o", "yaml"),
            ("get", "pods", "-o", "json"),
        ):
            outputs[" ".join(args)] = cli(*args, store=store)
        async with aiohttp.ClientSession() as session:
            for path in (
                "/metrics",
                "/api/v1/status",
                # the Kubernetes API (read-only): get, list, watch, events
                "/api/v1/namespaces/default/secrets/db",
                "/api/v1/namespaces/default/secrets",
                "/api/v1/secrets",
                "/api/v1/namespaces/default/secrets?watch=true&timeoutSeconds=1",
                "/api/v1/events",
            ):
                async with session.get(base + path) as resp:
                    outputs[path] = await resp.text()

        async def status_branch_written() -> bool:
            out = git("ls-tree", "-r", "--name-only", "refs/heads/gitkube/status",
                      cwd=git_remote.bare, check=False)  # fmt: skip
            return "status.json" in out

        await eventually(status_branch_written, timeout=30, what="the status branch")
        files = git("ls-tree", "-r", "--name-only", "refs/heads/gitkube/status",
                    cwd=git_remote.bare).split()  # fmt: skip
        for name in files:
            outputs[f"status branch {name}"] = git(
                "show", f"refs/heads/gitkube/status:{name}", cwd=git_remote.bare
            )
        outputs["status branch log"] = git(
            "log", "--format=%B", "refs/heads/gitkube/status", cwd=git_remote.bare
        )

        assert '"kind": "Secret"' in outputs["/api/v1/namespaces/default/secrets/db"].replace(
            '":"', '": "'
        )
        # the control: the values were there to leak
        shown = run_gitkube(["get", "secrets", "db", "-o", "json", "--show-secrets",
                             "--store", store]).stdout  # fmt: skip
        assert b64(PLANTED_NEW) in shown and b64(PLANTED_TOKEN) in shown
        assert "Failed" in outputs["status -o json"]
        assert "secret.yaml" in outputs["status -o json"]
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            await asyncio.to_thread(proc.wait, 10)
    outputs["operator log"] = log.read_text()
    assert "DEBUG" in outputs["operator log"] or "INFO" in outputs["operator log"]
    leaks = [
        f"{what}: contains {form!r}"
        for what, text in outputs.items()
        for form in FORBIDDEN
        if form in text
    ]
    assert not leaks, "\n".join(leaks) + "\n\n" + json.dumps(outputs, indent=1)[:20000]

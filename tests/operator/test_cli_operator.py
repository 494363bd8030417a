"""The operator's commands as a user runs them (subprocesses of `python -m gitkube`).

- `gitkube config`: the file, then the environment, then flags win (flags
  shown through `gitkube doctor --listen`, which takes them); secrets and URL
  credentials masked; a bad value is a usage error (exit 2);
- `gitkube doctor`: a dead store fails (exit 1) and says what to do; a
  healthy SQLite store and a reachable repository pass (exit 0);
- `gitkube run` on the process runtime: `--interval 5m` accepted, `--interval
  soon` exit 2; the webhook secret comes from GITKUBE_WEBHOOK_SECRET (signed
  202, wrongly signed 401); SIGTERM exits 0 and the pods keep serving.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gitkube.api.objects import Pod, ReplicationController
from gitkube.server.webhooks import sign
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.fixtures.git import GitRemote
from tests.operator.helpers import (
    SECRET,
    eventually,
    free_port,
    github_push,
    gitkube_env,
    http_get,
    kill_processes_under,
    kill_tree,
    run_gitkube,
    spawn_gitkube,
)

# ------------------------------------------------------------ gitkube config


def config_json(*args: str, env: dict[str, str]) -> dict[str, Any]:
    result = run_gitkube(["config", *args, "-o", "json"], env=gitkube_env(**env))
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_config_environment_wins_over_file(tmp_path: Path) -> None:
    cfg = tmp_path / "gitkube.yaml"
    cfg.write_text(
        "store: sqlite:///from/file.db\nbranch: from-file\nnodes: 3\ninterval: 5m\n"
        "webhook-secret: file-secret\n"
    )
    data = config_json(
        "--config",
        str(cfg),
        env={"GITKUBE_STORE": "etcd://127.0.0.1:2379", "GITKUBE_NODES": "2"},
    )
    settings, sources = data["settings"], data["sources"]
    assert (settings["store"], sources["store"]) == ("etcd://127.0.0.1:2379", "env")
    assert (settings["nodes"], sources["nodes"]) == (2, "env")
    assert (settings["branch"], sources["branch"]) == ("from-file", "file")
    assert (settings["interval"], sources["interval"]) == ("5m", "file")
    assert (settings["listen"], sources["listen"]) == ("127.0.0.1:9080", "default")
    # GITKUBE_CONFIG names the file too
    data = config_json(env={"GITKUBE_CONFIG": str(cfg)})
    assert data["sources"]["branch"] == "file"


def test_config_masks_secrets_and_credentials(tmp_path: Path) -> None:
    result = run_gitkube(
        ["config"],
        env=gitkube_env(
            GITKUBE_WEBHOOK_SECRET="hunter2-webhook",
            GITKUBE_REPO="https://bob:hunter2-token@git.example/r.git",
            COLUMNS="200",
        ),
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "********" in result.stdout and "https://***@git.example/r.git" in result.stdout
    data = config_json(env={"GITKUBE_WEBHOOK_SECRET": "hunter2-webhook"})
    assert data["settings"]["webhook_secret"] == "********"


def test_config_bad_value_is_a_usage_error(tmp_path: Path) -> None:
    result = run_gitkube(["config"], env=gitkube_env(GITKUBE_INTERVAL="soon"))
    assert result.returncode == 2
    assert "interval" in result.stderr and "soon" in result.stderr
    assert "Traceback" not in result.stderr


def doctor_port(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """The exit code of `gitkube doctor` and the address its port check looked at."""
    result = run_gitkube(["doctor", *args, "-o", "json"], env=gitkube_env(**env))
    if result.returncode == 2:
        return 2, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    return result.returncode, checks["http port"]["detail"].split()[0]


def test_flag_wins_over_environment_wins_over_file(tmp_path: Path) -> None:
    p_file, p_env, p_flag = free_port(), free_port(), free_port()
    cfg = tmp_path / "gitkube.yaml"
    cfg.write_text(f"listen: 127.0.0.1:{p_file}\nstore: sqlite:///{tmp_path}/state.db\n")
    base = ["--config", str(cfg)]
    assert doctor_port(base, {})[1] == f"127.0.0.1:{p_file}"
    env = {"GITKUBE_LISTEN": f"127.0.0.1:{p_env}"}
    assert doctor_port(base, env)[1] == f"127.0.0.1:{p_env}"
    assert doctor_port([*base, "--listen", f"127.0.0.1:{p_flag}"], env)[1] == f"127.0.0.1:{p_flag}"
    # an unusable environment value does not matter when a flag overrides it
    bad_env = {"GITKUBE_LISTEN": "nowhere"}
    assert doctor_port(base, bad_env)[0] == 2
    assert doctor_port([*base, "--listen", f"127.0.0.1:{p_flag}"], bad_env)[1].endswith(
        f":{p_flag}"
    )


# ------------------------------------------------------------ gitkube doctor


def test_doctor_dead_store_fails_and_says_what_to_do(tmp_path: Path) -> None:
    dead = f"etcd://127.0.0.1:{free_port()}"
    result = run_gitkube(["doctor", "--store", dead, "--listen", f"127.0.0.1:{free_port()}"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    result = run_gitkube(
        ["doctor", "--store", dead, "--listen", f"127.0.0.1:{free_port()}", "-o", "json"]
    )
    assert result.returncode == 1
    store = next(c for c in json.loads(result.stdout) if c["name"] == "store")
    assert store["level"] == "fail"
    assert dead in store["detail"] and "unreachable" in store["detail"]
    assert "start etcd" in store["fix"] and "--store" in store["fix"]


def test_doctor_healthy_sqlite_store(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("web.yaml", web_rc(1))
    git_remote.commit_and_push("web")
    result = run_gitkube(
        [
            "doctor", "--store", f"sqlite:///{tmp_path}/state.db", "--repo", git_remote.url,
            "--runtime", "process", "--listen", f"127.0.0.1:{free_port()}", "-o", "json",
        ]
    )  # fmt: skip
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert result.returncode == 0, [c for c in checks.values() if c["level"] == "fail"]
    assert checks["store"]["level"] == "ok" and "answers at revision" in checks["store"]["detail"]
    assert checks["git remote"]["level"] == "ok"
    assert checks["http port"]["level"] == "ok"
    assert all(c["level"] != "fail" for c in checks.values())


# ------------------------------------------------------------ gitkube run


def web_rc(replicas: int) -> str:
    return f"""\
apiVersion: v1
kind: ReplicationController
metadata:
  name: web
spec:
  replicas: {replicas}
  selector: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: python:3.11-alpine
        command: ["python3", "-m", "http.server", "--bind", "127.0.0.1", "$(PORT)"]
        ports:
        - {{name: http, containerPort: 8000}}
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
"""


def test_run_bad_interval_is_a_usage_error(git_remote: GitRemote, tmp_path: Path) -> None:
    result = run_gitkube(
        ["run", "--repo", git_remote.url, "--state-dir", str(tmp_path), "--interval", "soon"]
    )
    assert result.returncode == 2
    assert "interval" in result.stderr and "soon" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "state.db").exists()  # nothing started


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    yield path
    kill_processes_under(path)


@pytest.fixture
async def objects(state: Path) -> AsyncIterator[ObjectStore]:
    state.mkdir(parents=True, exist_ok=True)
    store = await open_store(f"sqlite:///{state}/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


async def ready_replicas(objects: ObjectStore, n: int) -> bool:
    rc = await objects.get(ReplicationController, "default", "web")
    return rc is not None and rc.spec.replicas == n and rc.status.ready_replicas == n


@pytest.mark.slow
async def test_run_subprocess_secret_from_env_sigterm_leaves_pods(
    git_remote: GitRemote, state: Path, objects: ObjectStore
) -> None:
    git_remote.write("web.yaml", web_rc(1))
    git_remote.commit_and_push("web")
    port = free_port()
    log = state.parent / "run.log"
    env = gitkube_env(
        GITKUBE_WEBHOOK_SECRET=SECRET,
        GITKUBE_WATCH="false",  # the webhook, not the ref watcher, announces the push
        GITKUBE_NODE=f"cli-{uuid.uuid4().hex[:6]}",
    )
    proc = spawn_gitkube(
        [
            "run", "--repo", git_remote.url, "--runtime", "process", "--state-dir", str(state),
            "--listen", f"127.0.0.1:{port}", "--interval", "5m", "--no-writeback",
        ],
        log=log,
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: ready_replicas(objects, 1), timeout=40, what="1 pod ready")
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/readyz") as resp:
                assert resp.status == 200
            git_remote.write("web.yaml", web_rc(2))
            sha = git_remote.commit_and_push("scale to 2")
            body, headers = github_push("main", sha)
            wrong = {**headers, "X-Hub-Signature-256": sign(b"not-the-secret", body)}
            async with session.post(
                base + "/hooks/github", data=io.BytesIO(body), headers=wrong
            ) as resp:
                assert resp.status == 401
            async with session.post(
                base + "/hooks/github", data=io.BytesIO(body), headers=headers
            ) as resp:
                assert resp.status == 202, await resp.text()
        await eventually(lambda: ready_replicas(objects, 2), timeout=40, what="2 pods ready")
        pods, _ = await objects.list(Pod, "default")
        ports = [p.status.host_ports["web/8000/TCP"] for p in pods]
        assert len(ports) == 2

        os.kill(proc.pid, signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        assert code == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
        # the pods outlive the operator
        for host_port in ports:
            assert (await http_get(host_port))[0] == 200, f"pod on {host_port} stopped"
    finally:
        if proc.poll() is None:
            kill_tree(proc.pid)
            proc.wait(timeout=10)
        # the pods were left running on purpose; end them (by the state dir in their command)
        kill_processes_under(state)

"""`gitkube agent` and `gitkube logs` as commands, on the process runtime and a
real SQLite store shared between processes:

- the agent registers its node with the flags' labels and capacity and runs
  a bound pod; `gitkube logs` prints its output (whole, --tail, --previous
  of a restarted container, -o errors);
- SIGTERM stops the agent, not its pods; a new agent adopts them (same
  container ids, no status rewritten);
- errors: an unknown pod, a pod with several containers and no -c, a
  container that has not started, and bad flags (exit 2).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitkube.api.objects import Container, Node, ObjectMeta, Pod, PodSpec
from gitkube.nodes.registration import heartbeat_key
from gitkube.nodes.runtime.process import ProcessRuntime
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore


@dataclass
class Cluster:
    tmp: Path
    url: str
    objects: ObjectStore

    @property
    def state_dir(self) -> Path:
        return self.tmp / "state"

    def start_agent(self, *extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gitkube",
                "agent",
                "--node",
                "c1",
                "--store",
                self.url,
                "--runtime",
                "process",
                "--state-dir",
                str(self.state_dir),
                "--labels",
                "zone=a,disk=ssd",
                "--cpu",
                "3",
                "--memory",
                "2Gi",
                "--max-pods",
                "7",
                "--no-proxy",
                "--restart-backoff",
                "0.3s",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "GITKUBE_NODE_GRACE": "9s"},
        )

    def gitkube(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gitkube", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "GITKUBE_STORE": self.url},
        )

    async def invoke(self, *args: str) -> tuple[int, str, str]:
        """The command in this process (a worker thread: it runs its own event loop)."""
        from typer.testing import CliRunner

        from gitkube.cli import app

        result = await asyncio.to_thread(
            CliRunner().invoke, app, [*args, "--store", self.url], catch_exceptions=False
        )
        return result.exit_code, result.stdout, result.stderr

    async def wait_pod(self, name: str, cond, timeout: float = 20.0) -> Pod:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            pod = await self.objects.get(Pod, "default", name)
            if pod is not None and cond(pod):
                return pod
            assert time.monotonic() < deadline, f"pod {name}: {pod.status if pod else None}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    url = f"sqlite:///{tmp_path}/state.db"
    store = await open_store(url)
    try:
        yield Cluster(tmp_path, url, ObjectStore(store))
    finally:
        await store.close()
        runtime = ProcessRuntime(node_name="c1", state_dir=tmp_path / "state" / "node-c1")
        for rc in await runtime.list_containers():
            await runtime.stop_container(rc.id, grace_seconds=0)
            await runtime.remove_container(rc.id)
        for sandbox in await runtime.list_sandboxes():
            await runtime.remove_sandbox(sandbox.id)


def stop_agent(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError("the agent did not stop on SIGTERM: " + out.decode()) from None
    assert proc.returncode == 0, out.decode()
    return out.decode()


def pod(name: str, *scripts: str) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name),
        spec=PodSpec(
            node_name="c1",
            termination_grace_period_seconds=1,
            containers=[
                Container(name=f"c{i}", image="busybox", command=["sh", "-c", script])
                for i, script in enumerate(scripts)
            ],
        ),
    )


SERVE = "echo line-one; echo line-two; trap 'exit 0' TERM; while true; do sleep 0.1; done"


@pytest.mark.slow
async def test_agent_and_logs(cluster: Cluster) -> None:
    agent = cluster.start_agent()
    try:
        await cluster.objects.create(pod("web", SERVE))
        await cluster.objects.create(pod("crash", "echo attempt-output; exit 1"))
        await cluster.objects.create(pod("duo", SERVE, SERVE))
        web = await cluster.wait_pod("web", lambda p: p.is_ready())
        node = await cluster.objects.get(Node, "", "c1")
        assert node is not None
        assert node.metadata.labels["zone"] == "a" and node.metadata.labels["disk"] == "ssd"
        assert node.status.capacity == {"cpu": "3", "memory": "2097152Ki", "pods": "7"}

        logs = cluster.gitkube("logs", "web")
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout == "line-one\nline-two\n"
        tail = cluster.gitkube("logs", "default/web", "--tail", "1")
        assert tail.stdout == "line-two\n"

        await cluster.wait_pod(
            "crash",
            lambda p: (
                bool(p.status.container_statuses)
                and p.status.container_statuses[0].restart_count >= 1
            ),
        )
        previous = cluster.gitkube("logs", "crash", "--previous")
        assert previous.returncode == 0, previous.stderr
        assert previous.stdout == "attempt-output\n"

        code, _, err = await cluster.invoke("logs", "duo")
        assert code == 1
        assert "has 2 containers; choose one with -c: c0, c1" in err
        code, out, _ = await cluster.invoke("logs", "duo", "-c", "c1")
        assert code == 0 and out.startswith("line-one")
        code, _, err = await cluster.invoke("logs", "nope")
        assert code == 1
        assert "pod default/nope not found" in err
        code, _, err = await cluster.invoke("logs", "web", "--previous")
        assert code == 1
        assert "has no previous attempt" in err
        assert "Traceback" not in err
    finally:
        stop_agent(agent)

    runtime = ProcessRuntime(node_name="c1", state_dir=cluster.state_dir / "node-c1")
    web_ids = sorted(rc.id for rc in await runtime.list_containers() if rc.pod_name == "web")
    assert len(web_ids) == 1
    assert [rc.state for rc in await runtime.list_containers() if rc.pod_name == "web"] == [
        "running"
    ]

    beat = await cluster.objects.store.get(heartbeat_key("c1"))
    assert beat is not None
    agent = cluster.start_agent()
    try:
        deadline = time.monotonic() + 20
        while (now := await cluster.objects.store.get(heartbeat_key("c1"))) is None or (
            now.mod_revision == beat.mod_revision
        ):
            assert time.monotonic() < deadline, "the new agent did not heartbeat"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # passes of the new agent over the pods
        after = sorted(rc.id for rc in await runtime.list_containers() if rc.pod_name == "web")
        assert after == web_ids
        again = await cluster.objects.get(Pod, "default", "web")
        assert again is not None
        assert again.metadata.resource_version == web.metadata.resource_version
    finally:
        stop_agent(agent)


def test_bad_flags_are_usage_errors(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gitkube",
            "agent",
            "--store",
            f"sqlite:///{tmp_path}/s.db",
            "--labels",
            "zone",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--labels: 'zone' is not key=value" in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "gitkube", "agent", "--address", "localhost"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "is not an IP address" in result.stderr

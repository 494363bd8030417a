"""`gitkube run` builds its local agents as `gitkube agent` does, from the same
settings (process runtime):

- the Nodes of two local agents carry the cpu, memory and max-pods of the
  settings as capacity and allocatable, and the labels;
- a crash-looping pod backs off by the restart back-off of the settings
  (1 s doubling to a cap of 4 s here, not kubelet's 10 s to 5 min);
- bad agent settings given to `gitkube run` are usage errors (exit 2) naming
  the setting, as they are for `gitkube agent`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gitkube.api.objects import Node, Pod
from tests.fixtures.git import GitRemote
from tests.operator.helpers import (
    eventually,
    gitkube_env,
    kill_processes_under,
    operator_settings,
    run_gitkube,
    start_operator,
)

CRASHER = """\
apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  restartPolicy: Always
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "exit 3"]
"""


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "state"
    yield path
    kill_processes_under(path)


async def test_run_agents_take_capacity_labels_and_back_off_from_settings(
    git_remote: GitRemote, state: Path
) -> None:
    git_remote.write("crasher.yaml", CRASHER)
    git_remote.commit_and_push("a crash-looping pod")
    settings = operator_settings(
        git_remote.url,
        state,
        nodes=2,
        cpu="1500m",
        memory="3Gi",
        max_pods=5,
        labels="zone=a,disk=ssd",
        restart_backoff="1s",
        restart_backoff_max="4s",
        writeback=False,
    )
    running = await start_operator(settings)
    op = running.operator
    start = 1
    try:
        assert op.objects is not None
        objects = op.objects

        async def nodes() -> list[Node] | None:
            found, _ = await objects.list(Node)
            return found if len(found) == 2 else None

        for node in await eventually(nodes, what="two local nodes"):
            want = {"cpu": "1500m", "memory": "3145728Ki", "pods": "5"}
            assert node.status.capacity == want, node.metadata.name
            assert node.status.allocatable == want, node.metadata.name
            assert node.metadata.labels["zone"] == "a"
            assert node.metadata.labels["disk"] == "ssd"

        # every status written: the back-off goes 1s, 2s, 4s and stays at the cap
        delays: list[float] = []

        async def watch() -> None:
            async for event in objects.watch(["pods"], start_revision=start):
                pod = event.object
                if not isinstance(pod, Pod) or pod.name != "crasher":
                    continue
                statuses = pod.status.container_statuses
                waiting = statuses[0].state.waiting if statuses else None
                if waiting is None or waiting.reason != "CrashLoopBackOff":
                    continue
                match = re.search(r"back-off (\d+(?:\.\d+)?)s", waiting.message)
                assert match, waiting.message
                delays.append(float(match[1]))
                if delays.count(4.0) >= 2:
                    return

        await asyncio.wait_for(watch(), timeout=60)
        assert sorted(set(delays)) == [1.0, 2.0, 4.0], delays
        assert delays == sorted(delays), delays
    finally:
        await running.shutdown()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-pods", "0"], "--max-pods must be at least 1"),
        (["--cpu", "lots"], "--cpu:"),
        (["--labels", "zone"], "--labels: 'zone' is not key=value"),
        (
            ["--restart-backoff", "1m", "--restart-backoff-max", "10s"],
            "--restart-backoff-max must not be shorter than --restart-backoff",
        ),
    ],
)
def test_run_bad_agent_settings_are_usage_errors(
    git_remote: GitRemote, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_gitkube(
        ["run", "--repo", git_remote.url, "--state-dir", str(tmp_path / "s"), *args],
        env=gitkube_env(),
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "s").exists()  # nothing started


async def test_run_bad_max_pods_from_the_environment(git_remote: GitRemote, tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        run_gitkube,
        ["run", "--repo", git_remote.url, "--state-dir", str(tmp_path / "s")],
        env=gitkube_env(GITKUBE_MAX_PODS="0"),
    )
    assert result.returncode == 2, result.stderr
    assert "--max-pods must be at least 1" in result.stderr

"""Fixtures of the multi-host tests: a ``NetLab`` of hosts on a private bridge,
etcd on the bridge, and ``gitkube master`` / ``gitkube agent`` processes in the
hosts (see ``rig``). Short grace, eviction and lease settings keep each
scenario to seconds; every wait is on a condition."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gitkube.api.keys import LEADER_KEY, SYNC_STATE_KEY
from gitkube.api.objects import Node, Pod
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.state import SyncState
from tests.fixtures.etcd import etcd_binary, free_port
from tests.fixtures.git import GitRemote
from tests.fixtures.require import missing
from tests.multihost.rig import BridgeEtcd, HostDockerd, NetLab, kill_tree, require_netlab
from tests.operator.helpers import SECRET, eventually, gitkube_env

#: heartbeat lapse before NotReady, and NotReady time before eviction
NODE_GRACE = 4.0
EVICTION_TIMEOUT = 4.0
LEADER_TTL = 3
INTERVAL = 1.0


@dataclass
class Cluster:
    lab: NetLab
    etcd: BridgeEtcd
    objects: ObjectStore
    remote: GitRemote
    masters: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    agent_dirs: dict[str, Path] = field(default_factory=dict)
    dockerds: dict[str, HostDockerd] = field(default_factory=dict)

    def address(self, host: str) -> str:
        return self.lab.hosts[host].address

    def start_master(self, host: str) -> subprocess.Popen[bytes]:
        proc = self.lab.spawn_gitkube(
            host,
            [
                "master", "--store", self.etcd.url, "--repo", str(self.remote.bare),
                "--listen", f"{self.address(host)}:9080", "--leader-ttl", str(LEADER_TTL),
                "--interval", f"{INTERVAL}s", "--node-grace", f"{NODE_GRACE}s",
                "--eviction-timeout", f"{EVICTION_TIMEOUT}s", "--node-eviction-rate", "1",
                "--state-dir", str(self.lab.root / f"master-{host}"), "--no-writeback",
            ],
            log=f"master-{host}.log",
            env=gitkube_env(GITKUBE_WEBHOOK_SECRET=SECRET),
        )  # fmt: skip
        self.masters[host] = proc
        return proc

    def start_agent(self, host: str, *, runtime: str = "process") -> subprocess.Popen[bytes]:
        state = self.lab.root / f"agent-{host}"
        self.agent_dirs[host] = state / f"node-{host}"
        env = gitkube_env()
        if runtime == "docker":
            env["DOCKER_HOST"] = self.dockerds[host].docker_host
        proc = self.lab.spawn_gitkube(
            host,
            [
                "agent", "--store", self.etcd.url, "--node", host, "--runtime", runtime,
                "--address", self.address(host), "--proxy-address", self.address(host),
                "--state-dir", str(state), "--node-grace", f"{NODE_GRACE}s",
                "--restart-backoff", "1s",
            ],
            log=f"agent-{host}.log",
            env=env,
        )  # fmt: skip
        self.agents[host] = proc
        return proc

    def running(self, host: str) -> list[str]:
        """The pods that run on ``host``, as its runtime shows them: the pod
        containers of its dockerd, or the pod processes in its namespace."""
        if host in self.dockerds:
            return self.dockerds[host].running_pods()
        return self.lab.pods_running(host, self.agent_dirs[host])

    def kill_host(self, host: str) -> int:
        """SIGKILL every process of ``host``: its namespace's, and its containers'
        (which live in namespaces of their own)."""
        containers = self.dockerds[host].container_pids() if host in self.dockerds else []
        killed = self.lab.kill_host(host)
        for pid in containers:
            killed += kill_tree(pid)
        return killed

    async def leader_pid(self) -> int:
        kv = await self.objects.store.get(LEADER_KEY)
        if kv is None:
            return 0
        return int(kv.value.decode().rsplit("-", 1)[1])

    async def leader_host(self) -> str:
        pid = await self.leader_pid()
        return next((h for h, p in self.masters.items() if p.pid == pid), "")

    async def synced_revision(self) -> str:
        kv = await self.objects.store.get(SYNC_STATE_KEY)
        return SyncState.from_json(kv.value).revision if kv else ""

    async def ready_nodes(self) -> set[str]:
        nodes, _ = await self.objects.list(Node)
        out = set()
        for node in nodes:
            cond = node.status.condition("Ready")
            if cond is not None and cond.status == "True":
                out.add(node.name)
        return out

    async def pods(self) -> list[Pod]:
        pods, _ = await self.objects.list(Pod)
        return pods

    async def wait(self, check: Callable[[], Awaitable[Any]], *, timeout: float, what: str) -> Any:
        try:
            return await eventually(check, timeout=timeout, what=what)
        except AssertionError:
            print(self.lab.log_tail())
            raise


@pytest.fixture
def netlab_factory(tmp_path: Path) -> Iterator[Callable[[Sequence[str]], NetLab]]:
    require_netlab()
    labs: list[NetLab] = []

    def make(names: Sequence[str]) -> NetLab:
        lab = NetLab.create(tmp_path, names)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.close()


ClusterFactory = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def cluster_factory(
    netlab_factory: Callable[[Sequence[str]], NetLab],
    git_remote: GitRemote,
    tmp_path: Path,
) -> AsyncIterator[ClusterFactory]:
    """``await make(masters=[...], agents=[...], runtime=...)``: a lab with those
    hosts, etcd on its bridge, the masters and agents started and registered."""
    made: list[Cluster] = []
    stores: list[Any] = []

    async def make(
        *, masters: Sequence[str], agents: Sequence[str], runtime: str = "process"
    ) -> Cluster:
        binary = etcd_binary()
        if binary is None:
            missing("etcd", "install it (apt-get install etcd-server) or put it on PATH")
        lab = netlab_factory([*masters, *agents])
        etcd = BridgeEtcd(binary, tmp_path / "etcd", lab.bridge_address, free_port())
        etcd.start(free_port())
        store = await open_store(etcd.url)
        stores.append((store, etcd))
        c = Cluster(lab, etcd, ObjectStore(store), git_remote)
        made.append(c)
        if runtime == "docker":
            await _start_dockerds(c, agents)
        for host in masters:
            c.start_master(host)
        for host in agents:
            c.start_agent(host, runtime=runtime)

        async def registered() -> bool:
            return await c.ready_nodes() == set(agents)

        await c.wait(registered, timeout=60, what=f"agents {list(agents)} Ready")
        return c

    try:
        yield make
    finally:
        for c in made:
            for dockerd in c.dockerds.values():
                _remove_containers(dockerd)
        for store, _etcd in stores:
            with contextlib.suppress(Exception):
                await store.close()
        for c in made:
            c.lab.close()  # ends the agents and dockerds before etcd, removes their dirs
        for _, etcd in stores:
            etcd.stop()


async def _start_dockerds(c: Cluster, hosts: Sequence[str]) -> None:
    import asyncio

    from tests.fixtures.docker import TEST_IMAGE

    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        missing("`dockerd` and `docker`", "install docker.io (bash .ci/run does)")
    if subprocess.run(["docker", "image", "inspect", TEST_IMAGE], capture_output=True).returncode:
        missing(f"the test image {TEST_IMAGE}", "run scripts/make-test-image.sh")
    images = [TEST_IMAGE]
    if not subprocess.run(
        ["docker", "image", "inspect", "gitkube/pause:latest"], capture_output=True
    ).returncode:
        images.append("gitkube/pause:latest")
    tar = subprocess.run(["docker", "save", *images], capture_output=True, check=True).stdout
    for index, host in enumerate(hosts, start=1):
        dockerd = HostDockerd(c.lab, host, index)
        c.dockerds[host] = dockerd
        dockerd.start()
    for dockerd in c.dockerds.values():
        await asyncio.to_thread(dockerd.wait_ready)
        await asyncio.to_thread(dockerd.load, tar)


def _remove_containers(dockerd: HostDockerd) -> None:
    """Every container of this test's engine (its containers live in namespaces
    of their own, which ending the host's processes would not reach)."""
    if dockerd.process is None or dockerd.process.poll() is not None:
        return
    base = ["docker", "-H", dockerd.docker_host]
    ids = subprocess.run([*base, "ps", "-aq"], capture_output=True, text=True, check=False)
    if ids.stdout.split():
        subprocess.run([*base, "rm", "-f", *ids.stdout.split()], capture_output=True, check=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.multihost)
            item.add_marker(pytest.mark.etcd)
            item.add_marker(pytest.mark.slow)

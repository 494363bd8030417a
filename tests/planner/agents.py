"""Fake agents for planner loop tests: real registration and heartbeats
(``gitkube.nodes.registration``, a lease in the real store), and a stand-in
kubelet that reports pods bound to the node as Running — and Ready unless
their image is in ``never_ready`` — by writing pod status, as an agent does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from gitkube.api.objects import Pod, PodCondition
from gitkube.errors import Conflict, GitkubeError
from gitkube.nodes.registration import Heartbeat, NodeSettings, register_node
from gitkube.store.objects import ObjectStore, now_iso


class FakeAgent:
    def __init__(
        self,
        objects: ObjectStore,
        name: str,
        *,
        cpu: int = 4000,
        memory: int = 8 * 2**30,
        max_pods: int = 110,
        never_ready: frozenset[str] = frozenset({"broken"}),
        interval: float = 0.1,
    ) -> None:
        self.objects = objects
        self.settings = NodeSettings(
            name=name, address="127.0.0.1", cpu=cpu, memory=memory, max_pods=max_pods
        )
        self.heartbeat = Heartbeat(objects, self.settings, ttl=1, interval=interval)
        self.never_ready = never_ready
        self.interval = interval
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def name(self) -> str:
        return self.settings.name

    async def start(self) -> None:
        await register_node(self.objects, self.settings)
        await self.heartbeat.beat()
        self.tasks = [
            asyncio.create_task(self.heartbeat.run(self.stop)),
            asyncio.create_task(self._kubelet()),
        ]

    async def kill(self) -> None:
        """Die without a word: heartbeats stop, the lease lapses on its own."""
        self.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []

    async def _kubelet(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(GitkubeError):
                await self.sync_pods()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.interval)

    async def sync_pods(self) -> None:
        pods, _ = await self.objects.list(Pod)
        for pod in pods:
            if pod.spec.node_name != self.name or pod.metadata.deletion_timestamp:
                continue
            ready = all(c.image not in self.never_ready for c in pod.spec.containers)
            if pod.status.phase == "Running" and pod.is_ready() == ready:
                continue
            updated = pod.copy()
            updated.status.phase = "Running"
            updated.status.host_ip = "127.0.0.1"
            updated.status.conditions = [
                c for c in updated.status.conditions if c.type != "Ready"
            ] + [
                PodCondition(
                    type="Ready",
                    status="True" if ready else "False",
                    last_transition_time=now_iso(),
                )
            ]
            compare, put = self.objects.update_ops(updated, pod)
            with contextlib.suppress(Conflict):
                await self.objects.apply([compare], [put])


async def eventually(
    check: Callable[[], Awaitable[object]], *, timeout: float = 20.0, every: float = 0.05
) -> object:
    """Poll ``check`` until it returns something truthy; the last value on timeout fails."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s (last value: {value!r})")
        await asyncio.sleep(every)

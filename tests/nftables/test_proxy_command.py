"""`gitkube proxy --proxy-mode`: the real command, run inside a network
namespace the test creates (no default route) and deletes.

- ``--proxy-mode nftables``: the command programs the table ``ip gitkube``
  from the store: the Service's cluster IP reaches its two endpoints, evenly,
  and its nodePort answers on ``--address``; an endpoint that leaves gets no
  new connection; the mode and why are recorded for ``gitkube doctor``;
  SIGTERM ends it (exit 0) and leaves the table in place
- ``--proxy-mode auto`` as root with nft: nftables again, resyncing the table
  it finds; with ``--cleanup`` the table and the interface go on stop
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gitkube.services.mode import PROXY_MODE_PREFIX
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.nftables.netns import Netns, netns, require_kernel_path
from tests.nftables.test_kernel import NODE, VIP, make_service, set_endpoints

ROOT = Path(__file__).resolve().parents[2]
SERVICE_IPS = ("ip", "gitkube", "service-ips")


@pytest.fixture
def ns() -> Iterator[Netns]:
    require_kernel_path()
    with netns(NODE, "10.0.0.2", "10.0.0.3") as created:
        yield created


class ProxyCommand:
    """``gitkube proxy ARGS`` in the namespace, its log in a file."""

    def __init__(self, ns: Netns, url: str, log: Path, *args: str) -> None:
        self.log = log
        argv = ["proxy", "--store", url, "--node", "n1", "--address", NODE, *args]
        with log.open("wb") as stderr:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns.name, sys.executable, "-m", "gitkube", *argv],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def stop(self) -> int:
        """SIGTERM; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        raise AssertionError(f"gitkube proxy ignored SIGTERM:\n{self.log.read_text()}")


def wait_for(check: Callable[[], object], what: str, command: ProxyCommand) -> None:
    deadline = time.monotonic() + 30
    while not check():
        if command.proc.poll() is not None:
            raise AssertionError(f"gitkube proxy exited: {command.log.read_text()}")
        assert time.monotonic() < deadline, f"not in 30s: {what}\n{command.log.read_text()}"
        time.sleep(0.05)


def serves(ns: Netns, *names: str) -> Callable[[], bool]:
    """Whether new connections to the cluster IP reach exactly ``names``."""

    def check() -> bool:
        seen = ns.connect(VIP, 80, 2 * len(names))
        return sorted(k for k in seen if not k.startswith("_")) == sorted(names)

    return check


async def recorded_mode(url: str) -> dict[str, str]:
    store = await open_store(url)
    try:
        kv = await store.get(PROXY_MODE_PREFIX + "n1")
        assert kv is not None, "the proxy mode was not recorded"
        found: dict[str, str] = json.loads(kv.value)
        return found
    finally:
        await store.close()


async def test_nftables_mode_programs_the_table(ns: Netns, tmp_path: Path) -> None:
    ns.serve("10.0.0.2", 8002, "a")
    ns.serve("10.0.0.3", 8003, "b")
    url = f"sqlite:///{tmp_path}/state.db"
    store = await open_store(url)
    objects = ObjectStore(store)
    try:
        await objects.create(make_service(node_port=30080))
        await set_endpoints(objects, "web", ("10.0.0.2", 8002), ("10.0.0.3", 8003))
        assert not ns.has_table()

        command = ProxyCommand(ns, url, tmp_path / "proxy.log", "--proxy-mode", "nftables")
        try:
            await asyncio.to_thread(
                wait_for,
                lambda: ns.has_table() and VIP in ns.run("nft", "list", "map", *SERVICE_IPS),
                "the table gitkube with the Service's cluster IP",
                command,
            )  # fmt: skip
            assert f"inet {VIP}/32" in ns.run("ip", "addr", "show", "dev", "gitkube0")
            seen = await asyncio.to_thread(ns.connect, VIP, 80, 20)
            assert seen["a"] == seen["b"] == 10, seen
            by_node_port = await asyncio.to_thread(ns.connect, NODE, 30080, 4)
            assert by_node_port["a"] + by_node_port["b"] == 4, by_node_port
            record = await recorded_mode(url)
            assert (record["mode"], record["reason"]) == ("nftables", "--proxy-mode nftables")

            # an endpoint leaves: the command's watch reprograms the kernel
            await set_endpoints(objects, "web", ("10.0.0.3", 8003))
            await asyncio.to_thread(wait_for, serves(ns, "b"), "only b is served", command)
        finally:
            status = await asyncio.to_thread(command.stop)
        assert status == 0, command.log.read_text()
        assert ns.has_table(), "stopping without --cleanup removed the table"
        assert "proxy for node n1: nftables" in command.log.read_text()

        # auto as root with nft: nftables, resyncing the table left behind
        await set_endpoints(objects, "web", ("10.0.0.2", 8002), ("10.0.0.3", 8003))
        again = ProxyCommand(ns, url, tmp_path / "again.log", "--proxy-mode", "auto", "--cleanup")
        try:
            await asyncio.to_thread(wait_for, serves(ns, "a", "b"), "a and b served", again)
            record = await recorded_mode(url)
            assert (record["mode"], record["requested"]) == ("nftables", "auto")
            assert record["reason"] == "auto: running as root and nft works"
        finally:
            status = await asyncio.to_thread(again.stop)
        assert status == 0, again.log.read_text()
        assert not ns.has_table(), "--cleanup left the table"
        assert "gitkube0" not in ns.run("ip", "link", "show")
    finally:
        await store.close()

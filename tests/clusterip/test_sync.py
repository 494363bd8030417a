"""Cluster IPs and the sync, from real git pushes into a real store (SQLite):

- an IP the allocator wrote is not drift: the next sync (self-heal on)
  changes nothing, and an update from git keeps it
- a clusterIP git declares that another Service holds in the store: the sync
  fails naming file, line and both Services, and applies nothing
- two Services declaring one clusterIP in git: a validation error naming both
"""

from __future__ import annotations

from pathlib import Path

from gitkube.api.keys import HEARTBEAT_PREFIX, SERVICE_IP_PREFIX
from gitkube.api.objects import Service
from gitkube.control import Cache
from gitkube.services.allocator import ClusterIPAllocator
from gitkube.store.objects import ObjectStore
from tests.fixtures.git import GitRemote
from tests.sync.conftest import make_loop, service_yaml


def with_ip(name: str, ip: str, port: int = 80) -> str:
    return service_yaml(name, port) + f"  clusterIP: {ip}\n"


async def test_allocated_ip_is_not_drift_and_survives_updates(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("svc.yaml", service_yaml("web"))
    git_remote.commit_and_push("web")
    loop = make_loop(objects, git_remote, tmp_path)
    assert (await loop.reconcile_once()).outcome == "Succeeded"
    cache = Cache(objects.store, raw_prefixes=(HEARTBEAT_PREFIX, SERVICE_IP_PREFIX))
    alloc = ClusterIPAllocator(objects, cache=cache)
    done = await alloc.reconcile_once()
    ip = done.allocated["default/web"]

    again = await loop.reconcile_once()
    assert again.outcome in ("Unchanged", "Succeeded") and again.updated == 0, again
    assert not again.warnings, again.warnings

    git_remote.write("svc.yaml", service_yaml("web", port=8080))
    git_remote.commit_and_push("port")
    updated = await loop.reconcile_once()
    assert updated.outcome == "Succeeded" and updated.updated == 1
    web = await objects.get(Service, "default", "web")
    assert web is not None and web.spec.cluster_ip == ip and web.spec.ports[0].port == 8080
    assert not (await alloc.reconcile_once()).allocated


async def test_an_ip_held_by_another_service_fails_the_sync(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("a.yaml", service_yaml("a"))
    git_remote.commit_and_push("a")
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    cache = Cache(objects.store, raw_prefixes=(HEARTBEAT_PREFIX, SERVICE_IP_PREFIX))
    ip = (await ClusterIPAllocator(objects, cache=cache).reconcile_once()).allocated["default/a"]

    git_remote.write("b.yaml", "# b\n" + with_ip("b", ip))
    git_remote.commit_and_push("b takes a's IP")
    before = await objects.store.revision()
    result = await loop.reconcile_once()
    assert result.outcome == "Failed"
    [error] = result.errors
    assert (error.file, error.line, error.field) == ("b.yaml", 2, "spec.clusterIP")
    assert "default/b" in error.message and "default/a" in error.message and ip in error.message
    assert await objects.get(Service, "default", "b") is None
    assert await objects.store.revision() == before + 1  # the sync state only


async def test_two_services_with_one_ip_in_git(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("a.yaml", with_ip("a", "10.96.0.7"))
    git_remote.write("b.yaml", with_ip("b", "10.96.0.7"))
    git_remote.commit_and_push("both")
    loop = make_loop(objects, git_remote, tmp_path)
    result = await loop.reconcile_once()
    assert result.outcome == "Failed"
    [error] = result.errors
    assert error.file == "b.yaml" and error.field == "spec.clusterIP"
    assert "default/a" in error.message and "default/b" in error.message
    assert "a.yaml:" in error.message

"""The status report, built from a real SQLite store filled by the test:

- sync state: revision, its age, phase, the errors with file:line;
- each declared object with its sync state and health (Missing when absent),
  replicas ready/desired for RCs, endpoints for Services, proxy errors;
- nodes, the sync history (last 10), webhook deliveries;
- an empty store, suspension, objects found only by their annotations;
- the same report from a real etcd as from SQLite, and from the shared
  cache (what the operator's write-back and HTTP status read) as from the
  store, with and without per-object records;
- the fingerprint: blind to times, sensitive to the outcome;
- kubectl's age format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gitkube.api.keys import HEARTBEAT_PREFIX, PROXY_STATUS_PREFIX, SYNC_CONTROL_KEY, SYNC_STATE_KEY
from gitkube.api.objects import ConfigMap, Namespace, ObjectMeta, Pod, ReplicationController
from gitkube.control import Cache
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.report import build_status_report, human_duration
from gitkube.sync.state import ObjectSyncStatus, SyncControl, SyncState
from tests.status.conftest import BAD_REVISION, REVISION, fill_cluster

NOW = datetime(2026, 1, 1, 1, 0, 0, tzinfo=UTC)
SYNCED = SyncState(revision=REVISION, phase="Synced")


def by_name(report_objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["name"]): o for o in report_objects}


class TestReportFromTheStore:
    async def test_sync_state_revision_age_phase_errors(self, objects: ObjectStore) -> None:
        await fill_cluster(objects)
        data = (await build_status_report(objects, now=NOW)).to_dict()
        sync = data["sync"]
        assert sync["phase"] == "Failed"
        assert sync["revision"] == REVISION
        assert sync["attemptedRevision"] == BAD_REVISION
        assert sync["ageSeconds"] == 3600.0
        assert sync["age"] == "60m"
        assert data["source"]["repo"] == "https://git.example.invalid/team/cluster.git"
        (error,) = data["errors"]
        assert error["location"] == "apps/web.yaml:12"
        assert error["field"] == "spec.replicas"
        assert error["text"] == (
            "apps/web.yaml:12: ReplicationController/web: spec.replicas: must be at least 0"
        )

    async def test_objects_with_sync_state_and_health(self, objects: ObjectStore) -> None:
        await fill_cluster(objects)
        report = await build_status_report(objects, now=NOW)
        found = by_name(report.to_dict()["objects"])
        assert list(found) == [
            ("Service", "cache"),
            ("Service", "db"),
            ("ReplicationController", "web"),
            ("Service", "web"),
            ("Pod", "batch"),
        ]  # by path, then kind and name
        assert found[("Service", "cache")] | {"message": ""} == {
            "kind": "Service",
            "namespace": "default",
            "name": "cache",
            "path": "apps/cache.yaml",
            "sync": "OutOfSync",
            "health": "Missing",
            "message": "",
        }
        rc = found[("ReplicationController", "web")]
        assert (rc["health"], rc["replicas"]) == ("Progressing", {"ready": 2, "desired": 3})
        # why: the pods it controls that are not serving
        assert rc["message"] == "2/3 replicas ready; pod web-2: Running, not ready"
        web = found[("Service", "web")]
        assert (web["health"], web["endpoints"]) == ("Healthy", 2)
        db = found[("Service", "db")]
        assert db["health"] == "Degraded"
        assert db["message"] == "port 5432 already in use (node node-1)"
        assert db["endpoints"] == 0
        batch = found[("Pod", "batch")]
        assert batch["health"] == "Degraded"
        assert "CrashLoopBackOff" in batch["message"]
        assert report.health == "Degraded"
        assert report.health_counts() == {
            "Missing": 1,
            "Degraded": 2,
            "Progressing": 1,
            "Healthy": 1,
        }

    @pytest.mark.parametrize("from_cache", [False, True])
    async def test_a_declared_namespace_is_found_without_a_namespace(
        self, objects: ObjectStore, from_cache: bool
    ) -> None:
        # a Namespace is cluster-scoped: its key has no namespace, and its
        # record must not be looked up (or shown) as default/NAME
        await objects.create(Namespace(metadata=ObjectMeta(name="shop")))
        await objects.create(ConfigMap(metadata=ObjectMeta(name="cfg", namespace="shop")))
        state = SyncState(
            revision=REVISION,
            phase="Synced",
            objects=[
                ObjectSyncStatus("Namespace", "", "shop", "shop.yaml"),
                ObjectSyncStatus("ConfigMap", "shop", "cfg", "shop.yaml"),
            ],
        )
        await objects.store.put(SYNC_STATE_KEY, state.to_json())
        cache = Cache(objects.store) if from_cache else None
        report = await build_status_report(objects, now=NOW, cache=cache)
        found = {(o.kind, o.namespace, o.name): o.health for o in report.objects}
        assert found == {
            ("Namespace", "", "shop"): "Healthy",
            ("ConfigMap", "shop", "cfg"): "Healthy",
        }
        assert report.health == "Healthy"

    async def test_nodes_history_and_deliveries(self, objects: ObjectStore) -> None:
        await fill_cluster(objects)
        data = (await build_status_report(objects, now=NOW)).to_dict()
        assert [(n["name"], n["health"]) for n in data["nodes"]] == [
            ("node-1", "Healthy"),
            ("node-2", "Degraded"),
        ]
        assert len(data["history"]) == 10
        assert data["history"][-1]["finishedAt"] == "2026-01-01T00:11:01Z"
        assert data["history"][0]["outcome"] == "Unchanged"
        (delivery,) = data["deliveries"]
        assert (delivery["hook"], delivery["outcome"]) == ("github", "accepted")
        json.dumps(data)  # the -o json content is plain JSON

    async def test_empty_store_says_no_sync_has_run(self, objects: ObjectStore) -> None:
        report = await build_status_report(objects, now=NOW)
        assert (report.phase, report.revision, report.objects) == ("Unknown", "", [])
        assert report.message == "no sync has run yet"
        assert report.to_dict()["sync"]["ageSeconds"] is None

    async def test_suspended_by_state_or_control_key(self, objects: ObjectStore) -> None:
        await objects.store.put(
            SYNC_STATE_KEY, SyncState(revision=REVISION, phase="Synced", suspended=True).to_json()
        )
        assert (await build_status_report(objects, now=NOW)).phase == "Suspended"
        await objects.store.put(SYNC_STATE_KEY, SYNCED.to_json())
        assert (await build_status_report(objects, now=NOW)).phase == "Synced"
        control = SyncControl(suspended=True, reason="maintenance window")
        await objects.store.put(SYNC_CONTROL_KEY, control.to_json())
        report = await build_status_report(objects, now=NOW)
        assert (report.phase, report.message) == (
            "Suspended",
            "sync is suspended: maintenance window",
        )
        await objects.store.put(SYNC_CONTROL_KEY, SyncControl(suspended=False).to_json())
        assert (await build_status_report(objects, now=NOW)).phase == "Synced"

    async def test_without_per_object_records_the_managed_objects_are_reported(
        self, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        await objects.store.put(SYNC_STATE_KEY, SYNCED.to_json())
        found = by_name((await build_status_report(objects, now=NOW)).to_dict()["objects"])
        # pods created by the RC carry no managed-by annotation and are left out
        assert set(found) == {
            ("ReplicationController", "web"),
            ("Service", "web"),
            ("Service", "db"),
            ("Pod", "batch"),
        }
        # the last sync succeeded, so what it created is in sync
        assert {o["sync"] for o in found.values()} == {"Synced"}
        assert found[("Service", "db")]["path"] == "apps/db.yaml"
        await objects.store.put(
            SYNC_STATE_KEY, SyncState(revision=REVISION, phase="Failed").to_json()
        )
        found = by_name((await build_status_report(objects, now=NOW)).to_dict()["objects"])
        assert {o["sync"] for o in found.values()} == {"Unknown"}

    async def test_credentials_in_the_repository_url_are_not_shown(
        self, objects: ObjectStore
    ) -> None:
        state = SyncState(repo="https://bot:t0ken-123@git.example.invalid/c.git", phase="Synced")
        await objects.store.put(SYNC_STATE_KEY, state.to_json())
        report = await build_status_report(objects, now=NOW)
        assert report.repo == "https://git.example.invalid/c.git"
        assert "t0ken" not in json.dumps(report.to_dict())

    async def test_an_unreadable_state_key_is_ignored(self, objects: ObjectStore) -> None:
        await objects.store.put(SYNC_STATE_KEY, b"{not json")
        assert (await build_status_report(objects, now=NOW)).phase == "Unknown"


class TestOnEtcd:
    @pytest.mark.etcd
    async def test_the_same_report_from_etcd(
        self, objects: ObjectStore, etcd_factory: Callable[[], Any]
    ) -> None:
        server = etcd_factory()
        etcd = await open_store(server.url)
        try:
            on_etcd = ObjectStore(etcd)
            await fill_cluster(objects)
            await fill_cluster(on_etcd)
            from_sqlite = (await build_status_report(objects, now=NOW)).to_dict()
            from_etcd = (await build_status_report(on_etcd, now=NOW)).to_dict()
            assert from_etcd == from_sqlite
            assert from_etcd["health"]["status"] == "Degraded"
        finally:
            await etcd.close()


class TestFromTheCache:
    @pytest.mark.parametrize("proxy_reports_cached", [True, False])
    async def test_the_same_report_from_the_shared_cache(
        self, objects: ObjectStore, proxy_reports_cached: bool
    ) -> None:
        await fill_cluster(objects)
        prefixes = (HEARTBEAT_PREFIX, PROXY_STATUS_PREFIX) if proxy_reports_cached else ()
        cache = Cache(objects.store, raw_prefixes=prefixes)
        from_store = (await build_status_report(objects, now=NOW)).to_dict()
        from_cache = (await build_status_report(objects, now=NOW, cache=cache)).to_dict()
        assert from_cache == from_store
        assert from_cache["health"]["status"] == "Degraded"
        # without per-object records: the managed objects, found in the cache too
        await objects.store.put(SYNC_STATE_KEY, SYNCED.to_json())
        from_store = (await build_status_report(objects, now=NOW)).to_dict()
        from_cache = (await build_status_report(objects, now=NOW, cache=cache)).to_dict()
        assert from_cache == from_store
        assert len(from_cache["objects"]) == 4


class TestFingerprint:
    async def test_times_do_not_change_it(self, objects: ObjectStore) -> None:
        await fill_cluster(objects)
        first = await build_status_report(objects, now=NOW)
        later = await build_status_report(objects, now=NOW + timedelta(hours=5))
        assert first.generated_at != later.generated_at
        assert first.fingerprint() == later.fingerprint()
        state = SyncState.from_json((await objects.store.get(SYNC_STATE_KEY)).value)  # type: ignore[union-attr]
        state.synced_at = "2026-01-01T00:30:00Z"
        state.attempted_at = "2026-01-01T00:31:00Z"
        await objects.store.put(SYNC_STATE_KEY, state.to_json())
        assert (await build_status_report(objects, now=NOW)).fingerprint() == first.fingerprint()

    async def test_health_and_revision_change_it(self, objects: ObjectStore) -> None:
        await fill_cluster(objects)
        before = (await build_status_report(objects, now=NOW)).fingerprint()
        pod = await objects.get(Pod, "default", "web-2")
        assert pod is not None
        rc = await objects.get(ReplicationController, "default", "web")
        assert rc is not None
        rc.status.ready_replicas = 3
        await objects.update(rc)
        after_health = (await build_status_report(objects, now=NOW)).fingerprint()
        assert after_health != before
        state = SyncState.from_json((await objects.store.get(SYNC_STATE_KEY)).value)  # type: ignore[union-attr]
        state.revision = "c" * 40
        await objects.store.put(SYNC_STATE_KEY, state.to_json())
        assert (await build_status_report(objects, now=NOW)).fingerprint() != after_health


class TestHumanDuration:
    def test_kubectl_age_format(self) -> None:
        cases = {
            0: "0s",
            45: "45s",
            119: "119s",
            150: "2m30s",
            180: "3m",
            42 * 60: "42m",
            3 * 3600 + 20 * 60: "3h20m",
            20 * 3600: "20h",
            2 * 86400 + 4 * 3600: "2d4h",
            40 * 86400: "40d",
            3 * 365 * 86400 + 30 * 86400: "3y30d",
            9 * 365 * 86400: "9y",
        }
        assert {s: human_duration(s) for s in cases} == cases
        assert human_duration(None) == "<unknown>"

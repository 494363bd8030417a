"""The read-only Kubernetes API over HTTP, against a real SQLite store:

- discovery (version, the groups of the kinds gitkube runs and of those it
  stores, short names, categories, OpenAPI v2/v3);
- official kinds gitkube stores without running them, and custom resources
  once their CustomResourceDefinition is stored, are served;
- list and get, namespaced and across namespaces, 404 as a Status;
- labelSelector (full grammar) and fieldSelector, limit and continue (later
  pages read the revision of the first; 410 Expired once compacted);
- the Table form with wide columns at priority 1;
- Secret values redacted;
- watch: events in order with resourceVersions, from a resourceVersion,
  selector-filtered (from a resourceVersion too: leaving the selection is
  DELETED), bookmarks, 410 Gone after compaction; many watchers
  see every change of many pods, in order;
- writes answer 405 naming the repository, branch and file;
- the bearer token beyond loopback (401 without, 403 wrong, 200 right).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from gitkube.api.labels import SelectorError, expressions_match, parse_selector
from gitkube.api.objects import Pod, unsupported_class
from gitkube.server.kubeapi import encode_continue
from tests.kubeapi.conftest import Api, make_pod

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def names(body: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in body["items"]]


# ---------------------------------------------------------------- selectors (pure)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("app in (web, db),tier notin (back)", {"app": "db", "tier": "front"}, True),
        ("app in (web,db),tier notin (back)", {"app": "db", "tier": "back"}, False),
        ("tier", {"tier": "x"}, True),
        ("!tier", {"tier": "x"}, False),
        ("!tier,app=web", {"app": "web"}, True),
        ("", {"a": "b"}, True),
    ],
)
def test_selector_grammar(text: str, labels: dict[str, str], expected: bool) -> None:
    assert expressions_match({}, parse_selector(text), labels) is expected


@pytest.mark.parametrize("text", ["app=", "=web", "app in web", "app in (web", "a b", "app=,"])
def test_bad_selectors_are_errors(text: str) -> None:
    if text in ("app=", "app=,"):
        # an empty value is valid Kubernetes syntax: app has the empty value
        assert parse_selector(text) == [("app", "In", [""])]
        return
    with pytest.raises(SelectorError):
        parse_selector(text)


# ---------------------------------------------------------------- discovery


async def test_discovery_lists_kinds_with_short_names(api: Api) -> None:
    status, version = await api.get("/version")
    assert status == 200 and version["major"] == "1" and version["gitVersion"].startswith("v1.")
    _, versions = await api.get("/api")
    assert versions["versions"] == ["v1"]
    _, core = await api.get("/api/v1")
    short = {r["name"]: r.get("shortNames", []) for r in core["resources"]}
    for plural, alias in [
        ("pods", "po"),
        ("replicationcontrollers", "rc"),
        ("services", "svc"),
        ("endpoints", "ep"),
        ("nodes", "no"),
        ("namespaces", "ns"),
        ("configmaps", "cm"),
    ]:
        assert alias in short[plural], plural
    assert "minions" in short["nodes"]
    assert all(
        r["verbs"] == ["get", "list", "watch"] for r in core["resources"] if "/" not in r["name"]
    )
    # the groups of the kinds gitkube runs, and of the official kinds it stores
    _, groups = await api.get("/apis")
    by_name = {g["name"]: g for g in groups["groups"]}
    assert {"apps", "networking.k8s.io", "rbac.authorization.k8s.io", "batch"} <= set(by_name)
    assert by_name["autoscaling"]["preferredVersion"]["version"] == "v2"  # v2 before v1
    _, apps = await api.get("/apis/apps/v1")
    short = {r["name"]: r["shortNames"] for r in apps["resources"]}
    assert (short["deployments"], short["replicasets"], short["statefulsets"]) == (
        ["deploy"],
        ["rs"],
        ["sts"],
    )
    assert {r["name"] for r in apps["resources"] if "all" in r.get("categories", [])} == {
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
    }
    status, v2 = await api.get("/openapi/v2")
    assert status == 200 and "io.k8s.api.core.v1.Pod" in v2["definitions"]
    _, v3root = await api.get("/openapi/v3")
    assert {"api/v1", "apis/apps/v1", "apis/networking.k8s.io/v1"} <= set(v3root["paths"])
    _, v3 = await api.get("/openapi/v3/apis/apps/v1")
    assert "io.k8s.api.apps.v1.Deployment" in v3["components"]["schemas"]
    status, body = await api.get("/apis/batch/v1")
    assert status == 200 and {r["name"] for r in body["resources"]} == {"jobs", "cronjobs"}
    status, body = await api.get("/apis/widgets.example.com/v1")
    assert status == 404 and body["kind"] == "Status"


# ---------------------------------------------------------------- reads


async def test_list_and_get_namespaced_and_across_namespaces(api: Api) -> None:
    status, body = await api.get("/api/v1/namespaces/default/pods")
    assert status == 200 and body["kind"] == "PodList" and body["apiVersion"] == "v1"
    assert names(body) == ["db-1", "pending-1", "web-1", "web-2"]
    assert int(body["metadata"]["resourceVersion"]) == await api.objects.store.revision()
    _, everywhere = await api.get("/api/v1/pods")
    assert sorted(names(everywhere)) == ["db-1", "other-1", "pending-1", "web-1", "web-2"]
    status, pod = await api.get("/api/v1/namespaces/other/pods/other-1")
    assert status == 200 and pod["kind"] == "Pod" and pod["metadata"]["namespace"] == "other"
    stored = await api.objects.get(Pod, "other", "other-1")
    assert stored is not None
    assert pod["metadata"]["resourceVersion"] == stored.metadata.resource_version
    status, missing = await api.get("/api/v1/namespaces/default/pods/nope")
    assert status == 404 and missing["reason"] == "NotFound"
    assert missing["message"] == 'pods "nope" not found'
    status, node = await api.get("/api/v1/nodes/n1")
    assert status == 200 and node["kind"] == "Node"
    status, _ = await api.get("/api/v1/namespaces/default/nodes")
    assert status == 404


async def test_label_and_field_selectors(api: Api) -> None:
    async def listed(query: str) -> list[str]:
        status, body = await api.get("/api/v1/pods?" + query)
        assert status == 200, body
        return sorted(names(body))

    assert await listed("labelSelector=app%3Dweb") == ["other-1", "web-1", "web-2"]
    assert await listed("labelSelector=app+in+(web,db),tier!%3Dfront") == ["db-1", "other-1"]
    assert await listed("labelSelector=!tier") == ["other-1", "pending-1"]
    assert await listed("fieldSelector=spec.nodeName%3Dn1") == ["db-1", "web-1"]
    assert await listed("fieldSelector=spec.nodeName%3D") == ["pending-1"]
    assert await listed("fieldSelector=status.phase!%3DRunning") == ["pending-1"]
    assert await listed("fieldSelector=metadata.name%3Dweb-2,metadata.namespace%3Ddefault") == [
        "web-2"
    ]
    status, body = await api.get("/api/v1/pods?fieldSelector=spec.containers%3Dx")
    assert status == 400 and "field label not supported" in body["message"]
    status, body = await api.get("/api/v1/pods?labelSelector=app+in+web")
    assert status == 400 and body["kind"] == "Status"


async def test_limit_and_continue_page_through_everything_once(api: Api) -> None:
    seen: list[str] = []
    token = ""
    pages = 0
    revisions = set()
    while True:
        status, body = await api.get(f"/api/v1/pods?limit=2&continue={token}")
        assert status == 200
        pages += 1
        seen += names(body)
        revisions.add(body["metadata"]["resourceVersion"])
        token = body["metadata"].get("continue", "")
        if not token:
            break
        assert body["metadata"]["remainingItemCount"] > 0
    assert pages == 3 and len(seen) == 5 and len(set(seen)) == 5
    assert len(revisions) == 1  # every page says the revision the list began at
    status, body = await api.get("/api/v1/pods?limit=2&continue=garbage")
    assert status == 400


async def test_pages_after_the_first_read_the_list_as_it_was(api: Api) -> None:
    """A paged list is one consistent list, as Kubernetes serves it: later
    pages read the revision of the first (changes since do not show, nothing
    is seen twice or missed); once that history is compacted, 410 Expired
    (kubectl's pager then lists again, whole)."""
    status, first = await api.get("/api/v1/pods?limit=2")
    assert status == 200 and names(first) == ["db-1", "pending-1"]
    token, revision = first["metadata"]["continue"], first["metadata"]["resourceVersion"]
    objects = api.objects
    web1 = await objects.get(Pod, "default", "web-1")
    web2 = await objects.get(Pod, "default", "web-2")
    assert web1 is not None and web2 is not None
    await objects.delete(web1)
    await objects.create(make_pod("web-0", app="web"))  # after the first page's last key
    web2.metadata.labels["tier"] = "changed"
    await objects.update(web2)
    status, rest = await api.get(f"/api/v1/pods?limit=5&continue={token}")
    assert status == 200 and rest["metadata"]["resourceVersion"] == revision
    assert names(rest) == ["web-1", "web-2", "other-1"]
    assert rest["items"][1]["metadata"]["labels"]["tier"] == "front"
    assert "continue" not in rest["metadata"]
    status, now = await api.get("/api/v1/pods")
    assert sorted(names(now)) == ["db-1", "other-1", "pending-1", "web-0", "web-2"]

    await objects.store.compact(await objects.store.revision())
    status, expired = await api.get(f"/api/v1/pods?limit=5&continue={token}")
    assert status == 410 and expired["reason"] == "Expired", expired
    future = encode_continue(int(revision) + 1000, "/gitkube/pods/default/db-1")
    status, body = await api.get(f"/api/v1/pods?limit=5&continue={future}")
    assert status == 400 and body["reason"] == "BadRequest"


async def test_stored_kinds_and_custom_resources_are_served(api: Api) -> None:
    """What gitkube stores without running it reads as in a cluster: official
    kinds at their group and version, custom resources once their
    CustomResourceDefinition is stored (at its plural, in its scope)."""
    objects = api.objects
    ingress = unsupported_class(
        "networking.k8s.io/v1", "Ingress", resource="ingresses", namespaced=True
    ).from_dict({"metadata": {"name": "web", "namespace": "default"}, "spec": {}})
    await objects.create(ingress)
    status, body = await api.get("/apis/networking.k8s.io/v1/namespaces/default/ingresses")
    assert status == 200 and names(body) == ["web"]
    assert body["items"][0]["apiVersion"] == "networking.k8s.io/v1"
    status, _ = await api.get("/apis/networking.k8s.io/v1/ingresses/web")
    assert status == 404  # namespaced

    issuer_cls = unsupported_class(
        "cert-manager.io/v1",
        "ClusterIssuer",
        resource="clusterissuers.cert-manager.io",
        namespaced=False,
    )
    await objects.create(issuer_cls.from_dict({"metadata": {"name": "letsencrypt"}, "spec": {}}))
    status, _ = await api.get("/apis/cert-manager.io/v1/clusterissuers")
    assert status == 404  # no definition stored: not served, as in a cluster
    crd = unsupported_class(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        resource="customresourcedefinitions",
        namespaced=False,
    ).from_dict(
        {
            "metadata": {"name": "clusterissuers.cert-manager.io"},
            "spec": {
                "group": "cert-manager.io",
                "scope": "Cluster",
                "names": {
                    "kind": "ClusterIssuer",
                    "plural": "clusterissuers",
                    "shortNames": ["ci"],
                },
                "versions": [{"name": "v1", "served": True}, {"name": "v1alpha1", "served": False}],
            },
        }
    )
    await objects.create(crd)
    status, group = await api.get("/apis/cert-manager.io")
    assert status == 200 and [v["version"] for v in group["versions"]] == ["v1"]
    _, resources = await api.get("/apis/cert-manager.io/v1")
    assert resources["resources"] == [
        {
            "name": "clusterissuers",
            "singularName": "clusterissuer",
            "namespaced": False,
            "kind": "ClusterIssuer",
            "verbs": ["get", "list", "watch"],
            "shortNames": ["ci"],
        }
    ]
    status, body = await api.get("/apis/cert-manager.io/v1/clusterissuers")
    assert status == 200 and names(body) == ["letsencrypt"]
    status, one = await api.get("/apis/cert-manager.io/v1/clusterissuers/letsencrypt")
    assert status == 200 and one["kind"] == "ClusterIssuer"
    status, table = await api.get("/apis/cert-manager.io/v1/clusterissuers", Accept=TABLE)
    assert status == 200 and table["rows"][0]["cells"][0] == "letsencrypt"
    events = await _watch(
        api, "/apis/cert-manager.io/v1/clusterissuers?watch=1", until=lambda evs: len(evs) >= 1
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "letsencrypt")
    ]


async def test_table_form_with_wide_columns(api: Api) -> None:
    status, table = await api.get("/api/v1/namespaces/default/pods", Accept=TABLE)
    assert status == 200 and table["kind"] == "Table"
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns[:5] == [("Name", 0), ("Ready", 0), ("Status", 0), ("Restarts", 0), ("Age", 0)]
    assert ("Ip", 1) in columns or ("IP", 1) in columns
    assert ("Node", 1) in columns
    rows = {row["cells"][0]: row for row in table["rows"]}
    assert rows["web-1"]["cells"][1] == "1/1"
    assert rows["pending-1"]["cells"][2] == "Pending"
    assert rows["web-1"]["object"]["kind"] == "PartialObjectMetadata"
    assert rows["web-1"]["object"]["metadata"]["labels"]["app"] == "web"


async def test_secret_values_are_redacted(api: Api) -> None:
    _, secret = await api.get("/api/v1/namespaces/default/secrets/creds")
    assert set(secret["data"]) == {"password"}
    assert "c2VjcmV0LXZhbHVl" not in json.dumps(secret)
    _, listed = await api.get("/api/v1/secrets")
    assert "c2VjcmV0LXZhbHVl" not in json.dumps(listed)


# ---------------------------------------------------------------- watch


async def _watch(
    api: Api, path: str, *, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 20
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with api.session.get(api.base + path) as resp:
        assert resp.status == 200

        async def read() -> None:
            async for line in resp.content:
                if line.strip():
                    events.append(json.loads(line))
                    if until(events):
                        return

        await asyncio.wait_for(read(), timeout)
    return events


async def test_watch_from_a_resource_version_in_order(api: Api) -> None:
    start = await api.objects.store.revision()
    pod = await api.objects.get(Pod, "default", "web-1")
    assert pod is not None
    pod.metadata.labels["tier"] = "middle"
    await api.objects.update(pod)
    await api.objects.create(make_pod("web-3", app="web"))
    gone = await api.objects.get(Pod, "default", "db-1")
    assert gone is not None
    await api.objects.delete(gone)
    events = await _watch(
        api,
        f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={start}",
        until=lambda evs: len(evs) >= 3,
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "web-1"),
        ("ADDED", "web-3"),
        ("DELETED", "db-1"),
    ]
    revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert revisions == sorted(revisions) and revisions[0] > start


async def test_a_selected_watch_from_a_version_knows_what_was_selected_then(api: Api) -> None:
    """As a cluster's watch does: what leaves the selection after the
    resourceVersion is DELETED, what enters it is ADDED (even an object that
    existed before), what stays in it is MODIFIED."""
    start = await api.objects.store.revision()

    async def relabel(name: str, app: str) -> None:
        pod = await api.objects.get(Pod, "default", name)
        assert pod is not None
        pod.metadata.labels["app"] = app
        await api.objects.update(pod)

    await relabel("web-1", "api")  # leaves app=web
    await relabel("db-1", "web")  # enters it
    pod = await api.objects.get(Pod, "default", "web-2")
    assert pod is not None
    pod.metadata.labels["tier"] = "middle"
    await api.objects.update(pod)  # stays in it
    await relabel("pending-1", "db")  # never in it: nothing
    events = await _watch(
        api,
        f"/api/v1/namespaces/default/pods?watch=1&labelSelector=app%3Dweb&resourceVersion={start}",
        until=lambda evs: len(evs) >= 3,
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", "web-1"),
        ("ADDED", "db-1"),
        ("MODIFIED", "web-2"),
    ]


async def test_watch_without_a_version_starts_with_the_current_objects(api: Api) -> None:
    task = asyncio.create_task(
        _watch(
            api,
            "/api/v1/pods?watch=1&labelSelector=app%3Dweb",
            until=lambda evs: len(evs) >= 5,
        )
    )
    await asyncio.sleep(0)  # the watch is not needed yet for the first three
    # leaves the selector: a DELETED for this watch
    pod = await api.objects.get(Pod, "default", "web-2")
    assert pod is not None
    await asyncio.sleep(0.3)
    pod.metadata.labels["app"] = "api"
    await api.objects.update(pod)
    await api.objects.create(make_pod("web-9", app="web"))
    events = await task
    kinds = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert sorted(kinds[:3]) == [("ADDED", "other-1"), ("ADDED", "web-1"), ("ADDED", "web-2")]
    assert kinds[3:] == [("DELETED", "web-2"), ("ADDED", "web-9")]


async def test_watch_sends_bookmarks_when_asked(api_factory: Callable[..., Any]) -> None:
    api: Api = await api_factory(bookmark_seconds=0.2)
    await api.objects.create(make_pod("a", app="x"))
    revision = await api.objects.store.revision()
    events = await _watch(
        api,
        f"/api/v1/pods?watch=1&allowWatchBookmarks=true&resourceVersion={revision}",
        until=lambda evs: any(e["type"] == "BOOKMARK" for e in evs),
    )
    bookmark = next(e for e in events if e["type"] == "BOOKMARK")
    assert int(bookmark["object"]["metadata"]["resourceVersion"]) >= revision
    assert bookmark["object"]["kind"] == "Pod"


async def test_watch_from_a_compacted_version_is_410_gone(api: Api) -> None:
    old = await api.objects.store.revision()
    for i in range(3):
        await api.objects.create(make_pod(f"late-{i}"))
    await api.objects.store.compact(await api.objects.store.revision())
    events = await _watch(
        api, f"/api/v1/pods?watch=1&resourceVersion={old - 1}", until=lambda evs: True
    )
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_many_watchers_see_every_change_in_order(api_factory: Callable[..., Any]) -> None:
    api: Api = await api_factory()
    start = await api.objects.store.revision()
    pods = 200
    changes = 1000
    for i in range(pods):
        await api.objects.create(make_pod(f"p-{i}", app="load"))
    # each change relabels a pod: every watcher must see all of them, in revision order
    for i in range(changes - pods):
        pod = await api.objects.get(Pod, "default", f"p-{i % pods}")
        assert pod is not None
        pod.metadata.labels["round"] = str(i)
        await api.objects.update(pod)
    watchers = 10
    results = await asyncio.gather(
        *[
            _watch(
                api,
                f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={start}",
                until=lambda evs: len(evs) >= changes,
                timeout=60,
            )
            for _ in range(watchers)
        ]
    )
    for events in results:
        revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert len(revisions) == changes
        assert revisions == sorted(revisions) and len(set(revisions)) == changes


# ---------------------------------------------------------------- writes and access


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_writes_are_refused_with_the_place_in_git(api: Api, method: str) -> None:
    path = "/api/v1/namespaces/default/pods"
    if method != "POST":
        path += "/web-1"
    body = json.dumps({"metadata": {"name": "web-1"}})
    async with api.session.request(method, api.base + path, data=body) as resp:
        status = resp.status
        data = await resp.json(content_type=None)
    assert status == 405 and data["kind"] == "Status" and data["code"] == 405
    message = data["message"]
    assert "https://git.example.com/ops/cluster.git" in message and "main" in message
    if method != "POST":
        assert "k8s/web-1.yaml" in message
    assert "git" in message and "push" in message


async def test_beyond_loopback_the_api_needs_the_token(api_factory: Callable[..., Any]) -> None:
    tokenless: Api = await api_factory(host="0.0.0.0")
    status, body = await tokenless.get("/api/v1/pods")
    assert status == 401 and "--api-token-file" in body["message"]
    api: Api = await api_factory(host="0.0.0.0", token=b"s3cret-token")
    status, _ = await api.get("/api/v1/pods")
    assert status == 401
    status, _ = await api.get("/api/v1/pods", Authorization="Bearer wrong")
    assert status == 403
    status, body = await api.get("/api/v1/pods", Authorization="Bearer s3cret-token")
    assert status == 200 and body["kind"] == "PodList"
    async with aiohttp.ClientSession() as session, session.get(f"{api.base}/healthz") as resp:
        assert resp.status == 200  # health stays open

"""Webhooks: authentication before anything else, routing by branch and event,
size limit, the delivery log, and the HTTP endpoints that carry them.

Real HTTP over loopback against the aiohttp server; signatures are real
HMAC-SHA256 over the raw body.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import time
from typing import Any

import aiohttp
import pytest

from gitkube.server.http import HttpServer
from gitkube.server.metrics import Metrics
from gitkube.server.webhooks import ReplayGuard, check_signature, route, sign, sign_standard

SECRET = b"s3cret-for-tests"


def push_body(ref: str = "refs/heads/main", after: str = "a" * 40, **extra: Any) -> bytes:
    return json.dumps({"ref": ref, "after": after, **extra}).encode()


# ------------------------------------------------------------ pure checks


def test_github_signature_accepts_only_the_exact_hmac() -> None:
    body = push_body()
    good = {"X-Hub-Signature-256": sign(SECRET, body)}
    assert check_signature("github", good, body, SECRET) == ""
    assert "does not match" in check_signature("github", good, body + b" ", SECRET)
    assert "missing" in check_signature("github", {}, body, SECRET)


def test_gitea_gitlab_and_generic_signatures() -> None:
    body = push_body()
    hexsig = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert check_signature("gitea", {"X-Gitea-Signature": hexsig}, body, SECRET) == ""
    assert check_signature("gitea", {"X-Gitea-Signature": "0" * 64}, body, SECRET)
    assert check_signature("gitlab", {"X-Gitlab-Token": SECRET.decode()}, body, SECRET) == ""
    assert check_signature("gitlab", {"X-Gitlab-Token": "nope"}, body, SECRET)
    # the generic hook takes Standard Webhooks only: a bare body HMAC has no timestamp
    legacy = check_signature("generic", {"X-Gitkube-Signature": sign(SECRET, body)}, body, SECRET)
    assert "no longer accepted" in legacy


def standard_headers(
    body: bytes, *, msg_id: str = "msg_1", at: float | None = None
) -> dict[str, str]:
    stamp = int(time.time() if at is None else at)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign_standard(SECRET, msg_id, stamp, body),
    }


def test_generic_hook_follows_standard_webhooks() -> None:
    body = push_body()
    now = 1_800_000_000.0
    good = standard_headers(body, at=now)
    assert check_signature("generic", good, body, SECRET, now=now) == ""
    # several signatures (key rotation): any one matching is enough
    rotated = {**good, "webhook-signature": "v1,bm90LWl0 " + good["webhook-signature"]}
    assert check_signature("generic", rotated, body, SECRET, now=now) == ""
    assert "does not match" in check_signature("generic", good, body + b" ", SECRET, now=now)
    # the timestamp is signed: changing it breaks the signature
    moved = {**good, "webhook-timestamp": str(int(now) + 1)}
    assert "does not match" in check_signature("generic", moved, body, SECRET, now=now)
    # a captured delivery replayed after 5 minutes is refused, as one from the future
    assert "more than 300 s" in check_signature("generic", good, body, SECRET, now=now + 301)
    assert check_signature("generic", good, body, SECRET, now=now + 299) == ""
    assert "more than 300 s" in check_signature("generic", good, body, SECRET, now=now - 301)
    assert "missing webhook-id" in check_signature("generic", {}, body, SECRET, now=now)
    # a whsec_ secret is base64 (as Standard Webhooks libraries hand it out)
    key = b"whsec_" + base64.b64encode(b"raw-key-bytes")
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": str(int(now)),
        "webhook-signature": "v1,"
        + base64.b64encode(
            hmac.new(b"raw-key-bytes", f"m.{int(now)}.".encode() + body, hashlib.sha256).digest()
        ).decode(),
    }
    assert check_signature("generic", headers, body, key, now=now) == ""


def test_gitlab_token_is_compared_as_digests() -> None:
    body = push_body()
    # a prefix of the token, or the token with more after it, is as wrong as any other
    for given in (SECRET.decode()[:-1], SECRET.decode() + "x", "", "x" * 1000):
        assert check_signature("gitlab", {"X-Gitlab-Token": given}, body, SECRET)


def test_replay_guard_forgets_after_the_window() -> None:
    clock = [1000.0]
    guard = ReplayGuard(window=60, max_ids=3, clock=lambda: clock[0])
    guard.add("github", "a")
    assert guard.seen("github", "a") and not guard.seen("gitea", "a")
    clock[0] += 61
    assert not guard.seen("github", "a")
    for name in "bcde":
        guard.add("github", name)
    assert not guard.seen("github", "b") and guard.seen("github", "e")  # at most 3
    again = ReplayGuard(window=60, clock=lambda: clock[0])
    again.load(guard.to_json())
    assert again.seen("github", "e") and not again.seen("github", "b")
    again.load(b"not json")  # a damaged record is ignored, not a crash


@pytest.mark.parametrize(
    ("headers", "body", "outcome", "trigger"),
    [
        ({"X-GitHub-Event": "push"}, push_body(), "accepted", True),
        ({"X-GitHub-Event": "push"}, push_body("refs/heads/dev"), "ignored", False),
        ({"X-GitHub-Event": "push"}, push_body("refs/tags/v1"), "ignored", False),
        ({"X-GitHub-Event": "push"}, push_body(after="0" * 40, deleted=True), "ignored", False),
        ({"X-GitHub-Event": "ping"}, b'{"zen": "x", "hook_id": 1}', "ping", False),
        ({"X-GitHub-Event": "issues"}, b"{}", "ignored", False),
        ({"X-GitHub-Event": "push"}, b"not json", "error", False),
    ],
)
def test_github_routing(headers: dict[str, str], body: bytes, outcome: str, trigger: bool) -> None:
    verdict = route("github", headers, body, branch="main")
    assert verdict.outcome == outcome
    assert verdict.trigger is trigger


def test_gitlab_tag_push_is_ignored_and_push_hook_accepted() -> None:
    tag = route(
        "gitlab", {"X-Gitlab-Event": "Tag Push Hook"}, push_body("refs/tags/v2"), branch="main"
    )
    assert tag.outcome == "ignored" and not tag.trigger
    push = route("gitlab", {"X-Gitlab-Event": "Push Hook"}, push_body(), branch="main")
    assert push.trigger and push.revision == "a" * 40


# ------------------------------------------------------------ over HTTP


class Harness:
    def __init__(self, server: HttpServer, base: str) -> None:
        self.server = server
        self.base = base
        self.pushes: list[str | None] = []


@pytest.fixture
async def harness() -> Any:
    pushes: list[str | None] = []

    async def status() -> dict[str, Any]:
        return {"phase": "Synced"}

    server = HttpServer(
        metrics=Metrics(),
        branch="main",
        on_push=pushes.append,
        status=status,
        secret=SECRET,
        notify_token=b"tok",
    )
    port = await server.start("127.0.0.1", 0)
    h = Harness(server, f"http://127.0.0.1:{port}")
    h.pushes = pushes
    yield h
    await server.stop()


async def post(h: Harness, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(h.base + path, data=io.BytesIO(body), headers=headers) as resp,
    ):
        return resp.status, await resp.json()


async def test_signed_push_is_202_and_triggers(harness: Harness) -> None:
    body = push_body()
    status, data = await post(
        harness,
        "/hooks/github",
        body,
        {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(SECRET, body)},
    )
    assert (status, data["outcome"]) == (202, "accepted")
    assert harness.pushes == ["a" * 40]


async def test_bad_signature_is_401_and_does_nothing(harness: Harness) -> None:
    body = push_body()
    status, _ = await post(
        harness,
        "/hooks/github",
        body,
        {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(b"wrong", body)},
    )
    assert status == 401
    assert harness.pushes == []
    status, _ = await post(harness, "/hooks/gitea", body, {"X-Gitea-Event": "push"})
    assert status == 401
    assert harness.pushes == []


async def test_oversized_body_is_413(harness: Harness) -> None:
    body = b"x" * ((1 << 20) + 10)
    status, _ = await post(
        harness,
        "/hooks/github",
        body,
        {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(SECRET, body)},
    )
    assert status == 413
    assert harness.pushes == []


async def test_ping_is_200_and_deliveries_are_logged(harness: Harness) -> None:
    body = b'{"zen": "Keep it logically awesome.", "hook_id": 7}'
    status, _ = await post(
        harness,
        "/hooks/github",
        body,
        {"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign(SECRET, body)},
    )
    assert status == 200
    async with (
        aiohttp.ClientSession() as session,
        session.get(harness.base + "/api/v1/status") as resp,
    ):
        data = await resp.json()
    assert data["deliveries"][-1]["outcome"] == "ping"
    assert data["phase"] == "Synced"


async def test_no_secret_means_403_unless_allowed() -> None:
    async def status() -> dict[str, Any]:
        return {}

    pushes: list[str | None] = []
    server = HttpServer(
        metrics=Metrics(), branch="main", on_push=pushes.append, status=status, secret=None
    )
    port = await server.start("127.0.0.1", 0)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{port}/hooks/generic", data=push_body()) as resp,
        ):
            assert resp.status == 403
        assert pushes == []
    finally:
        await server.stop()


async def test_delivery_log_keeps_the_last_50(harness: Harness) -> None:
    body = push_body("refs/heads/other")
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(SECRET, body)}
    async with aiohttp.ClientSession() as session:
        for _ in range(60):
            async with session.post(harness.base + "/hooks/github", data=body, headers=headers):
                pass
    items = harness.server.deliveries.to_list()
    assert len(items) == 50
    assert all(d["outcome"] == "ignored" for d in items)


async def test_health_and_metrics_endpoints(harness: Harness) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(harness.base + "/healthz") as resp:
            assert resp.status == 200
        async with session.get(harness.base + "/readyz") as resp:
            assert resp.status == 200
        body = push_body()
        async with session.post(
            harness.base + "/hooks/github",
            data=body,
            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(SECRET, body)},
        ):
            pass
        async with session.get(harness.base + "/metrics") as resp:
            text = await resp.text()
    assert 'gitkube_webhook_deliveries_total{hook="github",outcome="accepted"} 1.0' in text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names and all(n.startswith("gitkube_") for n in names)


async def test_local_notify_needs_the_token(harness: Harness) -> None:
    line = f"{'1' * 40} {'b' * 40} refs/heads/main\n".encode()
    status, _ = await post(harness, "/hooks/notify", line, {"X-Gitkube-Token": "bad"})
    assert status == 401
    status, data = await post(harness, "/hooks/notify", line, {"X-Gitkube-Token": "tok"})
    assert (status, data["outcome"]) == (202, "accepted")
    await asyncio.sleep(0)
    assert harness.pushes == ["b" * 40]


# ------------------------------------------------------------ replays over HTTP


@pytest.mark.parametrize(
    ("hook", "id_header", "auth"),
    [
        ("github", "X-GitHub-Delivery", lambda body: {"X-GitHub-Event": "push",
                                                       "X-Hub-Signature-256": sign(SECRET, body)}),
        ("gitea", "X-Gitea-Delivery", lambda body: {
            "X-Gitea-Event": "push",
            "X-Gitea-Signature": hmac.new(SECRET, body, hashlib.sha256).hexdigest()}),
        ("gitlab", "X-Gitlab-Event-UUID", lambda body: {"X-Gitlab-Event": "Push Hook",
                                                         "X-Gitlab-Token": SECRET.decode()}),
    ],
)  # fmt: skip
async def test_a_delivery_id_seen_before_is_a_duplicate(
    harness: Harness, hook: str, id_header: str, auth: Any
) -> None:
    body = push_body()
    headers = {**auth(body), id_header: "d-1"}
    status, data = await post(harness, f"/hooks/{hook}", body, headers)
    assert (status, data["outcome"]) == (202, "accepted")
    status, data = await post(harness, f"/hooks/{hook}", body, headers)
    assert (status, data["outcome"]) == (200, "duplicate")
    assert harness.pushes == ["a" * 40], "a replay queues nothing"
    # another ID is another delivery
    status, _ = await post(harness, f"/hooks/{hook}", body, {**headers, id_header: "d-2"})
    assert status == 202 and len(harness.pushes) == 2
    assert harness.server.deliveries.to_list()[-2]["outcome"] == "duplicate"


async def test_a_failed_delivery_may_be_redelivered(harness: Harness) -> None:
    body = push_body()
    forged = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(b"x", body)}
    status, _ = await post(harness, "/hooks/github", body, {**forged, "X-GitHub-Delivery": "r"})
    assert status == 401  # an unauthenticated request cannot burn an ID either
    good = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(SECRET, body)}
    status, _ = await post(harness, "/hooks/github", body, {**good, "X-GitHub-Delivery": "r"})
    assert status == 202 and harness.pushes == ["a" * 40]


async def test_generic_hook_over_http_refuses_stale_and_replayed(harness: Harness) -> None:
    body = push_body()
    status, data = await post(harness, "/hooks/generic", body, standard_headers(body))
    assert (status, data["outcome"]) == (202, "accepted")
    status, data = await post(harness, "/hooks/generic", body, standard_headers(body))
    assert (status, data["outcome"]) == (200, "duplicate")
    stale = standard_headers(body, msg_id="old", at=time.time() - 600)
    status, data = await post(harness, "/hooks/generic", body, stale)
    assert status == 401 and "more than 300 s" in data["reason"]
    assert harness.pushes == ["a" * 40]

"""Webhooks: authentication before anything else, routing by branch and event,
size limit, the delivery log, and the HTTP endpoints that carry them.

Real HTTP over loopback against the aiohttp server; signatures are real
HMAC-SHA256 over the raw body.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
from typing import Any

import aiohttp
import pytest

from gitkube.server.http import HttpServer
from gitkube.server.metrics import Metrics
from gitkube.server.webhooks import check_signature, route, sign

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
    assert (
        check_signature("generic", {"X-Gitkube-Signature": sign(SECRET, body)}, body, SECRET) == ""
    )


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

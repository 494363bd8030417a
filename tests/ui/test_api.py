"""The dashboard's HTTP side, against a real SQLite store and a running cache:

- the page and its assets come from the package, with no address off the machine;
- the data endpoints are the status report and the cache's objects, with the
  `gitkube get` row; a Secret's values never reach the page (keys only), not
  in the listing nor in the live stream;
- a change in the store reaches the live stream (SSE) within 1 s;
- actions: read-only without a token; with one, the token (bearer or the
  session cookie the sign-in sets) AND a same-origin request are needed;
  Suspend and Resume write the sync control, Sync now triggers a sync;
- beyond loopback: refused without --api-token-file, data only with the token;
- --no-ui: no page.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from typing import Any

import aiohttp

from gitkube.api.keys import SYNC_CONTROL_KEY
from gitkube.api.objects import Container, ObjectMeta, Pod, PodSpec, Secret
from gitkube.config import resolve_settings
from gitkube.server.ui import ASSETS, _asset
from gitkube.sync.state import SyncControl
from tests.ui.conftest import API_TOKEN, WEBHOOK_SECRET, Start

SECRET_VALUE = "hunter2-very-secret-value"


def pod(name: str, **labels: str) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, labels=labels or {"app": "web"}),
        spec=PodSpec(containers=[Container(name="main", image="busybox")]),
    )


async def fetch(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, str, Any]:
    async with session.request(method, url, **kw) as resp:
        return resp.status, await resp.text(), resp


async def test_page_and_assets_come_from_the_package(serve: Start) -> None:
    served = await serve()
    async with aiohttp.ClientSession() as s:
        status, body, resp = await fetch(s, "GET", served.base + "/")
        assert status == 200 and "<title>gitkube</title>" in body
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        for name in ASSETS:
            status, text, _ = await fetch(s, "GET", f"{served.base}/ui/assets/{name}")
            assert status == 200 and len(text) > 50
        status, _, _ = await fetch(s, "GET", served.base + "/ui/assets/..%2fui.py")
        assert status == 404
    # no CDN, no address off the machine: every URL in the assets is a path
    for name in ["index.html", *ASSETS]:
        text = _asset(name).decode()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name


async def test_objects_carry_the_get_row_and_health_and_never_secret_values(serve: Start) -> None:
    served = await serve()
    await served.objects.create(pod("web-1"))
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    await served.objects.create(
        Secret(metadata=ObjectMeta(name="db"), data={"password": encoded, "user": encoded})
    )
    await served.cache.sync()
    async with aiohttp.ClientSession() as s:
        watch = await s.get(served.base + "/ui/api/watch")
        await watch.content.readuntil(b"\n\n")  # hello
        # a change while the page watches: the Secret again, with a new key
        secret = await served.objects.get(Secret, "default", "db")
        assert secret is not None
        secret.data["token"] = encoded
        await served.objects.update(secret)
        streamed = (await asyncio.wait_for(watch.content.readuntil(b"\n\n"), 5)).decode()
        watch.close()
        status, body, _ = await fetch(s, "GET", served.base + "/ui/api/objects")
    assert status == 200
    data = json.loads(body)
    by_name = {(o["kind"], o["name"]): o for o in data["objects"]}
    web = by_name[("Pod", "web-1")]
    assert web["row"][0] == "web-1" and data["headers"]["Pod"][0] == "NAME"
    assert web["health"] and web["labels"] == {"app": "web"}
    assert by_name[("Secret", "db")]["dataKeys"] == ["password", "token", "user"]
    assert '"token"' in streamed and "Secret" in streamed
    for text in (body, streamed):
        assert SECRET_VALUE not in text and encoded not in text


async def test_a_store_change_reaches_the_live_stream_within_a_second(serve: Start) -> None:
    served = await serve()
    async with aiohttp.ClientSession() as s, s.get(served.base + "/ui/api/watch") as watch:
        await watch.content.readuntil(b"\n\n")
        started = time.monotonic()
        await served.objects.create(pod("late"))
        while True:
            chunk = (await asyncio.wait_for(watch.content.readuntil(b"\n\n"), 5)).decode()
            if '"name":"late"' in chunk:
                break
        assert time.monotonic() - started < 1.0
        assert chunk.startswith("event: put")
        await served.objects.delete(pod("late"), guarded=False)
        while True:
            chunk = (await asyncio.wait_for(watch.content.readuntil(b"\n\n"), 5)).decode()
            if chunk.startswith("event: del"):
                assert "/gitkube/pods/default/late" in chunk
                break


async def test_without_a_token_the_page_is_read_only(serve: Start) -> None:
    served = await serve()
    origin = {"Origin": served.base}
    async with aiohttp.ClientSession() as s:
        _, body, _ = await fetch(s, "GET", served.base + "/ui/api/session")
        assert json.loads(body)["readOnly"] is True
        for action in ("sync", "suspend", "resume"):
            status, body, _ = await fetch(
                s, "POST", f"{served.base}/ui/api/{action}", headers=origin
            )
            assert status == 403 and "read-only" in body
        status, body, _ = await fetch(
            s, "POST", served.base + "/ui/api/login", json={"token": "x"}, headers=origin
        )
        assert status == 403 and "--api-token-file" in body
    assert served.syncs == []
    assert await served.objects.store.get(SYNC_CONTROL_KEY) is None


async def test_actions_need_the_token_and_the_same_origin(serve: Start) -> None:
    served = await serve(tokens=(API_TOKEN, WEBHOOK_SECRET), api_token=API_TOKEN)
    url = served.base + "/ui/api/sync"
    bearer = {"Authorization": "Bearer " + API_TOKEN.decode()}
    async with aiohttp.ClientSession() as s:
        # the same origin without a token
        status, _, _ = await fetch(s, "POST", url, headers={"Origin": served.base})
        assert status == 401
        # the token from another origin, or with no origin at all
        for headers in (
            {"Origin": "http://evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
            {},
        ):
            status, body, _ = await fetch(s, "POST", url, headers={**bearer, **headers})
            assert status == 403 and "origin" in body, headers
        # a wrong token
        status, _, _ = await fetch(
            s, "POST", url, headers={"Authorization": "Bearer nope", "Origin": served.base}
        )
        assert status == 401
        assert served.syncs == []
        # the token and the same origin (either header)
        status, _, _ = await fetch(s, "POST", url, headers={**bearer, "Origin": served.base})
        assert status == 202
        status, _, _ = await fetch(
            s, "POST", url, headers={**bearer, "Sec-Fetch-Site": "same-origin"}
        )
        assert status == 202
        assert served.syncs == [1, 1]
        # the webhook secret works as well
        status, _, _ = await fetch(
            s,
            "POST",
            served.base + "/ui/api/suspend",
            headers={"Authorization": "Bearer " + WEBHOOK_SECRET.decode(), "Origin": served.base},
        )
        assert status == 202
    kv = await served.objects.store.get(SYNC_CONTROL_KEY)
    assert kv is not None and SyncControl.from_json(kv.value).suspended


async def test_sign_in_sets_a_session_cookie_that_allows_actions(serve: Start) -> None:
    served = await serve(tokens=(API_TOKEN,), api_token=API_TOKEN)
    origin = {"Origin": served.base}
    # unsafe: keep cookies of an IP address, as a browser does
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        status, _, _ = await fetch(
            s, "POST", served.base + "/ui/api/login", json={"token": "wrong"}, headers=origin
        )
        assert status == 403
        status, _, _ = await fetch(
            s,
            "POST",
            served.base + "/ui/api/login",
            json={"token": API_TOKEN.decode()},
            headers={"Origin": "http://evil.example"},
        )
        assert status == 403
        status, _, resp = await fetch(
            s, "POST", served.base + "/ui/api/login", json={"token": API_TOKEN.decode()},
            headers=origin,
        )  # fmt: skip
        assert status == 200
        cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert API_TOKEN.decode() not in cookie
        _, body, _ = await fetch(s, "GET", served.base + "/ui/api/session")
        assert json.loads(body)["authenticated"] is True
        status, _, _ = await fetch(s, "POST", served.base + "/ui/api/suspend", headers=origin)
        assert status == 202
        status, _, _ = await fetch(s, "POST", served.base + "/ui/api/resume", headers=origin)
        assert status == 202
        # the cookie alone, from another origin: refused
        status, _, _ = await fetch(
            s, "POST", served.base + "/ui/api/sync", headers={"Origin": "http://evil.example"}
        )
        assert status == 403
    kv = await served.objects.store.get(SYNC_CONTROL_KEY)
    assert kv is not None and not SyncControl.from_json(kv.value).suspended


async def test_beyond_loopback_without_an_api_token_the_page_is_refused(serve: Start) -> None:
    served = await serve(tokens=(WEBHOOK_SECRET,), loopback=False)
    async with aiohttp.ClientSession() as s:
        for path in ("/", "/ui/api/objects", "/ui/assets/app.js"):
            status, body, _ = await fetch(s, "GET", served.base + path)
            assert status == 403 and "--api-token-file" in body, path


async def test_beyond_loopback_the_data_needs_the_token(serve: Start) -> None:
    served = await serve(tokens=(API_TOKEN,), api_token=API_TOKEN, loopback=False)
    async with aiohttp.ClientSession() as s:
        status, _, _ = await fetch(s, "GET", served.base + "/")
        assert status == 200  # the page itself, to sign in
        for path in ("/ui/api/objects", "/ui/api/status", "/ui/api/watch", "/ui/api/drift"):
            status, _, _ = await fetch(s, "GET", served.base + path)
            assert status == 401, path
        status, body, _ = await fetch(
            s,
            "GET",
            served.base + "/ui/api/objects",
            headers={"Authorization": "Bearer " + API_TOKEN.decode()},
        )
        assert status == 200 and "objects" in json.loads(body)


def test_no_ui_setting_flag_environment_and_file(tmp_path: Any) -> None:
    settings, _ = resolve_settings({}, environ={})
    assert settings.ui is True
    settings, sources = resolve_settings({"ui": False}, environ={})
    assert settings.ui is False and sources["ui"] == "flag"
    settings, sources = resolve_settings({}, environ={"GITKUBE_UI": "false"})
    assert settings.ui is False and sources["ui"] == "env"
    config = tmp_path / "gitkube.yaml"
    config.write_text("ui: false\n")
    settings, _ = resolve_settings({}, environ={}, config_file=config)
    assert settings.ui is False

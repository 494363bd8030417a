"""Webhook authentication and routing, without I/O.

Order of work for every delivery, so a forged request costs nothing:

1. no secret configured -> 403, unless unsigned hooks were explicitly allowed;
2. the signature header is checked in constant time over the raw body
   (GitHub ``X-Hub-Signature-256``, Gitea ``X-Gitea-Signature``, GitLab
   ``X-Gitlab-Token``; the generic hook follows Standard Webhooks:
   ``webhook-signature`` over ``webhook-id.webhook-timestamp.body``, and a
   timestamp more than 5 minutes from now is refused) -> 401 when bad or
   missing, and nothing else is done;
3. a delivery ID already answered in the last 24 hours (``X-GitHub-Delivery``,
   ``X-Gitea-Delivery``, ``X-Gitlab-Event-UUID``, ``webhook-id``) is a replay:
   200 "duplicate", nothing queued (``ReplayGuard``);
4. only then is the body parsed, and the event routed: a ping is 200; a push
   to the tracked branch is 202 and triggers a sync; a push to another
   branch, a tag push or a deletion is 202 and ignored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MAX_BODY_BYTES = 1 << 20
HOOKS = ("github", "gitlab", "gitea", "generic")

Outcome = Literal["accepted", "ignored", "ping", "rejected", "error", "duplicate"]
#: Standard Webhooks: a delivery whose timestamp is further from now is refused
TIMESTAMP_TOLERANCE_SECONDS = 300
#: how long a delivery ID is remembered (GitHub redelivers for days; 24 h is the promise)
REPLAY_WINDOW_SECONDS = 24 * 3600
#: at most this many IDs are remembered (the oldest go first)
REPLAY_MAX_IDS = 100_000
DELIVERY_ID_HEADERS = (
    "x-github-delivery",
    "x-gitea-delivery",
    "x-gitlab-event-uuid",
    "webhook-id",
)


@dataclass
class Delivery:
    """One webhook delivery and what became of it (the delivery log)."""

    time: str
    hook: str
    event: str
    status: int
    outcome: Outcome
    reason: str
    delivery_id: str = ""
    ref: str = ""
    revision: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Verdict:
    status: int
    outcome: Outcome
    reason: str
    event: str = ""
    ref: str = ""
    revision: str = ""
    #: True when a sync must start
    trigger: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def sign(secret: bytes, body: bytes) -> str:
    """``sha256=<hex>``: what GitHub and the generic hook send."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def standard_webhooks_key(secret: bytes) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_<base64>`` decoded,
    any other secret as it is."""
    if secret.startswith(b"whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError):
            return secret
    return secret


def sign_standard(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``: the Standard Webhooks signature (what the generic hook takes)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(standard_webhooks_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _check_standard(h: dict[str, str], body: bytes, secret: bytes, now: float) -> str:
    msg_id, stamp, given = (
        h.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not (msg_id and stamp and given):
        legacy = (
            " (X-Gitkube-Signature without a timestamp is no longer accepted)"
            if ("x-gitkube-signature" in h)
            else ""
        )
        return (
            "missing webhook-id, webhook-timestamp or webhook-signature header "
            "(Standard Webhooks)" + legacy
        )
    try:
        timestamp = int(stamp)
    except ValueError:
        return "webhook-timestamp is not a number of seconds"
    expected = sign_standard(secret, msg_id, timestamp, body).encode()
    ok = False
    for candidate in given.split():
        ok |= hmac.compare_digest(candidate.encode(), expected)
    if not ok:
        return "webhook-signature does not match the delivery"
    if abs(now - timestamp) > TIMESTAMP_TOLERANCE_SECONDS:
        return (
            f"webhook-timestamp is {int(now - timestamp)} s from now, more than "
            f"{TIMESTAMP_TOLERANCE_SECONDS} s: a replayed or delayed delivery"
        )
    return ""


def check_signature(
    hook: str,
    headers: Mapping[str, str],
    body: bytes,
    secret: bytes,
    *,
    now: float | None = None,
) -> str:
    """'' when the delivery is authentic, else why not (for a 401)."""
    h = _lower(headers)
    expected_hex = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if hook == "github":
        given = h.get("x-hub-signature-256", "")
        if not given:
            return "missing X-Hub-Signature-256 header"
        ok = hmac.compare_digest(given.encode(), ("sha256=" + expected_hex).encode())
        return "" if ok else "X-Hub-Signature-256 does not match the body"
    if hook == "gitea":
        given = h.get("x-gitea-signature", "")
        if not given:
            return "missing X-Gitea-Signature header"
        given = given.removeprefix("sha256=")
        ok = hmac.compare_digest(given.encode(), expected_hex.encode())
        return "" if ok else "X-Gitea-Signature does not match the body"
    if hook == "gitlab":
        given = h.get("x-gitlab-token", "")
        if not given:
            return "missing X-Gitlab-Token header"
        # digests of equal length: the comparison does not leak the token's length
        ok = hmac.compare_digest(
            hashlib.sha256(given.encode()).digest(), hashlib.sha256(secret).digest()
        )
        return "" if ok else "X-Gitlab-Token is wrong"
    if hook == "generic":
        return _check_standard(h, body, secret, time.time() if now is None else now)
    return f"unknown hook {hook!r}"


def delivery_id(headers: Mapping[str, str]) -> str:
    """The sender's ID of a delivery (the same on a redelivery), or ''."""
    h = _lower(headers)
    for name in DELIVERY_ID_HEADERS:
        if h.get(name):
            return h[name][:200]
    return ""


class ReplayGuard:
    """Delivery IDs answered in the last ``window`` seconds, per hook.

    An ID is remembered once its delivery was answered 2xx, so a delivery
    that failed may be redelivered. ``on_change`` persists the set (the
    operator keeps it in the store, so a restart does not forget it)."""

    def __init__(
        self,
        *,
        window: float = REPLAY_WINDOW_SECONDS,
        max_ids: int = REPLAY_MAX_IDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.max_ids = max_ids
        self.clock = clock
        #: "hook:id" -> time first answered (insertion order is time order)
        self.ids: dict[str, float] = {}

    def _expire(self) -> None:
        horizon = self.clock() - self.window
        while self.ids:
            key, at = next(iter(self.ids.items()))
            if at >= horizon and len(self.ids) <= self.max_ids:
                break
            del self.ids[key]

    def seen(self, hook: str, msg_id: str) -> bool:
        self._expire()
        return f"{hook}:{msg_id}" in self.ids

    def add(self, hook: str, msg_id: str) -> None:
        self.ids.setdefault(f"{hook}:{msg_id}", self.clock())
        self._expire()

    def to_json(self) -> bytes:
        self._expire()
        return json.dumps(self.ids).encode()

    def load(self, raw: bytes | str) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if isinstance(data, dict):
            items = sorted(
                ((str(k), float(v)) for k, v in data.items() if isinstance(v, int | float)),
                key=lambda kv: kv[1],
            )
            for key, at in items:
                self.ids.setdefault(key, at)
        self._expire()


def _event_of(hook: str, h: dict[str, str]) -> str:
    if hook == "github":
        return h.get("x-github-event", "")
    if hook == "gitlab":
        return h.get("x-gitlab-event", "")
    if hook == "gitea":
        return h.get("x-gitea-event", "") or h.get("x-gogs-event", "")
    return h.get("x-gitkube-event", "push")


def route(
    hook: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    branch: str,
) -> Verdict:
    """What an authenticated delivery means for a repository tracking ``branch``."""
    h = _lower(headers)
    event = _event_of(hook, h)
    if event in ("ping", "System Hook") or (hook == "gitlab" and event == "Test Hook"):
        return Verdict(200, "ping", "ping received", event=event)
    try:
        payload = json.loads(body or b"{}")
    except (UnicodeDecodeError, ValueError) as exc:
        return Verdict(400, "error", f"body is not JSON: {exc}", event=event)
    if not isinstance(payload, dict):
        return Verdict(400, "error", "body is not a JSON object", event=event)
    if hook == "github" and "zen" in payload and "hook_id" in payload:
        return Verdict(200, "ping", "ping received", event=event or "ping")

    push_events = {
        "github": {"push"},
        "gitea": {"push"},
        "gitlab": {"Push Hook", "Tag Push Hook"},
        "generic": {"push", ""},
    }[hook]
    if event not in push_events:
        return Verdict(202, "ignored", f"event {event!r} is not a push", event=event)

    ref = str(payload.get("ref", "") or "")
    after = str(payload.get("after", "") or payload.get("checkout_sha", "") or "")
    if hook == "generic" and not ref:
        # A bare notification: sync whatever the branch points at now.
        return Verdict(202, "accepted", "sync requested", event=event, trigger=True)
    if ref.startswith("refs/tags/"):
        return Verdict(202, "ignored", f"tag {ref[10:]} is not tracked", event=event, ref=ref)
    if ref != f"refs/heads/{branch}":
        return Verdict(
            202,
            "ignored",
            f"push to {ref or 'an unknown ref'}, tracking refs/heads/{branch}",
            event=event,
            ref=ref,
        )
    if payload.get("deleted") is True or set(after) == {"0"}:
        return Verdict(202, "ignored", f"branch {branch} was deleted", event=event, ref=ref)
    return Verdict(
        202,
        "accepted",
        f"push of {after[:12] or 'a new revision'} to {branch}",
        event=event,
        ref=ref,
        revision=after if after and set(after) != {"0"} else "",
        trigger=True,
    )

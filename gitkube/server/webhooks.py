"""Webhook authentication and routing, without I/O.

Order of work for every delivery, so a forged request costs nothing:

1. no secret configured -> 403, unless unsigned hooks were explicitly allowed;
2. the signature header is checked in constant time over the raw body
   (GitHub ``X-Hub-Signature-256``, Gitea ``X-Gitea-Signature``, GitLab
   ``X-Gitlab-Token``, generic ``X-Gitkube-Signature``) -> 401 when bad or
   missing, and nothing else is done;
3. only then is the body parsed, and the event routed: a ping is 200; a push
   to the tracked branch is 202 and triggers a sync; a push to another
   branch, a tag push or a deletion is 202 and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MAX_BODY_BYTES = 1 << 20
HOOKS = ("github", "gitlab", "gitea", "generic")

Outcome = Literal["accepted", "ignored", "ping", "rejected", "error"]


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


def check_signature(hook: str, headers: Mapping[str, str], body: bytes, secret: bytes) -> str:
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
        ok = hmac.compare_digest(given.encode(), secret)
        return "" if ok else "X-Gitlab-Token is wrong"
    if hook == "generic":
        given = h.get("x-gitkube-signature", "") or h.get("x-hub-signature-256", "")
        if not given:
            return "missing X-Gitkube-Signature header (sha256=HMAC-SHA256 of the body)"
        ok = hmac.compare_digest(given.encode(), ("sha256=" + expected_hex).encode())
        return "" if ok else "X-Gitkube-Signature does not match the body"
    return f"unknown hook {hook!r}"


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

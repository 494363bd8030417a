"""Commit signature verification with real keys (ssh-keygen, gpg), real
repositories and the real sync loop on a SQLite store:

- head mode: an SSH-signed commit is applied; an unsigned one, one signed by
  a key not in the allowed signers, by a revoked OpenPGP key or by an SSH key
  past its valid-before date is refused: nothing of it is applied, the
  previous revision stays, the state says which commit, which signer or
  "unsigned", and why;
- chain mode: an unsigned commit under a signed HEAD is refused (head mode
  lets it through: that is the difference);
- signer rules: a signer changing a path it is not given is refused, with
  the path; a commit that rewrites the rules is judged by the old rules;
- a tag given as the ref is verified as a tag (a lightweight tag is refused);
- GitHub web-flow merges: accepted only where the rules name ``web-flow``;
- `gitkube sync --once` and `gitkube diff` with the flags; the
  pre-receive hook refuses an unsigned push;
- status commits signed with --status-signing-key; a commit on the status
  branch gitkube did not sign is reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gitkube.api.keys import SYNC_STATE_KEY
from gitkube.api.objects import Pod
from gitkube.hooks import ensure_notify_token, install_hooks
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.loop import SyncLoop, SyncSettings
from gitkube.sync.report import build_status_report
from gitkube.sync.source import GitSource
from gitkube.sync.verify import (
    CommitVerifier,
    VerificationError,
    VerifyPolicy,
    check_paths,
    parse_signer_rules,
)
from gitkube.sync.writeback import StatusWriteback, StatusWriter, render_status_markdown
from tests.fixtures.git import GitRemote, git
from tests.sync.conftest import pod_yaml
from tests.trust.keys import WEB_FLOW_UID, Keys, make_keys, stop_agents

ALICE = "Alice <alice@example.com>"
MALLORY = "Mallory <mallory@example.com>"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    keys = make_keys(tmp_path_factory.mktemp("keys"))
    yield keys
    stop_agents(keys.gnupg)


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite://{tmp_path}/state/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


@pytest.fixture
def remote(tmp_path: Path) -> GitRemote:
    return GitRemote(tmp_path / "repo")


@pytest.fixture
def trust(keys: Keys, tmp_path: Path) -> VerifyPolicy:
    """bob (SSH) and alice (OpenPGP) are trusted; eve and mallory are not."""
    signers = keys.allowed_signers(tmp_path / "allowed_signers", {"bob@example.com": "bob"})
    gpg = keys.export_gpg(tmp_path / "trusted.asc", ALICE)
    return VerifyPolicy("head", str(signers), str(gpg))


def make_loop(
    objects: ObjectStore, remote: GitRemote, tmp_path: Path, policy: VerifyPolicy, ref: str = "main"
) -> SyncLoop:
    source = GitSource(remote.url, ref=ref, cache_dir=tmp_path / "cache")
    verifier = CommitVerifier(policy, work_dir=tmp_path / "verify")
    return SyncLoop(objects, source, SyncSettings(), verifier=verifier)


async def pod_names(objects: ObjectStore) -> set[str]:
    pods, _ = await objects.list(Pod)
    return {p.metadata.name for p in pods}


async def sync_state(objects: ObjectStore) -> dict[str, object]:
    kv = await objects.store.get(SYNC_STATE_KEY)
    assert kv is not None
    data: dict[str, object] = json.loads(kv.value)
    return data


# ---------------------------------------------------------------- head mode


async def test_signed_commit_is_applied_and_unsigned_refused(
    keys: Keys, remote: GitRemote, objects: ObjectStore, tmp_path: Path, trust: VerifyPolicy
) -> None:
    remote.write("a.yaml", pod_yaml("a"))
    good = keys.commit(remote, "a", ssh="bob")
    remote.push()
    loop = make_loop(objects, remote, tmp_path, trust)
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert await pod_names(objects) == {"a"}
    state = await sync_state(objects)
    assert state["verified_revision"] == good and state["refusal"] == {}

    remote.write("b.yaml", pod_yaml("b"))
    bad = keys.commit(remote, "b unsigned")
    remote.push()
    result = await loop.reconcile_once()
    assert result.outcome == "Failed"
    assert result.refusal is not None
    assert result.refusal["commit"] == bad and result.refusal["signer"] == "unsigned"
    assert "not signed" in result.refusal["reason"]
    assert await pod_names(objects) == {"a"}, "nothing of the refused revision is applied"
    state = await sync_state(objects)
    assert state["revision"] == good and state["verified_revision"] == good
    assert state["phase"] == "Failed"
    assert bad[:12] in str(state["message"]) and "unsigned" in str(state["message"])
    # STATUS.md says it too
    report = await build_status_report(objects)
    markdown = render_status_markdown(report)
    assert bad[:12] in markdown and "unsigned" in markdown and "not signed" in markdown

    # a signed fix on top is applied again (head mode: HEAD's signer vouches)
    remote.write("b.yaml", pod_yaml("b2"))
    keys.commit(remote, "b2", gpg=ALICE)
    remote.push()
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert await pod_names(objects) == {"a", "b2"}


@pytest.mark.parametrize(
    ("signer", "signer_shown", "reason"),
    [
        ({"ssh": "eve"}, "SSH key SHA256:", "not in the allowed signers"),
        # signed by fingerprint: the signature names no user id, only the key
        ({"gpg": MALLORY}, "OpenPGP key ", "not in the trusted keys"),
    ],
)
async def test_unknown_key_is_refused(
    keys: Keys,
    remote: GitRemote,
    objects: ObjectStore,
    tmp_path: Path,
    trust: VerifyPolicy,
    signer: dict[str, str],
    signer_shown: str,
    reason: str,
) -> None:
    remote.write("a.yaml", pod_yaml("a"))
    commit = keys.commit(remote, "a", **signer)
    remote.push()
    result = await make_loop(objects, remote, tmp_path, trust).reconcile_once()
    assert result.outcome == "Failed" and result.refusal is not None
    assert result.refusal["commit"] == commit
    assert signer_shown in result.refusal["signer"]
    assert reason in result.refusal["reason"]
    assert await pod_names(objects) == set()


async def test_revoked_gpg_key_is_refused(
    keys: Keys, remote: GitRemote, objects: ObjectStore, tmp_path: Path
) -> None:
    uid = "Rex <rex@example.com>"
    keys.make_gpg(uid)
    remote.write("a.yaml", pod_yaml("a"))
    keys.commit(remote, "a", gpg=uid)
    remote.push()
    keys.revoke_gpg(uid)  # the export now carries the revocation
    policy = VerifyPolicy("head", "", str(keys.export_gpg(tmp_path / "trusted.asc", uid)))
    result = await make_loop(objects, remote, tmp_path, policy).reconcile_once()
    assert result.refusal is not None
    assert result.refusal["signer"] == "rex@example.com"
    assert "revoked" in result.refusal["reason"]
    assert await pod_names(objects) == set()


async def test_expired_ssh_key_is_refused(
    keys: Keys, remote: GitRemote, objects: ObjectStore, tmp_path: Path
) -> None:
    signers = keys.allowed_signers(
        tmp_path / "allowed", {"carol@example.com": "carol"}, options='valid-before="20200101"'
    )
    remote.write("a.yaml", pod_yaml("a"))
    keys.commit(remote, "a", ssh="carol")
    remote.push()
    policy = VerifyPolicy("head", str(signers))
    result = await make_loop(objects, remote, tmp_path, policy).reconcile_once()
    assert result.refusal is not None
    assert "validity" in result.refusal["reason"]
    assert await pod_names(objects) == set()


# ---------------------------------------------------------------- chain mode


@pytest.mark.parametrize("mode", ["head", "chain"])
async def test_unsigned_commit_under_a_signed_head(
    keys: Keys,
    remote: GitRemote,
    objects: ObjectStore,
    tmp_path: Path,
    trust: VerifyPolicy,
    mode: str,
) -> None:
    trust.mode = mode
    remote.write("a.yaml", pod_yaml("a"))
    keys.commit(remote, "a", ssh="bob")
    remote.push()
    loop = make_loop(objects, remote, tmp_path, trust)
    assert (await loop.reconcile_once()).outcome == "Succeeded"

    remote.write("evil.yaml", pod_yaml("evil"))
    buried = keys.commit(remote, "sneaked in, unsigned")
    remote.write("c.yaml", pod_yaml("c"))
    head = keys.commit(remote, "c", ssh="bob")
    remote.push()
    result = await loop.reconcile_once()
    if mode == "head":
        assert result.outcome == "Succeeded"
        assert await pod_names(objects) == {"a", "evil", "c"}
        return
    assert result.outcome == "Failed" and result.refusal is not None
    assert result.refusal["commit"] == buried and result.refusal["revision"] == head
    assert result.refusal["signer"] == "unsigned"
    assert await pod_names(objects) == {"a"}

    # still refused on the next pass; a rewrite without the buried commit is applied
    again = await loop.reconcile_once()
    assert again.outcome in ("Failed", "Unchanged") and await pod_names(objects) == {"a"}
    remote.reset_hard(f"{buried}~1")
    remote.write("c.yaml", pod_yaml("c"))
    keys.commit(remote, "c again", ssh="bob")
    remote.push(force=True)
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert await pod_names(objects) == {"a", "c"}


async def test_chain_after_a_force_push_checks_the_rewritten_commits(
    keys: Keys, remote: GitRemote, objects: ObjectStore, tmp_path: Path, trust: VerifyPolicy
) -> None:
    trust.mode = "chain"
    remote.write("a.yaml", pod_yaml("a"))
    root = keys.commit(remote, "root", ssh="bob")
    remote.write("b.yaml", pod_yaml("b"))
    keys.commit(remote, "b", ssh="bob")
    remote.push()
    loop = make_loop(objects, remote, tmp_path, trust)
    assert (await loop.reconcile_once()).outcome == "Succeeded"

    # history rewritten from the root: an unsigned commit under a signed one
    remote.reset_hard(root)
    remote.write("evil.yaml", pod_yaml("evil"))
    buried = keys.commit(remote, "rewritten, unsigned")
    remote.write("c.yaml", pod_yaml("c"))
    keys.commit(remote, "signed on top", ssh="bob")
    remote.push(force=True)
    result = await loop.reconcile_once()
    assert result.refusal is not None and result.refusal["commit"] == buried
    assert await pod_names(objects) == {"a", "b"}


# ---------------------------------------------------------------- signer rules


def test_signer_rules_are_codeowners_like() -> None:
    rules = parse_signer_rules(
        "# comment\n* bob@example.com alice@example.com\n/secret/ alice@example.com\n"
        "*.md docs@example.com\n",
        source="rules",
    )
    from gitkube.sync.verify import Signature

    bob = Signature("good", "bob@example.com", frozenset({"bob@example.com"}))
    assert check_paths(rules, bob, ["app/a.yaml", "b.yaml"], source="rules") is None
    found = check_paths(rules, bob, ["app/a.yaml", "secret/s.yaml"], source="rules")
    assert found is not None and found[0] == "secret/s.yaml"
    assert "rules:3" in found[1]
    # the last matching line wins: README.md is docs@'s, not bob's
    assert check_paths(rules, bob, ["x/README.md"], source="rules") is not None
    with pytest.raises(VerificationError, match="rules:1"):
        parse_signer_rules("lonely-pattern\n", source="rules")


async def test_forbidden_path_is_refused(
    keys: Keys, remote: GitRemote, objects: ObjectStore, tmp_path: Path, trust: VerifyPolicy
) -> None:
    rules = tmp_path / "signers"
    rules.write_text("* bob@example.com alice@example.com\n/prod/ alice@example.com\n")
    trust.signer_rules = str(rules)
    trust.mode = "chain"
    remote.write("dev/a.yaml", pod_yaml("a"))
    keys.commit(remote, "bob may change dev/", ssh="bob")
    remote.push()
    loop = make_loop(objects, remote, tmp_path, trust)
    assert (await loop.reconcile_once()).outcome == "Succeeded"

    remote.write("prod/p.yaml", pod_yaml("p"))
    commit = keys.commit(remote, "bob may not change prod/", ssh="bob")
    remote.push()
    result = await loop.reconcile_once()
    assert result.refusal is not None
    assert result.refusal["commit"] == commit
    assert result.refusal["signer"] == "bob@example.com"
    assert result.refusal["path"] == "prod/p.yaml"
    assert "may not change prod/p.yaml" in result.refusal["reason"]
    assert await pod_names(objects) == {"a"}


async def test_rules_in_the_repository_judge_the_commit_that_changes_them(
    keys: Keys, remote: GitRemote, objects: ObjectStore, tmp_path: Path, trust: VerifyPolicy
) -> None:
    trust.mode = "chain"
    remote.write(
        ".gitkube/signers",
        "* bob@example.com alice@example.com\n"
        "/.gitkube/ alice@example.com\n"
        "/prod/ alice@example.com\n",
    )
    remote.write("prod/p.yaml", pod_yaml("p"))
    keys.commit(remote, "rules", gpg=ALICE)
    remote.push()
    loop = make_loop(objects, remote, tmp_path, trust)
    assert (await loop.reconcile_once()).outcome == "Succeeded"

    # bob grants himself prod/ and uses it in the same push
    remote.write(".gitkube/signers", "* bob@example.com alice@example.com\n")
    remote.write("prod/p.yaml", pod_yaml("p2"))
    keys.commit(remote, "bob takes over", ssh="bob")
    remote.push()
    result = await loop.reconcile_once()
    assert result.refusal is not None
    assert result.refusal["path"] == ".gitkube/signers"
    assert "alice@example.com" in result.refusal["reason"]
    assert await pod_names(objects) == {"p"}


# ---------------------------------------------------------------- tags


async def test_tag_is_verified_as_a_tag(
    keys: Keys, remote: GitRemote, objects: ObjectStore, tmp_path: Path, trust: VerifyPolicy
) -> None:
    remote.write("a.yaml", pod_yaml("a"))
    keys.commit(remote, "unsigned commit, signed tag")
    remote.push()
    keys.git(*keys.sign_args(ssh="bob"), "tag", "-s", "-m", "release", "v1", cwd=remote.work)
    git("tag", "v1-light", cwd=remote.work)
    keys.git(*keys.sign_args(ssh="eve"), "tag", "-s", "-m", "forged", "v1-eve", cwd=remote.work)
    git("push", "--quiet", "origin", "--tags", cwd=remote.work)

    result = await make_loop(objects, remote, tmp_path / "t1", trust, ref="v1").reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert await pod_names(objects) == {"a"}

    for tag, why in (("v1-light", "not an annotated, signed tag"), ("v1-eve", "allowed signers")):
        loop = make_loop(objects, remote, tmp_path / tag, trust, ref=tag)
        result = await loop.preview()
        assert result.outcome == "Failed", tag
        assert why in result.message, (tag, result.message)


# ---------------------------------------------------------------- web-flow


async def test_web_flow_merge_accepted_only_when_named(
    keys: Keys, remote: GitRemote, objects: ObjectStore, tmp_path: Path
) -> None:
    signers = keys.allowed_signers(tmp_path / "allowed", {"bob@example.com": "bob"})
    gpg = keys.export_gpg(tmp_path / "trusted.asc", ALICE, WEB_FLOW_UID)
    remote.write("a.yaml", pod_yaml("a"))
    keys.commit(remote, "base", ssh="bob")
    remote.push()
    base = remote.head()
    # a pull request branch with bob's signed commit, merged "on GitHub"
    git("checkout", "-q", "-b", "feature", cwd=remote.work)
    remote.write("b.yaml", pod_yaml("b"))
    keys.commit(remote, "feature", ssh="bob")
    git("checkout", "-q", "main", cwd=remote.work)
    keys.git(
        *keys.sign_args(gpg=WEB_FLOW_UID), "merge", "--no-ff", "-S", "-m", "Merge pull request #1",
        "feature", cwd=remote.work, committer="GitHub <noreply@github.com>",
    )  # fmt: skip
    remote.push()
    merge = remote.head()

    no_rules = VerifyPolicy("chain", str(signers), str(gpg))
    verifier = CommitVerifier(no_rules, work_dir=tmp_path / "v1")
    mirror = remote.bare
    verdict = verifier.verify(mirror, merge, since=base)
    assert verdict.refusal is not None
    assert verdict.refusal.commit == merge and "web-flow" in verdict.refusal.reason

    rules = tmp_path / "signers"
    rules.write_text("* web-flow bob@example.com\n")
    named = VerifyPolicy("chain", str(signers), str(gpg), str(rules))
    verdict = CommitVerifier(named, work_dir=tmp_path / "v2").verify(mirror, merge, since=base)
    assert verdict.ok, verdict.refusal
    assert verdict.signer == "noreply@github.com" and len(verdict.checked) == 2

    # web-flow's key does not stand for bob: a path only bob may change is refused
    rules.write_text("* web-flow bob@example.com\n/b.yaml bob@example.com\n")
    verdict = CommitVerifier(named, work_dir=tmp_path / "v3").verify(mirror, merge, since=base)
    assert verdict.refusal is not None and verdict.refusal.path == "b.yaml"


# ---------------------------------------------------------------- CLI and hook


def gitkube(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitkube", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_sync_and_diff_refuse(
    keys: Keys, remote: GitRemote, tmp_path: Path, trust: VerifyPolicy
) -> None:
    remote.write("a.yaml", pod_yaml("a"))
    commit = keys.commit(remote, "unsigned")
    remote.push()
    flags = [
        "--repo", remote.url, "--store", f"sqlite://{tmp_path}/s.db",
        "--cache-dir", str(tmp_path / "c"),
        "--verify-commits", "head", "--allowed-signers", trust.allowed_signers,
    ]  # fmt: skip
    out = gitkube("sync", "--once", "--no-writeback", "-o", "json", *flags, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert data["refusal"]["commit"] == commit and data["refusal"]["signer"] == "unsigned"
    out = gitkube("diff", *flags, cwd=tmp_path)
    assert out.returncode == 1 and "unsigned" in out.stderr and "Traceback" not in out.stderr
    out = gitkube("sync", "--once", "--verify-commits", "sometimes", *flags[:6], cwd=tmp_path)
    assert out.returncode == 2 and "off, head, chain" in out.stderr
    out = gitkube("sync", "--once", "--verify-commits", "head", *flags[:6], cwd=tmp_path)
    assert out.returncode == 2 and "--allowed-signers" in out.stderr


def test_pre_receive_refuses_unsigned_push(
    keys: Keys, remote: GitRemote, tmp_path: Path, trust: VerifyPolicy
) -> None:
    ensure_notify_token(tmp_path / "state")
    trust.mode = "chain"
    install_hooks(
        remote.bare,
        url="http://127.0.0.1:9",
        token_file=tmp_path / "state" / "notify.token",
        validate=True,
        branch="main",
        verify=trust,
    )
    remote.write("a.yaml", pod_yaml("a"))
    keys.commit(remote, "signed", ssh="bob")
    remote.push()
    remote.write("b.yaml", pod_yaml("b"))
    unsigned = keys.commit(remote, "unsigned")
    remote.write("c.yaml", pod_yaml("c"))
    keys.commit(remote, "signed on top", ssh="bob")
    push = subprocess.run(
        ["git", "-C", str(remote.work), "push", "origin", "HEAD:refs/heads/main"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert push.returncode != 0
    assert "push rejected" in push.stderr and unsigned[:12] in push.stderr
    assert "unsigned" in push.stderr


def test_pre_receive_checks_every_commit_of_a_new_branch(
    keys: Keys, remote: GitRemote, tmp_path: Path, trust: VerifyPolicy
) -> None:
    """The first push of the tracked branch (old 000…): every commit the
    repository does not hold yet is checked, not only the pushed tip."""
    ensure_notify_token(tmp_path / "state")
    trust.mode = "chain"
    install_hooks(
        remote.bare,
        url="http://127.0.0.1:9",
        token_file=tmp_path / "state" / "notify.token",
        validate=True,
        branch="main",
        verify=trust,
    )
    remote.write("a.yaml", pod_yaml("a"))
    keys.commit(remote, "signed", ssh="bob")
    remote.write("b.yaml", pod_yaml("b"))
    unsigned = keys.commit(remote, "unsigned")
    remote.write("c.yaml", pod_yaml("c"))
    keys.commit(remote, "signed on top", ssh="bob")
    push = subprocess.run(
        ["git", "-C", str(remote.work), "push", "origin", "HEAD:refs/heads/main"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert push.returncode != 0
    assert unsigned[:12] in push.stderr and "unsigned" in push.stderr


# ---------------------------------------------------------------- status commits


async def test_status_commits_are_signed_and_foreign_ones_reported(
    keys: Keys, remote: GitRemote, objects: ObjectStore, tmp_path: Path
) -> None:
    remote.write("a.yaml", pod_yaml("a"))
    remote.commit_and_push("a")
    key = keys.ssh["bob"]
    writer = StatusWriter(
        remote.url,
        branch="gitkube/status",
        cache_dir=tmp_path / "status",
        synced_branch="main",
        signing_key=str(key),
    )
    hook = StatusWriteback(writer, objects)
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    loop = SyncLoop(objects, source, after_sync=hook)
    await loop.reconcile_once()
    tip = git("rev-parse", "refs/heads/gitkube/status", cwd=remote.bare)
    signers = keys.allowed_signers(tmp_path / "own", {"gitkube": "bob"})
    verified = subprocess.run(
        ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", tip],
        cwd=remote.bare,
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr
    assert hook.last is not None and hook.last.unsigned_commits == []

    # someone else commits to the status branch
    git("fetch", "-q", "origin", "gitkube/status", cwd=remote.work)
    git("checkout", "-q", "FETCH_HEAD", cwd=remote.work)
    remote.write("STATUS.md", "all good, trust me\n")
    foreign = remote.commit("forged status")
    git("push", "-q", "origin", "HEAD:refs/heads/gitkube/status", cwd=remote.work)
    git("checkout", "-q", "main", cwd=remote.work)

    remote.write("b.yaml", pod_yaml("b"))
    remote.commit_and_push("b")
    await loop.reconcile_once()
    assert hook.last is not None and hook.last.unsigned_commits == [foreign], hook.last
    report = await build_status_report(objects)
    assert report.writeback is not None and report.writeback.unsigned_commits == [foreign]


# ---------------------------------------------------------------- settings


def test_settings_from_environment_and_config_file(tmp_path: Path) -> None:
    from gitkube.config import resolve_settings
    from gitkube.errors import ConfigError
    from gitkube.sync.verify import policy_from_settings

    signers = tmp_path / "allowed"
    signers.write_text("")
    config = tmp_path / "gitkube.yaml"
    config.write_text(f"verify-commits: head\nallowed-signers: {signers}\n")
    settings, sources = resolve_settings(
        {}, config_file=config, environ={"GITKUBE_VERIFY_COMMITS": "chain"}
    )
    assert settings.verify_commits == "chain" and sources["verify_commits"] == "env"
    assert settings.allowed_signers == str(signers) and sources["allowed_signers"] == "file"
    assert policy_from_settings(settings).mode == "chain"
    settings.verify_commits = "always"
    with pytest.raises(ConfigError, match="off, head, chain"):
        policy_from_settings(settings)
    settings.verify_commits, settings.allowed_signers = "head", str(tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot read"):
        policy_from_settings(settings)

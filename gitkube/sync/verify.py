"""Commit signature verification: which revisions gitkube may apply.

Verification is git's own (``git verify-commit`` / ``git verify-tag``), run
against keys the operator gives, never against keys found on the machine:

- SSH signatures against ``--allowed-signers FILE`` (git's allowed-signers
  format: ``PRINCIPAL [valid-after=…,valid-before=…] KEYTYPE KEY``), passed as
  ``gpg.ssh.allowedSignersFile``;
- OpenPGP signatures against ``--trusted-gpg-keys FILE`` (armored public
  keys, revocations included), imported into a private ``GNUPGHOME`` of
  gitkube's own (one per content of the file), so the user's keyring never
  counts.

Modes (``--verify-commits``):

- ``off``: nothing is verified (the default);
- ``head``: the synced commit must carry a good signature; its signer vouches
  for every change since the last verified revision;
- ``chain``: every commit since the last verified revision (kept in the sync
  state) must carry a good signature, so an unsigned commit buried under a
  signed one is caught, after a force push too (every commit reachable from
  the new revision and not from the last verified one). With no verified
  revision yet (the first sync, or it is gone from the repository), the
  synced commit is the trust anchor.

A tag given as the ref is verified as a tag (``verify-tag``): the tagger
vouches for everything since the last verified revision.

Signer rules (``--signer-rules FILE``, or ``.gitkube/signers`` in the
repository) say who may change what, CODEOWNERS-like: ``PATTERN SIGNER...``
per line, the last matching line wins, and a changed path must be matched by
a line naming its signer. A path no line matches may be changed by any
trusted signer (end the file with ``* someone`` to close that). Rules in the
repository are read at the parent of the commit judged, so a commit that
edits the rules is judged by the rules it replaces. A signer is an SSH
principal, or for OpenPGP the key's e-mail, user id or fingerprint.

GitHub signs merges made in its web interface with its shared "web-flow"
key. Such a signature says only that GitHub made the commit, so it is
accepted only for paths whose rule names ``web-flow`` (its key must be in
the trusted keys too); no rule, no acceptance.

Everything here blocks (subprocesses); the sync loop runs it in a thread.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitkube.errors import ConfigError

VERIFY_MODES = ("off", "head", "chain")
RULES_PATH = ".gitkube/signers"
WEB_FLOW = "web-flow"
WEB_FLOW_EMAIL = "noreply@github.com"
#: a chain longer than this is refused rather than verified for minutes
MAX_CHAIN = 5000
_TIMEOUT = 60.0
_SSH_GOOD = re.compile(
    r'Good "git" signature for (?P<principal>.+?) with (?P<key>\S+) key (?P<fp>\S+)'
)
_SSH_ANY = re.compile(r"signature with (?P<key>\S+) key (?P<fp>SHA256:\S+)")
_EMAIL = re.compile(r"<([^<>@\s]+@[^<>\s]+)>")


class VerificationError(ConfigError):
    """The verification policy cannot be used (missing key file, bad rules file)."""


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Signature:
    """What git said about one commit's or tag's signature."""

    #: "good", "unsigned", "unknown-key", "revoked", "expired", "bad", "untrusted-format"
    status: str
    #: who signed, as a person reads it ("unsigned" when nobody did)
    signer: str = "unsigned"
    #: the names rules may use for this signer
    identities: frozenset[str] = frozenset()
    detail: str = ""

    @property
    def web_flow(self) -> bool:
        return WEB_FLOW_EMAIL in self.identities


@dataclass(frozen=True)
class Refusal:
    """Why a revision is not applied."""

    commit: str
    signer: str
    reason: str
    #: the file the refusal is about, when a path rule refused it
    path: str = ""
    #: the commit that was synced (``commit`` may be one under it in chain mode)
    revision: str = ""

    def __str__(self) -> str:
        return f"commit {self.commit[:12]} ({self.signer}): {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "revision": self.revision or self.commit,
            "signer": self.signer,
            "reason": self.reason,
            "path": self.path,
        }


@dataclass
class Verdict:
    refusal: Refusal | None = None
    #: the commits whose signatures were checked, oldest first
    checked: list[str] = field(default_factory=list)
    #: the signer of the synced commit (or the tag)
    signer: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.refusal is None


# ---------------------------------------------------------------- signer rules


@dataclass(frozen=True)
class SignerRule:
    pattern: str
    signers: tuple[str, ...]
    line: int
    regex: re.Pattern[str]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """CODEOWNERS/gitignore-like: ``*`` within a path component, ``**`` across;
    a leading ``/`` or an inner ``/`` anchors at the root; a trailing ``/``
    (or a directory name) covers everything below."""
    anchored = pattern.startswith("/") or "/" in pattern.rstrip("/")
    body = pattern.strip("/")
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if body.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    core = "".join(out)
    prefix = "^" if anchored else "^(?:.*/)?"
    return re.compile(f"{prefix}{core}(?:/.*)?$")


def parse_signer_rules(text: str, *, source: str) -> list[SignerRule]:
    rules = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, *signers = line.split()
        if not signers:
            raise VerificationError(f"{source}:{number}: {pattern!r} names no signer")
        rules.append(SignerRule(pattern, tuple(signers), number, _pattern_regex(pattern)))
    return rules


def owners_of(rules: Sequence[SignerRule], path: str) -> SignerRule | None:
    """The rule that decides ``path``: the last one matching it."""
    found = None
    for rule in rules:
        if rule.regex.match(path):
            found = rule
    return found


def check_paths(
    rules: Sequence[SignerRule] | None, signature: Signature, paths: Sequence[str], *, source: str
) -> tuple[str, str] | None:
    """(path, why) for the first path ``signature``'s signer may not change."""
    for path in paths:
        rule = owners_of(rules or [], path)
        if rule is None:
            if signature.web_flow:
                return path, (
                    "signed by GitHub's web-flow key, which is accepted only for paths "
                    f"whose signer rule names {WEB_FLOW}"
                    + ("" if rules else f" (no signer rules: give --signer-rules or {RULES_PATH})")
                )
            continue
        allowed = set(rule.signers)
        names = set(signature.identities)
        if signature.web_flow:
            names = {WEB_FLOW}  # the shared key counts only as itself
        if not allowed & names:
            return path, (
                f"{signature.signer} may not change {path} ({source}:{rule.line}: "
                f"{rule.pattern} {' '.join(rule.signers)})"
            )
    return None


# ---------------------------------------------------------------- the policy


@dataclass
class VerifyPolicy:
    mode: str = "off"
    allowed_signers: str = ""
    trusted_gpg_keys: str = ""
    signer_rules: str = ""

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def check(self) -> None:
        if self.mode not in VERIFY_MODES:
            raise VerificationError(
                f"verify-commits: {self.mode!r} is not one of {', '.join(VERIFY_MODES)}"
            )
        for name, value in (
            ("allowed-signers", self.allowed_signers),
            ("trusted-gpg-keys", self.trusted_gpg_keys),
            ("signer-rules", self.signer_rules),
        ):
            if value and not os.access(value, os.R_OK):
                raise VerificationError(f"{name}: cannot read {value}")
        if self.enabled and not (self.allowed_signers or self.trusted_gpg_keys):
            raise VerificationError(
                f"verify-commits {self.mode}: give --allowed-signers FILE (SSH) "
                "or --trusted-gpg-keys FILE (OpenPGP), or both"
            )


def policy_from_settings(settings: Any) -> VerifyPolicy:
    policy = VerifyPolicy(
        mode=str(getattr(settings, "verify_commits", "off") or "off"),
        allowed_signers=str(getattr(settings, "allowed_signers", "") or ""),
        trusted_gpg_keys=str(getattr(settings, "trusted_gpg_keys", "") or ""),
        signer_rules=str(getattr(settings, "signer_rules", "") or ""),
    )
    policy.check()
    return policy


class CommitVerifier:
    """Verifies revisions of a repository (a git directory) under a policy."""

    def __init__(self, policy: VerifyPolicy, *, work_dir: str | os.PathLike[str]) -> None:
        policy.check()
        self.policy = policy
        self.work_dir = Path(work_dir)
        self._gnupg: Path | None = None
        self._gnupg_digest = ""

    # ------------------------------------------------------------ keys

    def _gnupg_home(self) -> Path:
        """A private GNUPGHOME holding exactly the trusted keys file."""
        data = (
            Path(self.policy.trusted_gpg_keys).read_bytes() if self.policy.trusted_gpg_keys else b""
        )
        digest = hashlib.sha256(data).hexdigest()[:16]
        if self._gnupg is not None and digest == self._gnupg_digest:
            return self._gnupg
        home = self.work_dir / f"gnupg-{digest}"
        if not (home / ".imported").exists():
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            home.chmod(0o700)
            if data:
                # revocation certificates as gpg writes them start with ':' (disarmed)
                data = re.sub(rb"(?m)^:(-----BEGIN PGP)", rb"\1", data)
                proc = subprocess.run(
                    ["gpg", "--batch", "--no-autostart", "--quiet", "--import"],
                    input=data,
                    env={**os.environ, "GNUPGHOME": str(home)},
                    capture_output=True,
                    timeout=_TIMEOUT,
                    check=False,
                )
                if proc.returncode not in (0, 2) or b"imported" not in proc.stderr + proc.stdout:
                    listed = subprocess.run(
                        ["gpg", "--batch", "--no-autostart", "--list-keys"],
                        env={**os.environ, "GNUPGHOME": str(home)},
                        capture_output=True,
                        timeout=_TIMEOUT,
                        check=False,
                    )
                    if not listed.stdout.strip():
                        raise VerificationError(
                            f"trusted-gpg-keys: {self.policy.trusted_gpg_keys} holds no "
                            "OpenPGP public key gpg can import: "
                            + " ".join(proc.stderr.decode(errors="replace").split())[:300]
                        )
            (home / ".imported").touch()
        self._gnupg, self._gnupg_digest = home, digest
        return home

    def _allowed_signers(self) -> str:
        if self.policy.allowed_signers:
            return str(Path(self.policy.allowed_signers).resolve())
        empty = self.work_dir / "no-allowed-signers"
        if not empty.exists():
            self.work_dir.mkdir(parents=True, exist_ok=True)
            empty.write_text("")
        return str(empty)

    # ------------------------------------------------------------ git

    def _git(
        self, git_dir: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "GIT_DIR": git_dir,
            "GNUPGHOME": str(self._gnupg_home()),
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
        }
        cmd = [
            "git",
            "-c", f"gpg.ssh.allowedSignersFile={self._allowed_signers()}",
            "-c", "gpg.program=gpg",
            "-c", "gpg.ssh.program=ssh-keygen",
            "-c", "gpg.minTrustLevel=undefined",
            "-c", "core.quotePath=false",
            *args,
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
        if check and proc.returncode != 0:
            raise VerificationError(f"git {args[0]} failed: " + " ".join(proc.stderr.split())[:300])
        return proc

    def _signature(self, git_dir: str, obj: str, *, tag: bool = False) -> Signature:
        raw = self._git(git_dir, "cat-file", "tag" if tag else "commit", obj).stdout
        if tag:
            signed = "-----BEGIN " in raw
            ssh = "-----BEGIN SSH SIGNATURE" in raw
        else:
            header = raw.split("\n\n", 1)[0]
            signed = "\ngpgsig " in header or "\ngpgsig-sha256 " in header
            ssh = "-----BEGIN SSH SIGNATURE" in header
        if not signed:
            return Signature("unsigned", detail="no signature")
        if ssh:
            proc = self._git(
                git_dir, "verify-tag" if tag else "verify-commit", "--raw", obj, check=False
            )
            return self._ssh_result(proc)
        if not self.policy.trusted_gpg_keys:
            return Signature(
                "untrusted-format",
                signer="an OpenPGP key",
                detail="signed with OpenPGP, but no --trusted-gpg-keys is given",
            )
        proc = self._git(
            git_dir, "verify-tag" if tag else "verify-commit", "--raw", obj, check=False
        )
        return self._gpg_result(proc)

    def _ssh_result(self, proc: subprocess.CompletedProcess[str]) -> Signature:
        text = proc.stdout + proc.stderr
        good = _SSH_GOOD.search(text)
        if proc.returncode == 0 and good:
            principal, fp = good["principal"], good["fp"]
            return Signature("good", principal, frozenset({principal, fp}))
        anyfp = _SSH_ANY.search(text)
        who = f"SSH key {anyfp['fp']}" if anyfp else "an SSH key"
        if "key has expired" in text or "not yet valid" in text:
            return Signature(
                "expired", who, detail="the key is outside its validity in the allowed signers"
            )
        if "revoked" in text.lower():
            return Signature("revoked", who, detail="the key is revoked")
        if "No principal matched" in text or "allowedSignersFile" in text:
            return Signature("unknown-key", who, detail="the key is not in the allowed signers")
        return Signature("bad", who, detail="bad signature: " + " ".join(text.split())[:200])

    def _gpg_result(self, proc: subprocess.CompletedProcess[str]) -> Signature:
        status: dict[str, str] = {}
        for line in (proc.stdout + proc.stderr).splitlines():
            if line.startswith("[GNUPG:] "):
                word, _, rest = line[9:].partition(" ")
                status.setdefault(word, rest)
        uid = ""
        for word in ("GOODSIG", "REVKEYSIG", "EXPKEYSIG", "EXPSIG", "BADSIG"):
            if word in status:
                uid = status[word].partition(" ")[2]
                keyid = status[word].partition(" ")[0]
                break
        else:
            keyid = status.get("ERRSIG", status.get("NO_PUBKEY", "")).partition(" ")[0]
        names = {uid} if uid else set()
        email = _EMAIL.search(uid)
        if email:
            names.add(email[1])
        if "VALIDSIG" in status:
            parts = status["VALIDSIG"].split()
            names.update({parts[0], parts[-1]})
        if keyid:
            names.add(keyid)
        who = email[1] if email else uid
        if not who:
            # the signer's user id the signature itself claims (not proven: no key)
            claimed = status.get("NEWSIG", "").strip()
            key = f"OpenPGP key {keyid}" if keyid else "an OpenPGP key"
            who = f"{claimed} ({key})" if claimed else key
        ids = frozenset(names)
        if "REVKEYSIG" in status or "KEYREVOKED" in status:
            return Signature("revoked", who, ids, "the signing key is revoked")
        if "EXPKEYSIG" in status or "KEYEXPIRED" in status:
            return Signature("expired", who, ids, "the signing key has expired")
        if "EXPSIG" in status:
            return Signature("expired", who, ids, "the signature has expired")
        if "BADSIG" in status:
            return Signature("bad", who, ids, "bad signature (the commit was altered)")
        if "NO_PUBKEY" in status or "ERRSIG" in status:
            return Signature("unknown-key", who, ids, "the key is not in the trusted keys")
        if proc.returncode == 0 and "GOODSIG" in status:
            return Signature("good", who, ids)
        return Signature("bad", who, ids, "not verified: " + " ".join(proc.stderr.split())[:200])

    def _present(self, git_dir: str, commit: str) -> bool:
        return not self._git(
            git_dir, "cat-file", "-e", f"{commit}^{{commit}}", check=False
        ).returncode

    def _changed(self, git_dir: str, old: str | None, new: str) -> list[str]:
        """Paths changed from ``old`` (None: from nothing) to ``new``."""
        if old is None:
            out = self._git(
                git_dir, "ls-tree", "-r", "-z", "--name-only", "--full-tree", new
            ).stdout
        else:
            out = self._git(
                git_dir, "diff-tree", "-r", "-z", "--no-renames", "--name-only", old, new
            ).stdout
        return [p for p in out.split("\0") if p]

    def _parents(self, git_dir: str, commit: str) -> list[str]:
        return self._git(git_dir, "rev-parse", f"{commit}^@").stdout.split()

    def _rules(self, git_dir: str, at: str | None) -> tuple[list[SignerRule] | None, str]:
        if self.policy.signer_rules:
            path = self.policy.signer_rules
            return parse_signer_rules(Path(path).read_text(), source=path), path
        if at is None:
            return None, RULES_PATH
        proc = self._git(git_dir, "cat-file", "blob", f"{at}:{RULES_PATH}", check=False)
        if proc.returncode != 0:
            return None, RULES_PATH
        return parse_signer_rules(proc.stdout, source=f"{RULES_PATH}@{at[:12]}"), RULES_PATH

    # ------------------------------------------------------------ verdicts

    def verify(
        self, git_dir: str | os.PathLike[str], commit: str, *, since: str = "", tag: str = ""
    ) -> Verdict:
        """May ``commit`` be applied, given the last verified revision ``since``
        and, when the ref is a tag, its name? Never raises for a bad signature
        (that is a refusal); raises ``VerificationError`` for an unusable policy."""
        gd = str(git_dir)
        verdict = Verdict()
        if not self.policy.enabled:
            return verdict
        # the last verified revision need not be an ancestor (a force push): the
        # commits to check are those reachable from ``commit`` and not from it,
        # so a rewritten history cannot bury an unsigned commit either
        if since == "--all":  # every commit that no ref of the repository holds yet
            base = since
        else:
            base = since if since and since != commit and self._present(gd, since) else ""
        if since and not base and since != commit and not tag:
            verdict.warnings.append(
                f"the last verified revision {since[:12]} is no longer in the repository; "
                f"{commit[:12]} is the new trust anchor"
            )
        if since == commit and not tag:
            return verdict
        try:
            if tag:
                self._verify_tag(gd, tag, commit, base, verdict)
            if verdict.ok and (self.policy.mode == "chain" or not tag):
                if self.policy.mode == "chain" and base:
                    self._verify_chain(gd, commit, base, verdict)
                else:
                    self._verify_head(gd, commit, "" if base == "--all" else base, verdict)
        except subprocess.TimeoutExpired:
            verdict.refusal = Refusal(commit, "unknown", "signature verification timed out")
        except VerificationError as exc:  # e.g. a signer rules file with an error
            verdict.refusal = Refusal(commit, verdict.signer or "unknown", str(exc))
        if verdict.refusal is not None:
            verdict.refusal = Refusal(
                verdict.refusal.commit,
                verdict.refusal.signer,
                verdict.refusal.reason,
                verdict.refusal.path,
                revision=commit,
            )
        return verdict

    def _refuse_signature(self, commit: str, sig: Signature, what: str = "commit") -> Refusal:
        if sig.status == "unsigned":
            return Refusal(commit, "unsigned", f"the {what} is not signed")
        return Refusal(commit, sig.signer, f"the {what}'s signature is not accepted: {sig.detail}")

    def _judge_paths(
        self, gd: str, commit: str, sig: Signature, *, old: str | None, rules_at: str | None
    ) -> Refusal | None:
        rules, source = self._rules(gd, rules_at)
        if rules is None and not sig.web_flow:
            return None
        found = check_paths(rules, sig, self._changed(gd, old, commit), source=source)
        if found is None:
            return None
        return Refusal(commit, sig.signer, found[1], path=found[0])

    def _verify_tag(self, gd: str, tag: str, commit: str, base: str, verdict: Verdict) -> None:
        kind = self._git(gd, "cat-file", "-t", f"refs/tags/{tag}", check=False).stdout.strip()
        if kind != "tag":
            verdict.refusal = Refusal(
                commit, "unsigned", f"tag {tag} is not an annotated, signed tag"
            )
            return
        sig = self._signature(gd, f"refs/tags/{tag}", tag=True)
        verdict.signer = sig.signer
        if sig.status != "good":
            verdict.refusal = self._refuse_signature(commit, sig, f"tag {tag}")
            return
        verdict.refusal = self._judge_paths(
            gd, commit, sig, old=base or None, rules_at=base or commit
        )

    def _verify_head(self, gd: str, commit: str, base: str, verdict: Verdict) -> None:
        sig = self._signature(gd, commit)
        verdict.checked.append(commit)
        verdict.signer = verdict.signer or sig.signer
        if sig.status != "good":
            verdict.refusal = self._refuse_signature(commit, sig)
            return
        if base:
            old: str | None = base
        else:
            parents = self._parents(gd, commit)
            old = parents[0] if parents else None
        verdict.refusal = self._judge_paths(gd, commit, sig, old=old, rules_at=old)

    def _verify_chain(self, gd: str, commit: str, base: str, verdict: Verdict) -> None:
        # base "--all": the commits no ref has yet (a pre-receive hook, new branch)
        exclude = ["--not", "--all"] if base == "--all" else [f"^{base}"]
        listed = self._git(
            gd, "rev-list", "--reverse", "--topo-order", commit, *exclude
        ).stdout.split()
        if len(listed) > MAX_CHAIN:
            verdict.refusal = Refusal(
                commit, "unknown", f"{len(listed)} commits to verify, more than {MAX_CHAIN}"
            )
            return
        for sha in listed:
            sig = self._signature(gd, sha)
            verdict.checked.append(sha)
            if sha == commit:
                verdict.signer = verdict.signer or sig.signer
            if sig.status != "good":
                verdict.refusal = self._refuse_signature(sha, sig)
                return
            parents = self._parents(gd, sha)
            old = parents[0] if parents else None
            refusal = self._judge_paths(gd, sha, sig, old=old, rules_at=old)
            if refusal is not None:
                verdict.refusal = refusal
                return


__all__ = [
    "RULES_PATH",
    "VERIFY_MODES",
    "CommitVerifier",
    "Refusal",
    "Signature",
    "SignerRule",
    "Verdict",
    "VerificationError",
    "VerifyPolicy",
    "check_paths",
    "owners_of",
    "parse_signer_rules",
    "policy_from_settings",
]

"""Real signing keys made in the test session (gpg and ssh-keygen), and git
commands that sign with them. Nothing here fakes a signature."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures.git import GIT_ENV, GitRemote
from tests.fixtures.require import require_binary

WEB_FLOW_UID = "GitHub (web-flow commit signing) <noreply@github.com>"


def _run(args: list[str], *, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    proc = subprocess.run(
        args, env={**os.environ, **(env or {})}, input=input, capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode()


@dataclass
class Keys:
    root: Path
    #: GNUPGHOME holding the private OpenPGP keys (the signers' side)
    gnupg: Path = field(init=False)
    ssh: dict[str, Path] = field(default_factory=dict)
    gpg: dict[str, str] = field(default_factory=dict)  # name -> fingerprint

    def __post_init__(self) -> None:
        self.gnupg = self.root / "gnupg"
        self.gnupg.mkdir(mode=0o700, parents=True)

    # ------------------------------------------------------------ making keys

    def make_ssh(self, name: str) -> Path:
        key = self.root / f"ssh-{name}"
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)])
        self.ssh[name] = key
        return key

    def make_gpg(self, uid: str) -> str:
        env = {"GNUPGHOME": str(self.gnupg)}
        _run(
            ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "0"],
            env=env,
        )
        listing = _run(["gpg", "--batch", "--with-colons", "--list-keys", uid], env=env)
        fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        self.gpg[uid] = fpr
        return fpr

    def revoke_gpg(self, uid: str) -> None:
        """Import the revocation certificate gpg wrote at key creation."""
        fpr = self.gpg[uid]
        cert = (self.gnupg / "openpgp-revocs.d" / f"{fpr}.rev").read_bytes()
        cert = cert.replace(b":-----BEGIN PGP", b"-----BEGIN PGP")
        _run(["gpg", "--batch", "--import"], env={"GNUPGHOME": str(self.gnupg)}, input=cert)

    # ------------------------------------------------------------ trust files

    def allowed_signers(self, path: Path, entries: dict[str, str], *, options: str = "") -> Path:
        """``principal -> key name`` lines in git's allowed-signers format."""
        lines = []
        for principal, name in entries.items():
            public = (self.ssh[name].with_suffix(".pub")).read_text().strip()
            lines.append(f"{principal} {options + ' ' if options else ''}{public}")
        path.write_text("\n".join(lines) + "\n")
        return path

    def export_gpg(self, path: Path, *uids: str) -> Path:
        env = {"GNUPGHOME": str(self.gnupg)}
        armored = "".join(
            _run(["gpg", "--batch", "--armor", "--export", self.gpg[uid]], env=env) for uid in uids
        )
        path.write_text(armored)
        return path

    # ------------------------------------------------------------ signing

    def sign_args(self, *, ssh: str = "", gpg: str = "") -> list[str]:
        if ssh:
            return ["-c", "gpg.format=ssh", "-c", f"user.signingKey={self.ssh[ssh]}"]
        if gpg:
            return ["-c", "gpg.format=openpgp", "-c", f"user.signingKey={self.gpg[gpg]}"]
        return []

    def git(self, *args: str, cwd: Path, committer: str = "") -> str:
        env = {**GIT_ENV, "GNUPGHOME": str(self.gnupg)}
        if committer:
            name, _, email = committer.partition(" <")
            env.update(GIT_COMMITTER_NAME=name, GIT_COMMITTER_EMAIL=email.rstrip(">"))
        return (
            _run(["git", *args], env=env).strip()
            if cwd is None
            else _run(["git", "-C", str(cwd), *args], env=env).strip()
        )

    def commit(self, remote: GitRemote, message: str, *, ssh: str = "", gpg: str = "") -> str:
        """Commit everything in the work tree, signed with one key (or unsigned)."""
        self.git("add", "-A", cwd=remote.work)
        sign = ["-S"] if ssh or gpg else []
        self.git(
            *self.sign_args(ssh=ssh, gpg=gpg),
            "commit", "--quiet", "--allow-empty", *sign, "-m", message,
            cwd=remote.work,
        )  # fmt: skip
        return self.git("rev-parse", "HEAD", cwd=remote.work)


def make_keys(root: Path) -> Keys:
    require_binary("gpg", "install gnupg")
    require_binary("ssh-keygen", "install openssh-client")
    keys = Keys(root)
    for name in ("bob", "eve", "carol"):
        keys.make_ssh(name)
    for uid in ("Alice <alice@example.com>", "Mallory <mallory@example.com>", WEB_FLOW_UID):
        keys.make_gpg(uid)
    return keys


def stop_agents(gnupg_home: Path) -> None:
    """End the gpg-agent that signing started for ``gnupg_home`` (by its home)."""
    subprocess.run(
        ["gpgconf", "--kill", "all"],
        env={**os.environ, "GNUPGHOME": str(gnupg_home)},
        capture_output=True,
        check=False,
    )

"""Git server hooks for a repository on this machine (`gitkube install-hook`).

- post-receive: tells the running operator about the push (POST of the
  pushed ref lines to ``/hooks/notify`` with the local token), so the push is
  synced at once, with no polling. It never fails the push: if the operator
  is down, the next poll or start picks the revision up.
- pre-receive (``--validate``): validates the manifests of the pushed commit
  of the tracked branch and rejects the push with the errors, which git shows
  in the pusher's terminal.
"""

from __future__ import annotations

import os
import secrets
import shlex
import stat
import sys
from pathlib import Path

from gitkube.errors import ConfigError
from gitkube.sync.verify import VerifyPolicy

TOKEN_FILE = "notify.token"
MARKER = "# installed by gitkube install-hook"


def ensure_notify_token(state_dir: Path) -> bytes:
    """The local notify token, created (mode 0600) on first use."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / TOKEN_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


_POST_RECEIVE = """#!/bin/sh
{marker}
# Tells the gitkube operator about this push, so it syncs at once.
export GITKUBE_REFS="$(cat)"
exec {python} - "$@" <<'PYEOF'
import os, sys, urllib.request, urllib.error
url = {url!r}
try:
    token = open({token_file!r}).read().strip()
except OSError as exc:
    print("gitkube: cannot read the notify token:", exc.strerror)
    sys.exit(0)
body = os.environ.get("GITKUBE_REFS", "").encode()
req = urllib.request.Request(url, data=body, method="POST", headers={{"X-Gitkube-Token": token}})
try:
    with urllib.request.urlopen(req, timeout=3) as resp:
        import json
        print("gitkube:", json.load(resp).get("reason", "notified"))
except (urllib.error.URLError, OSError) as exc:
    print("gitkube: operator not reachable at", url, "-", exc, "(the next poll will sync)")
PYEOF
"""

_PRE_RECEIVE = """#!/bin/sh
{marker}
# Rejects a push to {branch} whose manifests are invalid{verify_what}.
status=0
while read old new ref; do
    [ "$ref" = "refs/heads/{branch}" ] || continue
    case "$new" in 0000000000000000000000000000000000000000) continue;; esac
{verify}    tmp=$(mktemp -d)
    git archive "$new" {path_arg} | tar -x -C "$tmp" 2>/dev/null
    if [ -e "$tmp/{path}" ]; then
        out=$(cd "$tmp" && {gitkube} validate {path_q} 2>&1) || {{
            echo "gitkube: push rejected: invalid manifests in $new:"
            echo "$out"
            status=1
        }}
    fi
    rm -rf "$tmp"
done
exit $status
"""


_VERIFY = """    out=$({gitkube} verify-commits "$new" --since "$old" {options} 2>&1) || {{
        echo "gitkube: push rejected: $out"
        status=1
        continue
    }}
"""


def _gitkube_command() -> str:
    return f"{shlex.quote(sys.executable)} -m gitkube"


def install_hooks(
    repo: Path,
    *,
    url: str,
    token_file: Path,
    validate: bool,
    branch: str,
    path: str = "",
    force: bool = False,
    verify: VerifyPolicy | None = None,
) -> list[Path]:
    """Write the hooks into ``repo`` (bare or not); returns the files written."""
    git_dir = repo if (repo / "HEAD").is_file() and (repo / "objects").is_dir() else repo / ".git"
    if not (git_dir / "objects").is_dir():
        raise ConfigError(f"{repo} is not a git repository")
    hooks = git_dir / "hooks"
    hooks.mkdir(exist_ok=True)
    written = []
    scripts = {
        "post-receive": _POST_RECEIVE.format(
            marker=MARKER,
            python=shlex.quote(sys.executable),
            url=url.rstrip("/") + "/hooks/notify",
            token_file=str(token_file.resolve()),
        )
    }
    if validate:
        clean = path.strip("/") or "."
        options = ""
        if verify is not None and verify.enabled:
            opts = ["--verify-commits", verify.mode]
            for flag, value in (
                ("--allowed-signers", verify.allowed_signers),
                ("--trusted-gpg-keys", verify.trusted_gpg_keys),
                ("--signer-rules", verify.signer_rules),
            ):
                if value:
                    opts += [flag, str(Path(value).resolve())]
            options = " ".join(shlex.quote(o) for o in opts)
        scripts["pre-receive"] = _PRE_RECEIVE.format(
            verify_what=" or whose signatures are not accepted" if options else "",
            verify=_VERIFY.format(gitkube=_gitkube_command(), options=options) if options else "",
            marker=MARKER,
            branch=branch,
            path=clean,
            path_q=shlex.quote(clean),
            path_arg="" if clean == "." else "-- " + shlex.quote(clean),
            gitkube=_gitkube_command(),
        )
    for name, text in scripts.items():
        target = hooks / name
        if target.exists() and MARKER not in target.read_text(errors="replace") and not force:
            raise ConfigError(
                f"{target} exists and was not installed by gitkube; use --force to replace it"
            )
        target.write_text(text)
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        written.append(target)
    return written

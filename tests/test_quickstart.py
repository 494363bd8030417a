"""The README's first command, as a new user runs it: `bash scripts/quickstart.sh`
in a clone serves the example's web Service on 127.0.0.1:8080, whatever proxy
mode this machine would pick by default (as root with `nft`, `auto` picks
nftables, which serves Services on their cluster IPs only)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.fixtures.require import missing, require_binary
from tests.operator.helpers import free_port, kill_processes_under

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_serves_the_example_on_port_8080(tmp_path: Path) -> None:
    git = require_binary("git", "install git")
    venv = ROOT / ".venv"
    if not (venv / "bin" / "gitkube").exists():
        missing(
            "the project's .venv", "python3 -m venv .venv && .venv/bin/pip install -e '.[test]'"
        )
    clone = tmp_path / "gitkube"
    subprocess.run([git, "clone", "-q", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(venv)  # the script installs into .venv when it is missing
    # a user's environment: none of the tests' settings (their proxy mode above all)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITKUBE_")}
    log = (tmp_path / "quickstart.log").open("w")
    proc = subprocess.Popen(
        ["bash", "scripts/quickstart.sh", "--listen", f"127.0.0.1:{free_port()}"],
        cwd=clone,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        answer = b""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen("http://127.0.0.1:8080/", timeout=2) as resp:
                    answer = resp.read()
                break
            except OSError:
                time.sleep(0.3)
        text = (tmp_path / "quickstart.log").read_text()
        assert answer.startswith(b"hello from gitkube"), text[-3000:]
        assert "service proxy for" in text and ": userspace (" in text, text[-3000:]
    finally:
        with_group = os.getpgid(proc.pid) if proc.poll() is None else None
        if with_group is not None:
            os.killpg(with_group, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(with_group, signal.SIGKILL)
        kill_processes_under(tmp_path)  # the example's pods (the process runtime's)
        log.close()

"""Choosing the data path (--proxy-mode) and what `gitkube doctor` says about it.

- userspace is always userspace; auto is nftables exactly when root and nft works
- nftables asked for without root is a clear error naming the flag
- doctor reports this machine's choice with its reason, and every agent's
  recorded mode from the store
- a bad --proxy-mode or --service-cidr is a configuration error naming its source
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gitkube.config import Settings, resolve_settings
from gitkube.doctor import check_proxy_mode
from gitkube.errors import ConfigError
from gitkube.services.mode import PROXY_MODE_PREFIX
from gitkube.services.nftables import choose_proxy_mode, nft_works
from gitkube.store.factory import open_store


def test_choices() -> None:
    assert choose_proxy_mode("userspace") == ("userspace", "--proxy-mode userspace")
    mode, why = choose_proxy_mode("auto")
    if os.geteuid() == 0 and nft_works()[0]:
        assert (mode, why) == ("nftables", "auto: running as root and nft works")
    else:
        assert mode == "userspace" and why.startswith("auto: ")
    with pytest.raises(ConfigError, match="proxy-mode"):
        choose_proxy_mode("kernel")


def test_nftables_without_root_is_an_error() -> None:
    if os.geteuid() != 0:
        with pytest.raises(ConfigError, match="needs root"):
            choose_proxy_mode("nftables")
        return
    # as root: ask a child without privileges
    code = (
        "import os\n"
        "from gitkube.services.nftables import choose_proxy_mode\n"
        "from gitkube.errors import ConfigError\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "try:\n    choose_proxy_mode('nftables')\nexcept ConfigError as e:\n    print(e)\n"
        "print(choose_proxy_mode('auto'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    assert "--proxy-mode nftables needs root" in out
    assert "('userspace', 'auto: not root')" in out


async def test_doctor_names_the_mode_and_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    store = await open_store(url)
    record = {"mode": "nftables", "reason": "auto: running as root and nft works"}
    await store.put(PROXY_MODE_PREFIX + "node-a", json.dumps(record).encode())
    await store.close()
    checks = await check_proxy_mode(Settings(store=url, proxy_mode="userspace"))
    assert [(c.name, c.level) for c in checks] == [
        ("proxy mode", "ok"),
        ("agents' proxy mode", "ok"),
    ]
    assert checks[0].detail == "an agent here uses userspace: --proxy-mode userspace"
    assert checks[1].detail == "node-a: nftables (auto: running as root and nft works)"


def test_bad_settings_name_their_source() -> None:
    with pytest.raises(ConfigError, match=r"proxy-mode \(flag\): 'kernel'"):
        resolve_settings({"proxy_mode": "kernel"}, environ={})
    with pytest.raises(ConfigError, match=r"service-cidr \(env\): .10.96.0.1/16.: .* host bits"):
        resolve_settings({}, environ={"GITKUBE_SERVICE_CIDR": "10.96.0.1/16"})

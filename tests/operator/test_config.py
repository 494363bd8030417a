"""Settings: flags win over the environment, which wins over the config file;
durations with units; secrets masked; bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitkube.config import masked, parse_duration, redact_url, resolve_settings
from gitkube.errors import ConfigError


def test_precedence_flag_env_file(tmp_path: Path) -> None:
    cfg = tmp_path / "gitkube.yaml"
    cfg.write_text("store: sqlite:///file.db\nbranch: from-file\nnodes: 3\ninterval: 5m\n")
    env = {"GITKUBE_STORE": "etcd://127.0.0.1:2379", "GITKUBE_NODES": "2"}
    settings, sources = resolve_settings({"nodes": 4}, config_file=cfg, environ=env)
    assert settings.nodes == 4 and sources["nodes"] == "flag"
    assert settings.store == "etcd://127.0.0.1:2379" and sources["store"] == "env"
    assert settings.branch == "from-file" and sources["branch"] == "file"
    assert settings.interval_seconds() == 300
    assert sources["listen"] == "default"


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "gitkube.yaml"
    cfg.write_text("stroe: x\n")
    with pytest.raises(ConfigError, match="unknown setting 'stroe'"):
        resolve_settings({}, config_file=cfg, environ={})


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30), ("30s", 30), ("5m", 300), ("1h", 3600), ("250ms", 0.25)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_bad_duration_and_bool() -> None:
    with pytest.raises(ConfigError, match="interval"):
        resolve_settings({"interval": "soon"}, environ={})
    with pytest.raises(ConfigError, match="prune"):
        resolve_settings({}, environ={"GITKUBE_PRUNE": "maybe"})


def test_proxy_relay_is_one_of_the_data_paths() -> None:
    settings, sources = resolve_settings({}, environ={"GITKUBE_PROXY_RELAY": "asyncio"})
    assert settings.proxy_relay == "asyncio" and sources["proxy_relay"] == "env"
    assert resolve_settings({}, environ={})[0].proxy_relay == "auto"
    with pytest.raises(ConfigError, match=r"proxy-relay \(flag\): 'fast' is not one of auto"):
        resolve_settings({"proxy_relay": "fast"}, environ={})


def test_secrets_and_credentials_are_masked() -> None:
    settings, _ = resolve_settings(
        {"repo": "https://bob:hunter2@git.example/r.git"},
        environ={"GITKUBE_WEBHOOK_SECRET": "topsecret"},
    )
    shown = masked(settings)
    assert shown["webhook_secret"] == "********"
    assert "hunter2" not in shown["repo"]
    assert redact_url("ssh://git@host/x") == "ssh://***@host/x"


def test_eviction_rate_settings() -> None:
    defaults, _ = resolve_settings({}, environ={})
    assert (defaults.node_eviction_rate, defaults.secondary_node_eviction_rate) == (0.1, 0.01)
    assert defaults.unhealthy_zone_threshold == 0.55
    assert defaults.large_cluster_size_threshold == 50
    settings, sources = resolve_settings(
        {"unhealthy_zone_threshold": 0.7},
        environ={"GITKUBE_NODE_EVICTION_RATE": "0.5", "GITKUBE_LARGE_CLUSTER_SIZE_THRESHOLD": "9"},
    )
    assert settings.node_eviction_rate == 0.5 and sources["node_eviction_rate"] == "env"
    assert settings.unhealthy_zone_threshold == 0.7
    assert settings.large_cluster_size_threshold == 9
    with pytest.raises(
        ConfigError, match=r"node_eviction_rate \(from GITKUBE_NODE_EVICTION_RATE\)"
    ):
        resolve_settings({}, environ={"GITKUBE_NODE_EVICTION_RATE": "fast"})
    with pytest.raises(ConfigError, match="must be a finite number, 0 or more"):
        resolve_settings({"secondary_node_eviction_rate": -1}, environ={})
    with pytest.raises(ConfigError, match=r"unhealthy-zone-threshold \(flag\): 1.5"):
        resolve_settings({"unhealthy_zone_threshold": 1.5}, environ={})


def test_eviction_rate_from_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "gitkube.yaml"
    cfg.write_text("node-eviction-rate: 0.25\nsecondary-node-eviction-rate: 0\n")
    settings, sources = resolve_settings({}, config_file=cfg, environ={})
    assert settings.node_eviction_rate == 0.25 and sources["node_eviction_rate"] == "file"
    assert settings.secondary_node_eviction_rate == 0.0

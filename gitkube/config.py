"""Settings of `gitkube run`, `master` and `agent`, from three layers.

Every setting can come from a flag, an environment variable
(``GITKUBE_<NAME>``, e.g. ``GITKUBE_STORE``) or a config file
(``--config gitkube.yaml``, keys as the flag names with dashes or
underscores). Flags win over the environment, the environment wins over the
file, the file wins over the defaults. ``gitkube config`` prints the result
with where each value came from, secrets masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from gitkube.errors import ConfigError
from gitkube.services import RELAY_MODES as PROXY_RELAYS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str | float | int, *, name: str = "duration") -> float:
    """Seconds from ``30``, ``30s``, ``5m``, ``1h`` or ``250ms``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ConfigError(
                f"{name}: {value!r} is not a duration; use seconds or a unit, e.g. 30, 30s, 5m, 1h"
            )
        seconds = float(match[1]) * _UNITS[match[2]]
    if seconds <= 0:
        raise ConfigError(f"{name}: must be positive, got {value!r}")
    return seconds


def _setting(default: Any, help: str, *, secret: bool = False, kind: str = "str") -> Any:
    return field(default=default, metadata={"help": help, "secret": secret, "kind": kind})


@dataclass
class Settings:
    """Everything `run`, `master` and `agent` can be told."""

    repo: str = _setting("", "git repository: URL (file://, git://, https://, ssh) or local path")
    branch: str = _setting("main", "branch (or tag, or commit) to track")
    path: str = _setting("", "sub-path of the repository holding the manifests")
    store: str = _setting("", "sqlite:///path/state.db or etcd://host:2379[,host:2379]")
    state_dir: str = _setting(".gitkube", "where the embedded store, caches and logs live")
    runtime: str = _setting("auto", "docker, process, or auto (docker if an engine answers)")
    nodes: int = _setting(1, "local agents `gitkube run` starts", kind="int")
    node: str = _setting("", "node name of `gitkube agent` (default: the host name)")
    address: str = _setting("127.0.0.1", "node address: where pods' host ports are published")
    proxy_address: str = _setting("127.0.0.1", "where the service proxy listens")
    proxy_relay: str = _setting(
        "auto", "service proxy data path: auto (native if it can be built), native, asyncio"
    )
    labels: str = _setting("", "node labels k=v,k2=v2")
    listen: str = _setting("127.0.0.1:9080", "HTTP server (webhooks, metrics, status) HOST:PORT")
    interval: str = _setting("60s", "poll interval (30, 30s, 5m)")
    webhook_secret_file: str = _setting("", "file holding the webhook secret")
    webhook_secret: str = _setting(
        "", "webhook secret (environment or config file only)", secret=True
    )
    allow_unsigned_webhooks: bool = _setting(
        False, "accept webhooks without a secret configured (unsafe)", kind="bool"
    )
    api_token_file: str = _setting(
        "", "file holding the bearer token of the Kubernetes API (needed beyond loopback)"
    )
    ui: bool = _setting(
        True, "serve the web page at / of the HTTP server (--no-ui: off)", kind="bool"
    )
    tls_cert_file: str = _setting("", "TLS certificate (PEM) of the HTTP server and API")
    tls_key_file: str = _setting("", "TLS private key (PEM) of the HTTP server and API")
    watch: bool = _setting(
        True, "sync when the refs of a repository on this machine change", kind="bool"
    )
    status_branch: str = _setting("gitkube/status", "branch the status commits go to")
    writeback: bool = _setting(True, "commit status to the status branch", kind="bool")
    prune: bool = _setting(True, "delete objects git no longer declares", kind="bool")
    self_heal: bool = _setting(True, "put back objects changed behind git's back", kind="bool")
    unsupported_kinds: str = _setting(
        "store",
        "kinds gitkube does not run (Ingress, ServiceAccount, custom resources): "
        "store (validate, store, show as not acted on) or error",
    )
    run_as: str = _setting("", "user the process runtime runs containers as")
    cpu: str = _setting("", "agent: CPU capacity, e.g. 4 or 3500m (default: the host's)")
    memory: str = _setting("", "agent: memory capacity, e.g. 8Gi (default: the host's)")
    max_pods: int = _setting(110, "agent: pods this node accepts", kind="int")
    proxy: bool = _setting(True, "agent: run the service proxy in the agent", kind="bool")
    restart_backoff: str = _setting("10s", "agent: first container restart back-off (doubles)")
    restart_backoff_max: str = _setting("5m", "agent: longest container restart back-off")
    node_grace: str = _setting("50s", "heartbeat lapse before a node is NotReady")
    eviction_timeout: str = _setting("300s", "NotReady time before a node's pods are evicted")
    node_eviction_rate: float = _setting(
        0.1, "nodes per second whose pods are evicted, per zone", kind="float"
    )
    secondary_node_eviction_rate: float = _setting(
        0.01, "eviction rate in a zone past the unhealthy threshold", kind="float"
    )
    unhealthy_zone_threshold: float = _setting(
        0.55, "share of a zone's nodes NotReady (more than 2) that slows evictions", kind="float"
    )
    large_cluster_size_threshold: int = _setting(
        50, "zones of at most this many nodes stop evicting past the threshold", kind="int"
    )
    verbose: bool = _setting(False, "debug logging", kind="bool")
    leader_ttl: int = _setting(10, "leader election lease TTL in seconds (master)", kind="int")

    # ------------------------------------------------------------ derived

    def interval_seconds(self) -> float:
        return parse_duration(self.interval, name="interval")

    def unsupported_kinds_mode(self) -> str:
        if self.unsupported_kinds not in ("store", "error"):
            raise ConfigError(
                f"unsupported-kinds {self.unsupported_kinds!r}: expected store or error"
            )
        return self.unsupported_kinds

    def node_grace_seconds(self) -> float:
        return parse_duration(self.node_grace, name="node-grace")

    def eviction_timeout_seconds(self) -> float:
        return parse_duration(self.eviction_timeout, name="eviction-timeout")

    def store_url(self) -> str:
        return self.store or f"sqlite:///{Path(self.state_dir).resolve()}/state.db"

    def listen_host_port(self) -> tuple[str, int]:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"listen: {self.listen!r} is not HOST:PORT")
        return host.strip("[]") or "127.0.0.1", int(port)

    def read_webhook_secret(self) -> bytes | None:
        if self.webhook_secret:
            return self.webhook_secret.encode()
        if self.webhook_secret_file:
            try:
                text = Path(self.webhook_secret_file).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"webhook-secret-file: cannot read {self.webhook_secret_file}: {exc.strerror}"
                ) from exc
            if not text:
                raise ConfigError(f"webhook-secret-file: {self.webhook_secret_file} is empty")
            return text.encode()
        return None

    def read_api_token(self) -> bytes | None:
        if not self.api_token_file:
            return None
        try:
            text = Path(self.api_token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"api-token-file: cannot read {self.api_token_file}: {exc.strerror}"
            ) from exc
        if not text:
            raise ConfigError(f"api-token-file: {self.api_token_file} is empty")
        return text.encode()

    def ssl_context(self) -> Any:
        """An SSL context for the HTTP server, or None without --tls-cert-file."""
        if not self.tls_cert_file and not self.tls_key_file:
            return None
        if not (self.tls_cert_file and self.tls_key_file):
            raise ConfigError("--tls-cert-file and --tls-key-file go together")
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"--tls-cert-file {self.tls_cert_file} / --tls-key-file {self.tls_key_file}: {exc}"
            ) from exc
        return context


def env_name(name: str) -> str:
    return "GITKUBE_" + name.upper()


def _coerce(name: str, kind: str, value: Any, source: str) -> Any:
    where = f"{name} (from {source})"
    if kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {value!r} is not a whole number") from None
    if kind == "float":
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {value!r} is not a number") from None
        if number != number or number < 0 or number == float("inf"):
            raise ConfigError(f"{where}: {value!r} must be a finite number, 0 or more")
        return number
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where}: {value!r} is not true or false")
    if isinstance(value, list | dict):
        raise ConfigError(f"{where}: expected a string, got {type(value).__name__}")
    return "" if value is None else str(value)


def load_config_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping of settings")
    known = {f.name for f in fields(Settings)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(
                f"--config: {path}: unknown setting {key!r}; known: "
                + ", ".join(sorted(k.replace("_", "-") for k in known))
            )
        out[name] = value
    return out


def resolve_settings(
    flags: Mapping[str, Any],
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, dict[str, str]]:
    """Settings and, for each, where it came from: flag, env, file or default.

    ``flags`` holds the values given on the command line; None means "not given".
    """
    environ = os.environ if environ is None else environ
    if config_file is None and environ.get("GITKUBE_CONFIG"):
        config_file = Path(environ["GITKUBE_CONFIG"])
    from_file = load_config_file(config_file) if config_file else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for f in fields(Settings):
        kind = f.metadata["kind"]
        if flags.get(f.name) is not None:
            values[f.name] = _coerce(f.name, kind, flags[f.name], "flag")
            sources[f.name] = "flag"
        elif env_name(f.name) in environ:
            values[f.name] = _coerce(f.name, kind, environ[env_name(f.name)], env_name(f.name))
            sources[f.name] = "env"
        elif f.name in from_file:
            values[f.name] = _coerce(f.name, kind, from_file[f.name], str(config_file))
            sources[f.name] = "file"
        else:
            sources[f.name] = "default"
    settings = Settings(**values)
    settings.interval_seconds()  # fail early on a bad duration
    if not 0 < settings.unhealthy_zone_threshold <= 1:
        raise ConfigError(
            f"unhealthy-zone-threshold ({sources['unhealthy_zone_threshold']}): "
            f"{settings.unhealthy_zone_threshold!r} must be more than 0 and at most 1"
        )
    if settings.large_cluster_size_threshold < 0:
        raise ConfigError(
            f"large-cluster-size-threshold ({sources['large_cluster_size_threshold']}): "
            f"{settings.large_cluster_size_threshold!r} must be 0 or more"
        )
    if settings.proxy_relay not in PROXY_RELAYS:
        raise ConfigError(
            f"proxy-relay ({sources['proxy_relay']}): {settings.proxy_relay!r} is not one of "
            + ", ".join(PROXY_RELAYS)
        )
    return settings, sources


def masked(settings: Settings) -> dict[str, Any]:
    """The settings as a dict with secrets (and credentials in URLs) masked."""
    out: dict[str, Any] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.metadata["secret"] and value:
            value = "********"
        elif isinstance(value, str):
            value = redact_url(value)
        out[f.name] = value
    return out


_CRED = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^/@\s]+)@")


def redact_url(text: str) -> str:
    """Replace ``user:password@`` in URLs with ``***@``."""
    return _CRED.sub(lambda m: f"{m['scheme']}***@", text)

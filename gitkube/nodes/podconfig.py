"""What a pod's containers get from ConfigMaps, Secrets and the pod itself
(a pure function of the pod and the objects it names).

As kubelet does it:

- env: ``envFrom`` first (each ConfigMap's ``data`` / Secret's ``data``,
  keys that are not valid variable names skipped, ``prefix`` prepended), then
  ``env`` in order; ``valueFrom`` takes ``configMapKeyRef``, ``secretKeyRef``,
  ``fieldRef`` (metadata.name/namespace/uid/labels/annotations, spec.nodeName,
  spec.serviceAccountName, status.podIP/hostIP) and ``resourceFieldRef``.
  Values taken from objects are literal: ``$(VAR)`` in them is not expanded.
- volumes: a ``configMap`` or ``secret`` volume is one file per key (or per
  ``items`` entry, at its ``path``, with its ``mode``, else ``defaultMode``,
  0644); ``emptyDir`` is an empty directory.
- A reference to a missing object or key that is not ``optional`` raises
  ``ConfigMissing``, whose message names the object and the key (never a
  value): the container waits with reason CreateContainerConfigError.

No I/O: the objects are passed in (``ConfigSources``).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from gitkube.api.objects import ConfigMap, Container, EnvVar, Pod, Secret
from gitkube.api.quantity import QuantityError, parse_quantity

CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
DEFAULT_MODE = 0o644
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ConfigMissing(Exception):
    """A non-optional ConfigMap, Secret or key is missing; the message names it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ConfigSources:
    """The ConfigMaps and Secrets of the pod's namespace that it names, by name."""

    config_maps: Mapping[str, ConfigMap] = field(default_factory=dict)
    secrets: Mapping[str, Secret] = field(default_factory=dict)


@dataclass(frozen=True)
class VolumeFile:
    path: str
    data: bytes
    mode: int = DEFAULT_MODE


@dataclass(frozen=True)
class VolumeContent:
    """One volume of a pod: ``files`` for configMap/secret volumes, None for emptyDir."""

    name: str
    files: tuple[VolumeFile, ...] | None


def referenced_names(pod: Pod) -> tuple[set[str], set[str]]:
    """(ConfigMap names, Secret names) the pod refers to, in its namespace."""
    config_maps: set[str] = set()
    secrets: set[str] = set()
    for container in [*pod.spec.init_containers, *pod.spec.containers]:
        for var in container.env:
            source = var.value_from
            if source is None:
                continue
            if source.config_map_key_ref is not None:
                config_maps.add(source.config_map_key_ref.name)
            if source.secret_key_ref is not None:
                secrets.add(source.secret_key_ref.name)
        for env_from in container.env_from:
            if env_from.config_map_ref is not None:
                config_maps.add(env_from.config_map_ref.name)
            if env_from.secret_ref is not None:
                secrets.add(env_from.secret_ref.name)
    for volume in pod.spec.volumes:
        if volume.config_map is not None:
            config_maps.add(volume.config_map.name)
        if volume.secret is not None:
            secrets.add(volume.secret.secret_name)
    return config_maps, secrets


def secret_bytes(secret: Secret) -> dict[str, bytes]:
    """A Secret's values decoded: ``data`` (base64), then ``stringData`` over it."""
    out: dict[str, bytes] = {}
    for key, value in secret.data.items():
        try:
            out[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            out[key] = b""  # refused by validation; never shown
    for key, text in secret.string_data.items():
        out[key] = text.encode()
    return out


def config_map_bytes(config_map: ConfigMap) -> dict[str, bytes]:
    """A ConfigMap's ``data`` and ``binaryData`` (base64) as bytes."""
    out = {key: value.encode() for key, value in config_map.data.items()}
    for key, value in config_map.binary_data.items():
        try:
            out[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            out[key] = b""
    return out


def _literal(value: str) -> str:
    """A value that ``envvars.expand`` leaves as it is."""
    return value.replace("$", "$$")


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _field_value(pod: Pod, path: str, *, pod_ip: str, host_ip: str) -> str:
    meta = pod.metadata
    simple = {
        "metadata.name": meta.name,
        "metadata.namespace": meta.namespace or "default",
        "metadata.uid": meta.uid,
        "spec.nodeName": pod.spec.node_name,
        "spec.serviceAccountName": "default",
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if match:
        table = meta.labels if match.group(1) == "labels" else meta.annotations
        return table.get(match.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        table = meta.labels if path == "metadata.labels" else meta.annotations
        return "\n".join(f'{k}="{v}"' for k, v in sorted(table.items()))
    raise ConfigMissing(f"fieldRef {path!r} is not supported")


def _resource_value(
    pod: Pod, container: Container, resource: str, container_name: str, divisor: object
) -> str:
    target = container
    if container_name:
        found = next((c for c in pod.spec.containers if c.name == container_name), None)
        if found is None:
            raise ConfigMissing(f"resourceFieldRef: no container {container_name!r} in the pod")
        target = found
    kind, _, name = resource.partition(".")
    table = target.resources.limits if kind == "limits" else target.resources.requests
    raw = table.get(name)
    if raw is None and kind == "requests":
        raw = target.resources.limits.get(name)
    try:
        amount = parse_quantity(raw) if raw is not None else None
        unit = parse_quantity(divisor if isinstance(divisor, int | str) else 1)
    except QuantityError as exc:
        raise ConfigMissing(f"resourceFieldRef {resource!r}: {exc}") from exc
    if amount is None:
        # kubelet falls back to the node's allocatable; gitkube reports 0 (unlimited)
        return "0"
    if unit <= 0:
        unit = parse_quantity(1)
    return str(math.ceil(amount / unit))


def resolve_env(
    pod: Pod,
    container: Container,
    sources: ConfigSources,
    *,
    pod_ip: str = "",
    host_ip: str = "",
) -> list[EnvVar]:
    """The container's env as plain values (see the module docstring);
    raises ``ConfigMissing``."""
    namespace = pod.metadata.namespace or "default"
    out: list[EnvVar] = []
    for env_from in container.env_from:
        values: dict[str, bytes] = {}
        if env_from.config_map_ref is not None:
            ref = env_from.config_map_ref
            config_map = sources.config_maps.get(ref.name)
            if config_map is None:
                if ref.optional:
                    continue
                raise ConfigMissing(f'configmap "{ref.name}" not found (envFrom)')
            values = {k: v.encode() for k, v in config_map.data.items()}
        elif env_from.secret_ref is not None:
            sref = env_from.secret_ref
            secret = sources.secrets.get(sref.name)
            if secret is None:
                if sref.optional:
                    continue
                raise ConfigMissing(f'secret "{sref.name}" not found (envFrom)')
            values = secret_bytes(secret)
        for key in sorted(values):
            name = env_from.prefix + key
            if _ENV_NAME.match(name):
                out.append(EnvVar(name=name, value=_literal(_text(values[key]))))
    for var in container.env:
        source = var.value_from
        if source is None:
            out.append(var)
            continue
        value: str | None = None
        if source.config_map_key_ref is not None:
            cref = source.config_map_key_ref
            config_map = sources.config_maps.get(cref.name)
            if config_map is None:
                if cref.optional:
                    continue
                raise ConfigMissing(
                    f'configmap "{cref.name}" not found (key {cref.key}, env {var.name})'
                )
            data = {k: v.encode() for k, v in config_map.data.items()}  # not binaryData
            if cref.key not in data:
                if cref.optional:
                    continue
                raise ConfigMissing(
                    f"couldn't find key {cref.key} in ConfigMap {namespace}/{cref.name} "
                    f"(env {var.name})"
                )
            value = _text(data[cref.key])
        elif source.secret_key_ref is not None:
            sref2 = source.secret_key_ref
            secret = sources.secrets.get(sref2.name)
            if secret is None:
                if sref2.optional:
                    continue
                raise ConfigMissing(
                    f'secret "{sref2.name}" not found (key {sref2.key}, env {var.name})'
                )
            decoded = secret_bytes(secret)
            if sref2.key not in decoded:
                if sref2.optional:
                    continue
                raise ConfigMissing(
                    f"couldn't find key {sref2.key} in Secret {namespace}/{sref2.name} "
                    f"(env {var.name})"
                )
            value = _text(decoded[sref2.key])
        elif source.field_ref is not None:
            value = _field_value(pod, source.field_ref.field_path, pod_ip=pod_ip, host_ip=host_ip)
        elif source.resource_field_ref is not None:
            rref = source.resource_field_ref
            value = _resource_value(
                pod, container, rref.resource, rref.container_name, rref.divisor
            )
        out.append(EnvVar(name=var.name, value=_literal(value or "")))
    return out


def resolve_container(
    pod: Pod,
    container: Container,
    sources: ConfigSources,
    *,
    pod_ip: str = "",
    host_ip: str = "",
) -> Container:
    """A copy of ``container`` whose ``env`` holds plain values and whose
    ``envFrom`` is folded in; raises ``ConfigMissing``."""
    env = resolve_env(pod, container, sources, pod_ip=pod_ip, host_ip=host_ip)
    return replace(container, env=env, env_from=[])


def _safe_path(path: str) -> bool:
    parts = path.split("/")
    return bool(path) and not path.startswith("/") and ".." not in parts and all(parts)


def _files(
    data: Mapping[str, bytes],
    items: list[tuple[str, str, int | None]],
    default_mode: int | None,
    *,
    optional: bool,
    what: str,
) -> tuple[VolumeFile, ...]:
    mode = default_mode if default_mode is not None else DEFAULT_MODE
    files: list[VolumeFile] = []
    if not items:
        for key in sorted(data):
            if _safe_path(key):
                files.append(VolumeFile(key, data[key], mode))
        return tuple(files)
    for key, path, item_mode in items:
        if key not in data:
            if optional:
                continue
            raise ConfigMissing(f"couldn't find key {key} in {what}")
        if _safe_path(path):
            files.append(VolumeFile(path, data[key], item_mode if item_mode is not None else mode))
    return tuple(files)


def resolve_volumes(pod: Pod, sources: ConfigSources) -> dict[str, VolumeContent]:
    """The pod's configMap, secret and emptyDir volumes by name; raises ``ConfigMissing``."""
    namespace = pod.metadata.namespace or "default"
    out: dict[str, VolumeContent] = {}
    for volume in pod.spec.volumes:
        if volume.config_map is not None:
            cm = volume.config_map
            config_map = sources.config_maps.get(cm.name)
            if config_map is None:
                if not cm.optional:
                    raise ConfigMissing(f'configmap "{cm.name}" not found (volume {volume.name})')
                out[volume.name] = VolumeContent(volume.name, ())
                continue
            items = [(i.key, i.path, i.mode) for i in cm.items]
            out[volume.name] = VolumeContent(
                volume.name,
                _files(
                    config_map_bytes(config_map),
                    items,
                    cm.default_mode,
                    optional=bool(cm.optional),
                    what=f"ConfigMap {namespace}/{cm.name} (volume {volume.name})",
                ),
            )
        elif volume.secret is not None:
            sv = volume.secret
            secret = sources.secrets.get(sv.secret_name)
            if secret is None:
                if not sv.optional:
                    raise ConfigMissing(
                        f'secret "{sv.secret_name}" not found (volume {volume.name})'
                    )
                out[volume.name] = VolumeContent(volume.name, ())
                continue
            items = [(i.key, i.path, i.mode) for i in sv.items]
            out[volume.name] = VolumeContent(
                volume.name,
                _files(
                    secret_bytes(secret),
                    items,
                    sv.default_mode,
                    optional=bool(sv.optional),
                    what=f"Secret {namespace}/{sv.secret_name} (volume {volume.name})",
                ),
            )
        elif volume.empty_dir is not None:
            out[volume.name] = VolumeContent(volume.name, None)
    return out


def container_volume_names(container: Container) -> list[str]:
    return [m.name for m in container.volume_mounts]

"""gitkube.nodes.podconfig (pure): env from ConfigMaps, Secrets and fields,
envFrom with prefix and invalid names skipped, optional references, literal
values ($(VAR) not expanded), missing objects and keys named in the error
(never a value); volumes with items, modes, binaryData and optional."""

from __future__ import annotations

import base64

import pytest

from gitkube.api.objects import (
    ConfigMap,
    ConfigMapEnvSource,
    ConfigMapKeySelector,
    ConfigMapVolumeSource,
    Container,
    EnvFromSource,
    EnvVar,
    EnvVarSource,
    KeyToPath,
    ObjectFieldSelector,
    ObjectMeta,
    Pod,
    PodSpec,
    Secret,
    SecretKeySelector,
    SecretVolumeSource,
    Volume,
)
from gitkube.nodes.podconfig import (
    ConfigMissing,
    ConfigSources,
    referenced_names,
    resolve_container,
    resolve_volumes,
)
from gitkube.nodes.runtime.envvars import container_environment

SECRET_VALUE = "hunter2-$(HOME)"


def sources() -> ConfigSources:
    cm = ConfigMap(
        metadata=ObjectMeta(name="cfg"),
        data={"mode": "fast", "bad key": "x", "level": "3"},
        binary_data={"blob": base64.b64encode(b"\x00\x01").decode()},
    )
    secret = Secret(
        metadata=ObjectMeta(name="sec"),
        data={"pw": base64.b64encode(SECRET_VALUE.encode()).decode()},
        string_data={"user": "admin"},
    )
    return ConfigSources(config_maps={"cfg": cm}, secrets={"sec": secret})


def pod(*containers: Container, volumes: list[Volume] | None = None) -> Pod:
    return Pod(
        metadata=ObjectMeta(name="p", namespace="default", uid="u1", labels={"app": "web"}),
        spec=PodSpec(containers=list(containers), volumes=volumes or [], node_name="n1"),
    )


def ref_cm(name: str, key: str, optional: bool | None = None) -> EnvVarSource:
    return EnvVarSource(config_map_key_ref=ConfigMapKeySelector(name, key, optional))


def test_env_sources_order_and_literals() -> None:
    c = Container(
        name="c",
        env_from=[EnvFromSource(prefix="CFG_", config_map_ref=ConfigMapEnvSource("cfg"))],
        env=[
            EnvVar("MODE", value_from=ref_cm("cfg", "mode")),
            EnvVar("PW", value_from=EnvVarSource(secret_key_ref=SecretKeySelector("sec", "pw"))),
            EnvVar("WHO", value_from=EnvVarSource(field_ref=ObjectFieldSelector("metadata.name"))),
            EnvVar(
                "APP",
                value_from=EnvVarSource(field_ref=ObjectFieldSelector("metadata.labels['app']")),
            ),
            EnvVar("IP", value_from=EnvVarSource(field_ref=ObjectFieldSelector("status.podIP"))),
            EnvVar("OPT", value_from=ref_cm("nope", "x", optional=True)),
            EnvVar("BOTH", "$(MODE)-$(WHO)"),
        ],
    )
    p = pod(c)
    resolved = resolve_container(p, c, sources(), pod_ip="10.0.0.5")
    env = container_environment(resolved)
    assert env["CFG_mode"] == "fast" and env["CFG_level"] == "3"
    assert "CFG_bad key" not in env
    assert env["PW"] == SECRET_VALUE  # literal: $(HOME) not expanded
    assert env["WHO"] == "p" and env["APP"] == "web" and env["IP"] == "10.0.0.5"
    assert "OPT" not in env
    assert env["BOTH"] == "fast-p"
    assert resolved.env_from == []


@pytest.mark.parametrize(
    ("var", "expected"),
    [
        (EnvVar("X", value_from=ref_cm("gone", "k")), 'configmap "gone" not found'),
        (EnvVar("X", value_from=ref_cm("cfg", "missing")), "key missing in ConfigMap default/cfg"),
        (
            EnvVar("X", value_from=EnvVarSource(secret_key_ref=SecretKeySelector("sec", "nokey"))),
            "key nokey in Secret default/sec",
        ),
    ],
)
def test_missing_references_name_object_and_key(var: EnvVar, expected: str) -> None:
    c = Container(name="c", env=[var])
    with pytest.raises(ConfigMissing) as caught:
        resolve_container(pod(c), c, sources())
    assert expected in caught.value.message
    assert SECRET_VALUE not in caught.value.message


def test_volumes_items_modes_and_optional() -> None:
    volumes = [
        Volume(
            name="a",
            config_map=ConfigMapVolumeSource(
                name="cfg", items=[KeyToPath("mode", "conf/mode.txt", 0o600)], default_mode=0o640
            ),
        ),
        Volume(name="b", config_map=ConfigMapVolumeSource(name="cfg", default_mode=0o640)),
        Volume(name="s", secret=SecretVolumeSource(secret_name="sec")),
        Volume(name="o", secret=SecretVolumeSource(secret_name="nope", optional=True)),
    ]
    p = pod(Container(name="c"), volumes=volumes)
    out = resolve_volumes(p, sources())
    assert [(f.path, f.data, f.mode) for f in out["a"].files or ()] == [
        ("conf/mode.txt", b"fast", 0o600)
    ]
    b = {f.path: (f.data, f.mode) for f in out["b"].files or ()}
    assert b["blob"] == (b"\x00\x01", 0o640)
    s = {f.path: f.data for f in out["s"].files or ()}
    assert s == {"pw": SECRET_VALUE.encode(), "user": b"admin"}
    assert out["o"].files == ()
    assert referenced_names(p) == ({"cfg"}, {"sec", "nope"})


def test_missing_item_key_is_named() -> None:
    volumes = [
        Volume(name="a", config_map=ConfigMapVolumeSource(name="cfg", items=[KeyToPath("zz", "z")]))
    ]
    with pytest.raises(ConfigMissing) as caught:
        resolve_volumes(pod(Container(name="c"), volumes=volumes), sources())
    assert "key zz in ConfigMap default/cfg" in caught.value.message

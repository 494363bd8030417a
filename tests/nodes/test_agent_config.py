"""The agent with ConfigMaps, Secrets and init containers, on both runtimes
(a real SQLite store; Docker with the local busybox image):

- env from configMapKeyRef, secretKeyRef, fieldRef and envFrom (with prefix;
  optional references to missing objects are skipped);
- a missing non-optional ConfigMap, Secret or key: the container waits with
  CreateContainerConfigError and a message naming the object and key (no
  value), and starts once the object appears;
- configMap and secret volumes (items, modes) are read at the mountPath; a
  changed ConfigMap reaches the mounted file within the bounded wait while
  the env keeps the value it started with;
- init containers run one after another, each to completion, before the app
  containers, sharing an emptyDir; a failing one is restarted
  (Init:CrashLoopBackOff) or, with restartPolicy Never, fails the pod;
  status.initContainerStatuses and the Initialized condition;
- the volume directory of a pod that is gone (Secret files) is removed;
- a pod waiting on a missing ConfigMap starts as soon as it appears, not
  when its start back-off (60 s here) ends.
"""

from __future__ import annotations

import base64
from pathlib import Path

from gitkube.api.objects import (
    ConfigMap,
    ConfigMapEnvSource,
    ConfigMapKeySelector,
    ConfigMapVolumeSource,
    Container,
    EmptyDirVolumeSource,
    EnvFromSource,
    EnvVar,
    EnvVarSource,
    KeyToPath,
    ObjectFieldSelector,
    ObjectMeta,
    Pod,
    Secret,
    SecretEnvSource,
    SecretKeySelector,
    SecretVolumeSource,
    Volume,
    VolumeMount,
)
from gitkube.cli.get_cmd import pod_status_text
from tests.nodes import test_agent
from tests.nodes.test_agent import IMAGE, SERVE, Harness, make_pod

#: the agent harness of test_agent (both runtimes)
harness = test_agent.harness

PLANTED = "s3cr3t-planted-value"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def logs_of(h: Harness, pod: str, container: str = "main") -> str:
    attempts = [rc for rc in await h.runtime.list_containers() if rc.pod_name == pod]
    attempts = [rc for rc in attempts if rc.name == container]
    if not attempts:
        return ""
    latest = max(attempts, key=lambda rc: rc.attempt)
    chunks = [c async for c in h.runtime.logs(latest.id)]
    return b"".join(chunks).decode(errors="replace")


async def wait_logs(h: Harness, pod: str, text: str, *, timeout: float = 20.0) -> str:
    seen = ""

    async def check() -> bool:
        nonlocal seen
        seen = await logs_of(h, pod)
        return text in seen

    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {text!r} in the logs of {pod}: {seen!r}")
        await asyncio.sleep(0.1)
    return seen


def config(name: str, **data: str) -> ConfigMap:
    return ConfigMap(metadata=ObjectMeta(name=name, namespace="default"), data=dict(data))


def secret(name: str, **data: str) -> Secret:
    return Secret(
        metadata=ObjectMeta(name=name, namespace="default"),
        data={k: b64(v) for k, v in data.items()},
    )


class TestEnv:
    async def test_value_from_and_env_from(self, harness: Harness) -> None:
        await harness.objects.create(config("app", mode="fast", color="blue"))
        await harness.objects.create(secret("creds", password=PLANTED, user="admin"))
        pod = make_pod(
            "envpod",
            'echo "mode=$MODE pw=$PW ns=$NS name=$NAME ip=$IP node=$NODE '
            'cfg_color=$CFG_color user=$user gone=${GONE:-unset}"; exec sleep 30',
            env=[
                EnvVar(
                    "MODE",
                    value_from=EnvVarSource(config_map_key_ref=ConfigMapKeySelector("app", "mode")),
                ),
                EnvVar(
                    "PW",
                    value_from=EnvVarSource(secret_key_ref=SecretKeySelector("creds", "password")),
                ),
                EnvVar(
                    "NS",
                    value_from=EnvVarSource(field_ref=ObjectFieldSelector("metadata.namespace")),
                ),
                EnvVar(
                    "NAME", value_from=EnvVarSource(field_ref=ObjectFieldSelector("metadata.name"))
                ),
                EnvVar(
                    "IP", value_from=EnvVarSource(field_ref=ObjectFieldSelector("status.podIP"))
                ),
                EnvVar(
                    "NODE", value_from=EnvVarSource(field_ref=ObjectFieldSelector("spec.nodeName"))
                ),
                EnvVar(
                    "GONE",
                    value_from=EnvVarSource(
                        config_map_key_ref=ConfigMapKeySelector("nope", "x", optional=True)
                    ),
                ),
            ],
            env_from=[
                EnvFromSource(prefix="CFG_", config_map_ref=ConfigMapEnvSource("app")),
                EnvFromSource(secret_ref=SecretEnvSource("creds")),
                EnvFromSource(config_map_ref=ConfigMapEnvSource("absent", optional=True)),
            ],
        )
        await harness.create(pod)
        running = await harness.wait_pod(
            "envpod", lambda p: p.status.phase == "Running", what="Running"
        )
        logs = await wait_logs(harness, "envpod", "mode=")
        assert (
            f"mode=fast pw={PLANTED} ns=default name=envpod ip={running.status.pod_ip} "
            f"node={running.spec.node_name} cfg_color=blue user=admin gone=unset"
        ) in logs


class TestMissingConfig:
    async def test_missing_config_map_waits_then_starts(self, harness: Harness) -> None:
        pod = make_pod(
            "waits",
            'echo "level=$LEVEL"; exec sleep 30',
            env=[
                EnvVar(
                    "LEVEL",
                    value_from=EnvVarSource(
                        config_map_key_ref=ConfigMapKeySelector("settings", "level")
                    ),
                )
            ],
        )
        await harness.create(pod)

        def config_error(p: Pod) -> bool:
            cs = p.status.container_statuses
            return (
                bool(cs)
                and cs[0].state.waiting is not None
                and (cs[0].state.waiting.reason == "CreateContainerConfigError")
            )

        waiting = await harness.wait_pod("waits", config_error, what="CreateContainerConfigError")
        message = waiting.status.container_statuses[0].state.waiting.message  # type: ignore[union-attr]
        assert '"settings"' in message and "key level" in message and "LEVEL" in message
        assert waiting.status.phase == "Pending"
        # the map appears without the key: the message names the key
        await harness.objects.create(config("settings", other="1"))
        keyed = await harness.wait_pod(
            "waits",
            lambda p: (
                config_error(p)
                and "couldn't find key level"
                in p.status.container_statuses[0].state.waiting.message
            ),  # type: ignore[union-attr]
            what="a message naming the key",
        )
        assert "default/settings" in keyed.status.container_statuses[0].state.waiting.message  # type: ignore[union-attr]
        current = await harness.objects.get(ConfigMap, "default", "settings")
        assert current is not None
        current.data["level"] = "debug"
        await harness.objects.update(current)
        await harness.wait_pod("waits", lambda p: p.status.phase == "Running", what="Running")
        await wait_logs(harness, "waits", "level=debug")

    async def test_missing_secret_volume_names_the_secret(self, harness: Harness) -> None:
        pod = make_pod(
            "secvol",
            "exec sleep 30",
            volume_mounts=[VolumeMount(name="certs", mount_path="/var/certs")],
        )
        pod.spec.volumes = [Volume(name="certs", secret=SecretVolumeSource(secret_name="tls"))]
        await harness.create(pod)
        waiting = await harness.wait_pod(
            "secvol",
            lambda p: (
                bool(p.status.container_statuses)
                and p.status.container_statuses[0].state.waiting is not None
                and p.status.container_statuses[0].state.waiting.reason
                == "CreateContainerConfigError"
            ),
            what="CreateContainerConfigError",
        )
        assert '"tls"' in waiting.status.container_statuses[0].state.waiting.message  # type: ignore[union-attr]


class TestVolumes:
    async def test_mounted_files_follow_the_config_map_env_does_not(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        mount = str(tmp_path / "etc" / "app")
        secret_mount = str(tmp_path / "etc" / "secret")
        await harness.objects.create(config("live", greeting="hello-1", other="x"))
        await harness.objects.create(secret("keys", token=PLANTED))
        script = (
            f'while true; do echo "file=$(cat {mount}/conf/greeting.txt) env=$GREETING '
            f"mode=$(stat -c %a {mount}/conf/greeting.txt) "
            f'token=$(cat {secret_mount}/token | wc -c)"; sleep 0.2; done'
        )
        pod = make_pod(
            "mounted",
            script,
            env=[
                EnvVar(
                    "GREETING",
                    value_from=EnvVarSource(
                        config_map_key_ref=ConfigMapKeySelector("live", "greeting")
                    ),
                )
            ],
            volume_mounts=[
                VolumeMount(name="cfg", mount_path=mount),
                VolumeMount(name="sec", mount_path=secret_mount),
            ],
        )
        pod.spec.volumes = [
            Volume(
                name="cfg",
                config_map=ConfigMapVolumeSource(
                    name="live", items=[KeyToPath("greeting", "conf/greeting.txt", 0o600)]
                ),
            ),
            Volume(name="sec", secret=SecretVolumeSource(secret_name="keys", default_mode=0o400)),
        ]
        await harness.create(pod)
        await wait_logs(
            harness, "mounted", f"file=hello-1 env=hello-1 mode=600 token={len(PLANTED)}"
        )
        current = await harness.objects.get(ConfigMap, "default", "live")
        assert current is not None
        current.data["greeting"] = "hello-2"
        await harness.objects.update(current)
        # within the bounded wait (kubelet: within its sync period, about a minute)
        await wait_logs(harness, "mounted", "file=hello-2 env=hello-1", timeout=30)


class TestInitContainers:
    async def test_init_containers_run_in_order_before_the_app(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        work = str(tmp_path / "work")
        first = Container(
            name="first", image=IMAGE, command=["sh", "-c", f"sleep 0.3; echo one >> {work}/order"]
        )
        second = Container(
            name="second", image=IMAGE, command=["sh", "-c", f"echo two >> {work}/order"]
        )
        for c in (first, second):
            c.volume_mounts = [VolumeMount(name="work", mount_path=work)]
        pod = make_pod(
            "inits",
            f'echo "order=$(cat {work}/order | tr "\\n" ,)"; exec sleep 30',
            volume_mounts=[VolumeMount(name="work", mount_path=work)],
        )
        pod.spec.init_containers = [first, second]
        pod.spec.volumes = [Volume(name="work", empty_dir=EmptyDirVolumeSource())]
        await harness.create(pod)
        seen: set[str] = set()

        def record(p: Pod) -> bool:
            seen.add(p.status.phase)
            seen.add(pod_status_text(p))
            return p.status.phase == "Running"

        done = await harness.wait_pod("inits", record, timeout=20, what="Running")
        assert "Pending" in seen
        assert any(s.startswith("Init:") for s in seen), seen
        await wait_logs(harness, "inits", "order=one,two,")
        statuses = done.status.init_container_statuses
        assert [s.name for s in statuses] == ["first", "second"]
        for s in statuses:
            assert s.state.terminated is not None and s.state.terminated.exit_code == 0
            assert s.state.terminated.reason == "Completed"
        assert done.status.condition("Initialized").status == "True"  # type: ignore[union-attr]

    async def test_failing_init_container_is_restarted(self, harness: Harness) -> None:
        pod = make_pod("initcrash", SERVE, policy="Always")
        pod.spec.init_containers = [
            Container(name="setup", image=IMAGE, command=["sh", "-c", "exit 3"])
        ]
        await harness.create(pod)
        seen: set[str] = set()

        def crash_looping(p: Pod) -> bool:
            seen.add(pod_status_text(p))
            ics = p.status.init_container_statuses
            return bool(ics) and ics[0].restart_count >= 2

        stuck = await harness.wait_pod("initcrash", crash_looping, timeout=20, what="restarts")
        assert "Init:CrashLoopBackOff" in seen or "Init:Error" in seen, seen
        assert stuck.status.phase == "Pending"
        assert stuck.status.condition("Initialized").status == "False"  # type: ignore[union-attr]
        assert stuck.status.container_statuses[0].state.waiting is not None
        assert stuck.status.container_statuses[0].state.waiting.reason == "PodInitializing"
        assert not [rc for rc in await harness.runtime.list_containers() if rc.name == "main"]

    async def test_failing_init_container_fails_a_never_pod(self, harness: Harness) -> None:
        pod = make_pod("initfail", SERVE, policy="Never")
        pod.spec.init_containers = [
            Container(name="setup", image=IMAGE, command=["sh", "-c", "exit 4"])
        ]
        await harness.create(pod)
        failed = await harness.wait_pod(
            "initfail", lambda p: p.status.phase == "Failed", timeout=20, what="Failed"
        )
        assert pod_status_text(failed) == "Init:Error"
        term = failed.status.init_container_statuses[0].state.terminated
        assert term is not None and term.exit_code == 4


class TestCleanup:
    async def test_volumes_of_pods_that_are_gone_are_removed(self, harness: Harness) -> None:
        stale = harness.runtime.pods_dir / "0badc0de-gone" / "volumes" / "sec"
        stale.mkdir(parents=True)
        (stale / "token").write_text(PLANTED)
        await harness.wait(
            lambda: not stale.parent.parent.exists(), what="the stale pod directory removed"
        )


async def test_config_error_does_not_wait_out_the_back_off(tmp_path: Path) -> None:
    import asyncio
    import time

    from gitkube.nodes.agent import Agent
    from gitkube.nodes.backoff import BackoffSettings
    from gitkube.nodes.registration import NodeSettings
    from gitkube.nodes.runtime.process import ProcessRuntime
    from gitkube.store.factory import open_store
    from gitkube.store.objects import ObjectStore

    settings = test_agent.agent_settings()
    settings.backoff = BackoffSettings(initial=60.0, cap=120.0)
    runtime = ProcessRuntime(node_name=test_agent.NODE, state_dir=tmp_path / "node")
    store = await open_store(f"sqlite:///{tmp_path}/state.db")
    objects = ObjectStore(store)
    node = NodeSettings(name=test_agent.NODE, address="127.0.0.1", runtime_name="process")
    h = Harness(
        "process", objects, runtime, Agent(objects, runtime, node=node, settings=settings),
        tmp_path / "node", asyncio.Event(),
    )  # fmt: skip
    try:
        await h.start()
        pod = make_pod(
            "late",
            "exec sleep 30",
            env=[
                EnvVar(
                    "X",
                    value_from=EnvVarSource(config_map_key_ref=ConfigMapKeySelector("late", "x")),
                )
            ],
        )
        await h.create(pod)
        await h.wait_pod(
            "late",
            lambda p: (
                bool(p.status.container_statuses)
                and p.status.container_statuses[0].state.waiting is not None
                and p.status.container_statuses[0].state.waiting.reason
                == "CreateContainerConfigError"
            ),
            what="CreateContainerConfigError",
        )
        appeared = time.monotonic()
        await objects.create(config("late", x="1"))
        await h.wait_pod("late", lambda p: p.status.phase == "Running", timeout=20, what="Running")
        assert time.monotonic() - appeared < 30  # the back-off would have been 60 s
    finally:
        await h.halt()
        await test_agent.wipe(runtime)
        await runtime.close()
        await store.close()

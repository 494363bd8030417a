"""Real Kubernetes clients against `gitkube run` (process runtime, in-process):

- kubectl 1.32 (the machine's) and 1.20 (Debian's kubernetes-client, unpacked
  beside it): get pods -o wide / -o json, -l, --field-selector, get nodes,
  get minions, api-resources, describe pod (with its events), logs and
  logs -f, get pods -w seeing a scale-up pushed to git, and an apply
  answered with the place in git;
- kinds gitkube stores without running them (an Ingress, a custom resource
  of a CustomResourceDefinition in git), and `get all`;
- the official `kubernetes` Python client: list, watch, read_namespaced_pod_log.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gitkube.api.objects import Pod
from tests.fixtures.git import GitRemote
from tests.fixtures.require import missing, require_binary
from tests.operator.helpers import (
    Running,
    eventually,
    free_port,
    kill_processes_under,
    operator_settings,
    start_operator,
)
from tests.validate.test_unsupported_kinds import CRD as CRDS

#: where .ci/run unpacks Debian's kubernetes-client (kubectl 1.20)
OLD_KUBECTL = Path(os.environ.get("GITKUBE_TEST_KUBECTL_OLD", "/opt/kubectl-1.20/usr/bin/kubectl"))

APP = """\
apiVersion: v1
kind: ReplicationController
metadata:
  name: web
spec:
  replicas: {replicas}
  selector: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: busybox
        command:
        - sh
        - -c
        - "echo started $(POD_NAME); i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
        env:
        - name: POD_NAME
          value: web
"""


def kubectl_binaries() -> list[tuple[str, str]]:
    new = require_binary("kubectl", "install kubectl")
    if not OLD_KUBECTL.exists():
        missing(
            f"kubectl 1.20 at {OLD_KUBECTL}",
            "apt-get download kubernetes-client; dpkg -x kubernetes-client_*.deb /opt/kubectl-1.20",
        )
    return [("1.32", new), ("1.20", str(OLD_KUBECTL))]


@pytest.fixture
async def cluster(git_remote: GitRemote, tmp_path: Path) -> AsyncIterator[tuple[Running, Path]]:
    git_remote.write("app/web.yaml", APP.format(replicas=2))
    git_remote.commit_and_push("two web pods")
    settings = operator_settings(git_remote.url, tmp_path / "state", path="app", writeback=False)
    running = await start_operator(settings)
    try:
        objects = running.operator.objects
        assert objects is not None

        async def ready() -> bool:
            pods, _ = await objects.list(Pod)
            return len(pods) == 2 and all(p.is_ready() or p.status.phase == "Running" for p in pods)

        await eventually(ready, timeout=60, what="two running pods")
        host, port = settings.listen_host_port()
        config = tmp_path / "kubeconfig"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "g", "cluster": {"server": f"http://{host}:{port}"}}],
                    "users": [{"name": "g", "user": {}}],
                    "contexts": [{"name": "g", "context": {"cluster": "g", "user": "g"}}],
                    "current-context": "g",
                }
            )
        )
        yield running, config
    finally:
        await running.shutdown()
        kill_processes_under(tmp_path)


def run(
    kubectl: str, config: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(config.parent)}
    result = subprocess.run(
        [kubectl, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.returncode}\n{result.stderr}")
    return result


async def akubectl(
    kubectl: str, config: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, kubectl, config, *args, check=check)


async def test_kubectl_reads_gitkube(cluster: tuple[Running, Path], git_remote: GitRemote) -> None:
    running, config = cluster
    objects = running.operator.objects
    assert objects is not None
    pods, _ = await objects.list(Pod)
    pod = pods[0]
    node = pod.spec.node_name
    for version, kubectl in kubectl_binaries():
        wide = (await akubectl(kubectl, config, "get", "pods", "-o", "wide")).stdout
        header = wide.splitlines()[0].split()
        assert header[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], version
        assert "IP" in header and "NODE" in header, version
        assert pod.name in wide and node in wide, version
        listed = json.loads((await akubectl(kubectl, config, "get", "pods", "-o", "json")).stdout)
        assert sorted(i["metadata"]["name"] for i in listed["items"]) == sorted(
            p.name for p in pods
        )
        labelled = (
            await akubectl(kubectl, config, "get", "pods", "-l", "app=web", "-o", "name")
        ).stdout
        assert sorted(labelled.split()) == sorted(f"pod/{p.name}" for p in pods), version
        none = (
            await akubectl(kubectl, config, "get", "pods", "-l", "app!=web", "-o", "name")
        ).stdout
        assert none.strip() == "", version
        by_node = await akubectl(
            kubectl,
            config,
            "get",
            "pods",
            "--field-selector",
            f"spec.nodeName={node}",
            "-o",
            "name",
        )
        assert f"pod/{pod.name}" in by_node.stdout, version
        nodes = (await akubectl(kubectl, config, "get", "nodes")).stdout
        assert node in nodes and "Ready" in nodes, version
        minions = (await akubectl(kubectl, config, "get", "minions")).stdout
        assert node in minions, version
        resources = (await akubectl(kubectl, config, "api-resources")).stdout
        for short in ("po", "rc", "svc", "ep", "no", "ns", "cm", "deploy", "rs"):
            assert f" {short} " in resources or f" {short}," in resources, (version, short)
        describe = (await akubectl(kubectl, config, "describe", "pod", pod.name)).stdout
        assert "Name:" in describe and pod.name in describe and "Events:" in describe, version
        assert "Scheduled" in describe and "Started" in describe, (version, describe[-800:])
        node_text = (await akubectl(kubectl, config, "describe", "node", node)).stdout
        assert f"Name:               {node}" in node_text and "Events:" in node_text, version
        events = (await akubectl(kubectl, config, "get", "events")).stdout
        assert "Scheduled" in events and f"pod/{pod.name}" in events, version
        logs = (await akubectl(kubectl, config, "logs", pod.name, "--tail", "2")).stdout
        assert len(logs.splitlines()) == 2 and logs.startswith("tick"), (version, logs)
        applied = await akubectl(
            kubectl, config, "apply", "-f", str(git_remote.work / "app/web.yaml"), check=False
        )
        assert applied.returncode != 0, version
        assert "read-only" in applied.stderr and "app/web.yaml" in applied.stderr, (
            version,
            applied.stderr,
        )
        assert git_remote.url in applied.stderr and "main" in applied.stderr, version
        deleted = await akubectl(kubectl, config, "delete", "pod", pod.name, check=False)
        assert deleted.returncode != 0 and "read-only" in deleted.stderr, version
        assert await objects.get(Pod, "default", pod.name) is not None


async def test_kubectl_follows_logs_and_watches_a_scale_up_from_git(
    cluster: tuple[Running, Path], git_remote: GitRemote
) -> None:
    running, config = cluster
    objects = running.operator.objects
    assert objects is not None
    pods, _ = await objects.list(Pod)
    env = {**os.environ, "KUBECONFIG": str(config), "HOME": str(config.parent)}
    for _version, kubectl in kubectl_binaries():
        follow = await asyncio.create_subprocess_exec(
            kubectl, "logs", "-f", pods[0].name, "--tail", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        try:
            assert follow.stdout is not None
            lines = [await asyncio.wait_for(follow.stdout.readline(), 20) for _ in range(4)]
            ticks = [int(line.split()[1]) for line in lines]
            assert ticks == sorted(ticks) and len(set(ticks)) == 4  # new lines keep arriving
        finally:
            follow.kill()
            await follow.wait()
    watch = await asyncio.create_subprocess_exec(
        kubectl_binaries()[0][1], "get", "pods", "-w",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert watch.stdout is not None
        first = await asyncio.wait_for(watch.stdout.readline(), 20)
        assert first.split()[:2] == [b"NAME", b"READY"]
        for _ in pods:
            await asyncio.wait_for(watch.stdout.readline(), 20)
        git_remote.write("app/web.yaml", APP.format(replicas=3))
        git_remote.commit_and_push("three web pods")
        running.operator.sync.trigger(None)
        known = {p.name for p in pods}
        seen: set[str] = set()
        while not seen:
            line = (await asyncio.wait_for(watch.stdout.readline(), 30)).decode()
            name = line.split()[0] if line.strip() else ""
            if name.startswith("web-") and name not in known:
                seen.add(name)
    finally:
        watch.kill()
        await watch.wait()


STORED = (
    CRDS
    + """\
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: letsencrypt}
spec: {acme: {server: https://acme.example.com/directory}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
"""
)


async def test_kubectl_reads_what_gitkube_stores_without_running_it(
    cluster: tuple[Running, Path], git_remote: GitRemote
) -> None:
    """An Ingress, a CustomResourceDefinition and its cluster-scoped
    ClusterIssuer from git, read with kubectl as in a cluster; `get all` as
    well; an apply of the issuer is answered with its file in git."""
    running, config = cluster
    objects = running.operator.objects
    assert objects is not None
    git_remote.write("app/stored.yaml", STORED)
    git_remote.commit_and_push("an ingress and an issuer")
    running.operator.sync.trigger(None)

    async def stored() -> bool:
        return (
            await objects.store.get("/gitkube/clusterissuers.cert-manager.io/letsencrypt")
            is not None
        )

    await eventually(stored, timeout=30, what="the issuer stored")
    for version, kubectl in kubectl_binaries():
        ingresses = (await akubectl(kubectl, config, "get", "ing")).stdout
        assert "web" in ingresses.split(), (version, ingresses)
        issuers = (await akubectl(kubectl, config, "get", "clusterissuers")).stdout
        assert issuers.splitlines()[1].split()[0] == "letsencrypt", (version, issuers)
        one = await akubectl(kubectl, config, "get", "clusterissuer", "letsencrypt", "-o", "json")
        assert json.loads(one.stdout)["spec"]["acme"]["server"].startswith("https://"), version
        crds = (await akubectl(kubectl, config, "get", "crd", "-o", "name")).stdout
        assert (
            "customresourcedefinition.apiextensions.k8s.io/clusterissuers.cert-manager.io" in crds
        )
        everything = (await akubectl(kubectl, config, "get", "all", "-o", "name")).stdout
        assert "replicationcontroller/web" in everything, (version, everything)
        assert any(line.startswith("pod/web-") for line in everything.splitlines()), version
        applied = await akubectl(
            kubectl, config, "apply", "-f", str(git_remote.work / "app/stored.yaml"), check=False
        )
        assert applied.returncode != 0 and "app/stored.yaml" in applied.stderr, (
            version,
            applied.stderr,
        )


async def test_official_python_client(cluster: tuple[Running, Path]) -> None:
    from kubernetes import client, config, watch

    running, kubeconfig = cluster
    objects = running.operator.objects
    assert objects is not None

    def calls() -> dict[str, Any]:
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        core = client.CoreV1Api(api_client)
        listed = core.list_namespaced_pod("default", label_selector="app=web")
        names = sorted(p.metadata.name for p in listed.items)
        rv = listed.metadata.resource_version
        log = core.read_namespaced_pod_log(names[0], "default", tail_lines=3)
        events = []
        stream = watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version="0", timeout_seconds=2
        )
        for event in stream:
            events.append((event["type"], event["object"].metadata.name))
            if len(events) >= len(names):
                break
        api_client.close()
        return {"names": names, "rv": rv, "log": log, "events": events}

    result = await asyncio.to_thread(calls)
    pods, _ = await objects.list(Pod)
    assert result["names"] == sorted(p.name for p in pods)
    assert int(result["rv"]) > 0
    assert len(result["log"].splitlines()) == 3 and "tick" in result["log"]
    assert sorted(result["events"]) == sorted(("ADDED", p.name) for p in pods)


async def test_tls_token_and_gitkube_kubeconfig(git_remote: GitRemote, tmp_path: Path) -> None:
    """Beyond loopback the API needs the token of --api-token-file; with
    --tls-cert-file it is HTTPS, and `gitkube kubeconfig` gives kubectl the
    server, the certificate as authority and the token."""
    from typer.testing import CliRunner

    from gitkube.cli import app

    openssl = require_binary("openssl", "install openssl")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=gitkube", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    token = tmp_path / "token"
    token.write_text("t0ken-for-tests\n")
    git_remote.write("app/web.yaml", APP.format(replicas=1))
    git_remote.commit_and_push("one web pod")
    settings = operator_settings(
        git_remote.url,
        tmp_path / "state",
        path="app",
        writeback=False,
        listen=f"0.0.0.0:{free_port()}",
        api_token_file=str(token),
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    running = await start_operator(settings)
    try:
        port = settings.listen_host_port()[1]
        made = CliRunner().invoke(
            app,
            [
                "kubeconfig", "--listen", f"0.0.0.0:{port}", "--api-token-file", str(token),
                "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            ],
            env={},
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        config = tmp_path / "kubeconfig"
        config.write_text(made.stdout)
        assert f"https://127.0.0.1:{port}" in made.stdout and "t0ken-for-tests" in made.stdout
        kubectl = require_binary("kubectl", "install kubectl")

        async def listed() -> bool:
            result = await akubectl(kubectl, config, "get", "pods", "-o", "name", check=False)
            return result.returncode == 0 and "pod/web-" in result.stdout

        await eventually(listed, timeout=60, what="kubectl over HTTPS with the token")
        wrong = tmp_path / "wrong"
        wrong.write_text(made.stdout.replace("t0ken-for-tests", "not-the-token"))
        refused = await akubectl(kubectl, wrong, "get", "pods", check=False)
        assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr
        plain = tmp_path / "plain"
        plain.write_text(made.stdout.replace("https://", "http://"))
        assert (await akubectl(kubectl, plain, "get", "pods", check=False)).returncode != 0
    finally:
        await running.shutdown()
        kill_processes_under(tmp_path)

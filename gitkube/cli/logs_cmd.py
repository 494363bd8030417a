"""`gitkube logs POD`: a container's output, from the runtime that ran it.

The pod's ``status.containerStatuses`` names the container attempt
(``docker://<id>`` or ``process://<id>``; ``--previous``: the attempt
before). The log is read on this machine: from the Docker engine, or from
the process runtime's state directory that the node's agent recorded on its
Node. A log kept on another machine is an error that says where it is.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from gitkube.api.objects import ContainerStatus, Node, Pod
from gitkube.cli.app import StoreOpt, app, resolve_store, run_async
from gitkube.errors import GitkubeError, NotFound
from gitkube.nodes.podstatus import split_container_id
from gitkube.nodes.registration import AGENT_HOSTNAME, AGENT_STATE_DIR
from gitkube.nodes.runtime.base import Runtime
from gitkube.store.objects import ObjectStore


class LogsError(GitkubeError):
    """The log cannot be read (no such pod or container, or it is elsewhere)."""


@app.command("logs")
def logs_command(
    pod: Annotated[str, typer.Argument(help="pod name (or namespace/name)")],
    container: Annotated[
        str, typer.Option("--container", "-c", help="container (needed when the pod has several)")
    ] = "",
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="namespace")] = "default",
    tail: Annotated[int | None, typer.Option("--tail", help="only the last N lines", min=0)] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing what the container writes")
    ] = False,
    previous: Annotated[
        bool, typer.Option("--previous", "-p", help="the attempt before the current one")
    ] = False,
    store: StoreOpt = "",
) -> None:
    """Print a container's log (stdout and stderr), on either runtime."""
    if "/" in pod:
        namespace, _, pod = pod.partition("/")
    run_async(
        lambda: _print_logs(
            resolve_store(store),
            namespace,
            pod,
            container=container,
            tail=tail,
            follow=follow,
            previous=previous,
        )
    )


def pick_container(pod: Pod, container: str) -> str:
    names = [c.name for c in pod.spec.containers]
    if container:
        if container not in names:
            raise LogsError(
                f"pod {pod.namespace}/{pod.name} has no container {container!r}; "
                f"its containers: {', '.join(names)}"
            )
        return container
    if len(names) != 1:
        raise LogsError(
            f"pod {pod.namespace}/{pod.name} has {len(names)} containers; choose one with "
            f"-c: {', '.join(names)}"
        )
    return names[0]


def attempt_id(pod: Pod, name: str, *, previous: bool) -> str:
    """The ``containerID`` URI of the attempt whose log is wanted."""
    status: ContainerStatus | None = next(
        (cs for cs in pod.status.container_statuses if cs.name == name), None
    )
    where = f"container {name!r} of pod {pod.namespace}/{pod.name}"
    if status is None:
        raise LogsError(f"{where} has not been started (pod phase {pod.status.phase})")
    if previous:
        term = status.last_state.terminated
        if term is None or not term.container_id:
            raise LogsError(
                f"{where} has no previous attempt (restartCount {status.restart_count})"
            )
        return term.container_id
    if status.container_id:
        return status.container_id
    waiting = status.state.waiting
    reason = f": {waiting.reason} {waiting.message}".rstrip() if waiting else ""
    raise LogsError(f"{where} has not been started{reason}")


async def open_log(
    objects: ObjectStore, namespace: str, name: str, *, container: str, previous: bool
) -> tuple[Runtime, str, str]:
    """The runtime holding a container attempt's log on this machine, the
    attempt's id in it, and a description of where it is. The caller closes
    the runtime. ``LogsError`` when the log is elsewhere or does not exist."""
    pod = await objects.get(Pod, namespace, name)
    if pod is None:
        raise NotFound(f"pod {namespace}/{name} not found in {objects.store.url}")
    cname = pick_container(pod, container)
    uri = attempt_id(pod, cname, previous=previous)
    node = await objects.get(Node, "", pod.spec.node_name) if pod.spec.node_name else None
    runtime_name, cid = split_container_id(uri)
    annotations = node.metadata.annotations if node is not None else {}
    host = annotations.get(AGENT_HOSTNAME, "")
    elsewhere = bool(host) and host != socket.gethostname()
    where = f"node {pod.spec.node_name}" + (f" (host {host})" if host else "")
    if elsewhere:
        raise LogsError(
            f"the log of {namespace}/{name}/{cname} is on {where}; run `gitkube logs` there"
        )
    runtime = await _runtime_for(runtime_name, pod.spec.node_name, annotations, where)
    return runtime, cid, f"{namespace}/{name}/{cname} on {where}"


async def _print_logs(
    url: str,
    namespace: str,
    name: str,
    *,
    container: str,
    tail: int | None,
    follow: bool,
    previous: bool,
) -> None:
    from gitkube.store.factory import open_store

    store = await open_store(url)
    try:
        runtime, cid, where = await open_log(
            ObjectStore(store), namespace, name, container=container, previous=previous
        )
    finally:
        await store.close()
    out = sys.stdout.buffer
    try:
        async for chunk in runtime.logs(cid, tail=tail, follow=follow):
            out.write(chunk)
            if follow:
                out.flush()
    except GitkubeError as exc:
        raise LogsError(f"{where}: {exc}") from exc
    finally:
        out.flush()
        await runtime.close()


async def _runtime_for(
    runtime_name: str, node_name: str, annotations: dict[str, str], where: str
) -> Runtime:
    from gitkube.nodes.runtime import make_runtime
    from gitkube.nodes.runtime.process import ProcessRuntime, default_state_dir

    if runtime_name == "process":
        state_dir = annotations.get(AGENT_STATE_DIR) or str(default_state_dir(node_name))
        if not Path(state_dir, "containers").is_dir():
            raise LogsError(f"no process runtime state at {state_dir} for {where} on this machine")
        return ProcessRuntime(node_name=node_name, state_dir=Path(state_dir))
    if runtime_name == "docker":
        try:
            return await make_runtime("docker", node_name=node_name)
        except GitkubeError as exc:
            raise LogsError(f"the log is in Docker on {where}, and {exc}") from exc
    raise LogsError(f"unknown runtime {runtime_name!r} in the container id")

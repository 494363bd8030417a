"""The Docker runtime: pods as a sandbox (pause) container plus the pod's
containers joined to its network namespace, as kubelet's dockershim did;
a pod of one container (no init containers) has no pause container: its
container owns the network and the published ports itself, as compose runs
a service (``Sandbox.shared`` False; the sandbox is then only a name,
``self:<pod uid>``, on the pod's containers). Such a sandbox does not fit
the pod once it has more containers, and the agent replaces it.

Starts (create + start, and the inspect that reads a new network's address
and ports) are bounded: at most ``start_parallelism`` at once, a number
sized by ``bench/engine.py`` (the engine serialises much of the work, and
more in flight only makes every start slower). Container changes are
reported from the engine's event stream (``events``), so the agent relists
when something happens instead of polling often.

Every blocking docker SDK call runs in this runtime's own thread pool (wide
enough that 20 pods start concurrently: the default executor has only
``cpu + 4`` threads) and uses the low-level API client, which makes one HTTP
request per operation.

Sandbox image: no registry may be reachable, so by default the sandbox runs
``gitkube/pause:latest``, built locally on first use by ``docker import`` of
the host's static busybox (``sh`` waiting on ``sleep``, exiting on SIGTERM).
Pass ``sandbox_image`` to use another one (for example ``registry.k8s.io/pause``
where it is available).

Images: a missing image is looked up locally first, then pulled with a short
timeout; failing both is ``ContainerStartError("ErrImagePull", …)``.

Library exceptions are translated here: callers see ``ContainerStartError``
from ``start_container`` and ``RuntimeErrorBase`` from the rest, never a
``docker.errors`` type.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import math
import os
import signal
import tarfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import docker.utils
import requests.exceptions
import urllib3.exceptions

from gitkube.api.objects import Container, Pod
from gitkube.errors import RuntimeErrorBase
from gitkube.nodes.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_CONTAINER_NAME,
    LABEL_NODE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_SANDBOX,
    LABEL_SANDBOX_ID,
    ContainerRunState,
    ContainerStartError,
    Mount,
    RuntimeContainer,
    Sandbox,
    port_key,
    shared_sandbox_needed,
)
from gitkube.nodes.runtime.envvars import (
    container_argv,
    container_environment,
    port_environment,
)

T = TypeVar("T")

DEFAULT_SANDBOX_IMAGE = "gitkube/pause:latest"
#: the sandbox id of a pod whose one container owns its network: prefix + pod uid
SELF_SANDBOX_PREFIX = "self:"
#: create+start calls in flight at once (bench/engine.py on 2 CPUs: 1 in
#: flight is 2.6x slower than 6-12, which are alike; beyond, calls only queue
#: inside the engine; gitkube's starts also inspect, so the middle: 8)
DEFAULT_START_PARALLELISM = 8
#: the engine's container events that change what the agent sees
_EVENT_ACTIONS = ("start", "die", "destroy", "oom")
#: the pause command: PID 1 exits at once on SIGTERM/SIGINT (a bare `sleep`
#: as PID 1 would ignore SIGTERM and make every stop wait for the grace period)
PAUSE_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; sleep 2147483647 & wait"]

#: the container's creation time, kept with its inspected state
_CREATED = "gitkube.Created"
#: its address and published ports (NetworkSettings.Ports), kept likewise
_NETWORK = "gitkube.Network"
_STATE_MAP: dict[str, ContainerRunState] = {
    "created": "created",
    "running": "running",
    "paused": "running",
    "restarting": "running",
    "removing": "exited",
    "exited": "exited",
    "dead": "exited",
}


def parse_docker_time(value: str | None) -> float | None:
    """Unix time of Docker's RFC 3339 timestamps (nanoseconds, ``Z``); the
    zero time ``0001-01-01T00:00:00Z`` is None."""
    if not value or value.startswith("0001-01-01"):
        return None
    text = value.rstrip("Z")
    offset = "+00:00"
    for sign in ("+", "-"):
        pos = text.rfind(sign)
        if pos > 10:  # a "+hh:mm" / "-hh:mm" suffix after the time
            text, offset = text[:pos], text[pos:]
            break
    if "." in text:
        main, frac = text.split(".", 1)
        text = f"{main}.{frac[:6].ljust(6, '0')}"
    try:
        return datetime.fromisoformat(text + offset).timestamp()
    except ValueError:
        return None


def container_name(pod: Pod, container: str, attempt: int) -> str:
    """kubelet's naming, so `docker ps` reads the same: k8s_<container>_<pod>_<ns>_<uid>_<n>."""
    meta = pod.metadata
    return f"k8s_{container}_{meta.name}_{meta.namespace}_{meta.uid}_{attempt}"


def resource_options(container: Container) -> dict[str, Any]:
    """cpu/memory limits and cpu request as Docker host-config options."""
    options: dict[str, Any] = {}
    cpu_limit = container.resources.limit_cpu()  # millicores
    if cpu_limit:
        options["nano_cpus"] = cpu_limit * 1_000_000
    cpu_request = container.resources.request_cpu()
    if cpu_request:
        # kubelet's MilliCPUToShares: 1024 shares per core, at least 2
        options["cpu_shares"] = max(2, cpu_request * 1024 // 1000)
    memory = container.resources.limit_memory()
    if memory:
        options["mem_limit"] = memory
    return options


def build_pause_tar(busybox: Path) -> bytes:
    """A root file system with a static busybox and the two applets the pause needs."""
    data = busybox.read_bytes()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("bin", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size = len(data)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in ("sh", "sleep"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


class DockerRuntime:
    """Pods on a Docker engine. One instance per node; a new instance adopts
    what an earlier one started (everything is found again by labels)."""

    name = "docker"

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        node_name: str,
        sandbox_image: str | None = None,
        busybox_path: Path = Path("/bin/busybox"),
        pull_timeout: float = 10.0,
        max_workers: int = 32,
        docker_url: str | None = None,
        pods_dir: Path | None = None,
        sandboxless: bool = True,
        start_parallelism: int = DEFAULT_START_PARALLELISM,
    ) -> None:
        from gitkube.nodes.runtime.process import default_state_dir

        self.client = client
        #: the pods' volumes, bind-mounted into their containers (the engine
        #: must run on this machine, as it does for published host ports)
        self.pods_dir = Path(pods_dir or default_state_dir(node_name) / "pods").resolve()
        #: the engine's address for the pull client (None: DOCKER_HOST or the local socket)
        self.docker_url = docker_url
        self.api = client.api
        self.node_name = node_name
        self.sandbox_image = sandbox_image or DEFAULT_SANDBOX_IMAGE
        self._build_sandbox_image = sandbox_image is None
        self.busybox_path = busybox_path
        self.pull_timeout = pull_timeout
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"docker-{node_name}"
        )
        #: single-container pods run without a pause container
        self.sandboxless = sandboxless
        self.start_parallelism = max(1, start_parallelism)
        self._start_slots: asyncio.Semaphore | None = None
        self._sandbox_image_ready = False
        self._sandbox_image_lock = asyncio.Lock()
        self._image_locks: dict[str, asyncio.Lock] = {}
        #: id -> (docker State, finished fields from inspect); finished fields
        #: never change for a given state, so list_containers inspects each
        #: container once per state, not on every call
        self._inspected: dict[str, tuple[str, dict[str, Any]]] = {}
        #: containers the event stream reported changed since they were last inspected
        self._changed: set[str] = set()
        #: containers created by start_container whose start has not returned
        #: yet: a relist meanwhile takes their state from the listing, not an
        #: inspect (start_container inspects them itself, or fails)
        self._starting: set[str] = set()
        self._closed = False

    @classmethod
    def connect(
        cls,
        *,
        node_name: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_pool_size: int = 32,
        **kwargs: Any,
    ) -> DockerRuntime:
        """A runtime on the engine at ``base_url`` (default: DOCKER_HOST or the local socket)."""
        try:
            if base_url:
                client = docker.DockerClient(
                    base_url=base_url, timeout=int(timeout), max_pool_size=max_pool_size
                )
            else:
                client = docker.from_env(timeout=int(timeout), max_pool_size=max_pool_size)
            client.ping()
        except docker.errors.DockerException as exc:
            raise RuntimeErrorBase(f"cannot reach the Docker engine: {exc}") from exc
        return cls(client, node_name=node_name, docker_url=base_url, **kwargs)

    # ------------------------------------------------------------ plumbing

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._closed:
            raise RuntimeErrorBase("the Docker runtime is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )
        except docker.errors.DockerException:
            raise  # translated by the caller, which knows what failed
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise RuntimeErrorBase(f"the Docker engine did not answer: {exc}") from exc

    async def _start_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``_call`` of a create/start, at most ``start_parallelism`` at once."""
        if self._start_slots is None:
            self._start_slots = asyncio.Semaphore(self.start_parallelism)
        async with self._start_slots:
            return await self._call(fn, *args, **kwargs)

    def _labels(self, pod: Pod) -> dict[str, str]:
        return {
            LABEL_POD_NAME: pod.metadata.name,
            LABEL_POD_NAMESPACE: pod.metadata.namespace,
            LABEL_POD_UID: pod.metadata.uid,
            LABEL_NODE: self.node_name,
        }

    def _create_replacing(self, name: str, **kwargs: Any) -> str:
        """create_container; a leftover of the same name (a start interrupted
        before the agent recorded it) is removed first."""
        try:
            return str(self.api.create_container(name=name, **kwargs)["Id"])
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
        with contextlib.suppress(docker.errors.NotFound):
            self.api.remove_container(name, force=True, v=True)
        return str(self.api.create_container(name=name, **kwargs)["Id"])

    # ------------------------------------------------------------ images

    async def ensure_sandbox_image(self) -> None:
        """Build ``gitkube/pause:latest`` from the host's busybox if it is absent."""
        if self._sandbox_image_ready:
            return
        async with self._sandbox_image_lock:
            if self._sandbox_image_ready:
                return
            if await self._image_present(self.sandbox_image):
                self._sandbox_image_ready = True
                return
            if not self._build_sandbox_image:
                try:
                    await self._pull(self.sandbox_image)
                except RuntimeErrorBase as exc:
                    raise RuntimeErrorBase(
                        f"sandbox image {self.sandbox_image!r} is not present and "
                        f"cannot be pulled: {exc}"
                    ) from exc
                self._sandbox_image_ready = True
                return
            if not self.busybox_path.is_file():
                raise RuntimeErrorBase(
                    f"cannot build the sandbox image {self.sandbox_image}: "
                    f"{self.busybox_path} is missing (install busybox-static, "
                    "or pass sandbox_image)"
                )
            tar = await asyncio.to_thread(build_pause_tar, self.busybox_path)
            repository, _, tag = self.sandbox_image.rpartition(":")
            try:
                await self._call(
                    self.api.import_image_from_data,
                    tar,
                    repository=repository,
                    tag=tag,
                    changes=["ENV PATH=/bin"],
                )
            except docker.errors.APIError as exc:
                raise RuntimeErrorBase(
                    f"cannot build the sandbox image {self.sandbox_image}: {exc}"
                ) from exc
            self._sandbox_image_ready = True

    async def _image_present(self, image: str) -> bool:
        try:
            await self._call(self.api.inspect_image, image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            raise RuntimeErrorBase(f"cannot inspect image {image!r}: {exc}") from exc

    async def _pull(self, image: str) -> None:
        repository, tag = _split_image(image)

        def pull() -> None:
            # a client of its own, so the short timeout bounds the pull alone
            timeout = max(1, math.ceil(self.pull_timeout))
            if self.docker_url:
                puller = docker.APIClient(base_url=self.docker_url, timeout=timeout)
            else:
                puller = docker.APIClient(timeout=timeout, **docker.utils.kwargs_from_env())
            try:
                for event in puller.pull(repository, tag=tag, stream=True, decode=True):
                    if isinstance(event, dict) and event.get("error"):
                        raise RuntimeErrorBase(str(event["error"]))
            finally:
                puller.close()

        try:
            await asyncio.wait_for(self._call(pull), timeout=self.pull_timeout + 1)
        except TimeoutError as exc:
            raise RuntimeErrorBase(f"pull timed out after {self.pull_timeout:g}s") from exc
        except docker.errors.DockerException as exc:
            raise RuntimeErrorBase(_docker_message(exc)) from exc
        except OSError as exc:  # requests' timeouts and connection errors
            raise RuntimeErrorBase(str(exc)) from exc

    async def ensure_image(self, image: str) -> None:
        """The image is present locally, pulled if needed; else ErrImagePull."""
        if not image:
            raise ContainerStartError("InvalidImageName", "the container has no image")
        lock = self._image_locks.setdefault(image, asyncio.Lock())
        async with lock:
            if await self._image_present(image):
                return
            try:
                await self._pull(image)
            except RuntimeErrorBase as exc:
                raise ContainerStartError(
                    "ErrImagePull",
                    f"image {image!r} is not present on node {self.node_name} "
                    f"and could not be pulled: {exc}",
                ) from exc
            if not await self._image_present(image):
                raise ContainerStartError(
                    "ErrImagePull", f"image {image!r} is not present after pulling it"
                )

    # ------------------------------------------------------------ sandboxes

    async def start_sandbox(self, pod: Pod, *, node_address: str) -> Sandbox:
        if self.sandboxless and not shared_sandbox_needed(pod):
            # nothing to create: the container, when it starts, owns the network
            return Sandbox(
                id=SELF_SANDBOX_PREFIX + pod.metadata.uid,
                pod_uid=pod.metadata.uid,
                pod_namespace=pod.metadata.namespace,
                pod_name=pod.metadata.name,
                ip="",
                running=True,
                shared=False,
                bind_address=node_address,
            )
        await self.ensure_sandbox_image()
        labels = self._labels(pod) | {LABEL_SANDBOX: "true"} | _port_labels(pod)
        exposed, bindings = _port_bindings(pod, node_address)
        name = container_name(pod, "POD", 0)

        def create_and_start() -> dict[str, Any]:
            host_config = self.api.create_host_config(port_bindings=bindings)
            sandbox_id = self._create_replacing(
                name,
                image=self.sandbox_image,
                command=PAUSE_COMMAND,
                hostname=_hostname(pod.metadata.name),
                labels=labels,
                ports=exposed,
                host_config=host_config,
            )
            try:
                self.api.start(sandbox_id)
                return dict(self.api.inspect_container(sandbox_id))
            except BaseException:
                with contextlib.suppress(docker.errors.APIError):
                    self.api.remove_container(sandbox_id, force=True)
                raise

        try:
            info = await self._start_call(create_and_start)
        except docker.errors.APIError as exc:
            raise RuntimeErrorBase(
                f"cannot start the sandbox of pod {pod.metadata.namespace}/{pod.metadata.name}: "
                f"{_docker_message(exc)}"
            ) from exc
        return self._sandbox_from_inspect(info, pod)

    def _sandbox_from_inspect(self, info: dict[str, Any], pod: Pod) -> Sandbox:
        labels = info.get("Config", {}).get("Labels") or {}
        return Sandbox(
            id=str(info["Id"]),
            pod_uid=labels.get(LABEL_POD_UID, pod.metadata.uid),
            pod_namespace=labels.get(LABEL_POD_NAMESPACE, pod.metadata.namespace),
            pod_name=labels.get(LABEL_POD_NAME, pod.metadata.name),
            ip=str(info.get("NetworkSettings", {}).get("IPAddress") or ""),
            host_ports=_inspected_host_ports(info, pod),
            running=bool(info.get("State", {}).get("Running")),
        )

    async def list_sandboxes(self) -> list[Sandbox]:
        sandboxes, _containers = await self.list_pods()
        return sandboxes

    async def list_pods(self) -> tuple[list[Sandbox], list[RuntimeContainer]]:
        """Sandboxes and containers from one listing of the engine."""
        entries = await self._list({})
        containers = await self._containers_of(entries)  # inspects what changed
        return _sandboxes_of(entries, self._inspected), containers

    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Remove the sandbox and whatever containers of the pod are left in it."""
        members = await self._list({LABEL_SANDBOX_ID: sandbox_id})

        async def remove(container_id: str) -> None:
            await self.remove_container(container_id)

        await asyncio.gather(*(remove(str(m["Id"])) for m in members))
        if not sandbox_id.startswith(SELF_SANDBOX_PREFIX):
            await self.remove_container(sandbox_id)

    # ------------------------------------------------------------ containers

    async def start_container(
        self,
        pod: Pod,
        sandbox: Sandbox,
        container: Container,
        *,
        attempt: int,
        mounts: Sequence[Mount] = (),
    ) -> RuntimeContainer:
        if not container.image:
            raise ContainerStartError("InvalidImageName", "the container has no image")
        env = container_environment(container, port_environment(container, {}))
        command, args = container_argv(container, env)
        labels = self._labels(pod) | {
            LABEL_CONTAINER_NAME: container.name,
            LABEL_ATTEMPT: str(attempt),
            LABEL_SANDBOX_ID: sandbox.id,
        }
        name = container_name(pod, container.name, attempt)
        # a sandbox that is not shared: the container owns the network and ports
        network: dict[str, Any] = {"network_mode": f"container:{sandbox.id}"}
        exposed: dict[str, Any] = {}
        if not sandbox.shared:
            ports, bindings = _port_bindings(pod, sandbox.bind_address or "127.0.0.1")
            network = {"port_bindings": bindings}
            exposed = {"ports": ports, "hostname": _hostname(pod.metadata.name)}
            labels |= _port_labels(pod) | {LABEL_BIND_ADDRESS: sandbox.bind_address}

        created: list[str] = []

        def create_and_start() -> tuple[str, dict[str, Any]]:
            host_config = self.api.create_host_config(
                binds=[
                    f"{m.host_path}:{m.container_path}:{'ro' if m.read_only else 'rw'}"
                    for m in mounts
                ]
                or None,
                **network,
                **resource_options(container),
            )
            container_id = self._create_replacing(
                name,
                image=container.image,
                entrypoint=command or None,
                command=args or None,
                environment=env,
                working_dir=container.working_dir or None,
                labels=labels,
                host_config=host_config,
                **exposed,
            )
            created.append(container_id)
            self._starting.add(container_id)
            try:
                self.api.start(container_id)
            except docker.errors.APIError as exc:
                return container_id, {"error": exc}
            if sandbox.shared:
                return container_id, {}
            # its own network: the address and the ports the engine chose
            try:
                return container_id, {"inspect": self.api.inspect_container(container_id)}
            except docker.errors.NotFound:
                return container_id, {}  # ended and removed already: the relist tells

        # create first: when the image is present (the common case) that is
        # one request fewer than looking it up, and no lock across pods
        try:
            try:
                container_id, outcome = await self._start_call(create_and_start)
            except docker.errors.ImageNotFound:
                await self.ensure_image(container.image)
                container_id, outcome = await self._start_call(create_and_start)
        except docker.errors.ImageNotFound as exc:
            raise ContainerStartError("ErrImagePull", _docker_message(exc)) from exc
        except docker.errors.APIError as exc:
            raise ContainerStartError("CreateContainerError", _docker_message(exc)) from exc
        finally:
            self._starting.difference_update(created)
        if "error" in outcome:
            # kubelet keeps a container that failed to start (exited, 128);
            # it counts as an attempt the agent sees in list_containers
            raise ContainerStartError("RunContainerError", _docker_message(outcome["error"]))
        started_at = time.time()
        info = outcome.get("inspect")
        if info is not None:
            sandbox.ip = str(info.get("NetworkSettings", {}).get("IPAddress") or "")
            sandbox.host_ports = _inspected_host_ports(info, pod)
            state = self._remember_inspect(container_id, info)
            started_at = parse_docker_time(state.get("StartedAt")) or started_at
        return RuntimeContainer(
            id=container_id,
            pod_uid=pod.metadata.uid,
            pod_namespace=pod.metadata.namespace,
            pod_name=pod.metadata.name,
            name=container.name,
            attempt=attempt,
            state="running",
            image=container.image,
            started_at=started_at,
            sandbox_id=sandbox.id,
        )

    def _remember_inspect(
        self, container_id: str, info: dict[str, Any], state: str = ""
    ) -> dict[str, Any]:
        """Keep what an inspect says of the container's state, until its listed state changes."""
        fields = dict(info.get("State") or {})
        fields[_CREATED] = info.get("Created")
        network = info.get("NetworkSettings") or {}
        fields[_NETWORK] = (str(network.get("IPAddress") or ""), network.get("Ports") or {})
        self._inspected[container_id] = (str(fields.get("Status", state)), fields)
        return fields

    async def list_containers(self) -> list[RuntimeContainer]:
        return await self._containers_of(await self._list({}))

    async def _containers_of(self, listed: list[dict[str, Any]]) -> list[RuntimeContainer]:
        entries = [e for e in listed if not _is_sandbox(e)]
        live = {str(e["Id"]) for e in entries}
        for stale in set(self._inspected) - live:
            self._inspected.pop(stale, None)

        async def details(entry: dict[str, Any]) -> dict[str, Any]:
            cid, state = str(entry["Id"]), str(entry.get("State", ""))
            cached = self._inspected.get(cid)
            if cid in self._changed:
                self._changed.discard(cid)
            elif cid in self._starting and state in ("created", "running"):
                # being started here: start_container inspects it itself, the
                # agent acts on a listing after that, and meanwhile the listing
                # says what there is to say (an exit goes through _changed)
                return {"Status": state}
            elif cached and (
                cached[0] == state or (state == "created" and cached[0] in ("running", "exited"))
            ):
                # (a container never goes back to "created": the listing lags a start)
                return cached[1]
            try:
                info = await self._call(self.api.inspect_container, cid)
            except docker.errors.NotFound:
                return {}
            except docker.errors.APIError as exc:
                raise RuntimeErrorBase(_docker_message(exc)) from exc
            return self._remember_inspect(cid, info, state)

        states = await asyncio.gather(*(details(e) for e in entries))
        result = []
        for entry, st in zip(entries, states, strict=True):
            labels = entry.get("Labels") or {}
            status = str(st.get("Status") or entry.get("State") or "")
            # a start that failed leaves the container "created" with an error:
            # an attempt that ended, as kubelet counts it, not one still to start
            never_ran = status == "created" and bool(st.get("Error"))
            run_state = "exited" if never_ran else _STATE_MAP.get(status, "exited")
            exit_code = int(st["ExitCode"]) if run_state == "exited" and "ExitCode" in st else None
            if never_ran and not exit_code:
                exit_code = 128
            reason = ""
            if run_state == "exited":
                if st.get("OOMKilled"):
                    reason = "OOMKilled"
                elif exit_code == 0:
                    reason = "Completed"
                else:
                    reason = "Error"
                if st.get("Error"):
                    reason = "ContainerCannotRun" if exit_code else reason
            attempt = _attempt(labels)
            result.append(
                RuntimeContainer(
                    id=str(entry["Id"]),
                    pod_uid=labels.get(LABEL_POD_UID, ""),
                    pod_namespace=labels.get(LABEL_POD_NAMESPACE, ""),
                    pod_name=labels.get(LABEL_POD_NAME, ""),
                    name=labels.get(LABEL_CONTAINER_NAME, ""),
                    attempt=attempt,
                    state=run_state,
                    image=str(entry.get("Image", "")),
                    exit_code=exit_code,
                    started_at=parse_docker_time(st.get("StartedAt")),
                    finished_at=(
                        parse_docker_time(st.get("FinishedAt"))
                        or (parse_docker_time(st.get(_CREATED)) if never_ran else None)
                        if run_state == "exited"
                        else None
                    ),
                    reason=reason,
                    sandbox_id=labels.get(LABEL_SANDBOX_ID, ""),
                    message=str(st.get("Error") or ""),
                )
            )
        return result

    async def stop_container(self, container_id: str, *, grace_seconds: float) -> None:
        grace = max(0, math.ceil(grace_seconds))
        try:
            await self._call(self.api.stop, container_id, timeout=grace)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            raise RuntimeErrorBase(
                f"cannot stop container {container_id[:12]}: {_docker_message(exc)}"
            ) from exc

    async def remove_container(self, container_id: str) -> None:
        self._inspected.pop(container_id, None)
        try:
            await self._call(self.api.remove_container, container_id, force=True, v=True)
        except docker.errors.NotFound:
            return
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and "already in progress" in str(exc):
                return
            raise RuntimeErrorBase(
                f"cannot remove container {container_id[:12]}: {_docker_message(exc)}"
            ) from exc

    async def exec(self, container_id: str, command: list[str], *, timeout: float) -> int:
        """Run ``command`` in the container; raises ``TimeoutError`` after
        ``timeout`` seconds (the process is killed when the engine runs on this host)."""
        try:
            exec_id = await self._call(
                self.api.exec_create, container_id, command, stdout=True, stderr=True
            )
        except docker.errors.APIError as exc:
            raise RuntimeErrorBase(
                f"cannot exec in container {container_id[:12]}: {_docker_message(exc)}"
            ) from exc
        eid = exec_id["Id"]
        try:
            await asyncio.wait_for(self._call(self.api.exec_start, eid), timeout=timeout)
        except TimeoutError:
            with contextlib.suppress(Exception):
                pid = int((await self._call(self.api.exec_inspect, eid)).get("Pid") or 0)
                if pid > 0:
                    os.kill(pid, signal.SIGKILL)
            raise
        except docker.errors.APIError as exc:
            raise RuntimeErrorBase(
                f"cannot exec in container {container_id[:12]}: {_docker_message(exc)}"
            ) from exc
        info = await self._call(self.api.exec_inspect, eid)
        code = info.get("ExitCode")
        return int(code) if code is not None else -1

    async def logs(
        self,
        container_id: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> AsyncIterator[bytes]:
        """The container's output; with ``follow`` until the container ends or
        the caller stops iterating."""
        tail_arg: int | str = "all" if tail is None else max(0, tail)
        if not follow:
            try:
                data = await self._call(
                    self.api.logs,
                    container_id,
                    stream=False,
                    follow=False,
                    tail=tail_arg,
                    timestamps=timestamps,
                )
            except docker.errors.NotFound as exc:
                raise RuntimeErrorBase(f"no container {container_id[:12]}") from exc
            except docker.errors.APIError as exc:
                raise RuntimeErrorBase(_docker_message(exc)) from exc
            if data:
                yield bytes(data)
            return
        try:
            stream = await self._call(
                self.api.logs,
                container_id,
                stream=True,
                follow=True,
                tail=tail_arg,
                timestamps=timestamps,
            )
        except docker.errors.NotFound as exc:
            raise RuntimeErrorBase(f"no container {container_id[:12]}") from exc
        except docker.errors.APIError as exc:
            raise RuntimeErrorBase(_docker_message(exc)) from exc
        try:
            async for chunk in _follow(stream, f"logs-{container_id[:12]}"):
                yield bytes(chunk)
        except _StreamFailed as exc:
            raise RuntimeErrorBase(f"log stream failed: {exc.cause}") from exc.cause

    def events(self) -> AsyncIterator[str] | None:
        """The uids of this node's pods whose containers start, end or go,
        from the engine's event stream; first ``""`` once the stream is open
        (what happened before it is for a relist to find)."""
        return self._events()

    async def _events(self) -> AsyncIterator[str]:
        filters = {
            "type": ["container"],
            "label": [f"{LABEL_NODE}={self.node_name}"],
            "event": list(_EVENT_ACTIONS),
        }
        try:
            # a client of its own without a read timeout: the stream is quiet
            # for as long as nothing happens
            client = await asyncio.to_thread(self._event_client)
            stream = await asyncio.to_thread(client.events, decode=True, filters=filters)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
            raise RuntimeErrorBase(f"cannot follow the engine's events: {exc}") from exc
        try:
            yield ""
            async for event in _follow(stream, f"events-{self.node_name}"):
                actor = (event or {}).get("Actor") or {}
                uid = (actor.get("Attributes") or {}).get(LABEL_POD_UID, "")
                if not uid:
                    continue
                action, cid = (event or {}).get("Action"), str(actor.get("ID") or "")
                if action in ("die", "oom"):
                    # the engine reports an exit before its listing shows it:
                    # the next listing inspects the container afresh
                    self._changed.add(cid)
                elif action == "start" and self._own_start(cid):
                    continue  # start_container reports it: no relist for it
                yield str(uid)
        except _StreamFailed as exc:
            raise RuntimeErrorBase(f"the engine's event stream failed: {exc.cause}") from exc.cause
        finally:
            with contextlib.suppress(Exception):
                stream.close()
            with contextlib.suppress(Exception):
                client.close()

    def _own_start(self, container_id: str) -> bool:
        """Whether start_container started this container (and is starting or
        has inspected it, running)."""
        if container_id in self._starting:
            return True
        cached = self._inspected.get(container_id)
        return cached is not None and cached[0] == "running"

    def _event_client(self) -> docker.APIClient:
        if self.docker_url:
            return docker.APIClient(base_url=self.docker_url, timeout=None)
        return docker.APIClient(timeout=None, **docker.utils.kwargs_from_env())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.client.close)

    # ------------------------------------------------------------ listing

    async def _list(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        wanted = [f"{LABEL_NODE}={self.node_name}"] + [f"{k}={v}" for k, v in labels.items()]
        try:
            entries = await self._call(self.api.containers, all=True, filters={"label": wanted})
        except docker.errors.APIError as exc:
            raise RuntimeErrorBase(f"cannot list containers: {_docker_message(exc)}") from exc
        return [dict(e) for e in entries]


class _StreamFailed(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def _follow(stream: Any, name: str) -> AsyncIterator[Any]:
    """The items of a blocking stream of the SDK (a log or the events), read
    by a thread of its own (not the pool: a stream may last as long as the
    engine runs); ``_StreamFailed`` when reading fails. Leaving the
    iteration closes the stream, which ends the thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)
    stopped = threading.Event()
    end = object()

    def put(item: Any) -> None:
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        with contextlib.suppress(Exception):
            fut.result()

    def pump() -> None:
        try:
            for item in stream:
                if stopped.is_set():
                    break
                put(item)
        except BaseException as exc:  # handed to the reader
            if not stopped.is_set():
                put(_StreamFailed(exc))
        finally:
            if not stopped.is_set():
                put(end)

    threading.Thread(target=pump, name=name, daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is end:
                return
            if isinstance(item, _StreamFailed):
                raise item
            yield item
    finally:
        stopped.set()
        with contextlib.suppress(Exception):
            stream.close()
        while not queue.empty():
            queue.get_nowait()


#: on a sandbox: the port keys it publishes, so a listing (which has no
#: container names) can rebuild ``Sandbox.host_ports``
LABEL_PORT_KEYS = "io.gitkube.sandbox.ports"


def _port_keys_label(labels: dict[str, str]) -> list[str]:
    value = labels.get(LABEL_PORT_KEYS, "")
    return [k for k in value.split(",") if k.count("/") == 2]


#: on a container that owns its network: the address its ports are published on
LABEL_BIND_ADDRESS = "io.gitkube.sandbox.bind-address"


def _port_labels(pod: Pod) -> dict[str, str]:
    keys = sorted(
        port_key(c.name, p.container_port, p.protocol) for c in pod.spec.containers for p in c.ports
    )
    return {LABEL_PORT_KEYS: ",".join(keys)} if keys else {}


def _port_bindings(
    pod: Pod, node_address: str
) -> tuple[list[tuple[int, str]], dict[str, tuple[str, int | None]]]:
    """The pod's container ports as Docker's exposed ports and port bindings
    (``hostPort`` when given, otherwise one the engine picks, on ``hostIP``
    or the node address)."""
    exposed: list[tuple[int, str]] = []
    bindings: dict[str, tuple[str, int | None]] = {}
    for container in pod.spec.containers:
        for port in container.ports:
            proto = (port.protocol or "TCP").lower()
            key = f"{port.container_port}/{proto}"
            if key in bindings:
                continue
            exposed.append((port.container_port, proto))
            bindings[key] = (port.host_ip or node_address, port.host_port or None)
    return exposed, bindings


def _inspected_host_ports(info: dict[str, Any], pod: Pod) -> dict[str, int]:
    """port_key -> host port, from an inspect of the container that publishes them."""
    published = (info.get("NetworkSettings") or {}).get("Ports") or {}
    return _published_ports(_port_labels(pod), published)


def _published_ports(labels: dict[str, str], published: dict[str, Any]) -> dict[str, int]:
    """port_key -> host port, from an inspect's NetworkSettings.Ports."""
    ports: dict[str, int] = {}
    for key in _port_keys_label(labels):
        _container, cport, proto = key.split("/")
        entries = published.get(f"{cport}/{proto.lower()}") or []
        if entries:
            ports[key] = int(entries[0]["HostPort"])
    return ports


def _listed_network(entry: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """A listed container's address and published ports (by the port keys it carries)."""
    labels = entry.get("Labels") or {}
    published = {
        f"{p['PrivatePort']}/{p['Type']}": int(p["PublicPort"])
        for p in entry.get("Ports") or []
        if p.get("PublicPort")
    }
    ports: dict[str, int] = {}
    for key in _port_keys_label(labels):
        _container, cport, proto = key.split("/")
        host = published.get(f"{cport}/{proto.lower()}")
        if host:
            ports[key] = host
    networks = (entry.get("NetworkSettings") or {}).get("Networks") or {}
    ip = next((str(n.get("IPAddress") or "") for n in networks.values()), "")
    return ip, ports


def _sandboxes_of(
    entries: list[dict[str, Any]], inspected: dict[str, tuple[str, dict[str, Any]]]
) -> list[Sandbox]:
    """The sandboxes in a listing: pause containers, and the sandboxes that
    are only a name on a single-container pod's containers (running while
    any attempt is left; the address and ports of the running attempt, from
    its inspect when there is one: the engine's listing lags a start)."""
    sandboxes = []
    owned: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        labels = entry.get("Labels") or {}
        if not _is_sandbox(entry):
            sandbox_id = labels.get(LABEL_SANDBOX_ID, "")
            if sandbox_id.startswith(SELF_SANDBOX_PREFIX):
                owned.setdefault(sandbox_id, []).append(entry)
            continue
        ip, ports = _listed_network(entry)
        sandboxes.append(
            Sandbox(
                id=str(entry["Id"]),
                pod_uid=labels.get(LABEL_POD_UID, ""),
                pod_namespace=labels.get(LABEL_POD_NAMESPACE, ""),
                pod_name=labels.get(LABEL_POD_NAME, ""),
                ip=ip,
                host_ports=ports,
                running=entry.get("State") == "running",
            )
        )
    for sandbox_id, members in sorted(owned.items()):
        labels = members[0].get("Labels") or {}

        def state(entry: dict[str, Any]) -> str:
            known = inspected.get(str(entry["Id"]))
            return known[0] if known else str(entry.get("State") or "")

        running = [m for m in members if state(m) == "running"]
        ip, ports = "", {}
        if running:
            latest = max(running, key=lambda m: _attempt(m.get("Labels") or {}))
            ip, ports = _listed_network(latest)
            known = inspected.get(str(latest["Id"]))
            if known and _NETWORK in known[1]:
                ip, published = known[1][_NETWORK]
                ports = _published_ports(labels, published)
        sandboxes.append(
            Sandbox(
                id=sandbox_id,
                pod_uid=labels.get(LABEL_POD_UID, ""),
                pod_namespace=labels.get(LABEL_POD_NAMESPACE, ""),
                pod_name=labels.get(LABEL_POD_NAME, ""),
                ip=ip,
                host_ports=ports,
                running=True,
                shared=False,
                bind_address=labels.get(LABEL_BIND_ADDRESS, ""),
            )
        )
    return sandboxes


def _attempt(labels: dict[str, str]) -> int:
    try:
        return int(labels.get(LABEL_ATTEMPT, "0"))
    except ValueError:
        return 0


def _is_sandbox(entry: dict[str, Any]) -> bool:
    return (entry.get("Labels") or {}).get(LABEL_SANDBOX) == "true"


def _hostname(pod_name: str) -> str:
    return pod_name[:63] or "pod"


def _split_image(image: str) -> tuple[str, str]:
    if "@" in image:
        return image, ""
    repository, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return repository, tag


def _docker_message(exc: BaseException) -> str:
    if isinstance(exc, docker.errors.APIError):
        explanation = exc.explanation
        if isinstance(explanation, bytes):
            explanation = explanation.decode(errors="replace")
        return str(explanation or exc)
    return str(exc)

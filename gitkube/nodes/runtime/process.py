"""The process runtime: each container is a local process group, for nodes
without a Docker engine (the default when none answers).

- The container's ``command`` + ``args`` run with the pod's env and
  ``workingDir`` (default: a scratch directory of the pod under the state
  dir; with ``run_as`` the user's home, or / when it has none); the image
  is recorded, not used.
- Each containerPort gets a host port on the node address (``hostPort`` when
  given, else a free one), handed over as ``PORT`` (the first port) and
  ``PORT_<NAME>`` (named ports) — see ``envvars``.
- Every container runs under a detached supervisor (``shim.py``) that records
  its pid, exit code and finish time in the container's directory, so a new
  runtime instance (an agent that restarted) adopts the running ones and
  knows how the others ended. A container whose supervisor is gone without a
  record is killed (its whole process group) and reported as
  ``ContainerStatusUnknown`` (exit code 137), as kubelet does: no orphans.
- cpu and memory limits are recorded, not enforced.
- Volumes: a container with mounts runs in a private mount namespace of its
  own (the supervisor unshares one and bind-mounts each volume at its
  ``mountPath``, read-only when asked), so two pods may mount different files
  at the same path and nothing leaks to the host's mount table. That needs
  root (CAP_SYS_ADMIN): without it such a container fails to start with a
  reason saying so. A missing mount point is created on the host (an empty
  directory, or an empty file for a file mount), as Docker does in an image.

State dir layout::

    sandboxes/<id>/sandbox.json    pod identity and host ports
    sandboxes/<id>/work/           the pod's default working directory
    pods/<uid>/volumes/<name>/     the pod's volumes (written by the agent)
    containers/<id>/spec.json      argv, env, cwd, labels (+ shim files, see shim.py)
    containers/<id>/output.log     stdout and stderr
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import json
import os
import pwd
import shutil
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from gitkube.api.objects import Container, Pod
from gitkube.errors import ConfigError, RuntimeErrorBase
from gitkube.nodes.runtime import shim
from gitkube.nodes.runtime.base import (
    ContainerRunState,
    ContainerStartError,
    Mount,
    RuntimeContainer,
    Sandbox,
    port_key,
)
from gitkube.nodes.runtime.envvars import (
    container_argv,
    container_environment,
    port_environment,
)

LOG = "output.log"
#: variables of the agent's environment a container inherits
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: a supervisor that has not written shim.json after this long is lost
LAUNCH_GRACE = 30.0


def default_state_dir(node_name: str) -> Path:
    return Path.home() / ".gitkube" / f"node-{node_name}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _same_process(pid: int | None, created: float | None) -> bool:
    """The process ``pid`` is alive and is the one that started at ``created``."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(proc.create_time() - created) < 0.05
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _free_port(address: str, protocol: str, taken: set[tuple[str, int]]) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "UDP" else socket.SOCK_STREAM
    for _ in range(64):
        with socket.socket(family, kind) as sock:
            sock.bind((address, 0))
            port = int(sock.getsockname()[1])
        if (protocol, port) not in taken:
            return port
    raise RuntimeErrorBase(f"no free {protocol} port on {address}")


def _check_port(address: str, protocol: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_DGRAM if protocol == "UDP" else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            reason = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc}"
            raise RuntimeErrorBase(f"hostPort {port}/{protocol} on {address} {reason}") from exc


class ProcessRuntime:
    """Pods as local process groups, each under a detached supervisor."""

    name = "process"

    def __init__(
        self,
        *,
        node_name: str,
        state_dir: Path | None = None,
        run_as: str | None = None,
        python: str = sys.executable,
        start_timeout: float = 10.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.node_name = node_name
        self.state_dir = Path(state_dir or default_state_dir(node_name)).resolve()
        self.python = python
        self.start_timeout = start_timeout
        self.poll_interval = poll_interval
        self.run_as = run_as or None
        self._user: pwd.struct_passwd | None = None
        if self.run_as:
            try:
                self._user = pwd.getpwnam(self.run_as)
            except KeyError as exc:
                raise ConfigError(f"run_as: no user named {self.run_as!r} on this host") from exc
            if os.geteuid() != 0 and self._user.pw_uid != os.geteuid():
                raise ConfigError(
                    f"run_as {self.run_as!r}: the agent must run as root to start "
                    "processes as another user"
                )
            if self._user.pw_uid == os.geteuid():
                self.run_as, self._user = None, None
        self._sandboxes_dir = self.state_dir / "sandboxes"
        self._containers_dir = self.state_dir / "containers"
        self.pods_dir = self.state_dir / "pods"
        self._sandboxes_dir.mkdir(parents=True, exist_ok=True)
        self._containers_dir.mkdir(parents=True, exist_ok=True)
        self._port_lock = asyncio.Lock()

    # ------------------------------------------------------------ sandboxes

    async def start_sandbox(self, pod: Pod, *, node_address: str) -> Sandbox:
        async with self._port_lock:  # two pods must not get the same free port
            taken = {
                (key.rsplit("/", 1)[1], port)
                for sandbox in await self.list_sandboxes()
                for key, port in sandbox.host_ports.items()
            }
            host_ports: dict[str, int] = {}
            for container in pod.spec.containers:
                for p in container.ports:
                    proto = (p.protocol or "TCP").upper()
                    address = p.host_ip or node_address
                    if p.host_port:
                        if (proto, p.host_port) in taken:
                            raise RuntimeErrorBase(
                                f"hostPort {p.host_port}/{proto} is used by another pod "
                                f"on node {self.node_name}"
                            )
                        await asyncio.to_thread(_check_port, address, proto, p.host_port)
                        port = p.host_port
                    else:
                        port = await asyncio.to_thread(_free_port, address, proto, taken)
                    taken.add((proto, port))
                    host_ports[port_key(container.name, p.container_port, proto)] = port
            sandbox = Sandbox(
                id=uuid.uuid4().hex,
                pod_uid=pod.metadata.uid,
                pod_namespace=pod.metadata.namespace,
                pod_name=pod.metadata.name,
                ip=node_address,
                host_ports=host_ports,
            )
            directory = self._sandboxes_dir / sandbox.id
            work = directory / "work"
            await asyncio.to_thread(work.mkdir, parents=True)
            if self._user is not None:
                await asyncio.to_thread(os.chown, work, self._user.pw_uid, self._user.pw_gid)
            await asyncio.to_thread(
                shim.write_json,
                directory / "sandbox.json",
                {
                    "id": sandbox.id,
                    "pod_uid": sandbox.pod_uid,
                    "pod_namespace": sandbox.pod_namespace,
                    "pod_name": sandbox.pod_name,
                    "ip": sandbox.ip,
                    "host_ports": host_ports,
                    "node": self.node_name,
                    "created_at": time.time(),
                },
            )
        return sandbox

    async def list_sandboxes(self) -> list[Sandbox]:
        def scan() -> list[Sandbox]:
            found = []
            for path in sorted(self._sandboxes_dir.glob("*/sandbox.json")):
                data = _read_json(path)
                if data is None or data.get("node") != self.node_name:
                    continue
                found.append(
                    Sandbox(
                        id=str(data["id"]),
                        pod_uid=str(data.get("pod_uid", "")),
                        pod_namespace=str(data.get("pod_namespace", "")),
                        pod_name=str(data.get("pod_name", "")),
                        ip=str(data.get("ip", "")),
                        host_ports={k: int(v) for k, v in data.get("host_ports", {}).items()},
                    )
                )
            return found

        return await asyncio.to_thread(scan)

    async def list_pods(self) -> tuple[list[Sandbox], list[RuntimeContainer]]:
        sandboxes, containers = await asyncio.gather(self.list_sandboxes(), self.list_containers())
        return sandboxes, containers

    def events(self) -> AsyncIterator[str] | None:
        """None: processes are noticed by the relist (their exit files)."""
        return None

    async def remove_sandbox(self, sandbox_id: str) -> None:
        _check_id(sandbox_id)
        for container in await self.list_containers():
            if container.sandbox_id == sandbox_id:
                await self.remove_container(container.id)
        await asyncio.to_thread(shutil.rmtree, self._sandboxes_dir / sandbox_id, True)

    # ------------------------------------------------------------ containers

    def _base_env(self, pod: Pod) -> dict[str, str]:
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        env.setdefault("PATH", DEFAULT_PATH)
        env["HOME"] = self._user.pw_dir if self._user else os.environ.get("HOME", "/")
        if self._user:
            env["USER"] = env["LOGNAME"] = self._user.pw_name
        env["HOSTNAME"] = pod.metadata.name
        return env

    async def start_container(
        self,
        pod: Pod,
        sandbox: Sandbox,
        container: Container,
        *,
        attempt: int,
        mounts: Sequence[Mount] = (),
    ) -> RuntimeContainer:
        if mounts and os.geteuid() != 0:
            raise ContainerStartError(
                "CreateContainerError",
                f"container {container.name!r} mounts volumes "
                f"({', '.join(m.container_path for m in mounts)}): the process runtime "
                "mounts them in a private mount namespace, which needs the agent to run "
                "as root; run it as root or use --runtime docker",
            )
        ports = {
            p.container_port: sandbox.host_ports[key]
            for p in container.ports
            if (key := port_key(container.name, p.container_port, p.protocol)) in sandbox.host_ports
        }
        env = container_environment(
            container, self._base_env(pod) | port_environment(container, ports)
        )
        command, args = container_argv(container, env)
        argv = command + args
        if not argv:
            raise ContainerStartError(
                "CreateContainerError",
                f"container {container.name!r}: the process runtime needs a command "
                "(images are not run; set command or args)",
            )
        if container.working_dir:
            cwd = container.working_dir
        elif self._user is not None:
            cwd = self._user.pw_dir if Path(self._user.pw_dir).is_dir() else "/"
        else:
            cwd = str(self._sandboxes_dir / sandbox.id / "work")
        if not Path(cwd).is_dir():
            raise ContainerStartError(
                "CreateContainerError",
                f"container {container.name!r}: workingDir {cwd} is not a directory on node "
                f"{self.node_name}",
            )
        container_id = uuid.uuid4().hex
        directory = self._containers_dir / container_id
        spec = {
            "argv": argv,
            "env": env,
            "cwd": cwd,
            "log": str(directory / LOG),
            "user": self.run_as,
            "node": self.node_name,
            "pod_uid": pod.metadata.uid,
            "pod_namespace": pod.metadata.namespace,
            "pod_name": pod.metadata.name,
            "container": container.name,
            "attempt": attempt,
            "image": container.image,
            "sandbox_id": sandbox.id,
            "limits": dict(container.resources.limits),
            "mounts": [
                {"source": m.host_path, "target": m.container_path, "read_only": m.read_only}
                for m in mounts
            ],
            "created_at": time.time(),
        }

        def prepare() -> None:
            directory.mkdir(parents=True, mode=0o700)  # spec.json holds the env
            (directory / LOG).touch()
            shim.write_json(directory / shim.SPEC, spec)

        await asyncio.to_thread(prepare)
        launcher = await asyncio.create_subprocess_exec(
            self.python,
            "-P",  # do not put the shim's own directory (this package) on sys.path
            shim.__file__,
            str(directory),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        _, err = await launcher.communicate()
        if launcher.returncode != 0:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            raise ContainerStartError(
                "RunContainerError",
                f"cannot launch the supervisor: {err.decode(errors='replace').strip()}",
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            # EXIT first: the shim writes STATE before EXIT, so a STATE missing
            # after EXIT was seen means the command never started (read the other
            # way round, a command that starts and ends between the two reads
            # looked as if it had not started)
            ended = await asyncio.to_thread(_read_json, directory / shim.EXIT)
            state = await asyncio.to_thread(_read_json, directory / shim.STATE)
            if ended is not None and state is None:
                raise ContainerStartError(
                    "RunContainerError", str(ended.get("message") or "the command did not start")
                )
            if state is not None:
                break
            if time.monotonic() > deadline:
                await self.remove_container(container_id)
                raise ContainerStartError(
                    "RunContainerError",
                    f"the supervisor did not start the command within {self.start_timeout:g}s",
                )
            await asyncio.sleep(0.005)
        return RuntimeContainer(
            id=container_id,
            pod_uid=pod.metadata.uid,
            pod_namespace=pod.metadata.namespace,
            pod_name=pod.metadata.name,
            name=container.name,
            attempt=attempt,
            state="running",
            image=container.image,
            started_at=float(state.get("started_at") or time.time()),
            sandbox_id=sandbox.id,
        )

    def _inspect(self, directory: Path) -> RuntimeContainer | None:
        """The container in ``directory`` as it is now; a lost supervisor is
        settled here (the group killed, the loss recorded). Blocking."""
        spec = _read_json(directory / shim.SPEC)
        if spec is None or spec.get("node") != self.node_name:
            return None
        ended = _read_json(directory / shim.EXIT)
        state = _read_json(directory / shim.STATE)
        run_state: ContainerRunState = "created"
        if ended is None:
            supervisor = _read_json(directory / shim.SHIM)
            if supervisor is not None and _same_process(
                supervisor.get("pid"), supervisor.get("create_time")
            ):
                run_state = "running" if state is not None else "created"
            elif supervisor is None and time.time() - float(spec.get("created_at", 0)) < (
                LAUNCH_GRACE
            ):
                run_state = "created"
            else:
                ended = _read_json(directory / shim.EXIT) or self._settle_lost(directory, state)
        if ended is not None:
            run_state = "exited"
        container = RuntimeContainer(
            id=directory.name,
            pod_uid=str(spec.get("pod_uid", "")),
            pod_namespace=str(spec.get("pod_namespace", "")),
            pod_name=str(spec.get("pod_name", "")),
            name=str(spec.get("container", "")),
            attempt=int(spec.get("attempt", 0)),
            state=run_state,
            image=str(spec.get("image", "")),
            sandbox_id=str(spec.get("sandbox_id", "")),
        )
        if state is not None:
            container.started_at = state.get("started_at")
        if ended is not None:
            container.exit_code = int(ended.get("exit_code", 0))
            container.finished_at = ended.get("finished_at")
            container.started_at = container.started_at or ended.get("started_at")
            container.reason = str(ended.get("reason", ""))
            container.message = str(ended.get("message", ""))
        return container

    def _settle_lost(self, directory: Path, state: dict[str, Any] | None) -> dict[str, Any]:
        """The supervisor died without recording an exit: kill what is left of
        the command's group and record the loss."""
        if state is not None and _same_process(state.get("pid"), state.get("create_time")):
            _killpg(int(state["pid"]), signal.SIGKILL)
        ended = {
            "exit_code": 137,
            "signal": 0,
            "reason": "ContainerStatusUnknown",
            "message": "the container's supervisor ended without recording how the "
            "container ended; its processes were killed",
            "started_at": state.get("started_at") if state else None,
            "finished_at": time.time(),
        }
        shim.write_json(directory / shim.EXIT, ended)
        return ended

    async def list_containers(self) -> list[RuntimeContainer]:
        def scan() -> list[RuntimeContainer]:
            found = []
            for directory in sorted(self._containers_dir.iterdir()):
                if directory.is_dir():
                    container = self._inspect(directory)
                    if container is not None:
                        found.append(container)
            return found

        return await asyncio.to_thread(scan)

    async def _get(self, container_id: str) -> RuntimeContainer:
        _check_id(container_id)
        container = await asyncio.to_thread(self._inspect, self._containers_dir / container_id)
        if container is None:
            raise RuntimeErrorBase(f"no container {container_id} on node {self.node_name}")
        return container

    async def _wait_exited(self, container_id: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            container = await self._get(container_id)
            if container.state == "exited":
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.poll_interval)

    def _pid(self, container_id: str) -> int | None:
        state = _read_json(self._containers_dir / container_id / shim.STATE)
        if state is None or not _same_process(state.get("pid"), state.get("create_time")):
            return None
        return int(state["pid"])

    async def stop_container(self, container_id: str, *, grace_seconds: float) -> None:
        try:
            container = await self._get(container_id)
        except RuntimeErrorBase:
            return
        if container.state == "exited":
            return
        directory = self._containers_dir / container_id
        deadline = time.monotonic() + self.start_timeout
        while container.state == "created" and time.monotonic() < deadline:
            # the supervisor is still starting it: wait for the pid to signal
            if (directory / shim.STATE).exists():
                break
            await asyncio.sleep(self.poll_interval)
            container = await self._get(container_id)
        pid = await asyncio.to_thread(self._pid, container_id)
        if pid is not None:
            _killpg(pid, signal.SIGTERM)
            if await self._wait_exited(container_id, max(0.0, grace_seconds)):
                return
            _killpg(pid, signal.SIGKILL)
        if not await self._wait_exited(container_id, 10.0):
            raise RuntimeErrorBase(f"container {container_id} did not stop")

    async def remove_container(self, container_id: str) -> None:
        _check_id(container_id)
        directory = self._containers_dir / container_id
        if not directory.exists():
            return
        with contextlib.suppress(RuntimeErrorBase):
            await self.stop_container(container_id, grace_seconds=0)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def exec(self, container_id: str, command: list[str], *, timeout: float) -> int:
        """Run ``command`` as a local process with the container's env and cwd."""
        container = await self._get(container_id)
        if container.state != "running":
            raise RuntimeErrorBase(f"container {container_id} is not running")
        if not command:
            raise RuntimeErrorBase("exec needs a command")
        spec = await asyncio.to_thread(_read_json, self._containers_dir / container_id / shim.SPEC)
        assert spec is not None
        if spec.get("mounts"):
            # run where the container's volumes are: in its mount namespace
            pid = await asyncio.to_thread(self._pid, container_id)
            if pid is None:
                raise RuntimeErrorBase(f"container {container_id} is not running")
            prefix = ["nsenter", f"--mount=/proc/{pid}/ns/mnt", f"--wd={spec['cwd']}"]
            if self._user is not None:  # nsenter needs root; it drops to the user after
                prefix += [f"--setuid={self._user.pw_uid}", f"--setgid={self._user.pw_gid}"]
            command = [*prefix, "--", *command]
        user_kwargs: dict[str, Any] = {}
        if self._user is not None and not spec.get("mounts"):
            user_kwargs = {
                "user": self._user.pw_uid,
                "group": self._user.pw_gid,
                "extra_groups": os.getgrouplist(self._user.pw_name, self._user.pw_gid),
            }
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                env=spec["env"],
                cwd=spec["cwd"],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                **user_kwargs,
            )
        except PermissionError:
            return 126
        except (FileNotFoundError, NotADirectoryError):
            return 127
        try:
            return await asyncio.wait_for(proc.wait(), timeout=timeout)
        except TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        except asyncio.CancelledError:
            _killpg(proc.pid, signal.SIGKILL)
            await asyncio.shield(proc.wait())
            raise

    async def logs(
        self,
        container_id: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> AsyncIterator[bytes]:
        """The container's log file: the last ``tail`` lines, then with
        ``follow`` what is appended until the container ends."""
        _check_id(container_id)
        if timestamps:
            async for chunk in self._timestamped_logs(container_id, tail=tail, follow=follow):
                yield chunk
            return
        directory = self._containers_dir / container_id
        path = directory / LOG
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError as exc:
            raise RuntimeErrorBase(f"no container {container_id} on node {self.node_name}") from exc
        try:
            #: without follow, the log as it was when asked: its last ``tail``
            #: lines then, not with lines written while they are read
            end: int | None = None
            if tail is not None:
                start, end = await asyncio.to_thread(_tail_span, handle, max(0, tail))
                handle.seek(start)
            if follow:
                end = None
            while True:
                size = 65536 if end is None else min(65536, end - handle.tell())
                chunk = await asyncio.to_thread(handle.read, size) if size > 0 else b""
                if chunk:
                    yield chunk
                    continue
                if not follow:
                    return
                if not directory.exists():
                    return
                if (directory / shim.EXIT).exists() or (await self._get(container_id)).state == (
                    "exited"
                ):
                    rest = await asyncio.to_thread(handle.read)
                    if rest:
                        yield rest
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            handle.close()

    async def _timestamped_logs(
        self, container_id: str, *, tail: int | None, follow: bool
    ) -> AsyncIterator[bytes]:
        """Each line of the log with the RFC 3339 time its chunk arrived at the
        supervisor (``<log>.times``), as ``kubectl logs --timestamps`` shows."""
        path = self._containers_dir / container_id / LOG
        times_path = path.with_name(path.name + shim.TIMES_SUFFIX)
        offsets: list[int] = []
        stamps: list[float] = []
        times_read = 0

        def load_times() -> None:
            nonlocal times_read
            try:
                with open(times_path, "rb") as handle:
                    handle.seek(times_read)
                    data = handle.read()
            except FileNotFoundError:
                return
            complete = data[: data.rfind(b"\n") + 1]
            times_read += len(complete)
            for line in complete.splitlines():
                offset, _, stamp = line.partition(b" ")
                with contextlib.suppress(ValueError):
                    offsets.append(int(offset))
                    stamps.append(float(stamp))

        def stamp_of(offset: int) -> str:
            index = bisect.bisect_right(offsets, offset) - 1
            when = stamps[max(index, 0)] if stamps else time.time()
            moment = datetime.fromtimestamp(when, UTC)
            return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}000Z"

        def tail_start() -> int:
            with open(path, "rb") as handle:
                return int(_tail_offset(handle, max(0, tail or 0)))

        lines: list[tuple[int, bytes]] = []
        start = 0
        if tail is not None:
            try:
                start = await asyncio.to_thread(tail_start)
            except FileNotFoundError as exc:
                raise RuntimeErrorBase(
                    f"no container {container_id} on node {self.node_name}"
                ) from exc
        async for chunk in self.logs(container_id, tail=tail, follow=follow):
            await asyncio.to_thread(load_times)
            buffer = chunk
            out = []
            while buffer:
                end = buffer.find(b"\n")
                if end < 0:
                    lines.append((start, buffer))
                    start += len(buffer)
                    break
                line = buffer[: end + 1]
                if lines:  # a line that began in an earlier chunk
                    first, _ = lines[0]
                    line = b"".join(part for _, part in lines) + line
                    lines.clear()
                    out.append(stamp_of(first).encode() + b" " + line)
                else:
                    out.append(stamp_of(start).encode() + b" " + line)
                start += end + 1
                buffer = buffer[end + 1 :]
            if out:
                yield b"".join(out)
        if lines:
            first, _ = lines[0]
            yield stamp_of(first).encode() + b" " + b"".join(part for _, part in lines)

    async def close(self) -> None:
        """Nothing to release: the containers live on under their supervisors."""


def _check_id(value: str) -> None:
    if not value or "/" in value or value.startswith("."):
        raise RuntimeErrorBase(f"invalid id {value!r}")


def _tail_offset(handle: Any, lines: int) -> int:
    """The offset where the last ``lines`` lines of the file start."""
    return _tail_span(handle, lines)[0]


def _tail_span(handle: Any, lines: int) -> tuple[int, int]:
    """Where the last ``lines`` lines of the file start, and its end then."""
    handle.seek(0, os.SEEK_END)
    end = int(handle.tell())
    if lines == 0:
        return end, end
    pos = end
    count = 0
    block = 8192
    # a final newline ends the last line; it does not start an empty one
    if end > 0:
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            pos -= 1
    while pos > 0:
        size = min(block, pos)
        pos -= size
        handle.seek(pos)
        data = handle.read(size)
        index = len(data)
        while True:
            index = data.rfind(b"\n", 0, index)
            if index == -1:
                break
            count += 1
            if count == lines:
                return pos + index + 1, end
    return 0, end

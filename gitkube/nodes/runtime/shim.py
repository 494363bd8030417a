"""The supervisor of one process-runtime container (like conmon or
containerd-shim): ``python -P shim.py CONTAINER_DIR``.

It detaches (double fork, new session), so it outlives the agent that started
it and is never the agent's zombie; starts the container's command in a
process group of its own, with its output appended to the container's log;
waits for it; kills whatever is left in the group (no orphans); and records
the exit code and finish time. When CONTAINER_DIR is deleted under it (the
node's state removed, so no agent can adopt the container), it kills the
group. An agent that restarts reads these files to
adopt the running containers and learn how the others ended.

Files in CONTAINER_DIR (each written whole, by rename):

    spec.json   written by the runtime: argv, env, cwd, log, user, mounts
    shim.json   this supervisor's pid and create time
    state.json  the command's pid (= its process group) and create time, start time
    exit.json   exit_code, signal, reason, message, started_at, finished_at

Standard library only (psutil when importable, for create times), so it
starts fast and never imports gitkube.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SPEC = "spec.json"
SHIM = "shim.json"
STATE = "state.json"
EXIT = "exit.json"
#: how often the supervisor checks that its container directory still exists
ORPHAN_CHECK_SECONDS = 2.0


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def create_time(pid: int) -> float | None:
    """The process's start time as psutil reports it, so the runtime can tell
    this process from a later one that reuses the pid."""
    try:
        import psutil

        return float(psutil.Process(pid).create_time())
    except Exception:
        return None


def _start_failure(directory: Path, exc: OSError, log: Any) -> None:
    code = 126 if isinstance(exc, PermissionError) else 127
    message = f"cannot start the command: {exc}"
    log.write((message + "\n").encode())
    log.flush()
    now = time.time()
    write_json(
        directory / EXIT,
        {
            "exit_code": code,
            "signal": 0,
            "reason": "StartError",
            "message": message,
            "started_at": None,
            "finished_at": now,
        },
    )


CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def _libc_call(name: str, *args: Any) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    _libc_call(
        "mount",
        source.encode() if source is not None else None,
        target.encode(),
        None,
        flags,
        None,
    )


def enter_private_mounts(mounts: list[dict[str, Any]]) -> None:
    """Unshare a mount namespace for this supervisor (and so its command) and
    bind-mount each volume; nothing propagates back to the host."""
    _libc_call("unshare", CLONE_NEWNS)
    _mount(None, "/", MS_REC | MS_PRIVATE)
    for m in mounts:
        source, target = str(m["source"]), str(m["target"])
        if not os.path.exists(target):
            if os.path.isdir(source):
                os.makedirs(target, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
                open(target, "a").close()
        _mount(source, target, MS_BIND | MS_REC)
        if m.get("read_only"):
            _mount(None, target, MS_BIND | MS_REMOUNT | MS_RDONLY)


def supervise(directory: Path) -> int:
    spec = json.loads((directory / SPEC).read_text())
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    write_json(directory / SHIM, {"pid": os.getpid(), "create_time": create_time(os.getpid())})
    if spec.get("mounts"):
        try:
            enter_private_mounts(spec["mounts"])
        except OSError as exc:
            with open(spec["log"], "ab", buffering=0) as log:
                _start_failure(directory, OSError(exc.errno, f"cannot mount volumes: {exc}"), log)
            return 0

    user_kwargs: dict[str, Any] = {}
    if spec.get("user"):
        import pwd

        pw = pwd.getpwnam(spec["user"])
        user_kwargs = {
            "user": pw.pw_uid,
            "group": pw.pw_gid,
            "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid),
        }

    # SIGCHLD stays pending for sigtimedwait (the child gets an empty mask)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
    with open(spec["log"], "ab", buffering=0) as log:
        try:
            child = subprocess.Popen(
                spec["argv"],
                env=spec["env"],
                cwd=spec["cwd"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                # the default SIGINT/SIGTERM handling this supervisor turned off
                restore_signals=True,
                preexec_fn=_restore_default_signals,
                **user_kwargs,
            )
        except OSError as exc:
            _start_failure(directory, exc, log)
            return 0
        started_at = time.time()
        write_json(
            directory / STATE,
            {"pid": child.pid, "create_time": create_time(child.pid), "started_at": started_at},
        )
        # wait without reaping, so the group id cannot be reused while the
        # rest of the group is killed; a container directory that is deleted
        # (the node's state removed) means nobody can adopt the container any
        # more: end it rather than leave an orphan
        while True:
            try:
                if os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG):
                    break
            except ChildProcessError:
                break
            if not directory.is_dir():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
            signal.sigtimedwait([signal.SIGCHLD], ORPHAN_CHECK_SECONDS)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        returncode = child.wait()
        finished_at = time.time()
    signum = -returncode if returncode < 0 else 0
    exit_code = 128 + signum if signum else returncode
    if not directory.is_dir():  # removed: nobody to tell
        return 0
    write_json(
        directory / EXIT,
        {
            "exit_code": exit_code,
            "signal": signum,
            "reason": "Completed" if exit_code == 0 else "Error",
            "message": f"killed by signal {signum}" if signum else "",
            "started_at": started_at,
            "finished_at": finished_at,
        },
    )
    return 0


def _restore_default_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: shim.py CONTAINER_DIR", file=sys.stderr)
        return 2
    directory = Path(argv[0])
    # detach: the launcher exits at once (its parent reaps it), the
    # supervisor lives on in a session of its own, adopted by init
    if os.fork() > 0:
        return 0
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    with open(directory / "shim.log", "ab", buffering=0) as err:
        os.dup2(err.fileno(), 2)
        os.dup2(err.fileno(), 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    try:
        code = supervise(directory)
    except BaseException as exc:  # recorded, so the runtime can report it
        print(f"shim failed: {exc!r}", file=sys.stderr)
        if directory.is_dir() and not (directory / EXIT).exists():
            write_json(
                directory / EXIT,
                {
                    "exit_code": 128,
                    "signal": 0,
                    "reason": "StartError",
                    "message": f"supervisor failed: {exc}",
                    "started_at": None,
                    "finished_at": time.time(),
                },
            )
        code = 1
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

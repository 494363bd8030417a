"""A pod's volumes on the node's disk, written atomically (kubelet's AtomicWriter).

Layout under ``<pods_dir>/<pod uid>/volumes/<volume name>/``::

    ..2026_12_02_17_50_01.123456789/   the files of one version (keys, item paths)
    ..data -> ..2026_12_02_...          the current version
    KEY -> ..data/KEY                   one link per top-level path

An update writes a new version directory, points a temporary ``..data_tmp``
link at it and renames that over ``..data`` (one atomic step: a reader sees
the old files or the new ones, never a mix), then fixes the top-level links
and removes the old version. A container that mounts the volume directory
sees the change at once; one that mounted a single file (``subPath``) keeps
the file it got, as in Kubernetes.

The pod directory is 0700 (Secret files live here); volume directories are
0755 so a container's user can read what it mounts. Blocking: call through
``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from gitkube.nodes.podconfig import VolumeContent, VolumeFile

DATA = "..data"


def pod_dir(pods_dir: Path, pod_uid: str) -> Path:
    if not pod_uid or "/" in pod_uid or pod_uid.startswith("."):
        raise ValueError(f"invalid pod uid {pod_uid!r}")
    return pods_dir / pod_uid


def volume_dir(pods_dir: Path, pod_uid: str, volume: str) -> Path:
    if not volume or "/" in volume or volume.startswith("."):
        raise ValueError(f"invalid volume name {volume!r}")
    return pod_dir(pods_dir, pod_uid) / "volumes" / volume


def _current(target: Path) -> dict[str, tuple[bytes, int]] | None:
    """The files of the current version, or None when there is none."""
    data = target / DATA
    if not data.is_dir():
        return None
    found: dict[str, tuple[bytes, int]] = {}
    for root, _dirs, files in os.walk(data, followlinks=False):
        for name in files:
            path = Path(root) / name
            rel = path.relative_to(data).as_posix()
            st = path.lstat()
            found[rel] = (path.read_bytes(), st.st_mode & 0o7777)
    return found


def write_volume(target: Path, files: tuple[VolumeFile, ...]) -> bool:
    """Make ``target`` hold exactly ``files``; True when something changed."""
    wanted = {f.path: (f.data, f.mode) for f in files}
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o755)
    if _current(target) == wanted:
        return False
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}"
    version = target / f"..{stamp}"
    version.mkdir(mode=0o755)
    for f in files:
        path = version / f.path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f.data)
            os.fchmod(fd, f.mode)
        finally:
            os.close(fd)
    previous = os.readlink(target / DATA) if (target / DATA).is_symlink() else None
    tmp = target / f"{DATA}_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(version.name, tmp)
    os.replace(tmp, target / DATA)
    tops = {f.path.split("/", 1)[0] for f in files}
    for top in tops:
        link = target / top
        if link.is_symlink() and os.readlink(link) == f"{DATA}/{top}":
            continue
        link_tmp = target / f".{top}.tmp"
        with contextlib.suppress(FileNotFoundError):
            link_tmp.unlink()
        os.symlink(f"{DATA}/{top}", link_tmp)
        os.replace(link_tmp, link)
    for entry in target.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in tops and entry.is_symlink():
            entry.unlink()
    if previous and previous != version.name:
        shutil.rmtree(target / previous, ignore_errors=True)
    return True


def write_pod_volumes(
    pods_dir: Path, pod_uid: str, volumes: Mapping[str, VolumeContent]
) -> list[str]:
    """Write every volume of one pod; the names of those that changed."""
    base = pod_dir(pods_dir, pod_uid)
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    (base / "volumes").mkdir(exist_ok=True)
    changed: list[str] = []
    for name, content in volumes.items():
        target = volume_dir(pods_dir, pod_uid, name)
        if content.files is None:  # emptyDir: created once, then the pod's own
            if not target.is_dir():
                target.mkdir(parents=True)
                os.chmod(target, 0o777)
                changed.append(name)
            continue
        if write_volume(target, content.files):
            changed.append(name)
    return changed


def remove_pod_dir(pods_dir: Path, pod_uid: str) -> None:
    shutil.rmtree(pod_dir(pods_dir, pod_uid), ignore_errors=True)


def known_pod_uids(pods_dir: Path) -> list[str]:
    if not pods_dir.is_dir():
        return []
    return [p.name for p in pods_dir.iterdir() if p.is_dir()]

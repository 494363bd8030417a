"""Open a store from its URL.

sqlite:///abs/path/state.db          the embedded store (parent dirs are created)
etcd://host:port[,host:port...]      an etcd cluster (fails over between endpoints)
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from gitkube.errors import ConfigError
from gitkube.store.base import Store

SUPPORTED_FORMS = "sqlite:///abs/path/state.db or etcd://host:port[,host:port...]"


def _bad(url: str, why: str) -> ConfigError:
    return ConfigError(f"store URL {url!r}: {why}; supported forms: {SUPPORTED_FORMS}")


def parse_sqlite_url(url: str) -> Path:
    """The database path of a ``sqlite:///abs/path`` URL."""
    rest = url[len("sqlite://") :]
    if not rest.startswith("/") or rest == "/" or rest.endswith("/"):
        raise _bad(url, "a sqlite URL needs an absolute file path (three slashes)")
    return Path(rest)


def parse_etcd_url(url: str) -> list[tuple[str, int]]:
    """The (host, port) endpoints of an ``etcd://h:p,h:p`` URL, in order."""
    rest = url[len("etcd://") :].rstrip("/")
    if not rest:
        raise _bad(url, "an etcd URL needs at least one host:port")
    endpoints: list[tuple[str, int]] = []
    for part in rest.split(","):
        part = part.strip()
        parsed = urlsplit("//" + part)
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None or parsed.path or parsed.username:
            raise _bad(url, f"endpoint {part!r} is not host:port")
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        endpoints.append((host, port))
    return endpoints


async def open_store(url: str) -> Store:
    """Open the store at ``url``; ``ConfigError`` naming the URL if it is malformed."""
    if url.startswith("sqlite://"):
        path = parse_sqlite_url(url)
        from gitkube.store.sqlite import SQLiteStore

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _bad(url, f"cannot create {path.parent}: {exc.strerror}") from exc
        return await SQLiteStore.open(path)
    if url.startswith("etcd://"):
        endpoints = parse_etcd_url(url)
        from gitkube.store.etcd import EtcdStore

        return await EtcdStore.open(endpoints)
    raise _bad(url, "unknown scheme")

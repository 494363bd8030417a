"""open_store: URLs to backends, and a clear ConfigError for a bad URL.

- sqlite:///abs/path creates the parent directories and opens the file;
- etcd://host:port[,host:port] parses every endpoint;
- anything else names the URL and the supported forms.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gitkube.errors import ConfigError
from gitkube.store.etcd import EtcdStore
from gitkube.store.factory import SUPPORTED_FORMS, open_store, parse_etcd_url
from gitkube.store.sqlite import SQLiteStore


async def test_sqlite_url_creates_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    store = await open_store(f"sqlite://{path}")
    try:
        assert isinstance(store, SQLiteStore)
        assert store.url == f"sqlite://{path}"
        await store.put("/x", b"1")
        assert path.exists()
    finally:
        await store.close()


async def test_etcd_url_opens_lazily_with_every_endpoint() -> None:
    store = await open_store("etcd://127.0.0.1:2379,[::1]:2380,etcd.local:12379")
    try:
        assert isinstance(store, EtcdStore)
        assert store.url == "etcd://127.0.0.1:2379,[::1]:2380,etcd.local:12379"
    finally:
        await store.close()


def test_parse_etcd_url() -> None:
    assert parse_etcd_url("etcd://a:1,b:2/") == [("a", 1), ("b", 2)]
    assert parse_etcd_url("etcd://[::1]:2379") == [("[::1]", 2379)]


@pytest.mark.parametrize(
    "url",
    [
        "",
        "state.db",
        "mysql://localhost/db",
        "sqlite://relative/state.db",
        "sqlite:///",
        "sqlite:///var/lib/gitkube/",
        "etcd://",
        "etcd://localhost",
        "etcd://localhost:notaport",
        "etcd://localhost:2379,",
        "etcd://localhost:2379/path",
        "etcd://user@localhost:2379",
        "etcd://localhost:99999",
    ],
)
async def test_a_bad_url_names_itself_and_the_supported_forms(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await open_store(url)
    message = str(caught.value)
    assert repr(url) in message
    assert SUPPORTED_FORMS in message


async def test_an_unwritable_directory_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot create"):
        await open_store(f"sqlite://{blocker}/sub/state.db")

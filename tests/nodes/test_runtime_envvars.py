"""The pure parts of the runtimes: Kubernetes $(VAR) expansion, the port
variables, the environment a container gets, and reading the tail of a log."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from gitkube.api.objects import Container, ContainerPort, EnvVar
from gitkube.nodes.runtime.envvars import (
    container_argv,
    container_environment,
    expand,
    port_environment,
    port_variable,
)
from gitkube.nodes.runtime.process import _tail_offset

# ---------------------------------------------------------------- expansion


def test_expand_replaces_defined_variables() -> None:
    assert expand("http.server $(PORT)", {"PORT": "8080"}) == "http.server 8080"
    assert expand("$(A)$(B)", {"A": "x", "B": "y"}) == "xy"


def test_expand_leaves_unknown_and_malformed_references() -> None:
    assert expand("$(NOPE) $(", {}) == "$(NOPE) $("
    assert expand("$HOME ${HOME} $", {"HOME": "/root"}) == "$HOME ${HOME} $"


def test_double_dollar_escapes() -> None:
    assert expand("$$(PORT) $$ $$$(PORT)", {"PORT": "1"}) == "$(PORT) $ $1"


@given(st.text(alphabet=st.characters(blacklist_characters="$")))
def test_text_without_dollar_is_unchanged(text: str) -> None:
    assert expand(text, {"A": "b"}) == text


# ---------------------------------------------------------------- ports


def test_port_variables() -> None:
    container = Container(
        name="c",
        ports=[
            ContainerPort(container_port=80),
            ContainerPort(container_port=81, name="http-alt"),
            ContainerPort(container_port=82, name="metrics.v2"),
        ],
    )
    assert port_environment(container, {80: 30080, 81: 30081, 82: 30082}) == {
        "PORT": "30080",
        "PORT_HTTP_ALT": "30081",
        "PORT_METRICS_V2": "30082",
    }
    assert port_environment(container, {}) == {
        "PORT": "80",
        "PORT_HTTP_ALT": "81",
        "PORT_METRICS_V2": "82",
    }
    assert port_variable("a-b") == "PORT_A_B"


def test_environment_expands_in_order_and_manifest_wins() -> None:
    container = Container(
        name="c",
        command=["run", "$(URL)"],
        args=["--port=$(PORT)", "$(LATER)"],
        env=[
            EnvVar("EARLY", "$(LATER)"),
            EnvVar("PORT", "9999"),
            EnvVar("URL", "http://localhost:$(PORT)/"),
            EnvVar("LATER", "x"),
        ],
    )
    env = container_environment(container, {"PORT": "8080"})
    assert env == {
        "PORT": "9999",
        "EARLY": "$(LATER)",
        "URL": "http://localhost:9999/",
        "LATER": "x",
    }
    assert container_argv(container, env) == (
        ["run", "http://localhost:9999/"],
        ["--port=9999", "x"],
    )


# ---------------------------------------------------------------- log tail


def tail(data: bytes, lines: int) -> bytes:
    handle = io.BytesIO(data)
    handle.seek(_tail_offset(handle, lines))
    return handle.read()


def test_tail_of_a_log() -> None:
    assert tail(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert tail(b"a\nb\nc", 2) == b"b\nc"
    assert tail(b"a\nb\nc\n", 10) == b"a\nb\nc\n"
    assert tail(b"a\nb\nc\n", 0) == b""
    assert tail(b"", 3) == b""


@given(
    st.lists(st.binary(max_size=30).filter(lambda b: b"\n" not in b), max_size=40),
    st.integers(0, 50),
)
def test_tail_matches_splitlines(lines: list[bytes], n: int) -> None:
    data = b"".join(line + b"\n" for line in lines)
    expected = b"".join(line + b"\n" for line in (lines[-n:] if n else []))
    assert tail(data, n) == expected


def test_tail_across_read_blocks() -> None:
    lines = [f"line {i}".encode() * 7 for i in range(5000)]
    data = b"\n".join(lines) + b"\n"
    assert tail(data, 1234) == b"\n".join(lines[-1234:]) + b"\n"

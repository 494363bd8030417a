"""A container's environment, as both runtimes build it (pure: no I/O).

Kubernetes expands ``$(VAR)`` in env values (from the variables defined
before them), command and args (from the whole environment): ``$$`` is a
literal ``$``; a reference to an unknown variable stays as written.

Port variables, like Nomad's ``NOMAD_PORT_<label>``: ``PORT`` is the first
port of the container, ``PORT_<NAME>`` each named port (upper-cased, ``-`` and
``.`` become ``_``). The process runtime hands over the host port the process
must listen on; the Docker runtime the containerPort (the process inside the
container listens there and Docker publishes it), so a manifest such as
``httpd -f -p $(PORT)`` runs unchanged on both. Variables the manifest sets
win over these.
"""

from __future__ import annotations

from collections.abc import Mapping

from gitkube.api.objects import Container


def expand(text: str, env: Mapping[str, str]) -> str:
    """``text`` with Kubernetes ``$(VAR)`` references replaced from ``env``."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "(":
            end = text.find(")", i + 2)
            if end != -1:
                name = text[i + 2 : end]
                if name in env:
                    out.append(env[name])
                else:
                    out.append(text[i : end + 1])
                i = end + 1
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def port_variable(name: str) -> str:
    """``PORT_<NAME>`` for a named port."""
    return "PORT_" + name.upper().replace("-", "_").replace(".", "_")


def port_environment(container: Container, ports: Mapping[int, int]) -> dict[str, str]:
    """``PORT`` and ``PORT_<NAME>``: ``ports`` maps each containerPort to the
    port the process listens on."""
    env: dict[str, str] = {}
    for index, port in enumerate(container.ports):
        value = str(ports.get(port.container_port, port.container_port))
        if index == 0:
            env["PORT"] = value
        if port.name:
            env[port_variable(port.name)] = value
    return env


def container_environment(
    container: Container, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` plus the container's ``env`` in order, each value expanded from
    what is defined before it."""
    env = dict(base or {})
    for var in container.env:
        env[var.name] = expand(var.value, env)
    return env


def container_argv(container: Container, env: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(command, args) with ``$(VAR)`` expanded."""
    return (
        [expand(part, env) for part in container.command],
        [expand(part, env) for part in container.args],
    )

"""Ports a pod publishes on its node, as recorded in ``PodStatus.host_ports``."""

from __future__ import annotations


def port_key(container: str, container_port: int, protocol: str = "TCP") -> str:
    """The key of a published port in ``PodStatus.host_ports`` (and ``Sandbox.host_ports``):
    ``"<container>/<containerPort>/<protocol>"``.

    ``gitkube.nodes.runtime.base.port_key`` is the same function; it lives here too
    so that pure cores, which may import only ``gitkube.api``, can read the keys.
    """
    return f"{container}/{container_port}/{protocol or 'TCP'}"

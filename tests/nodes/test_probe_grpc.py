"""gRPC probes against a real gRPC server speaking grpc.health.v1:

- SERVING passes; NOT_SERVING fails with the status; the service name is
  sent; no server fails (UNAVAILABLE); the port is reached through the
  published host port, as the other handlers do;
- run_probe dispatches to it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import pytest

from gitkube.api.objects import Container, ContainerPort, GRPCAction, Probe
from gitkube.nodes.probes import ProbeTarget, probe_grpc, run_probe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Health:
    """A grpc.health.v1.Health server: services -> status (1 SERVING, 2 NOT_SERVING)."""

    def __init__(self) -> None:
        self.status = {"": 1, "shop.Cart": 2}
        self.asked: list[bytes] = []

    async def check(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.asked.append(request)
        name = request[2:].decode() if request else ""
        if name not in self.status:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return bytes([0x08, self.status[name]])


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[Health, int]]:
    health = Health()
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(health.check)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield health, port
    finally:
        await server.stop(None)


def container() -> Container:
    return Container(name="web", ports=[ContainerPort(container_port=9555, name="grpc")])


def target(host_port: int) -> ProbeTarget:
    return ProbeTarget(
        container_id="c1",
        node_address="127.0.0.1",
        pod_ip="127.0.0.1",
        host_ports={"web/9555/TCP": host_port},
    )


async def test_serving_passes_and_not_serving_fails(health_server: tuple[Health, int]) -> None:
    health, port = health_server
    ok = await probe_grpc(GRPCAction(port=9555), container(), target(port), timeout=5)
    assert ok.ok and ok.message.endswith("SERVING")
    bad = await probe_grpc(
        GRPCAction(port=9555, service="shop.Cart"), container(), target(port), timeout=5
    )
    assert not bad.ok and bad.message.endswith("NOT_SERVING")
    assert health.asked == [b"", b"\x0a\x09shop.Cart"]
    unknown = await probe_grpc(
        GRPCAction(port=9555, service="nope"), container(), target(port), timeout=5
    )
    assert not unknown.ok and "NOT_FOUND" in unknown.message


async def test_no_server_fails() -> None:
    result = await probe_grpc(GRPCAction(port=9555), container(), target(free_port()), timeout=2)
    assert not result.ok and "UNAVAILABLE" in result.message


async def test_run_probe_dispatches_grpc(health_server: tuple[Health, int]) -> None:
    _, port = health_server
    probe = Probe(grpc=GRPCAction(port=9555), timeout_seconds=5)
    result = await run_probe(probe, container(), target(port), runtime=None)  # type: ignore[arg-type]
    assert result.ok

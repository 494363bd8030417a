"""The `gitkube` command: wiring and presentation only.

Each command lives in its own module and registers itself on ``app``.
"""

from __future__ import annotations

from gitkube.cli import (
    agent_cmd,  # noqa: F401
    get_cmd,  # noqa: F401
    kubeconfig_cmd,  # noqa: F401
    logs_cmd,  # noqa: F401
    operator_cmd,  # noqa: F401
    proxy_cmd,  # noqa: F401
    status_cmd,  # noqa: F401
    sync_cmd,  # noqa: F401
    validate_cmd,  # noqa: F401
)
from gitkube.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]

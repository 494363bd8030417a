"""`gitkube kubeconfig`: a kubeconfig for kubectl and the official clients.

It points at the HTTP server of `gitkube run` / `gitkube master` (``--listen``,
or ``--server URL`` when clients reach it by another name), with the bearer
token of ``--api-token-file`` and, under TLS, the server's certificate as the
certificate authority (a self-signed certificate verifies itself).
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from gitkube.cli.app import app
from gitkube.cli.operator_cmd import (
    ApiTokenFile,
    Config,
    Listen,
    TlsCert,
    TlsKey,
    _settings,
)
from gitkube.errors import ConfigError


@app.command("kubeconfig")
def kubeconfig_command(
    server: Annotated[
        str | None,
        typer.Option("--server", help="URL clients use (default: from --listen and TLS)"),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="cluster, user and context name")] = "gitkube",
    listen: Listen = None,
    api_token_file: ApiTokenFile = None,
    tls_cert_file: TlsCert = None,
    tls_key_file: TlsKey = None,
    config: Config = None,
) -> None:
    """Print a kubeconfig for kubectl and the Kubernetes clients (read-only API)."""
    flags = {
        "listen": listen,
        "api_token_file": api_token_file,
        "tls_cert_file": tls_cert_file,
        "tls_key_file": tls_key_file,
    }
    settings = _settings(flags, config)
    host, port = settings.listen_host_port()
    tls = bool(settings.tls_cert_file)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    url = server or f"{'https' if tls else 'http'}://{shown}:{port}"
    cluster: dict[str, object] = {"server": url}
    if tls:
        try:
            pem = Path(settings.tls_cert_file).read_bytes()
        except OSError as exc:
            typer.echo(f"error: --tls-cert-file: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
        cluster["certificate-authority-data"] = base64.b64encode(pem).decode()
    user: dict[str, object] = {}
    try:
        token = settings.read_api_token()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if token:
        user["token"] = token.decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }
    sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))

"""An OpenAPI v2 document of the kinds the Kubernetes API serves.

Clients read it to learn which group, version and kind each definition is
(``x-kubernetes-group-version-kind``) and which paths exist. The field
schemas are the official ones where gitkube ships them
(``gitkube/api/schemas/``); a kind without one is an open object.
"""

from __future__ import annotations

from typing import Any


def definition_name(group: str, version: str, kind: str) -> str:
    prefix = "io.k8s.api.core" if not group else f"io.k8s.api.{group}"
    return f"{prefix}.{version}.{kind}"


def openapi_v2(resources: list[Any]) -> dict[str, Any]:
    from gitkube import __version__

    definitions: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for res in resources:
        name = definition_name(res.group, res.version, res.kind)
        definitions[name] = {
            "type": "object",
            "description": f"{res.kind} ({res.group or 'core'}/{res.version}), read-only",
            "x-kubernetes-group-version-kind": [
                {"group": res.group, "version": res.version, "kind": res.kind}
            ],
        }
        base = f"/api/{res.version}" if not res.group else f"/apis/{res.group}/{res.version}"
        ref = {"$ref": f"#/definitions/{name}"}
        ok = {"200": {"description": "OK", "schema": ref}}
        if res.namespaced:
            paths[f"{base}/namespaces/{{namespace}}/{res.plural}/{{name}}"] = {
                "get": {"operationId": f"read{res.kind}", "responses": ok}
            }
            paths[f"{base}/namespaces/{{namespace}}/{res.plural}"] = {
                "get": {"operationId": f"list{res.kind}", "responses": ok}
            }
        else:
            paths[f"{base}/{res.plural}/{{name}}"] = {
                "get": {"operationId": f"read{res.kind}", "responses": ok}
            }
        paths[f"{base}/{res.plural}"] = {
            "get": {"operationId": f"list{res.kind}ForAllNamespaces", "responses": ok}
        }
    return {
        "swagger": "2.0",
        "info": {"title": "gitkube", "version": __version__},
        "paths": paths,
        "definitions": definitions,
    }

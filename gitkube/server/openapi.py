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


def openapi_v3_root(resources: list[Any]) -> dict[str, Any]:
    """The OpenAPI v3 discovery document: one entry per group/version."""
    paths = {}
    for gv in sorted({_gv_path(res) for res in resources}):
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}"}
    return {"paths": paths}


def _gv_path(res: Any) -> str:
    return f"api/{res.version}" if not res.group else f"apis/{res.group}/{res.version}"


_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "accepted for compatibility; every write is refused (git is the only way in)",
    "schema": {"type": "string", "uniqueItems": True},
}


_REFUSED = {"405": {"description": "git is the only way to change desired state"}}


def openapi_v3(resources: list[Any], gv_path: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version (``api/v1``, ``apis/apps/v1``).

    Write operations are listed with the ``fieldValidation`` parameter, so
    clients leave validation to the server, which refuses every write with
    a message naming where the object lives in git.
    """
    from gitkube import __version__

    chosen = [res for res in resources if _gv_path(res) == gv_path]
    if not chosen:
        return None
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for res in chosen:
        name = definition_name(res.group, res.version, res.kind)
        gvk = [{"group": res.group, "version": res.version, "kind": res.kind}]
        schemas[name] = {
            "type": "object",
            "description": f"{res.kind}, read-only: declared in git",
            "x-kubernetes-group-version-kind": gvk,
        }
        ref = {"$ref": f"#/components/schemas/{name}"}
        content = {"application/json": {"schema": ref}}
        ok = {"200": {"description": "OK", "content": content}}

        def write(
            op: str, kind: str = res.kind, gvk_: list[dict[str, str]] = gvk
        ) -> dict[str, Any]:
            return {
                "operationId": f"{op}{kind}",
                "parameters": [_FIELD_VALIDATION],
                "responses": _REFUSED,
                "x-kubernetes-group-version-kind": gvk_[0],
            }

        base = "/" + gv_path
        if res.namespaced:
            one = f"{base}/namespaces/{{namespace}}/{res.plural}/{{name}}"
            many = f"{base}/namespaces/{{namespace}}/{res.plural}"
        else:
            one = f"{base}/{res.plural}/{{name}}"
            many = f"{base}/{res.plural}"
        paths[one] = {
            "get": {"operationId": f"read{res.kind}", "responses": ok},
            "put": write("replace"),
            "patch": write("patch"),
            "delete": write("delete"),
        }
        paths[many] = {
            "get": {"operationId": f"list{res.kind}", "responses": ok},
            "post": write("create"),
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "gitkube", "version": __version__},
        "paths": paths,
        "components": {"schemas": schemas},
    }

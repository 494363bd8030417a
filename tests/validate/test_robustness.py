"""Whatever the input, loading reports errors and never raises.

- random bytes
- random YAML structures under every kind, with real field names in odd places
- mutations of a valid manifest (lines dropped, duplicated, truncated)
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gitkube.api.validation import ManifestError, load_manifests
from tests.validate.helpers import VALID_POD

FIELDS = [
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "labels",
    "spec",
    "containers",
    "ports",
    "containerPort",
    "selector",
    "template",
    "replicas",
    "image",
    "readinessProbe",
    "httpGet",
    "port",
    "targetPort",
    "type",
    "clusterIP",
    "resources",
    "limits",
    "cpu",
    "status",
    "subsets",
    "addresses",
    "ip",
    "env",
    "value",
    "namespace",
    "nodePort",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from(["v1", "Pod", "Service", "None", "http", "100m", "web"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=25,
)


def _check(result: tuple[list, list[ManifestError], list]) -> None:
    manifests, errors, _ = result
    for error in errors:
        assert isinstance(str(error), str) and error.line >= 0
    for manifest in manifests:
        assert manifest.obj.name


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    _check(load_manifests(data, "m.yaml"))
    _check(load_manifests(data, "m.json"))


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["Pod", "ReplicationController", "Service", "Endpoints", "Node"]),
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=6),
)
def test_random_structures(kind: str, body: dict) -> None:
    doc = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}, **body}
    text = json.dumps(doc, allow_nan=True)
    _check(load_manifests(text.encode(), "m.yaml"))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 7), max_size=4), st.integers(0, len(VALID_POD)))
def test_mutated_manifest(drop: list[int], cut: int) -> None:
    lines = VALID_POD.splitlines(keepends=True)
    mutated = [line for i, line in enumerate(lines) if i not in drop]
    mutated += lines[: cut % len(lines)]
    _check(load_manifests("".join(mutated).encode(), "m.yaml"))
    _check(load_manifests(VALID_POD[:cut].encode(), "m.yaml"))

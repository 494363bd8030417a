"""Reading manifest files: documents, lines, and the inputs refused before validation.

- several documents per file, empty documents skipped, document numbers and lines
- malformed YAML and JSON reported at their line
- duplicate keys name both lines
- alias bombs and recursive aliases refused; ordinary anchors and merge keys work
- deep nesting never crashes the parser
- size limit, binary and non-UTF-8 files
- documents that are not mappings, keys that are not strings, unsupported tags
- JSON files are manifests
"""

# ruff: noqa: E501 (expected messages are kept whole, as the CLI prints them)

from __future__ import annotations

import json

from gitkube.api.manifests import parse_documents
from tests.validate.helpers import VALID_POD, errors, load, one_error

# ---------------------------------------------------------------- documents


def test_several_documents_keep_their_number_and_line() -> None:
    text = (
        "---\n"
        + VALID_POD
        + "---\n---\n# only a comment\n---\n"
        + VALID_POD.replace("name: web\nspec", "name: web2\nspec")
    )
    manifests, found, _ = load(text)
    assert found == []
    assert [(m.document, m.line, m.obj.name) for m in manifests] == [(1, 2, "web"), (4, 14, "web2")]


def test_empty_file_and_empty_documents_give_nothing() -> None:
    assert load("") == ([], [], [])
    assert load("---\n---\n# nothing\n") == ([], [], [])


def test_a_document_that_is_not_a_mapping_is_an_error_at_its_line() -> None:
    text = VALID_POD + "---\n- a\n- b\n---\njust text\n"
    assert errors(text) == [
        "m.yaml:10: a manifest must be a mapping with apiVersion and kind, not a list "
        "(put one object per document, separated by ---)",
        "m.yaml:13: a manifest must be a mapping with apiVersion and kind, not a string ('just text')",
    ]
    manifests, _, _ = load(text)
    assert [m.obj.name for m in manifests] == ["web"]


# ---------------------------------------------------------------- malformed


def test_malformed_yaml_is_reported_at_its_line() -> None:
    error = one_error(VALID_POD + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [oops\n")
    assert error.line == 14
    assert error.document == 2
    assert error.message.startswith("invalid YAML:")


def test_bad_indentation_is_reported_at_its_line() -> None:
    error = one_error("apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n   labels: {}\n")
    assert (error.line, error.document) == (5, 1)
    assert "invalid YAML: mapping values are not allowed" in error.message


def test_tab_indentation_is_reported() -> None:
    error = one_error("apiVersion: v1\nkind: Pod\nmetadata:\n\tname: a\n")
    assert error.line == 4
    assert "invalid YAML" in error.message


# ---------------------------------------------------------------- duplicate keys


def test_duplicate_keys_name_both_lines() -> None:
    text = VALID_POD.replace("    image: nginx\n", "    image: nginx\n    image: redis\n")
    assert errors(text) == [
        "m.yaml:9: Pod/web: spec.containers[0].image: duplicate key 'image' (first at line 8)"
    ]


def test_duplicate_top_level_key() -> None:
    text = VALID_POD + "kind: Service\n"
    assert errors(text) == ["m.yaml:9: Pod/web: kind: duplicate key 'kind' (first at line 2)"]


# ---------------------------------------------------------------- aliases


BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_refused_quickly() -> None:
    error = one_error(BILLION_LAUGHS)
    assert "alias" in error.message
    assert "refusing to expand" in error.message
    assert error.file == "m.yaml" and error.line > 0


def test_recursive_alias_is_refused() -> None:
    error = one_error("apiVersion: v1\nkind: Pod\nmetadata: &m\n  name: a\n  x: *m\n")
    assert "nested deeper than" in error.message


def test_ordinary_anchors_and_merge_keys_work() -> None:
    text = """\
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          labels: &labels {app: web, tier: front}
        spec:
          nodeSelector: *labels
          containers:
          - &base
            name: a
            image: nginx
            env: [{name: MODE, value: prod}]
          - <<: *base
            name: b
        """
    manifests, found, _ = load(text)
    assert found == []
    pod = manifests[0].obj
    assert pod.spec.node_selector == {"app": "web", "tier": "front"}
    assert [(c.name, c.image, c.env[0].value) for c in pod.spec.containers] == [
        ("a", "nginx", "prod"),
        ("b", "nginx", "prod"),
    ]


def test_error_inside_merged_mapping_points_at_the_merging_item() -> None:
    text = """\
        apiVersion: v1
        kind: Pod
        metadata: {name: web}
        spec:
          containers:
          - &base {name: a, image: nginx}
          - <<: *base
            name: a
        """
    assert errors(text) == [
        "m.yaml:8: Pod/web: spec.containers[1].name: duplicate container name 'a' (also containers[0])"
    ]


# ---------------------------------------------------------------- nesting


def test_deep_flow_nesting_does_not_crash_the_parser() -> None:
    depth = 60_000  # enough to overflow libyaml's recursive composer
    error = one_error(b"a: 1\nb: " + b"[" * depth + b"]" * depth + b"\n")
    assert str(error) == "m.yaml:2: nested deeper than 1000 levels"


def test_deep_nesting_in_a_manifest_is_refused() -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  labels: " + "[" * 150 + "]" * 150
    error = one_error(text)
    assert "nested deeper than 100 levels" in error.message


# ---------------------------------------------------------------- bytes


def test_files_over_the_size_limit_are_refused_unread() -> None:
    error = one_error(VALID_POD, max_bytes=50)
    assert (
        str(error) == f"m.yaml: file is {len(VALID_POD)} bytes, over the 50-byte limit (--max-size)"
    )
    assert (error.line, error.document) == (0, 0)
    assert load(VALID_POD, max_bytes=len(VALID_POD))[1] == []


def test_binary_files_are_refused() -> None:
    error = one_error(b"apiVersion: v1\n\x00\x01\x02kind: Pod\n")
    assert str(error) == "m.yaml:2: binary file (contains NUL bytes), not a manifest"


def test_non_utf8_files_are_refused_with_the_line() -> None:
    data = VALID_POD.replace("nginx", "ngin\xe9").encode("latin-1")
    error = one_error(data)
    offset = data.index(b"\xe9")
    assert str(error) == f"m.yaml:8: not UTF-8: byte 0xe9 at offset {offset} is invalid"


def test_utf8_with_bom_and_unicode_values_load() -> None:
    text = VALID_POD.replace("  name: web\n", "  name: web\n  annotations: {note: \u00e9t\u00e9}\n")
    manifests, found, _ = load("\ufeff".encode() + text.encode())
    assert found == [], [str(e) for e in found]
    assert manifests[0].obj.metadata.annotations == {"note": "\u00e9t\u00e9"}


# ---------------------------------------------------------------- scalars and keys


def test_keys_that_are_not_strings_are_errors() -> None:
    text = VALID_POD.replace("  name: web\n", "  name: web\n  labels:\n    yes: x\n    1: y\n")
    assert errors(text) == [
        "m.yaml:6: Pod/web: metadata.labels: key true is not a string; quote it",
        "m.yaml:7: Pod/web: metadata.labels: key 1 is not a string; quote it",
    ]


def test_unsupported_tags_are_errors() -> None:
    text = VALID_POD + "  hostNetwork: !!binary aGk=\n"
    assert errors(text) == [
        "m.yaml:9: Pod/web: spec.hostNetwork: unsupported YAML tag "
        "'tag:yaml.org,2002:binary'; use plain values",
        "m.yaml:9: Pod/web: spec.hostNetwork: must be a boolean, not a string ('aGk=')",
    ]


def test_dates_stay_text() -> None:
    text = VALID_POD.replace("  name: web\n", "  name: web\n  annotations: {built: 2015-07-01}\n")
    manifests, found, _ = load(text)
    assert found == []
    assert manifests[0].obj.metadata.annotations == {"built": "2015-07-01"}


def test_yaml_11_booleans_in_string_fields_are_errors_like_kubectl() -> None:
    text = VALID_POD.replace("  name: web\n", "  name: web\n  labels: {enabled: yes}\n")
    assert errors(text) == [
        "m.yaml:5: Pod/web: metadata.labels.enabled: must be a string, not a boolean (true)"
    ]


# ---------------------------------------------------------------- JSON


POD_JSON = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web"},
    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
}


def test_json_files_are_manifests_with_field_lines() -> None:
    data = json.dumps(POD_JSON, indent=2).replace('"nginx"', '"nginx", "imag": "x"')
    manifests, found, _ = load(data, "pod.json")
    assert [str(e) for e in found] == [
        "pod.json:11: Pod/web: spec.containers[0].imag: unknown field 'imag' (did you mean 'image'?)"
    ]
    manifests, found, _ = load(json.dumps(POD_JSON), "pod.json")
    assert found == [] and manifests[0].obj.spec.containers[0].image == "nginx"


def test_json_that_yaml_cannot_read_still_loads() -> None:
    data = json.dumps(POD_JSON, indent="\t")
    docs, problems = parse_documents(data.encode(), "pod.json")
    assert problems == [] and docs[0].data == POD_JSON
    manifests, found, _ = load(data, "pod.json")
    assert found == [] and manifests[0].obj.name == "web"


def test_invalid_json_is_reported_at_its_line() -> None:
    data = '{\n\t"apiVersion": "v1",\n\t"kind": "Pod"\n\t"metadata": {}\n}\n'
    assert errors(data, "pod.json") == [
        "pod.json:4: invalid JSON: Expecting ',' delimiter (column 2)"
    ]


def test_duplicate_keys_in_json() -> None:
    data = '{"apiVersion": "v1", "kind": "Pod", "kind": "Pod",\n "metadata": {"name": "a"}}'
    assert errors(data, "pod.json") == [
        "pod.json:1: Pod/a: kind: duplicate key 'kind' (first at line 1)",
        "pod.json:1: Pod/a: spec: required field is missing",
    ]

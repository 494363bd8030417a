"""Putting a template back into a manifest (pure): only ``spec.template`` of
the one YAML document that declares the Deployment changes.

- other documents, comments outside the template, key order and the text
  after the template stay byte for byte;
- a template written on the key's line (flow style) is replaced by a block;
- the text as written at an older commit goes back verbatim (comments kept);
- the Deployment is found by name and namespace, also as an item of a List;
  absent: an error naming the file; a JSON manifest is rewritten whole;
- what comes out loads as the same template.
"""

from __future__ import annotations

import json

import pytest
import yaml

from gitkube.sync.rollback import RollbackError, find_template, replace_template

FILE = """\
# the web tier
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web          # keep this comment
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: app:2   # the new image

  # strategy comes after the template
  strategy:
    type: RollingUpdate
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: other}
spec:
  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: app, image: app:9}]}}
"""

OLD = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
}


def docs(text: str) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_only_the_template_of_that_document_changes() -> None:
    new = replace_template(FILE, "k8s/web.yaml", namespace="default", name="web", template=OLD)
    before, after = docs(FILE), docs(new)
    assert after[0] == before[0] and after[2] == before[2]
    assert after[1]["spec"]["template"] == OLD  # type: ignore[index]
    assert {k: v for k, v in after[1]["spec"].items() if k != "template"} == {  # type: ignore[union-attr]
        k: v
        for k, v in before[1]["spec"].items()  # type: ignore[union-attr]
        if k != "template"
    }
    head, tail = FILE.split("  template:\n", 1)
    assert new.startswith(head + "  template:\n")
    assert new.endswith(tail[tail.index("\n\n  # strategy") :])
    assert "# keep this comment" in new and "# the web tier" in new


def test_a_flow_style_template_becomes_a_block() -> None:
    new = replace_template(FILE, "k8s/web.yaml", namespace="other", name="web", template=OLD)
    after = docs(new)
    assert after[2]["spec"]["template"] == OLD  # type: ignore[index]
    assert after[1] == docs(FILE)[1]


def test_the_text_as_written_goes_back_verbatim() -> None:
    old_file = FILE.replace("image: app:2   # the new image", "image: app:1   # the old image")
    span = find_template(old_file, "k8s/web.yaml", namespace="default", name="web")
    lines = old_file[span.start : span.end].split("\n")
    written = "\n".join([lines[0], *[line[span.column :] for line in lines[1:]]])
    new = replace_template(
        FILE, "k8s/web.yaml", namespace="default", name="web", template=OLD, written=written
    )
    assert new == old_file


def test_a_missing_deployment_names_the_file() -> None:
    with pytest.raises(RollbackError, match=r"k8s/web.yaml: no Deployment named 'api'"):
        replace_template(FILE, "k8s/web.yaml", namespace="default", name="api", template=OLD)


def test_json_manifests_are_rewritten_whole() -> None:
    text = json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": []}}},
        }
    )
    new = json.loads(
        replace_template(text, "web.json", namespace="default", name="web", template=OLD)
    )
    assert new["spec"] == {"replicas": 2, "template": OLD}


def test_a_deployment_inside_a_list_is_found() -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: Deployment
  metadata:
    name: web
  spec:
    template:
      spec:
        containers:
        - {name: app, image: app:2}
"""
    new = replace_template(text, "list.yaml", namespace="default", name="web", template=OLD)
    assert yaml.safe_load(new)["items"][0]["spec"]["template"] == OLD

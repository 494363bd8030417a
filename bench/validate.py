"""Benchmark: parse and validate 2,000 manifest files holding 10,000 objects.

    python bench/validate.py [--files 2000] [--peer-files 200]

Prints the time of ``gitkube.api.validation.load_manifests`` over every
file, per object, its share of the 15 s cold-sync budget, and the ratio to
a peer measured in the same run on a sample: ``yaml.load_all`` (CSafeLoader)
plus ``jsonschema`` validating against the same shipped schemas.
"""

from __future__ import annotations

import argparse
import time

import yaml

from gitkube.api.schema import schema_documents
from gitkube.api.validation import load_manifests

COLD_SYNC_BUDGET_S = 15.0

RC = """\
apiVersion: v1
kind: ReplicationController
metadata:
  name: app-{i}
  namespace: team-{t}
  labels: {{app: app-{i}, tier: backend}}
spec:
  replicas: 3
  selector: {{app: app-{i}}}
  template:
    metadata:
      labels: {{app: app-{i}, tier: backend}}
    spec:
      containers:
      - name: web
        image: registry.local/app:{i}
        imagePullPolicy: IfNotPresent
        command: ["python3", "-m", "http.server", "$(PORT)"]
        env:
        - {{name: MODE, value: production}}
        - {{name: INDEX, value: "{i}"}}
        ports:
        - {{name: http, containerPort: 8080}}
        resources:
          requests: {{cpu: 100m, memory: 64Mi}}
          limits: {{cpu: 500m, memory: 128Mi}}
        readinessProbe:
          httpGet: {{path: /healthz, port: http}}
          periodSeconds: 5
        livenessProbe:
          tcpSocket: {{port: http}}
"""

SVC = """\
apiVersion: v1
kind: Service
metadata:
  name: app-{i}
  namespace: team-{t}
spec:
  selector: {{app: app-{i}}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
"""

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: job-{i}
  namespace: team-{t}
  labels: {{job: job-{i}}}
spec:
  restartPolicy: OnFailure
  containers:
  - name: main
    image: busybox
    command: [sh, -c, "echo {i}"]
"""


def make_files(count: int) -> list[tuple[str, bytes]]:
    """``count`` files of five objects each: 2 RCs, 2 Services, 1 Pod."""
    files = []
    for f in range(count):
        docs = []
        for j in range(2):
            i = f * 2 + j
            docs += [RC.format(i=i, t=f % 7), SVC.format(i=i, t=f % 7)]
        docs.append(POD.format(i=f, t=f % 7))
        files.append((f"apps/app-{f}.yaml", "---\n".join(docs).encode()))
    return files


def run_gitkube(files: list[tuple[str, bytes]]) -> tuple[float, int]:
    start = time.perf_counter()
    objects = 0
    for path, data in files:
        manifests, errors, _ = load_manifests(data, path)
        assert not errors, errors[:3]
        objects += len(manifests)
    return time.perf_counter() - start, objects


def run_peer(files: list[tuple[str, bytes]]) -> tuple[float, int]:
    import jsonschema
    from referencing import Registry, Resource

    documents = schema_documents()
    registry: Registry = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in documents.values()
    )
    validators = {
        doc["properties"]["kind"]["const"]: jsonschema.Draft202012Validator(doc, registry=registry)
        for name, doc in documents.items()
        if name != "defs.json"
    }
    start = time.perf_counter()
    objects = 0
    for _, data in files:
        for doc in yaml.load_all(data, Loader=yaml.CSafeLoader):
            errors = list(validators[doc["kind"]].iter_errors(doc))
            assert not errors, errors[:1]
            objects += 1
    return time.perf_counter() - start, objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--peer-files", type=int, default=200)
    args = parser.parse_args()

    files = make_files(args.files)
    load_manifests(files[0][1], files[0][0])  # compile the schemas outside the timing
    seconds, objects = run_gitkube(files)
    size = sum(len(d) for _, d in files)
    print(f"gitkube load_manifests: {len(files)} files, {objects} objects, {size / 1e6:.1f} MB")
    print(f"  total {seconds:.2f} s, {seconds / objects * 1e6:.0f} us/object")
    share = seconds / COLD_SYNC_BUDGET_S
    print(f"  share of the {COLD_SYNC_BUDGET_S:.0f} s cold-sync budget: {share:.1%}")

    sample = files[: args.peer_files]
    ours, n_ours = run_gitkube(sample)
    peer, n_peer = run_peer(sample)
    print(f"peer (yaml CSafeLoader + jsonschema, same schemas) on {len(sample)} files:")
    per_peer, per_ours = peer / n_peer * 1e6, ours / n_ours * 1e6
    print(f"  peer {per_peer:.0f} us/object, gitkube {per_ours:.0f} us/object")
    print(f"  ratio gitkube/peer: {ours / peer:.2f}")


if __name__ == "__main__":
    main()

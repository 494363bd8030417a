"""Benchmark: parse and validate 2,000 manifest files holding 10,000 objects.

    python bench/validate.py [--files 2000] [--peer-files 200]

Prints the time of ``gitkube.api.validation.load_manifests`` over every
file, per object, and its share of the 15 s cold-sync budget. Then, on a
sample of ``--peer-files`` files (1,000 objects), in the same run:

- **kubernetes-validate** (PyPI), strict, for the Kubernetes release whose
  schema gitkube ships as its floor: the tool people use to check manifests
  against the official schema. gitkube must stay 10x faster or more while
  checking everything it checks and its own rules on top.
- ``yaml.load_all`` (CSafeLoader) plus ``jsonschema`` against gitkube's own
  shipped schemas (without the official floor), for reference.

Each file holds a Deployment, a ReplicationController, two Services and a
ConfigMap.
"""

from __future__ import annotations

import argparse
import time

import yaml

from gitkube.api.schema import KUBERNETES_SCHEMA_FILE, kubernetes_version, schema_documents
from gitkube.api.validation import load_manifests

COLD_SYNC_BUDGET_S = 15.0

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-{i}
  namespace: team-{t}
  labels: {{app: web-{i}}}
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web-{i}}}
  strategy:
    rollingUpdate: {{maxSurge: 25%, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web-{i}}}
    spec:
      containers:
      - name: web
        image: registry.local/web:{i}
        envFrom:
        - configMapRef: {{name: config-{i}}}
        ports:
        - {{name: http, containerPort: 8080}}
        resources:
          requests: {{cpu: 100m, memory: 64Mi}}
        readinessProbe:
          httpGet: {{path: /healthz, port: http}}
        volumeMounts:
        - {{name: config, mountPath: /etc/web}}
      volumes:
      - name: config
        configMap: {{name: config-{i}}}
"""

CONFIG = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: config-{i}
  namespace: team-{t}
data:
  MODE: production
  app.properties: |
    color=blue
    index={i}
"""

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
    """``count`` files of five objects each: a Deployment, an RC, two
    Services and a ConfigMap."""
    files = []
    for f in range(count):
        t = f % 7
        docs = [
            DEPLOYMENT.format(i=f, t=t),
            SVC.format(i=f, t=t).replace("app-", "web-"),
            RC.format(i=f, t=t),
            SVC.format(i=f, t=t),
            CONFIG.format(i=f, t=t),
        ]
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


def run_kubernetes_validate(files: list[tuple[str, bytes]]) -> tuple[float, int]:
    import kubernetes_validate

    version = kubernetes_version()
    start = time.perf_counter()
    objects = 0
    for _, data in files:
        for doc in yaml.load_all(data, Loader=yaml.CSafeLoader):
            kubernetes_validate.validate(doc, version, strict=True)
            objects += 1
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
        if name not in ("defs.json", KUBERNETES_SCHEMA_FILE)
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
    per_ours = ours / n_ours * 1e6
    kv, n_kv = run_kubernetes_validate(sample)
    per_kv = kv / n_kv * 1e6
    print(
        f"peer kubernetes-validate (strict, Kubernetes {kubernetes_version()}) "
        f"on {len(sample)} files, {n_kv} objects:"
    )
    print(f"  peer {per_kv:.0f} us/object, gitkube {per_ours:.0f} us/object")
    print(f"  gitkube is {kv / ours:.1f}x faster (must be >= 10x)")
    peer, n_peer = run_peer(sample)
    per_peer = peer / n_peer * 1e6
    print("reference (yaml CSafeLoader + jsonschema, gitkube's own schemas, no floor):")
    print(f"  {per_peer:.0f} us/object; gitkube is {peer / ours:.1f}x faster")


if __name__ == "__main__":
    main()

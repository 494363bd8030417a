"""Real Kubernetes v1 manifests load unchanged.

- the classic guestbook (redis-master RC and Service, frontend RC and Service)
- `kubectl get -o yaml` output, with status and cluster-set metadata, loads and
  keeps none of it in the object
- the repository's manifests-example/ is valid
- GoogleCloudPlatform/microservices-demo's release manifests (Deployments with
  gRPC probes, securityContext and initContainers, Services of type
  LoadBalancer, ServiceAccounts), vendored unchanged in data/: valid with
  --unsupported-kinds store (ServiceAccounts stored, not acted on), and only
  the ServiceAccounts refused with error; kubernetes-validate agrees
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import kubernetes_validate
import yaml

from gitkube.api.objects import Deployment, Pod, ReplicationController, Service
from gitkube.api.schema import kubernetes_version
from gitkube.api.validation import validate_paths
from tests.validate.helpers import load

REDIS_MASTER_RC = """\
apiVersion: v1
kind: ReplicationController
metadata:
  name: redis-master
  labels:
    name: redis-master
spec:
  replicas: 1
  selector:
    name: redis-master
  template:
    metadata:
      labels:
        name: redis-master
    spec:
      containers:
      - name: master
        image: redis
        ports:
        - containerPort: 6379
"""

REDIS_MASTER_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: redis-master
  labels:
    name: redis-master
spec:
  ports:
    # the port that this service should serve on
  - port: 6379
    targetPort: 6379
  selector:
    name: redis-master
"""

FRONTEND_RC = """\
apiVersion: v1
kind: ReplicationController
metadata:
  name: frontend
  labels:
    name: frontend
spec:
  replicas: 3
  selector:
    name: frontend
  template:
    metadata:
      labels:
        name: frontend
    spec:
      containers:
      - name: php-redis
        image: kubernetes/example-guestbook-php-redis:v2
        ports:
        - containerPort: 80
"""

FRONTEND_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: frontend
  labels:
    app: guestbook
    tier: frontend
spec:
  # comment or delete the following line if you want to use a LoadBalancer
  type: NodePort
  # if your cluster supports it, uncomment the following to automatically create
  # an external load-balanced IP for the frontend service.
  # type: LoadBalancer
  ports:
  - port: 80
  selector:
    app: guestbook
    tier: frontend
"""

REDIS_SLAVE_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: redis-slave
  labels:
    app: redis
    role: slave
    tier: backend
spec:
  ports:
  - port: 6379
  selector:
    app: redis
    role: slave
    tier: backend
"""

KUBECTL_GET_POD = """\
apiVersion: v1
kind: Pod
metadata:
  creationTimestamp: "2015-07-21T17:43:25Z"
  generateName: redis-master-
  labels:
    name: redis-master
  name: redis-master-x7k2p
  namespace: default
  ownerReferences:
  - apiVersion: v1
    controller: true
    kind: ReplicationController
    name: redis-master
    uid: 5f0b6c5e-2fd3-11e5-8c4d-42010af0c9e5
  resourceVersion: "812"
  selfLink: /api/v1/namespaces/default/pods/redis-master-x7k2p
  uid: 5f0e58a2-2fd3-11e5-8c4d-42010af0c9e5
spec:
  containers:
  - image: redis
    imagePullPolicy: Always
    name: master
    ports:
    - containerPort: 6379
      protocol: TCP
    resources: {}
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
    volumeMounts:
    - mountPath: /var/run/secrets/kubernetes.io/serviceaccount
      name: default-token-abcde
      readOnly: true
  dnsPolicy: ClusterFirst
  nodeName: minion-1
  restartPolicy: Always
  schedulerName: default-scheduler
  securityContext: {}
  serviceAccount: default
  serviceAccountName: default
  terminationGracePeriodSeconds: 30
  volumes:
  - name: default-token-abcde
    secret:
      secretName: default-token-abcde
status:
  phase: Running
  podIP: 10.244.1.5
  hostIP: 10.240.0.4
"""


def test_guestbook_loads_unchanged() -> None:
    docs = [
        REDIS_MASTER_RC,
        REDIS_MASTER_SERVICE,
        FRONTEND_RC,
        FRONTEND_SERVICE,
        REDIS_SLAVE_SERVICE,
    ]
    manifests, found, ignored = load("---\n".join(docs), "guestbook.yaml")
    assert found == [] and ignored == []
    master, master_svc, frontend, frontend_svc, slave_svc = (m.obj for m in manifests)
    assert isinstance(master, ReplicationController) and isinstance(frontend, ReplicationController)
    assert master.spec.selector == {"name": "redis-master"}
    assert master.spec.template.spec.containers[0].ports[0].container_port == 6379
    assert frontend.spec.replicas == 3
    assert isinstance(master_svc, Service) and master_svc.spec.ports[0].target_port == 6379
    assert isinstance(frontend_svc, Service) and frontend_svc.spec.type == "NodePort"
    assert slave_svc.spec.selector == {"app": "redis", "role": "slave", "tier": "backend"}
    assert [m.line for m in manifests] == [1, 22, 36, 57, 76]


def test_kubectl_get_output_loads_without_cluster_state() -> None:
    # generateName is refused only where it would be the object's identity.
    text = KUBECTL_GET_POD.replace("  generateName: redis-master-\n", "")
    manifests, found, ignored = load(text)
    assert found == [], [str(e) for e in found]
    pod = manifests[0].obj
    assert isinstance(pod, Pod)
    assert (pod.metadata.uid, pod.metadata.resource_version, pod.metadata.owner_references) == (
        "",
        "",
        [],
    )
    assert (pod.status.phase, pod.status.pod_ip) == ("Pending", "")
    assert pod.spec.node_name == "minion-1"
    assert {i.field for i in ignored} >= {
        "metadata.uid",
        "metadata.ownerReferences",
        "spec.containers[0].imagePullPolicy",
        "status",
    }


def test_manifests_example_is_valid() -> None:
    root = Path(__file__).resolve().parents[2] / "manifests-example"
    report = validate_paths([root])
    assert report.errors == [], [str(e) for e in report.errors]
    kinds = sorted((m.obj.KIND, m.obj.name) for m in report.manifests)
    assert kinds == [("ConfigMap", "web-config"), ("Deployment", "web"), ("Service", "web")]
    deployment = next(m.obj for m in report.manifests if isinstance(m.obj, Deployment))
    container = deployment.spec.template.spec.containers[0]
    assert deployment.spec.replicas == 3
    assert container.readiness_probe is not None and container.readiness_probe.http_get is not None
    assert container.readiness_probe.http_get.port == container.ports[0].name
    ref = next(e for e in container.env if e.name == "GREETING")
    assert ref.value_from is not None and ref.value_from.config_map_key_ref is not None
    assert ref.value_from.config_map_key_ref.name == "web-config"
    service = next(m.obj for m in report.manifests if isinstance(m.obj, Service))
    assert (service.spec.ports[0].port, service.spec.ports[0].target_port) == (
        8080,
        container.ports[0].name,
    )


MICROSERVICES_DEMO = Path(__file__).parent / "data" / "microservices-demo"


def test_microservices_demo_is_valid_and_runs_what_it_can() -> None:
    report = validate_paths([MICROSERVICES_DEMO], unsupported="store")
    assert report.errors == [], [str(e) for e in report.errors]
    kinds = Counter(m.obj.KIND for m in report.manifests)
    assert kinds == {"Deployment": 12, "Service": 12, "ServiceAccount": 11}
    deployments = {m.obj.name: m.obj for m in report.manifests if isinstance(m.obj, Deployment)}
    ads = deployments["adservice"].spec.template.spec.containers[0]
    assert ads.readiness_probe is not None and ads.readiness_probe.grpc is not None
    assert ads.readiness_probe.grpc.port == 9555
    loadgen = deployments["loadgenerator"].spec.template.spec
    assert [c.name for c in loadgen.init_containers] == ["frontend-check"]
    services = {m.obj.name: m.obj for m in report.manifests if isinstance(m.obj, Service)}
    assert services["frontend-external"].spec.type == "LoadBalancer"
    assert {i.field.rsplit(".", 1)[-1] for i in report.ignored} == {
        "serviceAccountName",
        "securityContext",
    }
    with (MICROSERVICES_DEMO / "kubernetes-manifests.yaml").open() as fh:
        for doc in yaml.safe_load_all(fh):
            kubernetes_validate.validate(doc, kubernetes_version(), strict=True)


def test_microservices_demo_with_unsupported_kinds_refused() -> None:
    report = validate_paths([MICROSERVICES_DEMO], unsupported="error")
    assert {e.kind for e in report.errors} == {"ServiceAccount"} and len(report.errors) == 11
    assert len(report.manifests) == 24

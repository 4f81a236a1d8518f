#!/usr/bin/env bash
# Relay benchmark (issue 5): promlink against vmagent, both forwarding to a counting sink.
#
#   bash scripts/bench.sh            # 2 million samples (100k series x 20 rounds)
#   bash scripts/bench.sh --quick    # 200k samples
#   RELAY_BENCH_REPEAT=3 bash scripts/bench.sh
#
# Installs vmagent (Debian victoria-metrics 1.79.5) with apt-get when it is missing and we are
# root, builds the release binary, then runs `cargo bench --bench relay`. Knobs: see
# benches/relay.rs and BENCHMARKS.md. Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

vmagent="${RELAY_BENCH_VMAGENT:-/usr/bin/vmagent}"
if [[ ! -x "$vmagent" ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        echo "bench.sh: installing victoria-metrics (vmagent) with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq victoria-metrics >/dev/null
    else
        echo "bench.sh: $vmagent is missing; install it with 'apt-get install victoria-metrics' (as root). Running promlink only." >&2
    fi
fi

echo "bench.sh: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# Builds the release promlink binary and the bench (bench profile = release) in one go.
cargo bench --bench relay --no-run
exec cargo bench --bench relay -- "$@"

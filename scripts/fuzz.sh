#!/usr/bin/env bash
# Fuzzes the remote-write 1.0 and 2.0 decoders (and, on demand, the configuration loader) with
# cargo fuzz (libFuzzer), each for a bounded time, starting from the seeds in
# fuzz/seeds/<target>/ (the real Prometheus 2.42 bodies of tests/fixtures and hand-built 2.0 and
# YAML inputs).
#
#   bash scripts/fuzz.sh                  # the decoders (what the test command runs), FUZZ_SECONDS (default 60) each
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh rw1_decode
#   bash scripts/fuzz.sh config_load      # the configuration loader: builds all of promlink
#
# The decoder targets depend on the codec crate alone (crates/promlink-codec), so their
# instrumented build stays small. config_load needs the whole promlink crate (cargo feature
# `config` of fuzz/Cargo.toml); it parses the operator's own file, not network input, so the
# test command leaves it out (see fuzz/Cargo.toml).
#
# Targets run side by side, one libFuzzer process each (FUZZ_JOBS at a time, default: the number
# of CPUs), so two targets on two cores take FUZZ_SECONDS, not twice that.
#
# Installs cargo-fuzz from crates.io when it is missing. Runs on the stable toolchain without a
# sanitizer (`-s none`: promlink's decoders are safe Rust, so a crash is a panic, an abort or
# running out of the memory limit). The corpus grows in a temporary directory; a crash leaves
# its input in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 2)}
# FUZZ_STAGE=build: install and build only (scripts/test.sh does that at low priority while
# the tests run); run: fuzz only (after a build); all (default): both.
stage=${FUZZ_STAGE:-all}
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(rw1_decode rw2_decode)
# cargo fuzz defaults to one codegen unit, which makes a cold build take far longer on two
# cores; the instrumentation is the same.
build=(-s none --release --codegen-units 16)
for t in "${targets[@]}"; do
  if [[ $t == config_load ]]; then
    build+=(--features config)
    break
  fi
done

if [[ $stage != run ]]; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz (crates.io, debug build: only its speed of building matters)" >&2
    cargo install cargo-fuzz --locked --quiet --debug
  fi
  echo "==> building the fuzz targets" >&2
  (cd fuzz && cargo fuzz build "${build[@]}")
  [[ $stage != build ]] || exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd fuzz

# One target: fuzz it, then print one line (and the log's tail on failure); exit status 1 on a
# crash.
fuzz_one() {
  local t=$1 log="$work/$1.log" rc=0 runs cov
  mkdir -p "$work/$t"
  cargo fuzz run "${build[@]}" "$t" "$work/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=65536 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  runs=$(grep -o 'Done [0-9]* runs' "$log" | grep -o '[0-9]*' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)
  if [[ $rc -eq 0 ]]; then
    echo "==> fuzz $t: ${runs} executions in ${seconds}s, ${cov:-cov: ?}, no crash" >&2
  else
    echo "==> fuzz $t: FAILED (exit $rc) after ${runs} executions; input in fuzz/artifacts/$t/" >&2
    tail -40 "$log" >&2
    return 1
  fi
}

failed=0
pids=()
for t in "${targets[@]}"; do
  while [[ ${#pids[@]} -ge $jobs ]]; do
    wait "${pids[0]}" || failed=1
    pids=("${pids[@]:1}")
  done
  fuzz_one "$t" &
  pids+=($!)
done
for p in "${pids[@]}"; do
  wait "$p" || failed=1
done
exit $failed

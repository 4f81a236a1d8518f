#!/usr/bin/env bash
# The test command: installs the real peers the end-to-end tests drive (Debian packages), then
# runs every test, benchmark (once, in test mode), doc test and example build, and fuzzes the
# two decoders.
#
#   bash scripts/test.sh                  # what CI runs (.ci/run), on a clean Debian 12 clone
#   bash scripts/test.sh e2e_prometheus   # extra arguments go to `cargo test --all-targets --no-fail-fast`
#   bash scripts/test.sh -- --nocapture
#
# The full run (no arguments) runs the tests with cargo-nextest when it is installed: every test
# in its own process, the tests of all binaries side by side (.config/nextest.toml); without it,
# with `cargo test`, one test binary at a time (slower, same tests). With arguments a developer
# runs a subset with `cargo test`, and nothing is fuzzed.
#
# Needs a Rust toolchain (rustup; Debian's cargo is too old for rust-version in Cargo.toml).
# Runs `apt-get update` and `apt-get install` only when a package below is missing, as root or
# through sudo. Under CI=true a peer that cannot be installed is an error; otherwise the tests
# that need it skip with a loud notice.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages whose binaries the tests start (tests/e2e_*.rs; iptables and iproute2's ip
# and tc for tests/netfault.rs). One per line; add
# prometheus-alertmanager, dnsmasq, victoria-metrics, ... here when a test needs them.
PEERS=(
  prometheus
  prometheus-alertmanager
  prometheus-node-exporter
  iptables
  iproute2
)

started=$SECONDS
log() { printf '==> %s\n' "$*" >&2; }

finish() {
  local rc=$?
  local took=$((SECONDS - started))
  if [[ $rc -eq 0 ]]; then
    printf '==> scripts/test.sh: PASSED in %dm%02ds\n' $((took / 60)) $((took % 60)) >&2
  else
    printf '==> scripts/test.sh: FAILED (exit %d) after %dm%02ds\n' "$rc" $((took / 60)) $((took % 60)) >&2
  fi
}
trap finish EXIT

is_installed() {
  [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

install_peers() {
  if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    log "not a Debian system: not installing ${PEERS[*]}; tests that need them will skip (or fail under CI=true)"
    return 0
  fi
  local missing=() pkg
  for pkg in "${PEERS[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    log "peers already installed: ${PEERS[*]}"
    return 0
  fi

  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
      log "missing Debian packages ${missing[*]} and not root (no sudo): install them, or run as root"
      [[ "${CI:-}" != true ]] || return 1
      return 0
    fi
    sudo=(sudo)
  fi

  # A package install must not start daemons on this machine (prometheus would listen on
  # 0.0.0.0:9090): deny service starts for the duration of the install unless a policy exists.
  local policy=/usr/sbin/policy-rc.d made_policy=
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod 755 "$policy"
    made_policy=1
  fi
  local rc=0
  log "installing ${missing[*]}"
  {
    "${sudo[@]}" apt-get update -q &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
  } || rc=$?
  if [[ -n $made_policy ]]; then "${sudo[@]}" rm -f "$policy"; fi
  if [[ $rc -ne 0 ]]; then
    log "installing ${missing[*]} failed (exit $rc); tests that need them will skip"
    [[ "${CI:-}" != true ]] || return "$rc"
  fi
  return 0
}

ensure_cargo() {
  if ! command -v cargo >/dev/null && [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
  fi
  if ! command -v cargo >/dev/null; then
    log "cargo not found: install Rust with rustup (https://rustup.rs), then rerun"
    exit 127
  fi
}

install_peers
ensure_cargo
log "$(cargo --version), $(rustc --version)"
mkdir -p target
full=
[[ $# -gt 0 ]] || full=1

# The decoders under libFuzzer, a bounded time each (issue 7), only in the full run. Their
# instrumented build (the codec crate alone) starts now at the lowest CPU priority, so it uses
# what the test build and the tests leave idle (the tests mostly wait on timers and peers)
# without slowing them.
# It runs in a process group of its own, so that an early exit can stop all of it.
fuzz_build=
if [[ -n $full ]]; then
  FUZZ_STAGE=build setsid nice -n 19 bash scripts/fuzz.sh >target/fuzz-build.log 2>&1 &
  fuzz_build=$!
fi
# The deployment checks (mostly downloads and helm/kubectl runs) beside the test build.
bash scripts/validate-deploy.sh >target/validate-deploy.log 2>&1 &
deploy=$!

rc=0
log "cargo test --all-targets --no-run $*"
cargo test --all-targets --no-run "$@" || rc=$?
if wait "$deploy"; then
  cat target/validate-deploy.log >&2
else
  cat target/validate-deploy.log >&2
  log "scripts/validate-deploy.sh failed (target/validate-deploy.log)"
  rc=1
fi
if [[ $rc -ne 0 ]]; then
  [[ -z $fuzz_build ]] || kill -- -"$fuzz_build" 2>/dev/null || true
  exit "$rc"
fi

if [[ -z $full ]]; then
  log "cargo test --all-targets --no-fail-fast $*"
  cargo test --all-targets --no-fail-fast "$@" || rc=$?
else
  if cargo nextest --version >/dev/null 2>&1; then
    log "cargo nextest run --no-fail-fast (.config/nextest.toml)"
    cargo nextest run --no-fail-fast || rc=$?
    # nextest runs the library, binary and integration tests; the benchmarks run once in
    # test mode here, as `cargo test --all-targets` runs them.
    log "cargo test --benches (each benchmark once, in test mode)"
    cargo test --benches --no-fail-fast || rc=$?
  else
    log "cargo-nextest is not installed: cargo test --all-targets --no-fail-fast (one test binary at a time)"
    cargo test --all-targets --no-fail-fast || rc=$?
  fi
  # Neither runs doc tests.
  log "cargo test --doc"
  cargo test --doc --no-fail-fast || rc=$?
fi

if [[ -n $fuzz_build ]]; then
  if wait "$fuzz_build"; then
    log "fuzzing the decoders: FUZZ_SECONDS=${FUZZ_SECONDS:-60} each, side by side (scripts/fuzz.sh)"
    FUZZ_STAGE=run bash scripts/fuzz.sh || rc=$?
  else
    tail -40 target/fuzz-build.log >&2
    log "building the fuzz targets failed (target/fuzz-build.log)"
    rc=1
  fi
fi
exit "$rc"

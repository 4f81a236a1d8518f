#!/usr/bin/env bash
# The test command: installs the real peers the end-to-end tests drive (Debian packages), then
# runs every test, benchmark (once, in test mode) and example build.
#
#   bash scripts/test.sh                  # what CI runs (.ci/run), on a clean Debian 12 clone
#   bash scripts/test.sh e2e_prometheus   # extra arguments go to `cargo test --all-targets --no-fail-fast`
#   bash scripts/test.sh -- --nocapture
#
# Needs a Rust toolchain (rustup; Debian's cargo is too old for rust-version in Cargo.toml).
# Runs `apt-get update` and `apt-get install` only when a package below is missing, as root or
# through sudo. Under CI=true a peer that cannot be installed is an error; otherwise the tests
# that need it skip with a loud notice.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages whose binaries the tests start (tests/e2e_*.rs). One per line; add
# prometheus-alertmanager, dnsmasq, victoria-metrics, ... here when a test needs them.
PEERS=(
  prometheus
  prometheus-alertmanager
  prometheus-node-exporter
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
bash scripts/validate-deploy.sh
ensure_cargo
log "$(cargo --version), $(rustc --version)"
log "cargo test --all-targets --no-fail-fast $*"
cargo test --all-targets --no-run "$@"
# The decoders and the config loader under libFuzzer, a bounded time each (issue 7), only in
# the full run (arguments mean a developer is running a subset). The instrumented build starts
# now at the lowest CPU priority, so it uses what the tests leave idle (they mostly wait on
# timers and peers) without slowing them.
fuzz_build=
if [[ $# -eq 0 ]]; then
  FUZZ_STAGE=build nice -n 19 bash scripts/fuzz.sh >target/fuzz-build.log 2>&1 &
  fuzz_build=$!
fi
rc=0
cargo test --all-targets --no-fail-fast "$@" || rc=$?
if [[ -n $fuzz_build ]]; then
  if wait "$fuzz_build"; then
    log "fuzzing: FUZZ_SECONDS=${FUZZ_SECONDS:-60} per target (scripts/fuzz.sh)"
    FUZZ_STAGE=run bash scripts/fuzz.sh || rc=$?
  else
    tail -40 target/fuzz-build.log >&2
    log "building the fuzz targets failed (target/fuzz-build.log)"
    rc=1
  fi
fi
exit "$rc"

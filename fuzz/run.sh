#!/usr/bin/env bash
# Fuzz booster's decoders and state machines (booster-proto, and the booster crate's Noise
# wrapper, config file and speedtest job file).
#
#   fuzz/run.sh [SECONDS [TARGET...]]
#                           libFuzzer on every target (or the ones named), one at a time,
#                           for SECONDS each (default 30); prints each target's executions,
#                           exec/s, coverage (cov, ft) and corpus size. Needs cargo-fuzz (`cargo install
#                           cargo-fuzz`) and nightly flags: a nightly toolchain when rustup
#                           has one, otherwise stable with RUSTC_BOOTSTRAP=1.
#   fuzz/run.sh --smoke     CI mode, stable only: replays the seed corpus (plus prefixes and
#                           deterministic mutations) through the same checks with
#                           `cargo test`; then, if cargo-fuzz can run, every libFuzzer binary
#                           over its seeds for a few seconds.
#
# Targets: socks5_greeting socks5_request socks5_udp http_request_head http_response_head
# http_body_chunked peer_frame range_planner bond_frame bond_link noise_handshake
# noise_transport config speedtest_jobs. Seeds live in corpus/<target>/ and are never written to:
# libFuzzer's findings go to corpus-work/<target>/ and crashes to artifacts/<target>/.
# FUZZ_SANITIZER=none|address (default address: httparse uses unsafe SIMD code). Runs are
# niced (FUZZ_NICE, default 10) and use one process (libFuzzer's default -workers=1).
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(socks5_greeting socks5_request socks5_udp http_request_head http_response_head http_body_chunked peer_frame
  range_planner bond_frame bond_link noise_handshake noise_transport config speedtest_jobs)
SANITIZER="${FUZZ_SANITIZER:-address}"
# Every target: an input that runs 30 s is a hang; no single allocation over 256 MiB (the
# Noise targets: 16 MiB, far above the 128 KiB read buffer a channel may grow to, so an
# allocation sized by a hostile length prefix fails the run).
# The booster crate links the bundled SQLite, whose two function-local `aiOff` arrays ASan
# reports as an ODR violation at start-up (a false positive: they are static, not shared).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_odr_violation=0}"
COMMON_FLAGS=(-timeout=30 -malloc_limit_mb=256)
declare -A TARGET_FLAGS=([noise_handshake]="-malloc_limit_mb=16" [noise_transport]="-malloc_limit_mb=16")

smoke=false
seconds=30
case "${1:-}" in
  --smoke) smoke=true; seconds=5 ;;
  "") ;;
  *[!0-9]*) echo "usage: $0 [SECONDS [TARGET...] | --smoke]" >&2; exit 2 ;;
  *) seconds="$1"; shift
     if [ $# -gt 0 ]; then
       for t in "$@"; do
         [[ " ${TARGETS[*]} " == *" $t "* ]] || { echo "unknown target: $t" >&2; exit 2; }
       done
       TARGETS=("$@")
     fi ;;
esac

# How to get nightly-only flags: a real nightly if rustup has one, else stable bootstrapped.
fuzz_cargo() {
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    cargo +nightly "$@"
  else
    RUSTC_BOOTSTRAP=1 cargo "$@"
  fi
}

can_fuzz() {
  cargo fuzz --version >/dev/null 2>&1 || return 1
  command -v c++ >/dev/null 2>&1 || return 1
}

if $smoke; then
  # Debug build in the main workspace's target dir: it reuses what `cargo test --workspace`
  # built (the targets link the booster crate), so CI does not build it twice. libFuzzer runs
  # are for `fuzz/run.sh SECONDS`: their sanitizer build of booster takes too long for CI.
  echo "== stable corpus replay (cargo test --no-default-features)"
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/../target}" cargo test --no-default-features -- --nocapture
  exit 0
fi

if ! can_fuzz; then
  echo "error: libFuzzer runs need cargo-fuzz (cargo install cargo-fuzz) and a C++ compiler." >&2
  echo "       The stable replay still works: $0 --smoke" >&2
  exit 1
fi

fuzz_cargo fuzz build --sanitizer "$SANITIZER"
BIN="target/$(rustc -vV | sed -n 's/^host: //p')/release"

summary=()
for target in "${TARGETS[@]}"; do
  mkdir -p "corpus-work/$target" "artifacts/$target"
  log="artifacts/$target/last-run.log"
  echo "== $target: ${seconds}s"
  # The binary `fuzz build` made, run directly: `cargo fuzz run` would rebuild first, and
  # the booster crate changes under a run when others work in the same checkout.
  # shellcheck disable=SC2086 # TARGET_FLAGS holds words
  if ! nice -n "${FUZZ_NICE:-10}" "$BIN/$target" -max_total_time="$seconds" -artifact_prefix="artifacts/$target/" \
      -print_final_stats=1 "${COMMON_FLAGS[@]}" ${TARGET_FLAGS[$target]:-} "corpus-work/$target" "corpus/$target" \
      >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "FAILED: $target (log: fuzz/$log)" >&2
    exit 1
  fi
  final_stat() { grep -o "stat::$1: *[0-9]*" "$log" | grep -o '[0-9]*$' || echo '?'; }
  last() { grep -o "$1: [0-9]*" "$log" | tail -n 1 | grep -o '[0-9]*$' || echo '?'; }
  summary+=("$target: $(final_stat number_of_executed_units) execs, $(final_stat average_exec_per_sec) exec/s, cov $(last cov), ft $(last ft), corpus $(last corp) ($(find "corpus-work/$target" -type f | wc -l) files in corpus-work), peak rss $(final_stat peak_rss_mb) MB")
done

echo "== fuzz summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"

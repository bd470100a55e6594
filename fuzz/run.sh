#!/usr/bin/env bash
# Fuzz booster-proto's parsers.
#
#   fuzz/run.sh [SECONDS]   libFuzzer on every target for SECONDS each (default 30); prints
#                           each target's exec count. Needs cargo-fuzz (`cargo install
#                           cargo-fuzz`) and nightly flags: a nightly toolchain when rustup
#                           has one, otherwise stable with RUSTC_BOOTSTRAP=1.
#   fuzz/run.sh --smoke     CI mode, stable only: replays the seed corpus (plus prefixes and
#                           deterministic mutations) through the same checks with
#                           `cargo test`; then, if cargo-fuzz can run, every libFuzzer binary
#                           over its seeds for a few seconds.
#
# Targets: socks5_greeting socks5_request socks5_udp http_request_head http_response_head
# http_body_chunked peer_frame range_planner bond_frame bond_link. Seeds live in corpus/<target>/ and are never written to:
# libFuzzer's findings go to corpus-work/<target>/ and crashes to artifacts/<target>/.
# FUZZ_SANITIZER=none|address (default address: httparse uses unsafe SIMD code).
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(socks5_greeting socks5_request socks5_udp http_request_head http_response_head http_body_chunked peer_frame range_planner bond_frame bond_link)
SANITIZER="${FUZZ_SANITIZER:-address}"

smoke=false
seconds=30
case "${1:-}" in
  --smoke) smoke=true; seconds=5 ;;
  "") ;;
  *[!0-9]*) echo "usage: $0 [SECONDS | --smoke]" >&2; exit 2 ;;
  *) seconds="$1" ;;
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
  echo "== stable corpus replay (cargo test --no-default-features)"
  cargo test --no-default-features --release -- --nocapture
  if ! can_fuzz; then
    echo "== cargo-fuzz or a C++ compiler is missing: skipping libFuzzer runs (replay above passed)"
    exit 0
  fi
fi

if ! can_fuzz; then
  echo "error: libFuzzer runs need cargo-fuzz (cargo install cargo-fuzz) and a C++ compiler." >&2
  echo "       The stable replay still works: $0 --smoke" >&2
  exit 1
fi

fuzz_cargo fuzz build --sanitizer "$SANITIZER"

summary=()
for target in "${TARGETS[@]}"; do
  mkdir -p "corpus-work/$target" "artifacts/$target"
  log="artifacts/$target/last-run.log"
  echo "== $target: ${seconds}s"
  if ! fuzz_cargo fuzz run --sanitizer "$SANITIZER" "$target" \
      "corpus-work/$target" "corpus/$target" -- \
      -max_total_time="$seconds" -artifact_prefix="artifacts/$target/" -print_final_stats=1 \
      >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "FAILED: $target (log: fuzz/$log)" >&2
    exit 1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
  summary+=("$target: $execs execs, cov $cov")
done

echo "== fuzz summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"

#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time (default 60 s each; CI runs this).
# Usage: scripts/fuzz.sh [seconds] [target...]. Fails on the first crash; the crashing input
# is left in fuzz/artifacts/<target>/ (reproduce: cargo fuzz run <target> <file>).
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Stable Rust: RUSTC_BOOTSTRAP lets
# it build with -Zsanitizer=address (AddressSanitizer + libFuzzer coverage).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1
export CARGO_INCREMENTAL=0
# One target dir for the sanitizer build (different flags from the normal build).
export CARGO_TARGET_DIR="${BRIM_FUZZ_TARGET_DIR:-/var/tmp/brim-fuzz-target}"
# Grown corpora live outside the clone and carry over between runs; the committed seeds in
# fuzz/corpus/<target>/ are read as a second corpus directory.
corpus_root="${BRIM_FUZZ_CORPUS_DIR:-/var/tmp/brim-fuzz-corpus}"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build
for t in "${targets[@]}"; do
  mkdir -p "$corpus_root/$t"
  log="$(mktemp "/tmp/brim-fuzz-$t.XXXXXX.log")"
  if ! cargo fuzz run "$t" "$corpus_root/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz target $t crashed; input saved under fuzz/artifacts/$t/ (log: $log)" >&2
    exit 1
  fi
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
  echo "fuzz $t: ${runs:-?} runs in ${secs}s (${rate:-?} exec/s), no crash"
  rm -f "$log"
done

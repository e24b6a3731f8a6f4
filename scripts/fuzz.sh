#!/usr/bin/env bash
# Coverage-guided fuzzing of meta-cni's parsers, on stable Rust: libFuzzer (the libfuzzer-sys
# crate) without sanitizers; rustc's stable `-C passes=sancov-module` instruments the code.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  how long each target runs (default 600); targets run one after another.
#   TARGET   annotation | nad_config | admission_review (default: all three)
#   Env: FUZZ_JOBS=N runs N targets at once (default 1); FUZZ_TARGET_DIR (default
#   /var/tmp/meta-cni-fuzz-target).
#
# Each target starts from fuzz/corpus/TARGET (seeded from the fixture tables by
# fuzz/seed.py) and works in a scratch copy; at the end the inputs that found new coverage
# are merged back into fuzz/corpus/TARGET. A crash (a panic: debug assertions and overflow
# checks are on) stops that target, leaves the input in fuzz/artifacts/TARGET/ and makes
# this script exit 1. The last line of each target's log is printed: runs, coverage, corpus.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-600}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(annotation nad_config admission_review)
JOBS="${FUZZ_JOBS:-1}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/meta-cni-fuzz-target}"
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"

# The flags cargo-fuzz uses with `--sanitizer none`; `--target` keeps them off build scripts.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"

echo "== building the fuzz targets (release, instrumented, $TRIPLE)"
(cd fuzz && cargo build --release --locked --target "$TRIPLE" --bins)
BIN="$CARGO_TARGET_DIR/$TRIPLE/release"

python3 fuzz/seed.py >/dev/null
WORK="$(mktemp -d /var/tmp/meta-cni-fuzz.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT

run_one() {
    local t="$1" dir="$WORK/$1"
    mkdir -p "$dir/corpus" "fuzz/artifacts/$t"
    cp -r "fuzz/corpus/$t/." "$dir/corpus/"
    local rc=0
    "$BIN/$t" "$dir/corpus" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -max_len=16384 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
        >"$dir/log" 2>&1 || rc=$?
    # Keep the inputs that add coverage (libFuzzer's merge: a minimal set).
    mkdir -p "$dir/merged"
    "$BIN/$t" -merge=1 "$dir/merged" "fuzz/corpus/$t" "$dir/corpus" >"$dir/merge.log" 2>&1 || true
    if [ -n "$(ls -A "$dir/merged")" ]; then
        rm -rf "fuzz/corpus/$t"
        mv "$dir/merged" "fuzz/corpus/$t"
    fi
    local last stats
    last="$(grep -E '^#[0-9]+' "$dir/log" | tail -1 || true)"
    stats="$(grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$dir/log" | tr '\n' ' ' || true)"
    if [ $rc -ne 0 ]; then
        echo "== $t: FAILED (exit $rc) after ${SECONDS_EACH}s at most; the crash:"
        grep -E 'panicked|deadly signal|ERROR: libFuzzer|Test unit written' "$dir/log" | head -20 || true
        cp "$dir/log" "fuzz/artifacts/$t/fuzz.log"
        return 1
    fi
    echo "== $t: ${SECONDS_EACH}s, no crash; $last; $stats; corpus $(ls "fuzz/corpus/$t" | wc -l) files"
}

failed=0
running=0
pids=()
for t in "${TARGETS[@]}"; do
    [ -x "$BIN/$t" ] || { echo "no fuzz target $t" >&2; exit 2; }
    run_one "$t" &
    pids+=($!)
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done
exit "$failed"

#!/usr/bin/env bash
# Fuzz Sentinel's parsers and decoders for a bounded time: `bash tests/fuzz.sh`.
#
# Targets (fuzz/fuzz_targets/, seeds in fuzz/corpus/<target>/):
#   modbus_decode  request planning and register/bit decoding with arbitrary specs and answers
#   mqtt_payload   topic filters/templates, payload → value, timestamp and quality
#   condition      the rule condition language: compile, recompile, Kleene evaluation
#   api_bodies     the HTTP API's JSON body types and the handlers' duration arithmetic
#   config         the configuration loader: TOML → validated config → plant, read plans, engine
#
# The toolchain here is stable only; cargo-fuzz needs nightly flags, which RUSTC_BOOTSTRAP=1
# allows on stable. cargo-fuzz is installed from crates.io when missing (about 1.5 min).
#
# Environment:
#   SENTINEL_FUZZ_SECS     seconds per target (default 20); 0 builds the targets and runs
#                          each seed once, without fuzzing
#   SENTINEL_FUZZ_TARGETS  space-separated subset of the targets (default: all)
#   SENTINEL_FUZZ_JOBS     parallel libFuzzer workers per target (default 1)
#
# Longer runs by hand, e.g. an hour per target on every core:
#   SENTINEL_FUZZ_SECS=3600 SENTINEL_FUZZ_JOBS=$(nproc) bash tests/fuzz.sh
# Inputs libFuzzer finds interesting go to fuzz/target/corpus-run/<target>/ (not committed);
# a crash is written to fuzz/artifacts/<target>/ and fails the script. To keep a crash as a
# regression seed, copy it into fuzz/corpus/<target>/ once fixed.
#
# Exit code: 0 when every target ran without a crash, 1 otherwise.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
SECS="${SENTINEL_FUZZ_SECS:-20}"
JOBS="${SENTINEL_FUZZ_JOBS:-1}"
TARGETS="${SENTINEL_FUZZ_TARGETS:-modbus_decode mqtt_payload condition api_bodies config}"
START=$(date +%s)

log() { printf '[%s fuzz +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - START))" "$*"; }

case "$SECS" in
    ''|*[!0-9]*) log "SENTINEL_FUZZ_SECS must be a whole number of seconds, not '$SECS'"; exit 1 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo-fuzz missing: cargo install cargo-fuzz --locked"
    t0=$(date +%s)
    cargo install cargo-fuzz --locked
    log "cargo-fuzz installed in $(($(date +%s) - t0))s"
fi

export RUSTC_BOOTSTRAP=1
# -O: release build; -a: debug assertions, so integer overflow is a crash the fuzzer reports.
FLAGS=(-O -a)

t0=$(date +%s)
log "building targets: $TARGETS"
# All targets in one build: they share every dependency, and building them one by one relinks
# the fuzz crate each time.
(cd "$FUZZ_DIR" && cargo fuzz build "${FLAGS[@]}")
log "built in $(($(date +%s) - t0))s"

failed=()
for target in $TARGETS; do
    seeds="$FUZZ_DIR/corpus/$target"
    work="$FUZZ_DIR/target/corpus-run/$target"
    mkdir -p "$work"
    if [ "$SECS" -eq 0 ]; then
        # Each seed once: the regression seeds of past crashes must still pass.
        args=(-runs=0)
        dirs=("$seeds")
        what="seeds only"
    else
        args=(-max_total_time="$SECS")
        [ "$JOBS" -gt 1 ] && args+=(-fork="$JOBS")
        dirs=("$work" "$seeds")
        what="${SECS}s"
    fi
    log "$target: $what"
    t1=$(date +%s)
    out="$FUZZ_DIR/target/fuzz-$target.log"
    # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: a leak or blow-up.
    if (cd "$FUZZ_DIR" && cargo fuzz run "${FLAGS[@]}" "$target" "${dirs[@]}" -- \
            "${args[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1) >"$out" 2>&1; then
        execs=$(grep -a -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$out" | grep -o '[0-9]*$' || echo "?")
        cov=$(grep -a -o 'cov: [0-9]*' "$out" | tail -n1 || true)
        log "$target: ok, $execs execs, ${cov:-cov ?}, $(($(date +%s) - t1))s"
    else
        log "$target: FAILED after $(($(date +%s) - t1))s; last lines of $out:"
        tail -n 40 "$out"
        failed+=("$target")
    fi
done

log "total $(($(date +%s) - START))s"
if [ "${#failed[@]}" -gt 0 ]; then
    log "crashes in: ${failed[*]} (inputs under fuzz/artifacts/)"
    exit 1
fi

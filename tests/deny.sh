#!/usr/bin/env bash
# Supply-chain checks with cargo-deny against deny.toml: `bash tests/deny.sh`.
#
# Checks licences (allow-list), bans (duplicate versions warn; OpenSSL is banned), sources
# (crates.io only) and, when the RustSec advisory database can be fetched from GitHub,
# advisories. Without network access to GitHub the advisory check is skipped with a warning,
# unless SENTINEL_DENY_REQUIRE_ADVISORIES=1, which makes that a failure.
#
# cargo-deny is installed from crates.io when missing (`cargo install cargo-deny --locked`,
# about 5 minutes on two cores, once per machine).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
START=$(date +%s)
log() { printf '[%s deny +%ss] %s\n' "$(date -u +%H:%M:%S)" "$(($(date +%s) - START))" "$*"; }

if ! cargo deny --version >/dev/null 2>&1; then
    log "cargo-deny missing: cargo install cargo-deny --locked"
    t0=$(date +%s)
    cargo install cargo-deny --locked
    log "cargo-deny installed in $(($(date +%s) - t0))s"
fi

cd "$ROOT"
checks=(licenses bans sources)
if timeout 120 cargo deny fetch db >/dev/null 2>&1; then
    checks=(advisories "${checks[@]}")
    log "advisory database fetched"
elif [ "${SENTINEL_DENY_REQUIRE_ADVISORIES:-0}" = 1 ]; then
    log "ERROR: the advisory database could not be fetched and SENTINEL_DENY_REQUIRE_ADVISORIES=1"
    exit 1
else
    log "WARNING: the RustSec advisory database could not be fetched (no access to GitHub?);" \
        "advisories NOT checked, only: ${checks[*]}"
fi

if cargo deny --log-level warn check "${checks[@]}"; then
    log "ok: ${checks[*]} ($(($(date +%s) - START))s)"
else
    log "FAILED: cargo deny check ${checks[*]}"
    exit 1
fi

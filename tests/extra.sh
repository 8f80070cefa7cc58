# Sourced by tests/run.sh after the cargo tests (services up, SENTINEL_TEST_* exported,
# SENTINEL_TEST_RC holding the cargo test exit code): the web console's end-to-end tests in
# headless Chromium. A failure sets SENTINEL_TEST_RC so the run fails after this step.
# shellcheck shell=bash

browser_tests() {
    local dir="$ROOT/tests/browser"
    local stamp="$dir/node_modules/.package-lock.stamp"
    mkdir -p "$ROOT/tests/artifacts"
    # npm only when node_modules is missing or the lock file changed since the last install.
    if [ ! -d "$dir/node_modules/playwright-core" ] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
        log "npm ci in tests/browser"
        (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) || return 1
        cp "$dir/package-lock.json" "$stamp"
    fi
    log "node --test (browser tests; screenshots in tests/artifacts/)"
    (cd "$dir" && timeout 170 node --test ./*.test.mjs)
}

if ! browser_tests; then
    log "browser tests FAILED"
    SENTINEL_TEST_RC=1
fi
export SENTINEL_TEST_RC

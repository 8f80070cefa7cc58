#!/usr/bin/env bash
# Sentinel test entry point: `bash tests/run.sh`.
#
# 1. Installs the external services the integration tests talk to (mosquitto,
#    VictoriaMetrics, socat, curl) and, for the console's browser tests,
#    chromium and node/npm from Debian packages when they are missing.
# 2. Creates the Python venv tests/.venv with pymodbus and aiosmtpd.
# 3. Starts a private MQTT broker, VictoriaMetrics and an SMTP sink on free
#    loopback ports, state under tests/.run/ (wiped at every start).
# 4. Exports SENTINEL_TEST_* for the tests, builds the workspace and runs
#    `cargo test --workspace --all-targets`, then tests/fuzz.sh (bounded
#    fuzzing) and tests/deny.sh (cargo-deny), either failing the run, then
#    sources tests/extra.sh if it
#    exists (with $SENTINEL_TEST_RC set to the cargo test exit code; a failing
#    command there ends the run at once, or it can set SENTINEL_TEST_RC to a
#    non-zero value to fail the run after finishing its own steps).
# 5. On exit (success, failure or Ctrl-C) stops every service it started and,
#    when something failed, prints the tail of each service log.
#
# Arguments are passed to `cargo test`, e.g.
#     bash tests/run.sh -p sentinel-tests -- --nocapture mqtt
#
# Environment:
#   SENTINEL_TEST_CMD   when set, run this shell command (with the services up
#                       and the SENTINEL_TEST_* variables exported) instead of
#                       the cargo build/test steps and tests/extra.sh, e.g.
#                       SENTINEL_TEST_CMD='env | grep SENTINEL_' bash tests/run.sh
#   SENTINEL_TEST_WAIT  seconds to wait for each service to become ready (30).
#
# The exit code is the exit code of the test run.

# Functions below run from traps or indirectly (wait_ready), which shellcheck
# reports as unreachable.
# shellcheck disable=SC2317

set -euo pipefail

SCRIPT_START=$(date +%s)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TESTS_DIR="$ROOT/tests"
RUN_DIR="$TESTS_DIR/.run"
VENV="$TESTS_DIR/.venv"
VENV_PY="$VENV/bin/python"
WAIT_SECS="${SENTINEL_TEST_WAIT:-30}"

# Debian puts the mosquitto broker in /usr/sbin, which a non-login PATH may lack.
for d in /usr/local/sbin /usr/sbin /sbin; do
    case ":$PATH:" in *":$d:"*) ;; *) PATH="$PATH:$d" ;; esac
done
export PATH

# ---------------------------------------------------------------- helpers ---

ts() { date -u +%Y-%m-%dT%H:%M:%SZ; }
elapsed() { echo "$(($(date +%s) - SCRIPT_START))s"; }
section() { printf '\n==== [%s +%s] %s ====\n' "$(ts)" "$(elapsed)" "$*"; }
log() { printf '[%s] %s\n' "$(ts)" "$*"; }
die() { printf '[%s] ERROR: %s\n' "$(ts)" "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
fi
apt_update() { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q; }
apt_install() {
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

# ------------------------------------------------------ process bookkeeping ---

STAGE="setup"
SERVICE_NAMES=()
SERVICE_PIDS=()
SERVICE_LOGS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    if [ "${#SERVICE_PIDS[@]}" -gt 0 ]; then
        section "stopping services"
        local i pid
        for i in "${!SERVICE_PIDS[@]}"; do
            pid="${SERVICE_PIDS[$i]}"
            kill -TERM "$pid" 2>/dev/null && log "sent TERM to ${SERVICE_NAMES[$i]} (pid $pid)"
        done
        # Up to ~5 s for a clean shutdown, then KILL whatever is left.
        local deadline=$(($(date +%s) + 5)) alive
        while :; do
            alive=0
            for pid in "${SERVICE_PIDS[@]}"; do
                kill -0 "$pid" 2>/dev/null && alive=1
            done
            [ "$alive" -eq 0 ] && break
            [ "$(date +%s)" -ge "$deadline" ] && break
            sleep 0.1
        done
        for i in "${!SERVICE_PIDS[@]}"; do
            pid="${SERVICE_PIDS[$i]}"
            if kill -0 "$pid" 2>/dev/null; then
                log "${SERVICE_NAMES[$i]} (pid $pid) did not stop, sending KILL"
                kill -KILL "$pid" 2>/dev/null
            fi
            wait "$pid" 2>/dev/null
        done
        if [ "$rc" -ne 0 ] && [ "$STAGE" != "cargo build" ]; then
            for i in "${!SERVICE_LOGS[@]}"; do
                printf '\n---- last 40 lines of %s log (%s) ----\n' \
                    "${SERVICE_NAMES[$i]}" "${SERVICE_LOGS[$i]}"
                tail -n 40 "${SERVICE_LOGS[$i]}" 2>/dev/null || echo "(no log)"
            done
        fi
    fi
    if [ "$rc" -ne 0 ]; then
        section "FAILED during: $STAGE (exit code $rc)"
    else
        section "done, exit code 0"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_service NAME LOGFILE CMD... : runs CMD in the background, output to LOGFILE.
start_service() {
    local name=$1 logfile=$2
    shift 2
    "$@" >"$logfile" 2>&1 </dev/null &
    local pid=$!
    SERVICE_NAMES+=("$name")
    SERVICE_PIDS+=("$pid")
    SERVICE_LOGS+=("$logfile")
    log "started $name (pid $pid), log $logfile"
}

# wait_ready NAME CHECK-CMD... : polls CHECK-CMD until it succeeds, the service
# dies, or WAIT_SECS pass.
wait_ready() {
    local name=$1
    shift
    local i pid="" logfile=""
    for i in "${!SERVICE_NAMES[@]}"; do
        if [ "${SERVICE_NAMES[$i]}" = "$name" ]; then
            pid="${SERVICE_PIDS[$i]}"
            logfile="${SERVICE_LOGS[$i]}"
        fi
    done
    local start deadline
    start=$(date +%s)
    deadline=$((start + WAIT_SECS))
    while :; do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$name exited during startup; see its log $logfile"
        fi
        if "$@" >/dev/null 2>&1; then
            log "$name ready after $(($(date +%s) - start))s"
            return 0
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            die "$name not ready after ${WAIT_SECS}s; see its log $logfile"
        fi
        sleep 0.2
    done
}

# ------------------------------------------------------------ dependencies ---

section "system packages"
STAGE="system packages"
declare -A PKG_FOR_BIN=(
    [mosquitto]=mosquitto
    [mosquitto_pub]=mosquitto-clients
    [mosquitto_sub]=mosquitto-clients
    [victoria-metrics]=victoria-metrics
    [socat]=socat
    [curl]=curl
    [faketime]=faketime  # tests/tests/fault_clock.rs: a stepped wall clock (libfaketime)
    # The console's browser tests (tests/extra.sh): Debian's Chromium driven by
    # playwright-core from npm; no browser is downloaded.
    [chromium]=chromium
    [node]=nodejs
    [npm]=npm
)
missing_pkgs=()
for bin in "${!PKG_FOR_BIN[@]}"; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        pkg="${PKG_FOR_BIN[$bin]}"
        case " ${missing_pkgs[*]:-} " in *" $pkg "*) ;; *) missing_pkgs+=("$pkg") ;; esac
    fi
done
if [ "${#missing_pkgs[@]}" -gt 0 ]; then
    log "installing: ${missing_pkgs[*]}"
    apt_update
    apt_install "${missing_pkgs[@]}"
else
    log "all present"
fi
for bin in "${!PKG_FOR_BIN[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || die "$bin still missing after installing ${PKG_FOR_BIN[$bin]}"
done
# A CJK font, so the console's Chinese screenshots show characters rather than boxes.
if ! dpkg -s fonts-wqy-zenhei >/dev/null 2>&1; then
    log "installing: fonts-wqy-zenhei"
    apt_install fonts-wqy-zenhei || { apt_update && apt_install fonts-wqy-zenhei; } || log "no CJK font; screenshots will show boxes"
fi

section "python venv ($VENV)"
STAGE="python venv"
if ! "$VENV_PY" -c 'import sys' >/dev/null 2>&1; then
    log "creating venv"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV"; then
        log "python3 -m venv failed, installing python3-venv"
        rm -rf "$VENV"
        apt_install python3-venv || { apt_update && apt_install python3-venv; }
        python3 -m venv "$VENV"
    fi
fi
if "$VENV_PY" - <<'EOF' >/dev/null 2>&1
import aiosmtpd, pymodbus, serial  # serial: pyserial, for the RTU tests
major, minor = (int(x) for x in pymodbus.__version__.split(".")[:2])
# 3.8 and 3.10 mishandle reads past the end of a table: want 3.11 or later.
assert major == 3 and minor >= 11
EOF
then
    log "pymodbus and aiosmtpd already installed"
else
    log "pip install"
    "$VENV_PY" -m pip install -q --disable-pip-version-check --upgrade 'pymodbus>=3.6,<4' pyserial aiosmtpd
fi
log "$("$VENV_PY" -c 'import pymodbus, aiosmtpd; print("pymodbus", pymodbus.__version__, "aiosmtpd", aiosmtpd.__version__)')"

# ---------------------------------------------------------------- services ---

section "starting services in $RUN_DIR"
STAGE="service startup"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"

read -r MQTT_PORT VM_PORT SMTP_PORT < <("$VENV_PY" - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
[ -n "${SMTP_PORT:-}" ] || die "could not pick free loopback ports"
log "ports: mqtt=$MQTT_PORT vm=$VM_PORT smtp=$SMTP_PORT"

MOSQUITTO_BIN="$(command -v mosquitto)"
VM_BIN="$(command -v victoria-metrics)"
SOCAT_BIN="$(command -v socat)"

# MQTT broker
mkdir -p "$RUN_DIR/mosquitto"
cat >"$RUN_DIR/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence true
persistence_location $RUN_DIR/mosquitto
log_dest stdout
log_timestamp_format %Y-%m-%dT%H:%M:%S
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
user $(id -un)
EOF
start_service mosquitto "$RUN_DIR/mosquitto.log" "$MOSQUITTO_BIN" -c "$RUN_DIR/mosquitto.conf"

# VictoriaMetrics
mkdir -p "$RUN_DIR/vm"
start_service victoria-metrics "$RUN_DIR/victoria-metrics.log" "$VM_BIN" \
    -httpListenAddr="127.0.0.1:$VM_PORT" \
    -storageDataPath="$RUN_DIR/vm" \
    -retentionPeriod=100y \
    -search.latencyOffset=0s \
    -search.disableCache \
    -loggerLevel=WARN

# SMTP sink: every accepted message is stored in a Maildir.
MAILDIR="$RUN_DIR/maildir"
mkdir -p "$MAILDIR/cur" "$MAILDIR/new" "$MAILDIR/tmp"
start_service smtp "$RUN_DIR/smtp.log" "$VENV_PY" -u -m aiosmtpd -n -u -d \
    -l "127.0.0.1:$SMTP_PORT" -c aiosmtpd.handlers.Mailbox "$MAILDIR"

mqtt_round_trip() {
    # A retained message is delivered to a subscriber that connects later,
    # so this proves both publish and subscribe without a background process.
    mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -i sentinel-ready-pub -t sentinel/ready -r -m ok -q 1 \
        && [ "$(mosquitto_sub -h 127.0.0.1 -p "$MQTT_PORT" -i sentinel-ready-sub -t sentinel/ready -C 1 -W 3)" = ok ] \
        && mosquitto_pub -h 127.0.0.1 -p "$MQTT_PORT" -i sentinel-ready-pub -t sentinel/ready -r -n -q 1
}
smtp_banner() {
    "$VENV_PY" -c 'import smtplib, sys; s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=2); s.noop(); s.quit()' "$SMTP_PORT"
}

wait_ready mosquitto mqtt_round_trip
wait_ready victoria-metrics curl -fsS --max-time 2 "http://127.0.0.1:$VM_PORT/health"
wait_ready smtp smtp_banner

export SENTINEL_TEST_MQTT="127.0.0.1:$MQTT_PORT"
export SENTINEL_TEST_VM="http://127.0.0.1:$VM_PORT"
export SENTINEL_TEST_SMTP="127.0.0.1:$SMTP_PORT"
export SENTINEL_TEST_MAILDIR="$MAILDIR"
export SENTINEL_TEST_PYTHON="$VENV_PY"
export SENTINEL_TEST_PYMODBUS_DEVICE="$TESTS_DIR/devices/pymodbus_device.py"
export SENTINEL_TEST_MOSQUITTO_BIN="$MOSQUITTO_BIN"
export SENTINEL_TEST_VM_BIN="$VM_BIN"
export SENTINEL_TEST_SOCAT_BIN="$SOCAT_BIN"
export SENTINEL_TEST_RUN_DIR="$RUN_DIR"
export SENTINEL_REQUIRE_SERVICES=1
[ -f "$SENTINEL_TEST_PYMODBUS_DEVICE" ] || die "missing $SENTINEL_TEST_PYMODBUS_DEVICE"

section "services ready"
env | grep '^SENTINEL_' | sort

# ------------------------------------------------------------------- tests ---

cd "$ROOT"
export RUST_BACKTRACE=1

if [ -n "${SENTINEL_TEST_CMD:-}" ]; then
    section "running SENTINEL_TEST_CMD: $SENTINEL_TEST_CMD"
    STAGE="SENTINEL_TEST_CMD"
    set +e
    bash -c "$SENTINEL_TEST_CMD"
    rc=$?
    set -e
    exit "$rc"
fi

locked=()
[ -f "$ROOT/Cargo.lock" ] && locked=(--locked)

section "cargo build --workspace --all-targets ${locked[*]:-}"
STAGE="cargo build"
cargo build --workspace --all-targets "${locked[@]}"

section "cargo test --workspace --all-targets ${locked[*]:-} $*"
STAGE="cargo test"
set +e
cargo test --workspace --all-targets "${locked[@]}" "$@"
SENTINEL_TEST_RC=$?
set -e
export SENTINEL_TEST_RC
section "cargo test finished, exit code $SENTINEL_TEST_RC"
bash "$ROOT/tests/fuzz.sh" || { log "tests/fuzz.sh failed"; SENTINEL_TEST_RC=1; }
bash "$ROOT/tests/deny.sh" || { log "tests/deny.sh failed"; SENTINEL_TEST_RC=1; }

if [ -f "$TESTS_DIR/extra.sh" ]; then
    section "tests/extra.sh"
    STAGE="tests/extra.sh"
    # shellcheck source=/dev/null
    source "$TESTS_DIR/extra.sh"
    section "tests/extra.sh finished"
fi
if [ "$SENTINEL_TEST_RC" -ne 0 ]; then
    STAGE="tests"
fi

exit "$SENTINEL_TEST_RC"

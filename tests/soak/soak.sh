#!/usr/bin/env bash
# Soak test (not run in CI): Sentinel at ten times the demo plant's load for an hour, sampling
# its memory and alarm latency every minute into a CSV.
#
#   bash tests/soak/soak.sh                      # one hour
#   SOAK_SECS=180 bash tests/soak/soak.sh        # a three-minute smoke run
#
# Load: SOAK_DEVICES (10) pymodbus devices with SOAK_POINTS (15) points each, polled every
# second (the demo plant has 15 points polled every second), values changing every second.
# Every SOAK_SAMPLE_SECS (60) the driver pushes one point over its limit, times how long until
# the alarm is in the API (what an operator would see), returns it to normal, and samples
# Sentinel's RSS, readings stored, store errors and open alarms.
#
# Output: tests/soak/out/<UTC time>/soak.csv, the configuration and Sentinel's log. Needs the
# Python venv that tests/run.sh creates (tests/.venv) and builds Sentinel in release mode.
#
# Environment: SOAK_SECS, SOAK_SAMPLE_SECS, SOAK_DEVICES, SOAK_POINTS, SOAK_POLL_MS (1000).

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="$ROOT/tests/.venv/bin/python"
DEVICE_PY="$ROOT/tests/devices/pymodbus_device.py"
SECS="${SOAK_SECS:-3600}"
SAMPLE="${SOAK_SAMPLE_SECS:-60}"
DEVICES="${SOAK_DEVICES:-10}"
POINTS="${SOAK_POINTS:-15}"
POLL_MS="${SOAK_POLL_MS:-1000}"
OUT="$ROOT/tests/soak/out/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$OUT/data"

[ -x "$PY" ] || { echo "missing $PY: run bash tests/run.sh once to create the venv" >&2; exit 1; }
(cd "$ROOT" && cargo build --release --bin sentinel)
BIN="$ROOT/target/release/sentinel"

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

PORTS=()
for i in $(seq 1 "$DEVICES"); do
    port=$(free_port)
    "$PY" "$DEVICE_PY" --port "$port" >"$OUT/device-$i.log" 2>&1 &
    PIDS+=($!)
    PORTS+=("$port")
done

# pymodbus takes a few seconds to listen on a busy machine; the driver writes to the devices
# from its first second, so wait for every port.
for port in "${PORTS[@]}"; do
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done

HTTP_PORT=$(free_port)
CFG="$OUT/sentinel.toml"
{
    printf '[site]\nid = "soak"\nname = "Soak: %s devices x %s points"\n\n' "$DEVICES" "$POINTS"
    printf '[store]\ndata_dir = "%s"\n\n[http]\nlisten = "127.0.0.1:%s"\n' "$OUT/data" "$HTTP_PORT"
    for i in $(seq 1 "$DEVICES"); do
        port=${PORTS[$((i - 1))]}
        printf '\n[[devices]]\nname = "dev%s"\nprotocol = "modbus_tcp"\nhost = "127.0.0.1"\nport = %s\npoll_interval_ms = %s\ntimeout_ms = 500\n' "$i" "$port" "$POLL_MS"
        for p in $(seq 0 $((POINTS - 1))); do
            printf '\n[[points]]\ntag = "T%s-%s"\ndevice = "dev%s"\nkind = "temperature"\nunit = "C"\nspan = [0.0, 100.0]\nregister = { table = "holding", address = %s }\n' "$i" "$p" "$i" "$p"
            printf 'limits = { deadband = 2.0, levels = [{ level = "H", setpoint = 50.0, priority = "high" }] }\n'
        done
    done
} >"$CFG"

"$BIN" check -c "$CFG" >/dev/null
"$BIN" run -c "$CFG" >"$OUT/sentinel.log" 2>&1 &
SENTINEL_PID=$!
PIDS+=("$SENTINEL_PID")

echo "soak: ${SECS}s, $DEVICES devices x $POINTS points every ${POLL_MS} ms, sample every ${SAMPLE}s -> $OUT/soak.csv"
"$PY" "$ROOT/tests/soak/driver.py" \
    --api "http://127.0.0.1:$HTTP_PORT" --pid "$SENTINEL_PID" --ports "${PORTS[*]}" \
    --points "$POINTS" --secs "$SECS" --sample "$SAMPLE" --csv "$OUT/soak.csv"
echo "soak: done"
column -s, -t <"$OUT/soak.csv" || cat "$OUT/soak.csv"

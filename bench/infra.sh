#!/usr/bin/env bash
# Start / stop the shared services of the benchmark, on loopback only:
#   VictoriaMetrics on 127.0.0.1:$BENCH_VM_PORT (default 28428), data in out/vm (wiped at start)
#   mosquitto       on 127.0.0.1:$BENCH_MQTT_PORT (default 28830), no persistence
# PIDs in out/run/{vm,mosquitto}.pid; stopped by those PIDs only.
#   bash bench/infra.sh start | stop
set -euo pipefail
cd "$(dirname "$0")"
OUT=${BENCH_OUT:-$PWD/out}
VM_PORT=${BENCH_VM_PORT:-28428}
MQTT_PORT=${BENCH_MQTT_PORT:-28830}
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
mkdir -p "$OUT/run" "$OUT/logs"
alive() { [ -f "$OUT/run/$1.pid" ] && kill -0 "$(cat "$OUT/run/$1.pid")" 2>/dev/null; }
case "${1:-start}" in
start)
  if alive vm; then echo "victoria-metrics already running (pid $(cat "$OUT/run/vm.pid"))"; else
    rm -rf "$OUT/vm"; mkdir -p "$OUT/vm"
    # -search.latencyOffset=0s: just-written samples are visible to /api/v1/query at once (default hides 30 s)
    # -search.disableCache: no rollup cache, so counts over recent windows are exact
    nohup victoria-metrics -httpListenAddr=127.0.0.1:$VM_PORT -storageDataPath="$OUT/vm" \
      -retentionPeriod=7d -search.latencyOffset=0s -search.disableCache \
      -search.maxUniqueTimeseries=1000000 -loggerLevel=WARN > "$OUT/logs/vm.log" 2>&1 &
    echo $! > "$OUT/run/vm.pid"; echo "victoria-metrics pid $(cat "$OUT/run/vm.pid") on 127.0.0.1:$VM_PORT"
  fi
  if alive mosquitto; then echo "mosquitto already running (pid $(cat "$OUT/run/mosquitto.pid"))"; else
    cat > "$OUT/run/mosquitto.conf" <<CONF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
max_queued_messages 100000
CONF
    nohup "$MOSQUITTO" -c "$OUT/run/mosquitto.conf" > "$OUT/logs/mosquitto.log" 2>&1 &
    echo $! > "$OUT/run/mosquitto.pid"; sleep 0.5
    alive mosquitto || { echo "mosquitto did not start (port $MQTT_PORT taken?), see $OUT/logs/mosquitto.log"; exit 1; }
    echo "mosquitto pid $(cat "$OUT/run/mosquitto.pid") on 127.0.0.1:$MQTT_PORT"
  fi
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$VM_PORT/health" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -fsS "http://127.0.0.1:$VM_PORT/health" >/dev/null || { echo "VictoriaMetrics did not come up, see $OUT/logs/vm.log"; exit 1; }
  ;;
stop)
  for n in vm mosquitto; do
    if alive $n; then kill "$(cat "$OUT/run/$n.pid")"; echo "stopped $n ($(cat "$OUT/run/$n.pid"))"; fi
    rm -f "$OUT/run/$n.pid"
  done
  ;;
*) echo "usage: $0 start|stop"; exit 64 ;;
esac

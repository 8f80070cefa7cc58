#!/usr/bin/env bash
# Sentinel side by side with Node-RED and a Python script (issue #11), in one run:
# the 1 Hz matrix (D x R = 10x20, 100x20, 300x50) and the max-rate sweep (10x20, shorter
# intervals), every peer in turn on the same simulator, VictoriaMetrics and mosquitto.
#
#   bash bench/run.sh                       # everything, 2 reps (about 60 min)
#
# Knobs (environment):
#   REPS="1 2"                               repetitions of every configuration
#   CONFIGS="10x20 100x20 300x50"            matrix configurations ("" = skip the matrix)
#   PEERS="sentinel python-burst python nodered floor"   floor = the I/O alone (tests/examples/io_floor.rs), a lower bound
#   WINDOW=60 DRAIN=8                        matrix window and drain, seconds
#   MAXRATE=1                                0 = skip the max-rate sweep
#   MR_SENTINEL="20 10" MR_PYTHON="5 3 2" MR_NODERED="50 20 10"   sweep intervals, ms, per peer
#   MR_UNITS="2 3"                           Sentinel past its 10 ms floor: units per device link at 10 ms ("" = skip)
#   MR_WINDOW=20 MR_WARMUP=8                 sweep window and warm-up, seconds
#   BENCH_VM_PORT BENCH_MQTT_PORT BENCH_SIM_PORT BENCH_NR_PORT   fixed ports (else defaults, or free ones)
#   BENCH_OUT=bench/out                      where everything goes
#   BENCH_SENTINEL_TOML='[engine]\nworker_threads = 2'   extra TOML for Sentinel (comparisons off the defaults)
# Result: $BENCH_OUT/results/<run id>.md (tables), <run id>.csv (one line per run), <tag>.json.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD
REPO=$(cd .. && pwd)
export BENCH_OUT=${BENCH_OUT:-$HERE/out}
REPS=${REPS:-"1 2"}
CONFIGS=${CONFIGS-"10x20 100x20 300x50"}
PEERS=${PEERS:-"sentinel python-burst python nodered floor"}
WINDOW=${WINDOW:-60}
DRAIN=${DRAIN:-8}
MAXRATE=${MAXRATE:-1}
MR_SENTINEL=${MR_SENTINEL-"20 10"}
MR_PYTHON=${MR_PYTHON-"5 3 2"}
MR_NODERED=${MR_NODERED-"50 20 10"}
MR_UNITS=${MR_UNITS-"2 3"}
MR_WINDOW=${MR_WINDOW:-20}
MR_WARMUP=${MR_WARMUP:-8}
RUN_ID=${RUN_ID:-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$BENCH_OUT/run" "$BENCH_OUT/logs" "$BENCH_OUT/results"
export BENCH_CSV=$BENCH_OUT/results/$RUN_ID.csv
echo $$ > "$BENCH_OUT/run/run.pid"

# ---------------------------------------------------------------- 1. install what is missing
need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if ! need mosquitto || ! need mosquitto_sub || ! need victoria-metrics; then
  echo "== installing mosquitto, mosquitto-clients, victoria-metrics (apt)"
  apt-get update && apt-get install -y mosquitto mosquitto-clients victoria-metrics
fi
PATH=$PATH:/usr/sbin
for c in python3 node npm curl cargo; do need $c || { echo "missing: $c"; exit 1; }; done
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import pymodbus, paho.mqtt, aiohttp' 2>/dev/null; then
  echo "== Python venv (bench/.venv)"
  python3 -m venv .venv
  .venv/bin/pip install -q 'pymodbus>=3.6,<4' paho-mqtt aiohttp
fi
if [ ! -f nodered/node_modules/node-red/red.js ] || [ ! -d nodered/node_modules/node-red-contrib-modbus ]; then
  echo "== Node-RED (bench/nodered/node_modules)"
  (cd nodered && npm install --no-audit --no-fund)
fi
echo "== Sentinel release binary"
export SENTINEL_BIN=${SENTINEL_BIN:-${CARGO_TARGET_DIR:-$REPO/target}/release/sentinel}
if ! (cd "$REPO" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target} cargo build --release --bin sentinel); then
  [ -x "$SENTINEL_BIN" ] || { echo "cargo build failed and there is no $SENTINEL_BIN"; exit 1; }
  echo "!! cargo build failed; using the existing $SENTINEL_BIN ($(date -r "$SENTINEL_BIN"))"
fi
case " $PEERS " in *" floor "*)
  echo "== I/O floor (tests/examples/io_floor.rs)"
  (cd "$REPO" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target} cargo build --release -p sentinel-tests --example io_floor) ;;
esac

# ---------------------------------------------------------------- 2. ports and services
free_port() { .venv/bin/python -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
busy() { (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null; }
pick() {  # pick VAR DEFAULT: keep a fixed port from the environment, else the default if free, else a free one
  local var=$1 def=$2
  if [ -n "${!var:-}" ]; then return; fi
  if busy "$def"; then export "$var=$(free_port)"; else export "$var=$def"; fi
}
OWN_INFRA=0
if [ -f "$BENCH_OUT/run/vm.pid" ] && kill -0 "$(cat "$BENCH_OUT/run/vm.pid")" 2>/dev/null; then
  : "${BENCH_VM_PORT:=28428}" "${BENCH_MQTT_PORT:=28830}"; export BENCH_VM_PORT BENCH_MQTT_PORT
else
  pick BENCH_VM_PORT 28428; pick BENCH_MQTT_PORT 28830; OWN_INFRA=1
fi
pick BENCH_NR_PORT 28880
if [ -z "${BENCH_SIM_PORT:-}" ]; then  # 300 consecutive free ports for the simulated devices
  for base in 31020 32020 33020 34020 35020; do
    ok=1; for p in $(seq $base $((base + 299))); do busy $p && { ok=0; break; }; done
    [ $ok = 1 ] && { export BENCH_SIM_PORT=$base; break; }
  done
fi
echo "== ports: VM $BENCH_VM_PORT, mosquitto $BENCH_MQTT_PORT, devices $BENCH_SIM_PORT.., Node-RED $BENCH_NR_PORT"
cleanup() {
  for f in "$BENCH_OUT"/run/{peer,sub,sim}.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"
  done
  [ $OWN_INFRA = 1 ] && bash "$HERE/infra.sh" stop || true
  rm -f "$BENCH_OUT/run/run.pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bash infra.sh start

PY=.venv/bin/python
{
  echo "run $RUN_ID: $(date -u), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "kernel $(uname -r); $(cd "$REPO" && git rev-parse --short HEAD 2>/dev/null || echo no-git) $(cd "$REPO" && git status --porcelain 2>/dev/null | grep -q . && echo '(dirty tree)')"
  echo "node $(node --version), $($PY --version), pymodbus $($PY -c 'import pymodbus;print(pymodbus.__version__)'), victoria-metrics $(dpkg-query -W -f='${Version}' victoria-metrics 2>/dev/null), $(mosquitto -h 2>&1 | head -1)"
  echo "$(rustc --version 2>/dev/null)"
} | tee "$BENCH_OUT/results/$RUN_ID.env"

# ---------------------------------------------------------------- 3. the 1 Hz matrix
for cfg in $CONFIGS; do
  D=${cfg%x*}; R=${cfg#*x}
  WARM=20; [ "$D" -ge 300 ] && WARM=30
  for rep in $REPS; do
    for peer in $PEERS; do
      $PY bench.py --peer "$peer" -D "$D" -R "$R" --interval-ms 1000 --warmup $WARM --window "$WINDOW" \
        --drain "$DRAIN" --label "matrix-rep$rep" || echo "!! run failed: $peer $cfg rep$rep"
      sleep 3
    done
  done
done

# ---------------------------------------------------------------- 4. max-rate sweep, D=10 R=20
# Per peer, shorter and shorter intervals, every step REPS times; a peer stops after a step
# where it fell behind in every rep. Sentinel's configuration refuses intervals < 10 ms.
sweep() {  # sweep PEER "INTERVALS" [UNITS]
  local peer=$1 ivs=$2 units=${3:-1} iv rep rc fails n
  for iv in $ivs; do
    fails=0; n=0
    for rep in $REPS; do
      n=$((n + 1))
      rc=0
      $PY bench.py --peer "$peer" -D 10 -R 20 --units "$units" --interval-ms "$iv" --warmup "$MR_WARMUP" \
        --window "$MR_WINDOW" --drain 6 --label "maxrate-rep$rep" --fail-if-behind || rc=$?
      if [ $rc = 3 ]; then fails=$((fails + 1)); elif [ $rc != 0 ]; then echo "!! run failed rc=$rc: $peer $iv ms"; fi
      sleep 2
    done
    if [ $fails = $n ]; then echo "== $peer (units $units): behind in every rep at $iv ms, stopping"; break; fi
  done
  return 0
}
if [ "$MAXRATE" = 1 ]; then
  for peer in $PEERS; do
    case $peer in
      sentinel) sweep sentinel "$MR_SENTINEL"
                for u in $MR_UNITS; do sweep sentinel 10 "$u"; done ;;
      python|python-burst) sweep "$peer" "$MR_PYTHON" ;;
      nodered) sweep nodered "$MR_NODERED" ;;
    esac
  done
fi

# ---------------------------------------------------------------- 5. tables
$PY bench.py --rescore "$BENCH_CSV"   # alarms attributed by excursion (runs made before that rule)
$PY summarize.py "$BENCH_CSV" --env "$BENCH_OUT/results/$RUN_ID.env" > "$BENCH_OUT/results/$RUN_ID.md"
echo "== done: $BENCH_OUT/results/$RUN_ID.md"
cat "$BENCH_OUT/results/$RUN_ID.md"

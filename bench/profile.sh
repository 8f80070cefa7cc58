#!/usr/bin/env bash
# Where Sentinel's time goes in the side-by-side benchmark: perf profiles of the release binary
# at 300x50 and 100x20 (1 Hz), attached for PROFILE_SECS once the run is warm, plus a profile of
# the page faults of a whole 300x50 run (where resident memory is first touched).
#   bash bench/profile.sh            # needs perf; writes out/prof/*.data and *.txt
# Uses the same simulator, services and configuration generator as run.sh (bench.py).
set -euo pipefail
cd "$(dirname "$0")"
export BENCH_OUT=${BENCH_OUT:-$PWD/out}
PROFILE_SECS=${PROFILE_SECS:-30}
PROF=$BENCH_OUT/prof
mkdir -p "$PROF"
PY=.venv/bin/python
OWN_INFRA=0
if ! { [ -f "$BENCH_OUT/run/vm.pid" ] && kill -0 "$(cat "$BENCH_OUT/run/vm.pid")" 2>/dev/null; }; then
  bash infra.sh start; OWN_INFRA=1
fi
trap '[ $OWN_INFRA = 1 ] && bash infra.sh stop' EXIT

cpu_profile() {  # cpu_profile D R WARMUP
  local D=$1 R=$2 warm=$3 name=sentinel-$1x$2
  rm -f "$BENCH_OUT/run/sentinel.ready"
  $PY bench.py --peer sentinel -D "$D" -R "$R" --warmup "$warm" --window $((PROFILE_SECS + 15)) \
    --label "profile" > "$PROF/$name.bench.log" 2>&1 &
  local bench=$!
  for _ in $(seq 1 600); do [ -f "$BENCH_OUT/run/sentinel.ready" ] && break; sleep 0.2; done
  sleep "$warm"
  local pid; pid=$(cat "$BENCH_OUT/run/peer.pid")
  perf record -F 999 --call-graph dwarf,16384 -p "$pid" -o "$PROF/$name.data" -- sleep "$PROFILE_SECS" \
    > "$PROF/$name.record.log" 2>&1
  wait $bench || true
  perf report -i "$PROF/$name.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null \
    | grep -v "^$" > "$PROF/$name.by-thread-dso.txt" || true
  perf report -i "$PROF/$name.data" --no-children --sort sym --stdio -g none 2>/dev/null \
    | grep -v "^$" | head -80 > "$PROF/$name.top-symbols.txt" || true
  perf report -i "$PROF/$name.data" --children --sort sym --stdio -g none 2>/dev/null \
    | grep -v "^$" | head -200 > "$PROF/$name.inclusive.txt" || true
  echo "== $name: $PROF/$name.{by-thread-dso,top-symbols,inclusive}.txt"
}

for cfg in ${PROFILE_CONFIGS:-"300x50 100x20"}; do
  D=${cfg%x*}; R=${cfg#*x}; W=15; [ "$D" -ge 300 ] && W=25
  cpu_profile "$D" "$R" $W
done

# page faults of a whole 300x50 run, start-up included: where the resident memory comes from
if [ "${PROFILE_MEMORY:-1}" = 1 ]; then
  $PY bench.py --peer sentinel -D 300 -R 50 --warmup 15 --window 20 --label profile-mem \
    --wrap "perf record -e page-faults -c 8 --call-graph dwarf,8192 -o $PROF/sentinel-300x50-faults.data --" \
    > "$PROF/sentinel-300x50-faults.bench.log" 2>&1 || true
  perf report -i "$PROF/sentinel-300x50-faults.data" --children --sort sym --stdio -g none 2>/dev/null \
    | grep -v "^$" | head -150 > "$PROF/sentinel-300x50-faults.inclusive.txt" || true
  echo "== page faults: $PROF/sentinel-300x50-faults.inclusive.txt"
fi

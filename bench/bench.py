#!/usr/bin/env python3
"""One bounded benchmark run: simulator + one peer, measured over a fixed window.

    .venv/bin/python bench.py --peer sentinel -D 10 -R 20 [--interval-ms 1000] [--warmup 20] [--window 60]
    .venv/bin/python bench.py --peer python   -D 10 -R 20 ...
    .venv/bin/python bench.py --peer nodered  -D 10 -R 20 ...

Adapted from an earlier measurement kit: same simulator, peers and measurements, plus the
`sentinel` peer (the release binary with a generated configuration, embedded store on).
Needs VictoriaMetrics and mosquitto on loopback (bench/run.sh starts them); ports come from the
environment: BENCH_VM_PORT (28428), BENCH_MQTT_PORT (28830), BENCH_SIM_PORT (31020, D ports
from there), BENCH_NR_PORT (28880). Everything it writes goes under bench/out/.
Starts (and always stops, by PID) the simulator, the peer and a mosquitto_sub counter.

Measured over the window [t0, t1) after the warm-up:
  cpu_pct      (utime+stime delta of the peer PID from /proc/PID/stat) / window * 100  (100 = one core)
  rss_peak_mb  VmHWM from /proc/PID/status, read just before the peer is stopped
  points/s     samples of modbus_value{run=<tag>} with timestamps in the window, counted by
               VictoriaMetrics: sum(count_over_time(modbus_value{run="tag"}[Ws])) @ t1
  keeps up     points/s >= 98% of D*R/interval and the worst series has >= 95% of its samples
  gaps         inter-sample gaps of the reg=r00 series (one per device): p50 / p99 / max
  freshness    now - newest sample of reg=r00 in VM, sampled every 5 s (write pipeline lag)
  alarms       raise/clear messages received on alarms/# with ts in the window, vs. the number
               of excursions the simulator formula predicts
  cpu_s_per_mpoint  peer CPU seconds in the window / points counted in VM for the window * 1e6
Results: out/results/<tag>.json and one line appended to out/results/runs.csv.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sim_modbus  # noqa: E402  (value model, for the expected alarm count)

VM_PORT = int(os.environ.get("BENCH_VM_PORT", "28428"))
MQTT_PORT = int(os.environ.get("BENCH_MQTT_PORT", "28830"))
SIM_PORT = int(os.environ.get("BENCH_SIM_PORT", "31020"))
NR_PORT = int(os.environ.get("BENCH_NR_PORT", "28880"))
VM = f"http://127.0.0.1:{VM_PORT}"
TCK = os.sysconf("SC_CLK_TCK")
PY = os.path.join(HERE, ".venv", "bin", "python")
OUT = os.environ.get("BENCH_OUT", os.path.join(HERE, "out"))
REPO = os.path.dirname(HERE)
SENTINEL_BIN = os.environ.get("SENTINEL_BIN", os.path.join(REPO, "target", "release", "sentinel"))
FLOOR_BIN = os.path.join(REPO, "target", "release", "examples", "io_floor")


# ------------------------------------------------------------------ /proc helpers
def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    return int(rest[11]) + int(rest[12])  # utime + stime (fields 14, 15)


def cpu_kernel_ticks(pid: int) -> int:
    """stime alone: the kernel's share (system calls, the loopback TCP stack, context switches)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rpartition(")")[2].split()
    return int(rest[12])


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def sys_busy() -> tuple[int, int, int]:
    """(busy ticks excluding steal, total ticks, steal ticks) from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    v += [0] * (10 - len(v))
    total = sum(v[:8])            # user nice system idle iowait irq softirq steal (guest is inside user)
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    return busy, total, v[7]


def all_ticks() -> dict[int, tuple[str, int]]:
    """pid -> (comm, utime+stime) for every process, to name untracked CPU consumers."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    raw = f.read()
                comm = raw[raw.index("(") + 1: raw.rindex(")")]
                rest = raw.rpartition(")")[2].split()
                out[int(d)] = (comm, int(rest[11]) + int(rest[12]))
            except (OSError, ValueError, IndexError):
                pass
    return out


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (thread name, utime+stime) for every thread of pid."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/stat") as f:
                raw = f.read()
            rest = raw.rpartition(")")[2].split()
            out[int(t)] = (raw[raw.index("(") + 1: raw.rindex(")")], int(rest[11]) + int(rest[12]))
        except (OSError, ValueError, IndexError):
            pass
    return out


def pidfile(name: str) -> int | None:
    try:
        return int(open(os.path.join(OUT, "run", name + ".pid")).read().strip())
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------------ VM helpers
def vm_get(path: str, **params) -> dict:
    url = VM + path + "?" + urllib.parse.urlencode(params, doseq=True)
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def vm_scalar(query: str, at: float) -> float | None:
    res = vm_get("/api/v1/query", query=query, time=f"{at:.3f}")["data"]["result"]
    return float(res[0]["value"][1]) if res else None


def vm_export(match: str, start: float, end: float) -> list[dict]:
    url = VM + "/api/v1/export?" + urllib.parse.urlencode({"match[]": match, "start": f"{start:.3f}", "end": f"{end:.3f}"})
    with urllib.request.urlopen(url, timeout=120) as r:
        return [json.loads(line) for line in r.read().splitlines() if line.strip()]


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def expected_raises(D: int, R: int, t0: float, t1: float) -> int:
    """Excursions (value jumps above 900) whose start lies in [t0, t1)."""
    n = 0
    k0 = int(t0 // sim_modbus.WINDOW_S)
    k1 = int(t1 // sim_modbus.WINDOW_S)
    for k in range(k0, k1 + 1):
        start = k * sim_modbus.WINDOW_S
        if not (t0 <= start < t1):
            continue
        for d in range(D):
            for r in range(R):
                if sim_modbus.mix(d, r, k) % sim_modbus.EXC_MOD == 0:
                    n += 1
    return n


# ------------------------------------------------------------------ process helpers
def wait_port(port: int, timeout: float) -> bool:
    import socket
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen | None, name: str, grace: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        print(f"  {name} (pid {proc.pid}) ignored SIGTERM, killing", flush=True)
        proc.kill()
        proc.wait(timeout=5)
    try:
        os.remove(os.path.join(OUT, "run", name + ".pid"))
    except OSError:
        pass


def wrapped_sentinel(root: int) -> int | None:
    """The Sentinel process under a --wrap wrapper: the first descendant (breadth first) whose
    command line runs `sentinel run`. A shell-script wrapper (heaptrack) puts helpers between."""
    queue = [root]
    while queue:
        pid = queue.pop(0)
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if pid != root and cmd and cmd[0].endswith(b"sentinel") and b"run" in cmd[1:2]:
                return pid
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                queue += [int(k) for k in f.read().split()]
        except (OSError, ValueError):
            continue
    return None


def stop_wrapped(wrapper: subprocess.Popen, child_pid: int | None) -> None:
    """With --wrap the peer is the wrapper's child: a wrapper that is a shell script (heaptrack)
    does not pass SIGTERM on, and the peer went on polling the simulator in later runs."""
    if child_pid is None or child_pid == wrapper.pid:
        return
    try:
        os.kill(child_pid, signal.SIGTERM)
    except OSError:
        return
    for _ in range(300):
        if not os.path.exists(f"/proc/{child_pid}"):
            return
        time.sleep(0.1)


def spawn(name: str, cmd: list[str], cwd: str, env: dict | None = None, log_name: str = "") -> subprocess.Popen:
    log = open(os.path.join(OUT, "logs", (log_name or name) + ".log"), "w")
    p = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    with open(os.path.join(OUT, "run", name + ".pid"), "w") as f:
        f.write(str(p.pid))
    return p


# ------------------------------------------------------------------ sentinel peer
def sentinel_config(tag: str, D: int, R: int, iv_ms: int, units: int, data_dir: str) -> str:
    """A Sentinel configuration equivalent to the peers: D Modbus TCP devices (one port each on the
    simulator) x R holding registers read with one FC3 request per unit, each register a point
    with the peers' rule (raise > 900, clear < 850 = high limit 901 with deadband 51 on integer
    values), the InfluxDB v2 sink pointed at VictoriaMetrics, alarms published on MQTT.
    units > 1 (max-rate extra only): that many Modbus units (unit ids 1..units) share each
    device's TCP link, each with its own schedule and its own R points."""
    out = [
        "# generated by bench/bench.py", "",
        "[site]", f'id = "{tag}"', 'name = "bench"', "",
        "[store]", f'data_dir = "{data_dir}"', "",
        "[http]", 'listen = "127.0.0.1:0"', "",
        "[upstream.influxdb]", f'url = "{VM}"', 'org = "edge"', 'bucket = "plant"', "",
        "[notify.mqtt]", f'broker = {{ host = "127.0.0.1", port = {MQTT_PORT} }}', "",
    ]
    # Extra top-level TOML for comparisons off the defaults, e.g. "[engine]\nworker_threads = 2".
    extra = os.environ.get("BENCH_SENTINEL_TOML", "").replace("\\n", "\n")
    if extra:
        out += [extra, ""]
    comm_loss = max(15, (2 * iv_ms + 999) // 1000)
    for d in range(D):
        for u in range(units):
            dn = f"dev{d:03d}" if units == 1 else f"dev{d:03d}u{u + 1}"
            out += ["[[devices]]", f'name = "{dn}"', 'protocol = "modbus_tcp"', 'host = "127.0.0.1"',
                    f"port = {SIM_PORT + d}", f"unit_id = {u + 1}", f"poll_interval_ms = {iv_ms}",
                    "timeout_ms = 1000", f"comm_loss_after_secs = {comm_loss}", ""]
    for d in range(D):
        for u in range(units):
            dn = f"dev{d:03d}" if units == 1 else f"dev{d:03d}u{u + 1}"
            for r in range(R):
                out += ["[[points]]", f'tag = "{dn}-r{r:02d}"', f'device = "{dn}"', 'kind = "modbus"',
                        f'register = {{ table = "holding", address = {r} }}',
                        'limits = { deadband = 51.0, levels = [{ level = "H", setpoint = 901.0 }] }', ""]
    return "\n".join(out)


def rfc3339_ms(s: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() * 1000)


def count_alarms(peer: str, sub_log: str, t0: float, t1: float) -> tuple[int, int]:
    raises = clears = 0
    with open(sub_log) as f:
        for line in f:
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if peer.startswith("sentinel"):
                # one alarm event per transition (docs/api.md); only the limit rule counts
                if m.get("kind") != "limit":
                    continue
                ts = rfc3339_ms(m["at"])
                state = {"raised": "raise", "cleared": "clear"}.get(m.get("transition"))
            else:
                ts, state = m.get("ts", 0), m.get("state")
            # attribute each transition to the 10 s excursion window it happened in, and count it
            # when that excursion started inside [t0, t1), as expected_raises does: a raise just
            # after t0 for an excursion that began just before t0 is not counted, and one just
            # after t1 for an excursion that began before t1 is
            start = (ts // 1000 // sim_modbus.WINDOW_S) * sim_modbus.WINDOW_S
            if t0 <= start < t1:
                raises += state == "raise"
                clears += state == "clear"
    return raises, clears


def rescore(csv_path: str) -> None:
    """Recount the alarms of every run in a results CSV from its alarm log (same rule as above)."""
    rows = list(csv.DictReader(open(csv_path)))
    for row in rows:
        try:
            res = json.load(open(os.path.join(OUT, "results", row["tag"] + ".json")))
            raises, _ = count_alarms(row["peer"], os.path.join(OUT, "logs", f"alarms-{row['tag']}.log"),
                                     res["t0"], res["t1"])
        except (OSError, KeyError, ValueError):
            continue
        row["alarm_raises"] = raises
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)


# ------------------------------------------------------------------ main
def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--rescore":
        rescore(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", choices=["sentinel", "python", "python-burst", "nodered", "floor"], required=True,
                    help="sentinel = the release binary; python = per-device tasks staggered over the interval "
                         "(--spread 1); python-burst = same script with --spread 0 (all devices polled at the same instant); "
                         "floor = tests/examples/io_floor.rs, the benchmark's I/O and nothing else (a lower bound)")
    ap.add_argument("--devices", "-D", type=int, required=True)
    ap.add_argument("--registers", "-R", type=int, required=True)
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--units", type=int, default=1,
                    help="sentinel only (max-rate extra): Modbus units per device link, each polled every interval")
    ap.add_argument("--warmup", type=float, default=20.0)
    ap.add_argument("--window", type=float, default=60.0)
    ap.add_argument("--drain", type=float, default=8.0, help="seconds to keep running after the window before counting in VM")
    ap.add_argument("--label", default="", help="free text stored with the result (e.g. rep1)")
    ap.add_argument("--no-sim", action="store_true", help="reuse an already running simulator")
    ap.add_argument("--fail-if-behind", action="store_true", help="exit 3 when keeps_up is false (used by run.sh for the max-rate sweep)")
    ap.add_argument("--wrap", default="", help="sentinel only: prefix command, e.g. 'perf record -g -o FILE --' (profiling)")
    a = ap.parse_args()

    for sub_dir in ("run", "logs", "results", "data"):
        os.makedirs(os.path.join(OUT, sub_dir), exist_ok=True)
    D, R, iv_ms, U = a.devices, a.registers, a.interval_ms, a.units
    if U != 1 and a.peer != "sentinel":
        raise SystemExit("--units is for the sentinel peer only")
    short = {"sentinel": "sn", "nodered": "nr", "python": "py", "python-burst": "pyb", "floor": "fl"}[a.peer]
    tag = f"{short}-{D}x{R}{'x' + str(U) + 'u' if U > 1 else ''}-{iv_ms}ms-{int(time.time())}"
    print(f"== {tag}: peer={a.peer} D={D} R={R} units={U} interval={iv_ms}ms warmup={a.warmup}s window={a.window}s",
          flush=True)

    # infra
    try:
        urllib.request.urlopen(VM + "/health", timeout=3).read()
    except OSError:
        raise SystemExit(f"VictoriaMetrics not reachable on {VM} - run bench/run.sh (or infra.sh start)")
    vm_pid, mq_pid = pidfile("vm"), pidfile("mosquitto")

    # what to count in VM: every peer writes one line per register reading; Sentinel's
    # measurement is the point kind ("modbus"), its site id is the run tag, point = devNNN-rXX
    if a.peer == "sentinel":
        sel = f'modbus_value{{site="{tag}"}}'
        sel_r00 = f'modbus_value{{site="{tag}",point=~".*-r00"}}'
        alarm_topic = f"sentinel/v1/{tag}/alarms"
    else:
        sel = f'modbus_value{{run="{tag}"}}'
        sel_r00 = f'modbus_value{{run="{tag}",reg="r00"}}'
        alarm_topic = "alarms/#"

    sim = sub = peer = None
    peer_pid = None
    behind = False
    result: dict = {"tag": tag, "peer": a.peer, "D": D, "R": R, "units": U, "interval_ms": iv_ms,
                    "warmup_s": a.warmup, "window_s": a.window, "drain_s": a.drain, "label": a.label}
    try:
        if not a.no_sim:
            sim = spawn("sim", [PY, os.path.join(HERE, "sim_modbus.py"), "-D", str(D), "-R", str(R),
                                "--base-port", str(SIM_PORT), "--stats", os.path.join(OUT, "run", "sim_stats.json")], HERE)
            if not wait_port(SIM_PORT + D - 1, 60):
                raise SystemExit("simulator did not come up")
        sim_pid = sim.pid if sim else pidfile("sim")

        sub_log = os.path.join(OUT, "logs", f"alarms-{tag}.log")
        sub = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(MQTT_PORT), "-t", alarm_topic, "-q", "1"],
                               stdout=open(sub_log, "w"), stderr=subprocess.STDOUT)
        with open(os.path.join(OUT, "run", "sub.pid"), "w") as f:
            f.write(str(sub.pid))
        time.sleep(0.3)

        env = dict(os.environ, RUN_TAG=tag)
        if a.peer.startswith("python"):
            stats_file = os.path.join(OUT, "run", "peer_python_stats.json")
            peer = spawn("peer", [PY, os.path.join(HERE, "peer_python.py"), "-D", str(D), "-R", str(R),
                                  "--interval", str(iv_ms / 1000.0), "--run-tag", tag, "--stats", stats_file,
                                  "--base-port", str(SIM_PORT), "--mqtt-port", str(MQTT_PORT),
                                  "--write-url", f"{VM}/api/v2/write",
                                  "--spread", "0" if a.peer == "python-burst" else "1"], HERE, env)
        elif a.peer == "floor":
            if not os.access(FLOOR_BIN, os.X_OK):
                raise SystemExit(f"{FLOOR_BIN} missing: cargo build --release -p sentinel-tests --example io_floor")
            peer = spawn("peer", [FLOOR_BIN, "-D", str(D), "-R", str(R), "--interval", str(iv_ms / 1000.0),
                                  "--run-tag", tag, "--base-port", str(SIM_PORT), "--mqtt-port", str(MQTT_PORT),
                                  "--write-url", f"{VM}/api/v2/write"], HERE, env)
        elif a.peer == "nodered":
            nrdir = os.path.join(HERE, "nodered")
            flows = os.path.join(OUT, "run", f"flows_{D}x{R}_{iv_ms}ms.json")
            subprocess.run([sys.executable, "gen_flows.py", "-D", str(D), "-R", str(R), "--rate-ms", str(iv_ms),
                            "--base-port", str(SIM_PORT), "--mqtt-port", str(MQTT_PORT),
                            "--vm-url", f"{VM}/api/v2/write?org=edge&bucket=plant&precision=ms",
                            "-o", flows], cwd=nrdir, check=True, stdout=subprocess.DEVNULL)
            env["NR_PORT"] = str(NR_PORT)
            env["NR_DISABLE_EDITOR"] = "1"
            peer = spawn("peer", ["node", "node_modules/node-red/red.js", "--settings", "settings.js",
                                  "--userDir", ".", flows], nrdir, env)
        else:
            if not os.access(SENTINEL_BIN, os.X_OK):
                raise SystemExit(f"{SENTINEL_BIN} missing: cargo build --release --bin sentinel")
            data_dir = os.path.join(OUT, "data", "sentinel", tag)
            os.makedirs(data_dir)  # fresh, empty store for every run
            cfg = os.path.join(OUT, "run", f"sentinel-{tag}.toml")
            try:
                os.remove(os.path.join(OUT, "run", "sentinel.ready"))
            except OSError:
                pass
            with open(cfg, "w") as f:
                f.write(sentinel_config(tag, D, R, iv_ms, U, data_dir))
            wrap = a.wrap.split() if a.wrap else []
            peer = spawn("peer", wrap + [SENTINEL_BIN, "run", "-c", cfg,
                                         "--ready-file", os.path.join(OUT, "run", "sentinel.ready")], HERE, env,
                         log_name=f"peer-{tag}")
            result["sentinel_config"] = cfg
        if a.peer == "sentinel":
            # the warm-up starts once Sentinel listens (its start-up registers every point in the
            # store first, which takes long for thousands of new points: see bench/README.md)
            ready = os.path.join(OUT, "run", "sentinel.ready")
            ts = time.time()
            while not os.path.exists(ready) and peer.poll() is None and time.time() - ts < 600:
                time.sleep(0.1)
            result["startup_s"] = round(time.time() - ts, 1)
            print(f"  sentinel ready after {result['startup_s']} s", flush=True)
        print(f"  sim pid {sim_pid}, peer pid {peer.pid}; warming up {a.warmup}s", flush=True)
        time.sleep(a.warmup)
        if peer.poll() is not None:
            raise SystemExit(f"peer exited early rc={peer.returncode}, see {OUT}/logs/peer.log")
        peer_pid = peer.pid
        if a.wrap:  # measure the wrapped process (the wrapper's descendant), not the wrapper
            peer_pid = wrapped_sentinel(peer.pid) or peer.pid

        pids = {"peer": peer_pid, "sim": sim_pid, "vm": vm_pid, "mosquitto": mq_pid}
        c0 = {k: cpu_ticks(v) for k, v in pids.items() if v}
        kern0 = cpu_kernel_ticks(peer_pid)
        th0 = thread_ticks(peer_pid)
        b0 = sys_busy()
        a0 = all_ticks()
        sim0 = json.load(open(os.path.join(OUT, "run", "sim_stats.json")))
        t0 = time.time()
        t1 = t0 + a.window
        rss_samples, fresh = [], []
        next_fresh = t0 + 2
        while time.time() < t1:
            rss_samples.append(status_kb(peer_pid, "VmRSS"))
            if time.time() >= next_fresh:
                next_fresh += 5
                now = time.time()
                try:
                    last = vm_scalar(f'max(tlast_over_time({sel_r00}[30s]))', now)
                    if last is not None:
                        fresh.append(now - last)
                except OSError:
                    pass
            time.sleep(max(0.0, min(1.0, t1 - time.time())))
        t1 = time.time()
        c1 = {k: cpu_ticks(v) for k, v in pids.items() if v}
        kern1 = cpu_kernel_ticks(peer_pid)
        th1 = thread_ticks(peer_pid)
        by_name: dict[str, float] = {}
        for tid, (name, ticks) in th1.items():
            by_name[name] = by_name.get(name, 0.0) + (ticks - th0.get(tid, (name, 0))[1]) / TCK
        result["peer_thread_cpu_s"] = {k: round(v, 2) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1]) if v > 0}
        b1 = sys_busy()
        a1 = all_ticks()
        sim1 = json.load(open(os.path.join(OUT, "run", "sim_stats.json")))
        hwm = status_kb(peer_pid, "VmHWM")
        rss_end = status_kb(peer_pid, "VmRSS")
        try:  # where the resident memory is: anonymous (heap) vs file-backed (binary, libraries)
            with open(f"/proc/{peer_pid}/smaps_rollup") as f:
                result["peer_smaps_kb"] = {ln.split(":")[0]: int(ln.split()[1]) for ln in f
                                           if ln.split(":")[0] in ("Rss", "Anonymous", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Clean")}
        except (OSError, ValueError, IndexError):
            pass
        win = t1 - t0
        if a.peer == "nodered":
            try:
                result["peer_stats"] = json.loads(
                    urllib.request.urlopen(f"http://127.0.0.1:{NR_PORT}/peerstats", timeout=5).read())
            except OSError as e:
                result["peer_stats"] = {"error": str(e)}
        # keep everything running while the samples stamped before t1 drain into VM, so the
        # count measures steady-state delivery and not what a peer loses when it is stopped
        time.sleep(a.drain)

        # ---- VM counts over (t1 - W, t1]
        W = f"{win:.3f}s"
        total = vm_scalar(f"sum(count_over_time({sel}[{W}]))", t1) or 0.0
        nseries = vm_scalar(f"count(count_over_time({sel}[{W}]))", t1) or 0.0
        cmin = vm_scalar(f"min(count_over_time({sel}[{W}]))", t1) or 0.0
        cmax = vm_scalar(f"max(count_over_time({sel}[{W}]))", t1) or 0.0
        gaps = []
        for s in vm_export(sel_r00, t0, t1):
            ts = s["timestamps"]
            gaps += [(ts[i + 1] - ts[i]) for i in range(len(ts) - 1)]
        gaps.sort()
        hwm = max(hwm, status_kb(peer_pid, "VmHWM"))
        stop_wrapped(peer, peer_pid)
        stop(peer, "peer", 30)
        if a.peer.startswith("python"):
            try:
                result["peer_stats"] = json.load(open(stats_file))
            except OSError:
                pass
        time.sleep(1.5)
        stop(sub, "sub", 5)
        stop(sim, "sim")

        # ---- alarms
        raises, clears = count_alarms(a.peer, sub_log, t0, t1)
        exp_raises = expected_raises(D, R, t0, t1) * U

        iv = iv_ms / 1000.0
        expected_pps = D * R * U / iv
        pps = total / win
        exp_per_series = win / iv
        busy = (b1[0] - b0[0]) / max(1, (b1[1] - b0[1]))
        steal = (b1[2] - b0[2]) / max(1, (b1[1] - b0[1]))
        cpu = {k: round((c1[k] - c0[k]) / TCK / win * 100, 1) for k in c0}
        peer_cpu_s = (c1["peer"] - c0["peer"]) / TCK
        sim_reads = (sim1["reads_total"] - sim0["reads_total"]) / max(0.001, sim1["time"] - sim0["time"])
        result.update({
            "t0": t0, "t1": t1, "window_measured_s": round(win, 2),
            "peer_cpu_pct": cpu.get("peer"), "peer_cpu_s": round(peer_cpu_s, 2),
            "cpu_s_per_mpoint": round(peer_cpu_s / total * 1e6, 2) if total else None,
            "kernel_cpu_s_per_mpoint": round((kern1 - kern0) / TCK / total * 1e6, 2) if total else None,
            "cpu_pct_other": {k: v for k, v in cpu.items() if k != "peer"},
            "system_busy_pct_of_2_cores": round(busy * 100, 1),
            "steal_pct_of_2_cores": round(steal * 100, 1),
            "top_untracked_cpu_pct": sorted(
                [[f"{a1[p][0]}:{p}", round((a1[p][1] - a0[p][1]) / TCK / win * 100, 1)]
                 for p in a1 if p in a0 and p not in pids.values() and a1[p][1] > a0[p][1]],
                key=lambda x: -x[1])[:4],
            "loadavg_1m": float(open("/proc/loadavg").read().split()[0]),
            "peer_rss_peak_mb": round(hwm / 1024, 1), "peer_rss_end_mb": round(rss_end / 1024, 1),
            "peer_rss_max_sampled_mb": round(max(rss_samples) / 1024, 1) if rss_samples else None,
            "points_in_vm": int(total), "points_per_s": round(pps, 1), "expected_points_per_s": round(expected_pps, 1),
            "series": int(nseries), "expected_series": D * R * U,
            "per_series_count_min": int(cmin), "per_series_count_max": int(cmax),
            "expected_per_series": round(exp_per_series, 1),
            "sim_reads_per_s": round(sim_reads, 1), "expected_reads_per_s": round(D * U / iv, 1),
            "gap_ms_p50": pct(gaps, 50), "gap_ms_p99": pct(gaps, 99), "gap_ms_max": gaps[-1] if gaps else None,
            "freshness_s_median": round(statistics.median(fresh), 2) if fresh else None,
            "freshness_s_max": round(max(fresh), 2) if fresh else None,
            "alarm_raises": raises, "alarm_clears": clears, "expected_raises": exp_raises,
        })
        result["keeps_up"] = bool(pps >= 0.98 * expected_pps and cmin >= 0.95 * exp_per_series
                                  and nseries == D * R * U)
        out = os.path.join(OUT, "results", tag + ".json")
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        row = {k: result.get(k) for k in ["tag", "peer", "D", "R", "units", "interval_ms", "label", "window_measured_s",
                                          "peer_cpu_pct", "peer_cpu_s", "cpu_s_per_mpoint", "peer_rss_peak_mb",
                                          "points_per_s", "expected_points_per_s",
                                          "per_series_count_min", "expected_per_series", "sim_reads_per_s",
                                          "gap_ms_p50", "gap_ms_p99", "gap_ms_max", "freshness_s_median",
                                          "alarm_raises", "expected_raises", "system_busy_pct_of_2_cores",
                                          "loadavg_1m", "keeps_up", "peer_rss_max_sampled_mb", "startup_s"]}
        row["sim_cpu_pct"] = cpu.get("sim")
        row["vm_cpu_pct"] = cpu.get("vm")
        row["mosquitto_cpu_pct"] = cpu.get("mosquitto")
        row["kernel_cpu_s_per_mpoint"] = result.get("kernel_cpu_s_per_mpoint")
        csv_path = os.environ.get("BENCH_CSV") or os.path.join(OUT, "results", "runs.csv")
        new = not os.path.exists(csv_path)
        fields = list(row.keys())
        if not new:  # append under the file's own header (older files lack the newer columns)
            with open(csv_path, newline="") as f:
                fields = next(csv.reader(f), fields)
        with open(csv_path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        print("  " + json.dumps({k: result[k] for k in ["peer_cpu_pct", "cpu_s_per_mpoint", "kernel_cpu_s_per_mpoint", "peer_rss_peak_mb",
                                                         "points_per_s", "expected_points_per_s", "per_series_count_min",
                                                         "sim_reads_per_s", "gap_ms_p99", "freshness_s_median",
                                                         "alarm_raises", "expected_raises", "keeps_up",
                                                         "cpu_pct_other", "system_busy_pct_of_2_cores",
                                                         "steal_pct_of_2_cores", "loadavg_1m",
                                                         "top_untracked_cpu_pct"]}), flush=True)
        if a.fail_if_behind and not result["keeps_up"]:
            behind = True
    finally:
        if peer is not None:
            stop_wrapped(peer, peer_pid)
        stop(peer, "peer", 30)
        stop(sub, "sub", 5)
        stop(sim, "sim")
    if behind:
        sys.exit(3)


if __name__ == "__main__":
    main()

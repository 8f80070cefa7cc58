#!/usr/bin/env python3
"""Markdown tables from one run's CSV (bench/run.sh writes out/results/<run id>.csv).

    .venv/bin/python summarize.py out/results/<run id>.csv [--env out/results/<run id>.env]

Matrix: the median over reps of each column, per configuration and peer, and the ratios of the
better peer (lowest CPU per point among Node-RED and the Python variants) to Sentinel.
Max rate: per peer and interval, every rep.
"""
import argparse
import csv
import statistics
from collections import defaultdict

NAMES = {"sentinel": "**Sentinel**", "nodered": "Node-RED", "python": "Python (staggered)",
         "python-burst": "Python (burst)", "floor": "I/O floor (`io_floor`)"}
ORDER = ["sentinel", "python-burst", "python", "nodered", "floor"]
# what plants run today; the floor is a lower bound, not a peer
PEERS = ["python-burst", "python", "nodered"]


def fl(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def med(rows, key):
    v = [fl(r.get(key)) for r in rows if fl(r.get(key)) is not None]
    return statistics.median(v) if v else None


def f(x, nd=1):
    return "-" if x is None else f"{x:,.{nd}f}"


def reps(rows, key, nd=1):
    return " / ".join(f(fl(r.get(key)), nd) for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--env", default="")
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.csv)))
    if a.env:
        print("```\n" + open(a.env).read().strip() + "\n```\n")

    matrix = defaultdict(list)
    for r in rows:
        if r["label"].startswith("matrix"):
            matrix[(int(r["D"]), int(r["R"]), r["peer"])].append(r)
    if matrix:
        print("### 1 Hz matrix (median of reps; per-rep values in brackets)\n")
        print("| D×R | peer | CPU s per million points | of which kernel | CPU % (1 core = 100) | peak RSS MiB | points/s in VM (expected) "
              "| poll gap p99 ms | alarms raised / expected (sum of reps) | keeps up | reps |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        cfgs = sorted({(d, r) for d, r, _ in matrix})
        ratios = []
        for d, r in cfgs:
            for p in ORDER:
                rs = matrix.get((d, r, p))
                if not rs:
                    continue
                ra = sum(int(x["alarm_raises"]) for x in rs)
                ex = sum(int(x["expected_raises"]) for x in rs)
                ku = sum(x["keeps_up"] == "True" for x in rs)
                print(f"| {d}×{r} | {NAMES[p]} | {f(med(rs, 'cpu_s_per_mpoint'), 2)} ({reps(rs, 'cpu_s_per_mpoint', 2)}) "
                      f"| {f(med(rs, 'kernel_cpu_s_per_mpoint'), 2)} "
                      f"| {f(med(rs, 'peer_cpu_pct'))} ({reps(rs, 'peer_cpu_pct')}) "
                      f"| {f(med(rs, 'peer_rss_peak_mb'))} ({reps(rs, 'peer_rss_peak_mb')}) "
                      f"| {f(med(rs, 'points_per_s'))} ({f(fl(rs[0]['expected_points_per_s']), 0)}) "
                      f"| {f(med(rs, 'gap_ms_p99'), 0)} ({reps(rs, 'gap_ms_p99', 0)}) "
                      f"| {ra} / {ex} | {ku} of {len(rs)} | {len(rs)} |")
            sn = matrix.get((d, r, "sentinel"))
            peers = {p: matrix[(d, r, p)] for p in PEERS if (d, r, p) in matrix}
            if sn and peers:
                best = min(peers, key=lambda p: med(peers[p], "cpu_s_per_mpoint") or 1e18)
                cb, cs = med(peers[best], "cpu_s_per_mpoint"), med(sn, "cpu_s_per_mpoint")
                rb = med(peers.get("nodered", []), "peer_rss_peak_mb") if "nodered" in peers else None
                rs_ = med(sn, "peer_rss_peak_mb")
                rmin = min((med(v, "peer_rss_peak_mb") for v in peers.values()), default=None)
                floor = med(matrix.get((d, r, "floor"), []), "cpu_s_per_mpoint")
                ratios.append((d, r, NAMES[best], cb / cs if cb and cs else None,
                               rb / rs_ if rb and rs_ else None, rmin / rs_ if rmin and rs_ else None,
                               med(sn, "gap_ms_p99"), cb / 10 if cb else None, floor))
        if ratios:
            print("\n| D×R | better peer (CPU per point) | its CPU per point ÷ Sentinel's | Node-RED RSS ÷ Sentinel's "
                  "| smallest peer RSS ÷ Sentinel's | Sentinel gap p99 ms | a tenth of the better peer's CPU per point "
                  "| the I/O floor's CPU per point |")
            print("|---|---|---|---|---|---|---|---|")
            for d, r, b, c, m, m2, g, tenth, floor in ratios:
                print(f"| {d}×{r} | {b} | **{f(c)}×** | **{f(m)}×** | {f(m2)}× | {f(g, 0)} | {f(tenth, 2)} "
                      f"| {f(floor, 2)} |")
        print("\nContext (median): simulator / VictoriaMetrics / mosquitto CPU %, box busy % of all cores, load average\n")
        print("| D×R | peer | sim | VM | mosquitto | box busy % | load avg 1 min |")
        print("|---|---|---|---|---|---|---|")
        for d, r in cfgs:
            for p in ORDER:
                rs = matrix.get((d, r, p))
                if rs:
                    print(f"| {d}×{r} | {NAMES[p]} | {f(med(rs, 'sim_cpu_pct'))} | {f(med(rs, 'vm_cpu_pct'))} "
                          f"| {f(med(rs, 'mosquitto_cpu_pct'))} | {reps(rs, 'system_busy_pct_of_2_cores')} "
                          f"| {reps(rs, 'loadavg_1m', 2)} |")

    mr = defaultdict(list)
    for r in rows:
        if r["label"].startswith("maxrate"):
            mr[(r["peer"], int(r.get("units") or 1), int(r["interval_ms"]))].append(r)
    if mr:
        print("\n### Max rate, D=10 R=20 (every rep; keeps up = ≥ 98 % of the points reach VM and the worst series "
              "has ≥ 95 % of its samples)\n")
        print("| peer | interval | polls/s per device | points/s in VM (expected) | % of expected | CPU % "
              "| CPU s per million points | RSS MiB | gap p99 ms | keeps up |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for (p, u, iv), rs in sorted(mr.items(), key=lambda kv: (ORDER.index(kv[0][0]), kv[0][1], -kv[0][2])):
            name = NAMES[p] + (f" ({u} units per link)" if u > 1 else "")
            pcts = " / ".join(f(100 * fl(x["points_per_s"]) / fl(x["expected_points_per_s"])) for x in rs)
            print(f"| {name} | {iv} ms | {f(u * 1000 / iv, 0)} | {reps(rs, 'points_per_s', 0)} "
                  f"({f(fl(rs[0]['expected_points_per_s']), 0)}) | {pcts} | {reps(rs, 'peer_cpu_pct')} "
                  f"| {reps(rs, 'cpu_s_per_mpoint', 2)} | {reps(rs, 'peer_rss_peak_mb')} | {reps(rs, 'gap_ms_p99', 0)} "
                  f"| {' / '.join('yes' if x['keeps_up'] == 'True' else '**no**' for x in rs)} |")
        best = {}
        for (p, u, iv), rs in mr.items():
            if sum(x["keeps_up"] == "True" for x in rs) * 2 > len(rs):
                rate = u * 1000 / iv
                if rate > best.get((p, u), (0, 0))[0]:
                    best[(p, u)] = (rate, iv)
        print("\nHighest rate kept in the majority of reps:\n")
        for (p, u), (rate, iv) in sorted(best.items(), key=lambda kv: -kv[1][0]):
            print(f"- {NAMES[p]}{f' ({u} units per link)' if u > 1 else ''}: {iv} ms = {rate:.0f} polls/s per device, "
                  f"{rate * 10 * 20:,.0f} points/s")


if __name__ == "__main__":
    main()

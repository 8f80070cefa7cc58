#!/usr/bin/env python3
"""Soak driver for tests/soak/soak.sh: changes every register once a second, and once per
sample pushes one point over its limit, times how long until the alarm is in Sentinel's API,
returns it to normal and writes one CSV row.

Registers are written with raw Modbus TCP (function 16) so the driver does not depend on a
pymodbus client API that changed across 3.x releases.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import struct
import time
import urllib.request


class Device:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.tid = 0

    def write(self, address: int, values: list[int]) -> None:
        # A device busy or restarting is retried for about ten seconds before the soak gives up.
        for attempt in range(20):
            try:
                if self.sock is None:
                    self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                self.tid = (self.tid + 1) & 0xFFFF
                pdu = struct.pack(">BHHB", 16, address, len(values), 2 * len(values))
                pdu += b"".join(struct.pack(">H", v) for v in values)
                self.sock.sendall(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, 1) + pdu)
                self.sock.recv(260)
                return
            except OSError:
                if self.sock is not None:
                    self.sock.close()
                self.sock = None
                if attempt == 19:
                    raise
                time.sleep(0.5)


def get(api: str, path: str):
    with urllib.request.urlopen(api + path, timeout=5) as r:
        return json.load(r)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def metric(api: str, name: str) -> float:
    with urllib.request.urlopen(api + "/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                try:
                    return float(line.rsplit(" ", 1)[1])
                except ValueError:
                    pass
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--api", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--ports", required=True)
    ap.add_argument("--points", type=int, required=True)
    ap.add_argument("--secs", type=int, required=True)
    ap.add_argument("--sample", type=int, required=True)
    ap.add_argument("--csv", required=True)
    a = ap.parse_args()
    devices = [Device(int(p)) for p in a.ports.split()]

    deadline = time.time() + 60
    while True:
        try:
            get(a.api, "/healthz")
            break
        except OSError:
            if time.time() > deadline:
                raise SystemExit("sentinel did not answer within 60 s")
            time.sleep(0.2)

    start = time.time()
    next_sample = start + a.sample
    rng = random.Random(12)
    with open(a.csv, "w") as out:
        out.write("elapsed_s,rss_kb,alarm_latency_ms,readings_stored,store_errors,open_alarms,points_good\n")
        out.flush()
        n = 0
        # The extra second lets the last sample land when --sample divides --secs.
        while time.time() - start < a.secs + 1:
            tick = time.time()
            for d in devices:
                d.write(0, [rng.randint(10, 40) for _ in range(a.points)])
            if tick >= next_sample:
                n += 1
                d = devices[n % len(devices)]
                point = n % a.points
                tag = f"T{n % len(devices) + 1}-{point}"
                d.write(point, [90])
                t0 = time.time()
                latency = -1.0
                while time.time() - t0 < 30:
                    alarms = get(a.api, "/api/v1/alarms?state=active")
                    if any(x.get("point") == tag for x in alarms):
                        latency = (time.time() - t0) * 1000
                        break
                    time.sleep(0.02)
                d.write(point, [20])
                points = get(a.api, "/api/v1/points")
                row = [
                    round(time.time() - start),
                    rss_kb(a.pid),
                    round(latency),
                    int(metric(a.api, "sentinel_readings_stored_total")),
                    int(metric(a.api, "sentinel_store_errors_total")),
                    len(get(a.api, "/api/v1/alarms?state=open")),
                    sum(1 for p in points if p.get("quality") == "good"),
                ]
                out.write(",".join(str(x) for x in row) + "\n")
                out.flush()
                print("sample", row, flush=True)
                next_sample += a.sample
            time.sleep(max(0.0, 1.0 - (time.time() - tick)))


if __name__ == "__main__":
    main()

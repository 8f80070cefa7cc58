#!/usr/bin/env python3
"""Modbus TCP device simulator (pymodbus 3.x async server).

Serves D devices, each on its own TCP port on 127.0.0.1 (base_port .. base_port+D-1),
each with R holding registers at addresses 0..R-1 (function code 3), any unit id.

Register values are a pure function of (device, register, wall-clock time), computed
at read time, so every poller sees the same signal and the expected alarm count can be
re-derived offline:

    base(d, r, t)      = 500 + 300 * sin(2*pi*t/120 + phase(d, r))        -> 200 .. 800
    excursion window k = floor(t / 10) (10 s windows)
    if mix(d, r, k) % EXC_MOD == 0 and (t mod 10) < 3:  value = 950 + (d + r) % 40
                                                         -> 950 .. 989 for 3 s
Default alarm rule used by both peers: raise when value > 900, clear when value < 850.
With EXC_MOD=40 about 1/40 of registers have one excursion per 10 s window, i.e.
~ D*R/40 raise + D*R/40 clear messages per 10 s.

Every second the simulator writes request counters to --stats (JSON) so the harness
can measure the poll rate actually served, independent of the database.

Usage:
    .venv/bin/python sim_modbus.py --devices 10 --registers 20 [--base-port 31020]
Only binds 127.0.0.1 (refuses anything else).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import signal
import time
from functools import partial

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

EXC_MOD = 40
PERIOD_S = 120.0
WINDOW_S = 10
EXC_LEN_S = 3
TWO_PI = 2.0 * math.pi


def mix(d: int, r: int, k: int) -> int:
    """Deterministic integer hash (no PYTHONHASHSEED dependence)."""
    x = (k * 2654435761 + d * 40503 + r * 69069 + 12345) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 2246822519) & 0xFFFFFFFF
    x ^= x >> 13
    return x


def value(d: int, r: int, t: float) -> int:
    k = int(t // WINDOW_S)
    if (t - k * WINDOW_S) < EXC_LEN_S and mix(d, r, k) % EXC_MOD == 0:
        return 950 + (d + r) % 40
    phase = ((d * 7 + r * 13) % 360) * math.pi / 180.0
    return int(500 + 300 * math.sin(TWO_PI * t / PERIOD_S + phase))


class Counters:
    def __init__(self, n: int) -> None:
        self.reads = [0] * n
        self.regs = [0] * n


async def on_access(dev: int, counters: Counters,
                    function_code, start_address, address, count,
                    current_registers, set_values):
    """pymodbus SimDevice action: refresh the requested registers in place."""
    if set_values is None and function_code in (3, 4):
        t = time.time()
        off = address - start_address
        for i in range(count):
            current_registers[off + i] = value(dev, address + i, t)
        counters.reads[dev] += 1
        counters.regs[dev] += count
    return None


async def write_stats(path: str, counters: Counters, args) -> None:
    tmp = path + ".tmp"
    while True:
        doc = {
            "time": time.time(),
            "devices": args.devices,
            "registers": args.registers,
            "base_port": args.base_port,
            "reads_total": sum(counters.reads),
            "regs_total": sum(counters.regs),
            "reads": counters.reads,
        }
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, path)
        await asyncio.sleep(1.0)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", "-D", type=int, default=10)
    ap.add_argument("--registers", "-R", type=int, default=20)
    ap.add_argument("--base-port", type=int, default=15020)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--stats", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "run", "sim_stats.json"))
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost"):
        raise SystemExit("refusing to bind anything but 127.0.0.1")
    if not 1 <= args.registers <= 125:
        raise SystemExit("R must be 1..125 (one FC3 request per device)")
    logging.getLogger("pymodbus").setLevel(logging.ERROR)

    counters = Counters(args.devices)
    servers = []
    for d in range(args.devices):
        dev = SimDevice(
            id=0,  # 0 = answer for every unit id
            simdata=[SimData(address=0, count=args.registers, values=0, datatype=DataType.REGISTERS)],
            action=partial(on_access, d, counters),
        )
        servers.append(ModbusTcpServer(dev, address=(args.host, args.base_port + d)))

    os.makedirs(os.path.dirname(args.stats), exist_ok=True)
    tasks = [asyncio.create_task(s.serve_forever()) for s in servers]
    tasks.append(asyncio.create_task(write_stats(args.stats, counters, args)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"sim: {args.devices} devices x {args.registers} HR on {args.host}:"
          f"{args.base_port}..{args.base_port + args.devices - 1}", flush=True)
    await stop.wait()
    for s in servers:
        await s.shutdown()
    for t in tasks:
        t.cancel()
    print(f"sim: stopped; reads_total={sum(counters.reads)}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

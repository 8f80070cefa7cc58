#!/usr/bin/env python3
"""Independent Modbus TCP slave for Sentinel's integration tests.

The protocol side (framing, PDU decoding, exception responses) is pymodbus 3.x;
the register storage is our own, so addressing is exactly the protocol's:
protocol address 0 is element 0 of every table, with no 1-based offset anywhere.
Checked against pymodbus 3.6.9, 3.9.2, 3.11.4, 3.12.1, 3.13.1 and 3.16.1. In
3.8.x and 3.10.x reads past the end of a table are not answered with exception
0x02 (bugs in those releases: 3.8 sends no answer for coils, 3.10 answers 0x04);
everything else works there. tests/run.sh installs a release >= 3.11.

Tables
    Every unit id given with --units has its own four tables (coils, discrete
    inputs, holding registers, input registers), each --size entries long
    (or --illegal-from N entries long), all starting at zero. An access that
    reaches past the end of a table is answered with exception 0x02 ILLEGAL
    DATA ADDRESS. A request for a unit id that is not configured is answered
    with exception 0x0B GATEWAY TARGET DEVICE FAILED TO RESPOND.

Mirroring (how a test sets read-only tables)
    Clients write coils (FC 5, 15) and holding registers (FC 6, 16, 22, 23)
    with the normal function codes. Every write to holding register A is also
    copied into input register A, and every write to coil A is also copied
    into discrete input A. So a test that wants input register 10 to read 1234
    writes holding register 10 = 1234 first (on the same unit).

Connection behaviour
    default               any number of concurrent TCP connections
    --single-connection   one connection at a time; a second concurrent
                          connection is accepted and immediately reset (RST)
    --hang                connections are accepted and everything sent is
                          read and discarded; no request is ever answered

Serial and RTU framing (extra servers on the same registers)
    --serial PATH         also serve Modbus RTU on the serial device PATH (for
                          tests, one end of a socat pty pair), at --baud
    --rtu-over-tcp-port P also serve RTU frames over TCP on port P, as a serial
                          device server would
    On these two, a request for a unit id that is not configured gets no
    answer at all, as on a real RTU bus. The TCP port keeps working, so a test
    can write values over TCP and read them over RTU.

Once listening it prints "READY <port>" on stdout (flushed); with --port 0 the
port is chosen by the kernel and <port> is the one in use. SIGTERM or SIGINT
stops it with exit code 0.

Implementation note: the public port is a small asyncio front end that applies
the connection behaviour above and forwards bytes to the pymodbus server, which
listens on a private loopback port. That keeps the connection handling
independent of pymodbus internals, which changed a lot across 3.x releases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import struct
import sys

import pymodbus
from pymodbus import exceptions as _pm_exceptions
from pymodbus.datastore import context as _pm_context
from pymodbus.datastore import ModbusServerContext
from pymodbus.server import ModbusTcpServer

try:  # pymodbus >= 3.7
    from pymodbus import FramerType as _FramerType

    RTU_FRAMER = _FramerType.RTU
except ImportError:  # older releases name framers by string
    RTU_FRAMER = "rtu"

try:  # pymodbus >= 3.11; earlier releases take the plain exception code
    from pymodbus.constants import ExcCodes as _ExcCodes

    ILLEGAL_ADDRESS = _ExcCodes.ILLEGAL_ADDRESS
except ImportError:
    ILLEGAL_ADDRESS = 0x02

# Renamed in 3.10: NoSuchSlaveException -> NoSuchIdException.
NoSuchUnit = getattr(_pm_exceptions, "NoSuchIdException", None) or getattr(
    _pm_exceptions, "NoSuchSlaveException"
)

# Base class of per-unit contexts in pymodbus <= 3.11 (renamed in 3.10);
# 3.12+ talks to the server context directly and has no such class.
_DeviceContextBase: type = getattr(_pm_context, "ModbusBaseDeviceContext", None) or getattr(
    _pm_context, "ModbusBaseSlaveContext", object
)

COILS, DISCRETE, HOLDING, INPUT = "co", "di", "hr", "ir"
TABLE_FOR_FC = {
    1: COILS, 5: COILS, 15: COILS,
    2: DISCRETE,
    3: HOLDING, 6: HOLDING, 16: HOLDING, 22: HOLDING, 23: HOLDING,
    4: INPUT,
}
MIRROR = {COILS: DISCRETE, HOLDING: INPUT}


class Unit:
    """The four tables of one unit id."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.tables = {
            COILS: [False] * length,
            DISCRETE: [False] * length,
            HOLDING: [0] * length,
            INPUT: [0] * length,
        }

    def in_range(self, address: int, count: int) -> bool:
        return count >= 1 and 0 <= address and address + count <= self.length

    def get(self, fc: int, address: int, count: int):
        table = TABLE_FOR_FC.get(fc)
        if table is None or not self.in_range(address, count):
            return ILLEGAL_ADDRESS
        return list(self.tables[table][address : address + count])

    def set(self, fc: int, address: int, values):
        table = TABLE_FOR_FC.get(fc)
        values = list(values)
        if table not in MIRROR or not self.in_range(address, len(values)):
            return ILLEGAL_ADDRESS
        if table == COILS:
            values = [bool(v) for v in values]
        else:
            values = [int(v) & 0xFFFF for v in values]
        end = address + len(values)
        self.tables[table][address:end] = values
        self.tables[MIRROR[table]][address:end] = values
        return None


class UnitContext(_DeviceContextBase):
    """Per-unit context, as pymodbus <= 3.11 asks the server context for."""

    def __init__(self, unit: Unit) -> None:  # pylint: disable=super-init-not-called
        self.unit = unit

    def reset(self) -> None:
        pass

    # pymodbus <= 3.8 validates before reading/writing.
    def validate(self, fc_as_hex, address, count=1) -> bool:
        return fc_as_hex in TABLE_FOR_FC and self.unit.in_range(address, count)

    def getValues(self, fc_as_hex, address, count=1):  # noqa: N802 (pymodbus API)
        return self.unit.get(fc_as_hex, address, count)

    def setValues(self, fc_as_hex, address, values):  # noqa: N802
        return self.unit.set(fc_as_hex, address, values)

    async def async_getValues(self, fc_as_hex, address, count=1):  # noqa: N802
        return self.unit.get(fc_as_hex, address, count)

    async def async_setValues(self, fc_as_hex, address, values):  # noqa: N802
        return self.unit.set(fc_as_hex, address, values)


class ServerContext(ModbusServerContext):
    """Server context serving both pymodbus generations.

    <= 3.11: the server indexes the context by unit id and talks to the
    UnitContext. >= 3.12: the server calls async_getValues/async_setValues
    with the unit id on this object. The base __init__ is skipped on purpose:
    its signature differs between releases and in 3.13+ it builds a simulator
    datastore this script does not use.
    """

    def __init__(self, units: dict[int, Unit]) -> None:  # pylint: disable=super-init-not-called
        self.units = units
        self._unit_contexts = {uid: UnitContext(u) for uid, u in units.items()}
        # Accept frames for every unit id so unknown ids get a proper
        # exception instead of being silently dropped by old framers.
        self.single = True
        # pymodbus >= 3.13 checks these to decide it must call us directly.
        self.simdevices = []
        self.old_simulator = True
        self._devices = self._unit_contexts
        self._slaves = self._unit_contexts

    def _unit(self, unit_id: int) -> Unit:
        if unit_id not in self.units:
            raise NoSuchUnit(f"unit id {unit_id} is not configured")
        return self.units[unit_id]

    # --- pymodbus <= 3.11 ---
    def __getitem__(self, unit_id):
        self._unit(unit_id)
        return self._unit_contexts[unit_id]

    def __contains__(self, unit_id) -> bool:
        return unit_id in self.units

    def __iter__(self):
        return iter(self._unit_contexts.items())

    def __setitem__(self, unit_id, context):
        raise NotImplementedError

    def __delitem__(self, unit_id):
        raise NotImplementedError

    def slaves(self):
        return list(self.units)

    def device_ids(self):
        return list(self.units)

    device_id = device_ids  # pymodbus 3.10.0 calls this name on broadcast

    # --- pymodbus >= 3.12 ---
    async def async_getValues(self, device_id, func_code, address, count=1):  # noqa: N802
        return self._unit(device_id).get(func_code, address, count)

    async def async_setValues(self, device_id, func_code, address, values):  # noqa: N802
        return self._unit(device_id).set(func_code, address, values)


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def port_accepts(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def start_backend(context: ServerContext):
    """Start pymodbus on a private loopback port; returns (server, task, port)."""
    last_error = "unknown"
    for _attempt in range(5):
        port = free_loopback_port()
        server = ModbusTcpServer(context, address=("127.0.0.1", port))
        task = asyncio.ensure_future(server.serve_forever())
        for _ in range(50):
            if task.done():
                break
            if await port_accepts(port):
                return server, task, port
            await asyncio.sleep(0.1)
        last_error = repr(task.exception()) if task.done() and not task.cancelled() else "timeout"
        await stop_backend(server, task)
    raise RuntimeError(f"pymodbus server did not start: {last_error}")


async def start_rtu_servers(args, context: ServerContext) -> list:
    """The optional RTU servers: serial (--serial) and RTU over TCP (--rtu-over-tcp-port)."""
    servers = []
    if args.serial:
        from pymodbus.server import ModbusSerialServer

        server = ModbusSerialServer(
            context,
            framer=RTU_FRAMER,
            port=args.serial,
            baudrate=args.baud,
            bytesize=8,
            parity="N",
            stopbits=1,
            ignore_missing_devices=True,
        )
        servers.append((server, asyncio.ensure_future(server.serve_forever())))
    if args.rtu_over_tcp_port is not None:
        server = ModbusTcpServer(
            context,
            framer=RTU_FRAMER,
            address=(args.host, args.rtu_over_tcp_port),
            ignore_missing_devices=True,
        )
        task = asyncio.ensure_future(server.serve_forever())
        servers.append((server, task))
        for _ in range(50):
            if task.done() or await port_accepts(args.rtu_over_tcp_port):
                break
            await asyncio.sleep(0.1)
    # Give the serial server a moment to open its port before READY is announced.
    await asyncio.sleep(0.3)
    for _server, task in servers:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"RTU server did not start: {task.exception()!r}")
    return servers


async def stop_backend(server, task) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.shutdown(), 2)
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(task, 2)


def reset_connection(writer: asyncio.StreamWriter) -> None:
    """Close with RST so the peer sees the refusal at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass


class Front:
    """Public listener: applies --hang / --single-connection, forwards to pymodbus."""

    def __init__(self, args, backend_port: int | None) -> None:
        self.args = args
        self.backend_port = backend_port
        self.active = 0
        self.tasks: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            if self.args.single_connection and self.active >= 1:
                reset_connection(writer)
                return
            self.active += 1
            try:
                if self.args.hang:
                    await pump(reader, _Discard())
                else:
                    await self.forward(reader, writer)
            finally:
                self.active -= 1
                writer.close()
        except asyncio.CancelledError:
            # Shutdown. Finish normally: asyncio (3.11) logs an error for a
            # cancelled client_connected_cb task.
            pass
        finally:
            self.tasks.discard(task)

    async def forward(self, reader, writer) -> None:
        try:
            b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
        except OSError:
            reset_connection(writer)
            return
        upstream = asyncio.ensure_future(pump(reader, b_writer))
        downstream = asyncio.ensure_future(pump(b_reader, writer))
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (upstream, downstream):
                t.cancel()
            b_writer.close()


class _Discard:
    """Writer stand-in for --hang: swallows everything."""

    def write(self, _data) -> None:
        pass

    async def drain(self) -> None:
        pass


def parse_units(text: str) -> list[int]:
    units = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        uid = int(part)
        if not 0 <= uid <= 255:
            raise argparse.ArgumentTypeError(f"unit id out of range: {uid}")
        units.append(uid)
    if not units:
        raise argparse.ArgumentTypeError("no unit ids given")
    return units


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--port", type=int, required=True, help="TCP port (0: pick a free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--units", type=parse_units, default=[1], help="comma-separated unit ids (default 1)")
    p.add_argument("--size", type=int, default=1000, help="entries per table (default 1000)")
    p.add_argument("--single-connection", action="store_true", help="one TCP connection at a time")
    p.add_argument("--hang", action="store_true", help="accept connections, never answer")
    p.add_argument(
        "--illegal-from", type=int, default=None, metavar="N",
        help="addresses >= N answer ILLEGAL DATA ADDRESS (tables are N long)",
    )
    p.add_argument("--serial", default=None, metavar="PATH", help="also serve RTU on this serial device")
    p.add_argument("--baud", type=int, default=19200, help="baud rate of --serial (default 19200)")
    p.add_argument(
        "--rtu-over-tcp-port", type=int, default=None, metavar="PORT",
        help="also serve RTU frames over TCP on this port",
    )
    p.add_argument("--verbose", action="store_true", help="pymodbus debug log on stderr")
    args = p.parse_args(argv)
    if args.size < 1 or args.size > 65536:
        p.error("--size must be 1..65536")
    if args.illegal_from is not None and args.illegal_from < 0:
        p.error("--illegal-from must be >= 0")
    return args


async def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.verbose:
        logging.getLogger("pymodbus").setLevel(logging.DEBUG)
    if pymodbus.__version__.startswith(("3.8.", "3.10.")):
        logging.warning(
            "pymodbus %s does not answer reads past the end of a table with exception 0x02",
            pymodbus.__version__,
        )
    length = args.size if args.illegal_from is None else min(args.size, args.illegal_from)
    units = {uid: Unit(length) for uid in args.units}

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    backend = None
    rtu_servers = []
    if not args.hang:
        context = ServerContext(units)
        backend = await start_backend(context)
        rtu_servers = await start_rtu_servers(args, context)
    front = Front(args, backend[2] if backend else None)
    listener = await asyncio.start_server(front.handle, args.host, args.port, reuse_address=True)
    port = listener.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    print(
        f"pymodbus {pymodbus.__version__}: listening on {args.host}:{port} units={args.units} "
        f"table_length={length} single_connection={args.single_connection} hang={args.hang}",
        file=sys.stderr,
        flush=True,
    )

    await stop.wait()

    listener.close()
    pending = list(front.tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=2)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(listener.wait_closed(), 2)
    for server, task in rtu_servers:
        await stop_backend(server, task)
    if backend:
        await stop_backend(backend[0], backend[1])
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

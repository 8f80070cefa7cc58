//! [`SimDevice`]: an in-process Modbus TCP slave for tests, benchmarks and the demo plant.
//!
//! Each device owns its own TCP listener (bind `127.0.0.1:0` for an ephemeral port) and serves
//! it with the tokio-modbus server in one spawned task; tokio-modbus adds one task per accepted
//! connection. Requests are answered synchronously from in-memory tables, so a device costs a
//! listener, a few small allocations and nothing per request beyond the codec.
//!
//! # Register space
//!
//! Every unit id configured on the device ([`SimDevice::add_unit`]; unit 1 exists from the
//! start) has four independent tables of [`TABLE_SIZE`] entries each, addressed with 0-based
//! protocol addresses: coils, discrete inputs, holding registers and input registers. All
//! entries start at zero/off. Memory for a table grows only up to the highest address written,
//! so an idle device with a handful of registers stays small.
//!
//! # Protocol behaviour
//!
//! | request | answer |
//! |---|---|
//! | FC 1, 2, 3, 4 (reads) | the values; quantity outside 1..=2000 (bits) or 1..=125 (registers) → `IllegalDataValue`; a range past the table end → `IllegalDataAddress` |
//! | FC 5, 6, 15, 16 (writes) | applied and echoed; quantity outside 1..=1968 (FC 15) or 1..=123 (FC 16) → `IllegalDataValue`; past the table end → `IllegalDataAddress` |
//! | any other function | `IllegalFunction` |
//! | unit id not configured | `GatewayTargetDevice` exception (answered, like a Modbus TCP gateway with no such target) |
//!
//! Two failure modes can be switched on at any time from any thread:
//!
//! - [`SimDevice::set_online`]`(false)`: requests are read and silently dropped. Connections stay
//!   open and new ones are still accepted, so a client only notices through its own timeout.
//!   Requests received while offline are never answered later.
//! - [`SimDevice::set_failure_exception`]`(Some(code))`: every request (whatever its unit id) is
//!   answered with that exception code.
//!
//! Offline wins over the failure exception. [`SimDevice::requests_served`] counts every request
//! that got an answer, exceptions included.

use std::collections::BTreeMap;
use std::future::{Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::task::JoinHandle;
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// Number of entries in each of a unit's four tables (addresses `0..TABLE_SIZE`).
pub const TABLE_SIZE: u16 = 10_000;

/// Unit id that every [`SimDevice`] has from the start.
pub const DEFAULT_UNIT: u8 = 1;

/// Largest quantity of one read of coils or discrete inputs (FC 1, 2) per the Modbus spec.
const MAX_READ_BITS: u16 = 2000;
/// Largest quantity of one register read (FC 3, 4).
const MAX_READ_REGISTERS: u16 = 125;
/// Largest quantity of one multiple-coil write (FC 15).
const MAX_WRITE_BITS: u16 = 1968;
/// Largest quantity of one multiple-register write (FC 16).
const MAX_WRITE_REGISTERS: u16 = 123;

/// Order of the bytes of a 32-bit value spread over two 16-bit registers. The value's
/// big-endian bytes are `A B C D`; `ABCD` puts `AB` in the lower address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WordOrder {
    /// Big-endian throughout: `[AB, CD]`.
    #[default]
    ABCD,
    /// Words swapped ("little-endian word order"): `[CD, AB]`.
    CDAB,
    /// Bytes swapped within each word: `[BA, DC]`.
    BADC,
    /// Little-endian throughout: `[DC, BA]`.
    DCBA,
}

/// The two registers, lower address first, that carry `value` in the given word order.
pub fn f32_to_words(value: f32, order: WordOrder) -> [u16; 2] {
    let [a, b, c, d] = value.to_be_bytes();
    let word = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]);
    match order {
        WordOrder::ABCD => [word(a, b), word(c, d)],
        WordOrder::CDAB => [word(c, d), word(a, b)],
        WordOrder::BADC => [word(b, a), word(d, c)],
        WordOrder::DCBA => [word(d, c), word(b, a)],
    }
}

/// A setter or getter named a unit or an address the device does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("unit id {unit} is not configured on this simulated device")]
    UnknownUnit { unit: u8 },
    #[error("{count} entries from address {addr} do not fit in a table of {TABLE_SIZE}")]
    AddressOutOfRange { addr: u16, count: usize },
}

/// The four tables of one unit id. Each vector is logically [`TABLE_SIZE`] long; entries past its
/// current length read as zero/off.
#[derive(Debug, Default)]
struct UnitTables {
    coils: Vec<bool>,
    discrete_inputs: Vec<bool>,
    holding: Vec<u16>,
    input: Vec<u16>,
}

/// Which of a unit's tables an access goes to.
#[derive(Debug, Clone, Copy)]
enum BitTable {
    Coils,
    DiscreteInputs,
}

#[derive(Debug, Clone, Copy)]
enum WordTable {
    Holding,
    Input,
}

impl UnitTables {
    fn bits(&self, table: BitTable) -> &Vec<bool> {
        match table {
            BitTable::Coils => &self.coils,
            BitTable::DiscreteInputs => &self.discrete_inputs,
        }
    }

    fn bits_mut(&mut self, table: BitTable) -> &mut Vec<bool> {
        match table {
            BitTable::Coils => &mut self.coils,
            BitTable::DiscreteInputs => &mut self.discrete_inputs,
        }
    }

    fn words(&self, table: WordTable) -> &Vec<u16> {
        match table {
            WordTable::Holding => &self.holding,
            WordTable::Input => &self.input,
        }
    }

    fn words_mut(&mut self, table: WordTable) -> &mut Vec<u16> {
        match table {
            WordTable::Holding => &mut self.holding,
            WordTable::Input => &mut self.input,
        }
    }
}

/// Whether `count` entries starting at `addr` lie inside a table.
fn in_table(addr: u16, count: usize) -> bool {
    usize::from(addr) + count <= usize::from(TABLE_SIZE)
}

/// Copies `count` entries from `addr`; the caller has checked the range against [`TABLE_SIZE`].
fn read_range<T: Copy + Default>(table: &[T], addr: u16, count: u16) -> Vec<T> {
    let start = usize::from(addr);
    (start..start + usize::from(count))
        .map(|i| table.get(i).copied().unwrap_or_default())
        .collect()
}

/// Stores `values` from `addr`, growing the table as needed; the caller has checked the range.
fn write_range<T: Copy + Default>(table: &mut Vec<T>, addr: u16, values: &[T]) {
    let start = usize::from(addr);
    let end = start + values.len();
    if table.len() < end {
        table.resize(end, T::default());
    }
    table[start..end].copy_from_slice(values);
}

/// State shared by the [`SimDevice`] handle and every connection's service.
#[derive(Debug)]
struct Shared {
    units: RwLock<BTreeMap<u8, UnitTables>>,
    online: AtomicBool,
    /// 0 for none, else `0x100 | code`.
    failure_exception: AtomicU16,
    requests_served: AtomicU64,
}

impl Shared {
    fn new() -> Self {
        let mut units = BTreeMap::new();
        units.insert(DEFAULT_UNIT, UnitTables::default());
        Self {
            units: RwLock::new(units),
            online: AtomicBool::new(true),
            failure_exception: AtomicU16::new(0),
            requests_served: AtomicU64::new(0),
        }
    }

    fn failure_exception(&self) -> Option<ExceptionCode> {
        match self.failure_exception.load(Ordering::Relaxed) {
            0 => None,
            encoded => Some(ExceptionCode::new(encoded.to_be_bytes()[1])),
        }
    }

    /// Runs `f` on the tables of `unit` under the read lock (held only for `f`).
    fn with_unit<R>(&self, unit: u8, f: impl FnOnce(&UnitTables) -> R) -> Option<R> {
        let units = self.units.read().unwrap_or_else(PoisonError::into_inner);
        units.get(&unit).map(f)
    }

    /// Runs `f` on the tables of `unit` under the write lock (held only for `f`).
    fn with_unit_mut<R>(&self, unit: u8, f: impl FnOnce(&mut UnitTables) -> R) -> Option<R> {
        let mut units = self.units.write().unwrap_or_else(PoisonError::into_inner);
        units.get_mut(&unit).map(f)
    }

    fn set_bits(
        &self,
        unit: u8,
        table: BitTable,
        addr: u16,
        values: &[bool],
    ) -> Result<(), SimError> {
        if !in_table(addr, values.len()) {
            return Err(SimError::AddressOutOfRange {
                addr,
                count: values.len(),
            });
        }
        self.with_unit_mut(unit, |t| write_range(t.bits_mut(table), addr, values))
            .ok_or(SimError::UnknownUnit { unit })
    }

    fn set_words(
        &self,
        unit: u8,
        table: WordTable,
        addr: u16,
        values: &[u16],
    ) -> Result<(), SimError> {
        if !in_table(addr, values.len()) {
            return Err(SimError::AddressOutOfRange {
                addr,
                count: values.len(),
            });
        }
        self.with_unit_mut(unit, |t| write_range(t.words_mut(table), addr, values))
            .ok_or(SimError::UnknownUnit { unit })
    }

    fn get_bit(&self, unit: u8, table: BitTable, addr: u16) -> Result<bool, SimError> {
        if !in_table(addr, 1) {
            return Err(SimError::AddressOutOfRange { addr, count: 1 });
        }
        self.with_unit(unit, |t| {
            t.bits(table)
                .get(usize::from(addr))
                .copied()
                .unwrap_or_default()
        })
        .ok_or(SimError::UnknownUnit { unit })
    }

    fn get_word(&self, unit: u8, table: WordTable, addr: u16) -> Result<u16, SimError> {
        if !in_table(addr, 1) {
            return Err(SimError::AddressOutOfRange { addr, count: 1 });
        }
        self.with_unit(unit, |t| {
            t.words(table)
                .get(usize::from(addr))
                .copied()
                .unwrap_or_default()
        })
        .ok_or(SimError::UnknownUnit { unit })
    }

    /// Answers one request: `Ok(None)` means no answer at all (offline).
    fn handle(&self, req: SlaveRequest<'_>) -> Result<Option<Response>, ExceptionCode> {
        if !self.online.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let answer = match self.failure_exception() {
            Some(code) => Err(code),
            None => self.execute(req.slave, req.request),
        };
        self.requests_served.fetch_add(1, Ordering::Relaxed);
        answer.map(Some)
    }

    fn execute(&self, unit: u8, request: Request<'_>) -> Result<Response, ExceptionCode> {
        let unknown = || ExceptionCode::GatewayTargetDevice;
        match request {
            Request::ReadCoils(addr, qty) => {
                check_range(addr, qty, MAX_READ_BITS)?;
                self.with_unit(unit, |t| {
                    Response::ReadCoils(read_range(&t.coils, addr, qty))
                })
                .ok_or_else(unknown)
            }
            Request::ReadDiscreteInputs(addr, qty) => {
                check_range(addr, qty, MAX_READ_BITS)?;
                self.with_unit(unit, |t| {
                    Response::ReadDiscreteInputs(read_range(&t.discrete_inputs, addr, qty))
                })
                .ok_or_else(unknown)
            }
            Request::ReadHoldingRegisters(addr, qty) => {
                check_range(addr, qty, MAX_READ_REGISTERS)?;
                self.with_unit(unit, |t| {
                    Response::ReadHoldingRegisters(read_range(&t.holding, addr, qty))
                })
                .ok_or_else(unknown)
            }
            Request::ReadInputRegisters(addr, qty) => {
                check_range(addr, qty, MAX_READ_REGISTERS)?;
                self.with_unit(unit, |t| {
                    Response::ReadInputRegisters(read_range(&t.input, addr, qty))
                })
                .ok_or_else(unknown)
            }
            Request::WriteSingleCoil(addr, value) => {
                check_range(addr, 1, 1)?;
                self.with_unit_mut(unit, |t| write_range(&mut t.coils, addr, &[value]))
                    .ok_or_else(unknown)?;
                Ok(Response::WriteSingleCoil(addr, value))
            }
            Request::WriteSingleRegister(addr, value) => {
                check_range(addr, 1, 1)?;
                self.with_unit_mut(unit, |t| write_range(&mut t.holding, addr, &[value]))
                    .ok_or_else(unknown)?;
                Ok(Response::WriteSingleRegister(addr, value))
            }
            Request::WriteMultipleCoils(addr, values) => {
                let qty =
                    u16::try_from(values.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                check_range(addr, qty, MAX_WRITE_BITS)?;
                self.with_unit_mut(unit, |t| write_range(&mut t.coils, addr, &values))
                    .ok_or_else(unknown)?;
                Ok(Response::WriteMultipleCoils(addr, qty))
            }
            Request::WriteMultipleRegisters(addr, values) => {
                let qty =
                    u16::try_from(values.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                check_range(addr, qty, MAX_WRITE_REGISTERS)?;
                self.with_unit_mut(unit, |t| write_range(&mut t.holding, addr, &values))
                    .ok_or_else(unknown)?;
                Ok(Response::WriteMultipleRegisters(addr, qty))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

/// Checks a request's quantity against the function's limit, then its range against the table.
fn check_range(addr: u16, qty: u16, max_qty: u16) -> Result<(), ExceptionCode> {
    if qty == 0 || qty > max_qty {
        Err(ExceptionCode::IllegalDataValue)
    } else if !in_table(addr, usize::from(qty)) {
        Err(ExceptionCode::IllegalDataAddress)
    } else {
        Ok(())
    }
}

/// The tokio-modbus service of one connection: a reference to the device's tables.
#[derive(Debug, Clone)]
struct SimService(Arc<Shared>);

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        ready(self.0.handle(req))
    }
}

/// A simulated Modbus TCP slave serving in-memory tables; see the [module docs](self).
///
/// All methods take `&self` and are cheap and synchronous (short std locks, never held across an
/// await), so the device can be shared with other tasks behind an `Arc`. Dropping the device, or
/// calling [`SimDevice::shutdown`], stops the listener and closes its connections.
#[derive(Debug)]
pub struct SimDevice {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    server: JoinHandle<()>,
}

impl SimDevice {
    /// Binds a listener on `addr` (use `127.0.0.1:0` for an ephemeral port) and starts serving it
    /// in a spawned task. Must be called within a Tokio runtime; outside one it returns an error
    /// of kind [`io::ErrorKind::Other`].
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let shared = Arc::new(Shared::new());
        let service_state = Arc::clone(&shared);
        let server = runtime.spawn(async move {
            let new_service = |_peer: SocketAddr| Ok(Some(SimService(Arc::clone(&service_state))));
            let on_connected = |stream, peer| async move { accept_tcp_connection(stream, peer, new_service) };
            let on_process_error = |error: io::Error| {
                tracing::debug!(%error, "Simulated device connection ended with an error.");
            };
            // Dropping `serve` (on abort) cancels every connection task it started.
            if let Err(error) = Server::new(listener).serve(&on_connected, on_process_error).await {
                tracing::warn!(%local_addr, %error, "Simulated device stopped accepting connections.");
            }
        });
        Ok(Self {
            shared,
            local_addr,
            server,
        })
    }

    /// The address the device listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Adds a unit id with its own zeroed tables. Adding an existing unit changes nothing.
    pub fn add_unit(&self, unit: u8) {
        let mut units = self
            .shared
            .units
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        units.entry(unit).or_default();
    }

    /// Whether `unit` is configured on this device.
    pub fn has_unit(&self, unit: u8) -> bool {
        self.shared.with_unit(unit, |_| ()).is_some()
    }

    pub fn set_coil(&self, unit: u8, addr: u16, value: bool) -> Result<(), SimError> {
        self.shared.set_bits(unit, BitTable::Coils, addr, &[value])
    }

    pub fn set_discrete(&self, unit: u8, addr: u16, value: bool) -> Result<(), SimError> {
        self.shared
            .set_bits(unit, BitTable::DiscreteInputs, addr, &[value])
    }

    pub fn set_holding(&self, unit: u8, addr: u16, value: u16) -> Result<(), SimError> {
        self.shared
            .set_words(unit, WordTable::Holding, addr, &[value])
    }

    pub fn set_input(&self, unit: u8, addr: u16, value: u16) -> Result<(), SimError> {
        self.shared
            .set_words(unit, WordTable::Input, addr, &[value])
    }

    /// Sets consecutive holding registers from `addr` in one step (a reader never sees half).
    pub fn set_holding_words(&self, unit: u8, addr: u16, values: &[u16]) -> Result<(), SimError> {
        self.shared
            .set_words(unit, WordTable::Holding, addr, values)
    }

    /// Sets consecutive input registers from `addr` in one step (a reader never sees half).
    pub fn set_input_words(&self, unit: u8, addr: u16, values: &[u16]) -> Result<(), SimError> {
        self.shared.set_words(unit, WordTable::Input, addr, values)
    }

    /// Writes `value` into holding registers `addr` and `addr + 1` in the given word order.
    pub fn set_holding_f32(
        &self,
        unit: u8,
        addr: u16,
        value: f32,
        order: WordOrder,
    ) -> Result<(), SimError> {
        self.set_holding_words(unit, addr, &f32_to_words(value, order))
    }

    /// Writes `value` into input registers `addr` and `addr + 1` in the given word order.
    pub fn set_input_f32(
        &self,
        unit: u8,
        addr: u16,
        value: f32,
        order: WordOrder,
    ) -> Result<(), SimError> {
        self.set_input_words(unit, addr, &f32_to_words(value, order))
    }

    /// Writes a signed value as its two's-complement register.
    pub fn set_holding_i16(&self, unit: u8, addr: u16, value: i16) -> Result<(), SimError> {
        self.set_holding(unit, addr, u16::from_be_bytes(value.to_be_bytes()))
    }

    /// Writes a signed value as its two's-complement register.
    pub fn set_input_i16(&self, unit: u8, addr: u16, value: i16) -> Result<(), SimError> {
        self.set_input(unit, addr, u16::from_be_bytes(value.to_be_bytes()))
    }

    pub fn coil(&self, unit: u8, addr: u16) -> Result<bool, SimError> {
        self.shared.get_bit(unit, BitTable::Coils, addr)
    }

    pub fn discrete(&self, unit: u8, addr: u16) -> Result<bool, SimError> {
        self.shared.get_bit(unit, BitTable::DiscreteInputs, addr)
    }

    pub fn holding(&self, unit: u8, addr: u16) -> Result<u16, SimError> {
        self.shared.get_word(unit, WordTable::Holding, addr)
    }

    pub fn input(&self, unit: u8, addr: u16) -> Result<u16, SimError> {
        self.shared.get_word(unit, WordTable::Input, addr)
    }

    /// `false` makes the device swallow every request without answering (connections stay
    /// open, new ones are accepted) until set back to `true`.
    pub fn set_online(&self, online: bool) {
        self.shared.online.store(online, Ordering::Relaxed);
    }

    pub fn is_online(&self) -> bool {
        self.shared.online.load(Ordering::Relaxed)
    }

    /// `Some(code)` answers every request with that exception; `None` restores normal service.
    pub fn set_failure_exception(&self, exception: Option<ExceptionCode>) {
        let encoded = exception.map_or(0, |code| 0x100 | u16::from(u8::from(code)));
        self.shared
            .failure_exception
            .store(encoded, Ordering::Relaxed);
    }

    pub fn failure_exception(&self) -> Option<ExceptionCode> {
        self.shared.failure_exception()
    }

    /// Requests answered so far (normal responses and exceptions; not those swallowed offline).
    pub fn requests_served(&self) -> u64 {
        self.shared.requests_served.load(Ordering::Relaxed)
    }

    /// Stops the listener and closes all connections. Idempotent; dropping the device does the
    /// same. Setters and getters keep working on the tables.
    pub fn shutdown(&self) {
        self.server.abort();
    }
}

impl Drop for SimDevice {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::timeout;
    use tokio_modbus::client::{Context, Reader, Writer, tcp};
    use tokio_modbus::prelude::{Slave, SlaveContext};

    use super::*;

    /// Upper bound for any single step of a test.
    const STEP: Duration = Duration::from_secs(5);
    /// Client-side timeout used to detect a silent device.
    const CLIENT_TIMEOUT: Duration = Duration::from_millis(300);

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    async fn connect(device: &SimDevice, unit: u8) -> Context {
        timeout(STEP, tcp::connect_slave(device.local_addr(), Slave(unit)))
            .await
            .expect("connect timed out")
            .expect("connect failed")
    }

    async fn read_holding(
        ctx: &mut Context,
        addr: u16,
        qty: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        timeout(STEP, ctx.read_holding_registers(addr, qty))
            .await
            .expect("read timed out")
            .expect("transport error")
    }

    fn words_to_f32(words: [u16; 2], order: WordOrder) -> f32 {
        let [ab, cd] = match order {
            WordOrder::ABCD => words,
            WordOrder::CDAB => [words[1], words[0]],
            WordOrder::BADC => [words[0].swap_bytes(), words[1].swap_bytes()],
            WordOrder::DCBA => [words[1].swap_bytes(), words[0].swap_bytes()],
        };
        f32::from_bits((u32::from(ab) << 16) | u32::from(cd))
    }

    #[test]
    fn sim_f32_word_orders_round_trip() {
        let value = -1234.5678_f32;
        assert_eq!(f32_to_words(1.0, WordOrder::ABCD), [0x3F80, 0x0000]);
        assert_eq!(f32_to_words(1.0, WordOrder::CDAB), [0x0000, 0x3F80]);
        assert_eq!(f32_to_words(1.0, WordOrder::BADC), [0x803F, 0x0000]);
        assert_eq!(f32_to_words(1.0, WordOrder::DCBA), [0x0000, 0x803F]);
        for order in [
            WordOrder::ABCD,
            WordOrder::CDAB,
            WordOrder::BADC,
            WordOrder::DCBA,
        ] {
            assert_eq!(words_to_f32(f32_to_words(value, order), order), value);
        }
    }

    #[test]
    fn sim_setters_reject_bad_unit_and_address() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let device = rt.block_on(async { SimDevice::bind(localhost()) }).unwrap();
        assert_eq!(
            device.set_holding(7, 0, 1),
            Err(SimError::UnknownUnit { unit: 7 })
        );
        assert_eq!(
            device.set_holding(1, TABLE_SIZE, 1),
            Err(SimError::AddressOutOfRange {
                addr: TABLE_SIZE,
                count: 1
            })
        );
        assert!(
            device
                .set_holding_f32(1, TABLE_SIZE - 1, 1.0, WordOrder::ABCD)
                .is_err()
        );
        device.set_holding(1, TABLE_SIZE - 1, 9).unwrap();
        assert_eq!(device.holding(1, TABLE_SIZE - 1), Ok(9));
        assert_eq!(device.holding(1, 5), Ok(0));
    }

    #[test]
    fn sim_bind_outside_runtime_is_an_error() {
        let error = SimDevice::bind(localhost()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::Other);
    }

    #[tokio::test]
    async fn sim_reads_back_values_set_with_setters() {
        let device = SimDevice::bind(localhost()).unwrap();
        device.set_holding(1, 0, 42).unwrap();
        device.set_holding_i16(1, 1, -215).unwrap();
        device.set_holding_f32(1, 10, 6.2, WordOrder::ABCD).unwrap();
        device
            .set_holding_f32(1, 12, 0.25, WordOrder::CDAB)
            .unwrap();
        device.set_input(1, 3, 0xBEEF).unwrap();
        device.set_input_f32(1, 100, -3.5, WordOrder::CDAB).unwrap();
        device.set_coil(1, 9, true).unwrap();
        device.set_discrete(1, 2, true).unwrap();

        let mut ctx = connect(&device, 1).await;
        let holding = read_holding(&mut ctx, 0, 14).await.unwrap();
        assert_eq!(holding[0], 42);
        assert_eq!(holding[1] as i16, -215);
        assert_eq!(holding[2..10], [0; 8]);
        assert_eq!(
            words_to_f32([holding[10], holding[11]], WordOrder::ABCD),
            6.2
        );
        assert_eq!(
            words_to_f32([holding[12], holding[13]], WordOrder::CDAB),
            0.25
        );
        // CDAB really is word-swapped on the wire.
        assert_eq!([holding[12], holding[13]], [0x0000, 0x3E80]);

        let input = timeout(STEP, ctx.read_input_registers(0, 4))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(input, Ok(vec![0, 0, 0, 0xBEEF]));
        let input = timeout(STEP, ctx.read_input_registers(100, 2))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(words_to_f32([input[0], input[1]], WordOrder::CDAB), -3.5);

        let coils = timeout(STEP, ctx.read_coils(8, 3)).await.unwrap().unwrap();
        assert_eq!(coils, Ok(vec![false, true, false]));
        let discrete = timeout(STEP, ctx.read_discrete_inputs(0, 3))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(discrete, Ok(vec![false, false, true]));

        // The last entries of the table are readable.
        assert_eq!(
            read_holding(&mut ctx, TABLE_SIZE - 2, 2).await,
            Ok(vec![0, 0])
        );
        assert_eq!(device.requests_served(), 6);
    }

    #[tokio::test]
    async fn sim_writes_from_a_client_are_applied() {
        let device = SimDevice::bind(localhost()).unwrap();
        let mut ctx = connect(&device, 1).await;
        timeout(STEP, ctx.write_single_register(5, 500))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        timeout(STEP, ctx.write_multiple_registers(6, &[1, 2, 3]))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        timeout(STEP, ctx.write_single_coil(1, true))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        timeout(STEP, ctx.write_multiple_coils(10, &[true, false, true]))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(device.holding(1, 5), Ok(500));
        assert_eq!(device.holding(1, 8), Ok(3));
        assert_eq!(device.coil(1, 1), Ok(true));
        assert_eq!(device.coil(1, 11), Ok(false));
        assert_eq!(device.coil(1, 12), Ok(true));
        assert_eq!(read_holding(&mut ctx, 5, 4).await, Ok(vec![500, 1, 2, 3]));
    }

    #[tokio::test]
    async fn sim_out_of_table_and_unsupported_requests_get_exceptions() {
        let device = SimDevice::bind(localhost()).unwrap();
        let mut ctx = connect(&device, 1).await;
        assert_eq!(
            read_holding(&mut ctx, TABLE_SIZE, 1).await,
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            read_holding(&mut ctx, TABLE_SIZE - 1, 2).await,
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            read_holding(&mut ctx, 0, 126).await,
            Err(ExceptionCode::IllegalDataValue)
        );
        let coils = timeout(STEP, ctx.read_coils(9_999, 8))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(coils, Err(ExceptionCode::IllegalDataAddress));
        let written = timeout(STEP, ctx.write_single_register(TABLE_SIZE, 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(written, Err(ExceptionCode::IllegalDataAddress));
        let masked = timeout(STEP, ctx.masked_write_register(0, 0xFF, 0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(masked, Err(ExceptionCode::IllegalFunction));
        // The connection is still usable after exceptions.
        assert_eq!(read_holding(&mut ctx, 0, 1).await, Ok(vec![0]));
    }

    #[tokio::test]
    async fn sim_offline_device_is_silent_until_back_online() {
        let device = SimDevice::bind(localhost()).unwrap();
        device.set_holding(1, 0, 7).unwrap();
        let mut ctx = connect(&device, 1).await;
        assert_eq!(read_holding(&mut ctx, 0, 1).await, Ok(vec![7]));

        device.set_online(false);
        let silent = timeout(CLIENT_TIMEOUT, ctx.read_holding_registers(0, 1)).await;
        assert!(silent.is_err(), "offline device answered: {silent:?}");
        // New connections are still accepted, but get no answer either.
        let mut second = connect(&device, 1).await;
        assert!(
            timeout(CLIENT_TIMEOUT, second.read_holding_registers(0, 1))
                .await
                .is_err()
        );
        assert_eq!(device.requests_served(), 1);

        device.set_online(true);
        assert_eq!(read_holding(&mut second, 0, 1).await, Ok(vec![7]));
        assert_eq!(read_holding(&mut ctx, 0, 1).await, Ok(vec![7]));
    }

    #[tokio::test]
    async fn sim_failure_exception_answers_every_request() {
        let device = SimDevice::bind(localhost()).unwrap();
        let mut ctx = connect(&device, 1).await;
        device.set_failure_exception(Some(ExceptionCode::ServerDeviceBusy));
        assert_eq!(
            device.failure_exception(),
            Some(ExceptionCode::ServerDeviceBusy)
        );
        assert_eq!(
            read_holding(&mut ctx, 0, 1).await,
            Err(ExceptionCode::ServerDeviceBusy)
        );
        let input = timeout(STEP, ctx.read_input_registers(0, 1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(input, Err(ExceptionCode::ServerDeviceBusy));
        device.set_failure_exception(None);
        assert_eq!(read_holding(&mut ctx, 0, 1).await, Ok(vec![0]));
        assert_eq!(device.requests_served(), 3);
    }

    #[tokio::test]
    async fn sim_units_have_independent_registers() {
        let device = SimDevice::bind(localhost()).unwrap();
        device.add_unit(2);
        assert!(device.has_unit(1) && device.has_unit(2) && !device.has_unit(3));
        device.set_holding(1, 0, 111).unwrap();
        device.set_holding(2, 0, 222).unwrap();
        device.set_coil(2, 0, true).unwrap();

        let mut one = connect(&device, 1).await;
        let mut two = connect(&device, 2).await;
        assert_eq!(read_holding(&mut one, 0, 1).await, Ok(vec![111]));
        assert_eq!(read_holding(&mut two, 0, 1).await, Ok(vec![222]));
        assert_eq!(
            timeout(STEP, one.read_coils(0, 1)).await.unwrap().unwrap(),
            Ok(vec![false])
        );
        assert_eq!(
            timeout(STEP, two.read_coils(0, 1)).await.unwrap().unwrap(),
            Ok(vec![true])
        );

        // One connection can switch unit ids, and an unknown unit gets a gateway exception.
        one.set_slave(Slave(2));
        assert_eq!(read_holding(&mut one, 0, 1).await, Ok(vec![222]));
        one.set_slave(Slave(3));
        assert_eq!(
            read_holding(&mut one, 0, 1).await,
            Err(ExceptionCode::GatewayTargetDevice)
        );
    }

    #[tokio::test]
    async fn sim_shutdown_closes_the_listener() {
        let device = SimDevice::bind(localhost()).unwrap();
        let addr = device.local_addr();
        let mut ctx = connect(&device, 1).await;
        assert_eq!(read_holding(&mut ctx, 0, 1).await, Ok(vec![0]));
        device.shutdown();
        // The server task is dropped asynchronously; the open connection ends with it.
        let closed = timeout(STEP, async {
            while ctx.read_holding_registers(0, 1).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(closed.is_ok(), "connection still answered after shutdown");
        drop(device);
        let refused = timeout(STEP, async {
            loop {
                if tokio::net::TcpStream::connect(addr).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(refused.is_ok(), "listener still accepting after shutdown");
    }
}

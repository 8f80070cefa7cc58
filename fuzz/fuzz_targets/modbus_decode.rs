//! Modbus response decoding: arbitrary point specs are planned into requests as a device's
//! configuration would be, and arbitrary (often short) responses are decoded the way the poller
//! decodes them. Invariants: nothing panics; a planned point lies inside its request; a spec that
//! passes `validate` never fails with `BitOutOfRange`; every decoded value is finite; a loop
//! current always maps to a quality, and to a value only when that quality is usable.
//!
//! Input layout (little-endian), simple enough to write seeds by hand:
//! `n: u8` points (1..=8), `max_registers_per_request: u16`, `max_gap: u16`, then per point
//! 24 bytes: `table: u8` (0 coil, 1 discrete input, 2 holding, 3 input), `type: u8` (0 bool,
//! 1 i16, 2 u16, 3 i32, 4 u32, 5 i64, 6 u64, 7 f32, 8 f64), `word_order: u8` (0 ABCD, 1 DCBA,
//! 2 BADC, 3 CDAB), `bit: u8` (255 none), `address: u16`, `flags: u8` (bit 0 4–20 mA,
//! bit 1 status word at address+1 with fault bit 0 and warm-up bit 1), `status_bits: u8`,
//! `scale: f64`, `offset: f64`; the rest is the response: u16 words for register requests,
//! one byte per bit for bit requests, consumed request by request.
#![no_main]

use alert_rules::PointId;
use drivers::modbus::decode::{decode_bit, decode_registers};
use drivers::modbus::{
    DataType, DecodeError, PlanLimits, PolledPoint, ReadPlan, RegisterSpec, Signal, StatusSpec,
    Table, WordOrder, from_milliamps,
};
use libfuzzer_sys::fuzz_target;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|[b]| b)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take().map(u16::from_le_bytes)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
}

const TABLES: [Table; 4] = [
    Table::Coil,
    Table::DiscreteInput,
    Table::Holding,
    Table::Input,
];
const TYPES: [DataType; 9] = [
    DataType::Bool,
    DataType::I16,
    DataType::U16,
    DataType::I32,
    DataType::U32,
    DataType::I64,
    DataType::U64,
    DataType::F32,
    DataType::F64,
];
const ORDERS: [WordOrder; 4] = [
    WordOrder::ABCD,
    WordOrder::DCBA,
    WordOrder::BADC,
    WordOrder::CDAB,
];

fn point(id: u32, input: &mut Input<'_>) -> Option<PolledPoint> {
    let table = TABLES[usize::from(input.u8()? % 4)];
    let data_type = TYPES[usize::from(input.u8()? % 9)];
    let word_order = ORDERS[usize::from(input.u8()? % 4)];
    let bit = match input.u8()? {
        255 => None,
        b => Some(b),
    };
    let address = input.u16()?;
    let flags = input.u8()?;
    let status_bits = input.u8()?;
    let scale = input.f64()?;
    let offset = input.f64()?;
    let mut register = RegisterSpec::new(table, address, data_type);
    register.word_order = word_order;
    register.bit = bit;
    register.scale = scale;
    register.offset = offset;
    if flags & 1 == 1 {
        register.signal = Signal::Ma4To20;
    }
    if flags & 2 == 2 {
        register.status = Some(StatusSpec {
            table: TABLES[usize::from(status_bits >> 6)],
            address: address.wrapping_add(1),
            fault_bit: Some(status_bits & 0x1f),
            warmup_bit: Some(1),
            calibration_bit: None,
        });
    }
    let mut p = PolledPoint::new(PointId(id), register);
    p.span = Some([0.0, 100.0]);
    Some(p)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(n) = input.u8() else { return };
    let (Some(max_registers_per_request), Some(max_gap)) = (input.u16(), input.u16()) else {
        return;
    };
    let mut points = Vec::new();
    for id in 0..u32::from(n % 8 + 1) {
        match point(id, &mut input) {
            Some(p) => points.push(p),
            None => break,
        }
    }
    let limits = PlanLimits {
        max_registers_per_request,
        max_gap,
        poll_interval_ms: 1000,
    };
    let plan = ReadPlan::build(&points, limits);
    assert_eq!(
        plan.requests
            .iter()
            .flat_map(|r| &r.points)
            .filter(|p| p.part == drivers::modbus::Part::Value)
            .count()
            + plan.rejected.len(),
        points.len(),
        "every point is either planned once or rejected"
    );
    for request in &plan.requests {
        assert!(request.count >= 1);
        assert!(u32::from(request.start) + u32::from(request.count) <= 0x1_0000);
        for p in &request.points {
            assert!(
                p.offset + p.register.width() <= request.count,
                "point {p:?} lies outside its request {}+{}",
                request.start,
                request.count
            );
            assert_eq!(
                u32::from(request.start) + u32::from(p.offset),
                u32::from(p.register.address)
            );
            assert!(p.register.validate().is_ok());
        }
        // The device's answer: whatever the fuzzer supplies, possibly short.
        if request.table.is_bits() {
            let bits: Vec<bool> = (0..request.count)
                .map_while(|_| input.u8())
                .map(|b| b & 1 == 1)
                .collect();
            for p in &request.points {
                if let Some(&bit) = bits.get(usize::from(p.offset)) {
                    check(&p.register, decode_bit(&p.register, bit));
                }
            }
        } else {
            let words: Vec<u16> = (0..request.count).map_while(|_| input.u16()).collect();
            for p in &request.points {
                let decoded = match words.get(usize::from(p.offset)..) {
                    Some(words) => decode_registers(&p.register, words),
                    None => Err(DecodeError::MissingData {
                        needed: p.register.width(),
                        got: 0,
                    }),
                };
                check(&p.register, decoded);
                if let Some(status) = &p.register.status {
                    let _ = status.quality(words.first().copied().unwrap_or(0));
                }
            }
        }
    }
    // Specs the planner rejected still go through the decoder without panicking: the decoder
    // promises that for any input, not only validated ones.
    for p in &points {
        let words: Vec<u16> = (0..4).map_while(|_| input.u16()).collect();
        let _ = decode_registers(&p.register, &words);
        let _ = decode_bit(&p.register, words.first().is_some_and(|w| w & 1 == 1));
    }
});

fn check(register: &RegisterSpec, decoded: Result<f64, DecodeError>) {
    match decoded {
        Ok(v) => {
            assert!(v.is_finite(), "decoded {v} for {register:?}");
            if register.signal == Signal::Ma4To20 {
                let (value, quality) = from_milliamps(v, [0.0, 100.0]);
                assert!(
                    !quality.is_usable() || value.is_finite(),
                    "{v} mA gave {value} ({quality:?})"
                );
            }
        }
        Err(DecodeError::BitOutOfRange(b)) => {
            panic!("validated spec {register:?} failed with bit {b}")
        }
        Err(_) => {}
    }
}

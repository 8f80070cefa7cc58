//! Registers and bits → engineering values.
//!
//! A value of `n` registers arrives as `2n` bytes in wire order (each register's high byte
//! first). [`WordOrder`] says how those bytes map onto the big-endian value:
//!
//! | order  | wire bytes of `0x11223344` | meaning                                    |
//! |--------|----------------------------|--------------------------------------------|
//! | `ABCD` | `11 22 33 44`              | big-endian throughout                      |
//! | `DCBA` | `44 33 22 11`              | little-endian throughout                   |
//! | `BADC` | `22 11 44 33`              | words in order, bytes swapped in each word |
//! | `CDAB` | `33 44 11 22`              | bytes in order, word order reversed        |
//!
//! The same rules apply to 16-bit and 64-bit types, so for a single register `DCBA` and `BADC`
//! swap its two bytes and `CDAB` leaves it alone. A `bit` of a register counts from the least
//! significant bit of the register's value after that reordering.

use alert_rules::Quality;

use super::{DataType, RegisterSpec, Signal, StatusSpec, Table, WordOrder};

impl DataType {
    /// How many 16-bit registers one value of this type occupies.
    pub const fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::I16 | DataType::U16 => 1,
            DataType::I32 | DataType::U32 | DataType::F32 => 2,
            DataType::I64 | DataType::U64 | DataType::F64 => 4,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::I16 => "i16",
            DataType::U16 => "u16",
            DataType::I32 => "i32",
            DataType::U32 => "u32",
            DataType::I64 => "i64",
            DataType::U64 => "u64",
            DataType::F32 => "f32",
            DataType::F64 => "f64",
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Table {
    /// Whether the table holds single bits (coils, discrete inputs) rather than registers.
    pub const fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }

    /// The protocol's limit on how many registers (or bits) one read of this table may return.
    pub const fn protocol_limit(self) -> u16 {
        if self.is_bits() {
            super::MAX_BITS_PER_REQUEST
        } else {
            super::MAX_REGISTERS_PER_REQUEST
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl RegisterSpec {
    /// How many addresses the point occupies: registers, or bits for coils and discrete inputs.
    pub const fn width(&self) -> u16 {
        if self.table.is_bits() {
            1
        } else {
            self.data_type.registers()
        }
    }

    /// Checks what serde can't: combinations that could never decode.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.table.is_bits() && self.data_type != DataType::Bool {
            return Err(SpecError::BitTableNeedsBool {
                table: self.table,
                data_type: self.data_type,
            });
        }
        if let Some(bit) = self.bit {
            if self.table.is_bits() || self.data_type != DataType::Bool {
                return Err(SpecError::BitNeedsBoolRegister);
            }
            if bit > 15 {
                return Err(SpecError::BitOutOfRange(bit));
            }
        }
        if u32::from(self.address) + u32::from(self.width()) > 0x1_0000 {
            return Err(SpecError::PastAddressSpace {
                address: self.address,
                width: self.width(),
            });
        }
        if !self.scale.is_finite() || !self.offset.is_finite() {
            return Err(SpecError::NonFiniteScaling);
        }
        if self.signal == Signal::Ma4To20 && self.data_type == DataType::Bool {
            return Err(SpecError::SignalNeedsNumber);
        }
        if let Some(status) = &self.status {
            if status.table.is_bits() {
                return Err(SpecError::StatusNeedsRegister);
            }
            if let Some(bit) = status.bits().find(|&b| b > 15) {
                return Err(SpecError::BitOutOfRange(bit));
            }
        }
        Ok(())
    }

    /// The status word's location as a point spec of its own (one `u16`).
    pub fn status_register(&self) -> Option<RegisterSpec> {
        self.status
            .as_ref()
            .map(|s| RegisterSpec::new(s.table, s.address, DataType::U16))
    }
}

impl StatusSpec {
    fn bits(&self) -> impl Iterator<Item = u8> {
        [self.fault_bit, self.warmup_bit, self.calibration_bit]
            .into_iter()
            .flatten()
    }

    /// What the status word says about the point's reading: `Good` when no configured bit is
    /// set; a fault wins over warm-up and calibration.
    pub fn quality(&self, word: u16) -> Quality {
        let set = |bit: Option<u8>| bit.is_some_and(|b| b < 16 && word >> b & 1 == 1);
        if set(self.fault_bit) {
            Quality::SensorFault
        } else if set(self.warmup_bit) || set(self.calibration_bit) {
            Quality::NotMeasuring
        } else {
            Quality::Good
        }
    }
}

/// NAMUR NE43 limits of a 4–20 mA loop, in mA.
pub mod ne43 {
    /// At or below: sensor or loop failure (bad).
    pub const FAIL_LOW: f64 = 3.6;
    /// Below (and above [`FAIL_LOW`]): under-range saturation (uncertain).
    pub const VALID_LOW: f64 = 3.8;
    /// Above (and below [`FAIL_HIGH`]): over-range saturation (uncertain).
    pub const VALID_HIGH: f64 = 20.5;
    /// At or above: sensor failure (bad).
    pub const FAIL_HIGH: f64 = 21.0;
}

/// A loop current in mA → the engineering value over `span` (4 mA = low, 20 mA = high) and the
/// quality NAMUR NE43 gives it: 3.8..=20.5 good; 3.6..3.8 and 20.5..21 saturated (uncertain,
/// the value is still extrapolated linearly, since a saturated-high gas reading is evidence);
/// ≤ 3.6 or ≥ 21 a sensor fault (bad, no value).
pub fn from_milliamps(ma: f64, span: [f64; 2]) -> (f64, Quality) {
    if !ma.is_finite() || ma <= ne43::FAIL_LOW || ma >= ne43::FAIL_HIGH {
        return (f64::NAN, Quality::SensorFault);
    }
    let [lo, hi] = span;
    let value = lo + (ma - 4.0) / 16.0 * (hi - lo);
    let quality = if (ne43::VALID_LOW..=ne43::VALID_HIGH).contains(&ma) {
        Quality::Good
    } else {
        Quality::Saturated
    };
    (value, quality)
}

/// A register spec that can never produce a value.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("a {table} point must have type bool, not {data_type}")]
    BitTableNeedsBool { table: Table, data_type: DataType },
    #[error("`bit` applies only to a bool read from a holding or input register")]
    BitNeedsBoolRegister,
    #[error("bit {0} is out of range (a register has bits 0 to 15)")]
    BitOutOfRange(u8),
    #[error("address {address} plus {width} registers runs past the last address, 65535")]
    PastAddressSpace { address: u16, width: u16 },
    #[error("scale and offset must be finite numbers")]
    NonFiniteScaling,
    #[error("a 4-20 mA signal needs a numeric type, not bool")]
    SignalNeedsNumber,
    #[error("a status word is read from a holding or input register")]
    StatusNeedsRegister,
}

/// Why a response could not be turned into a value; the reading's quality becomes `BadValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the response holds {got} of the {needed} registers the value needs")]
    MissingData { needed: u16, got: usize },
    #[error("the value is not a finite number")]
    NotFinite,
    #[error("bit {0} is out of range (a register has bits 0 to 15)")]
    BitOutOfRange(u8),
}

/// Decodes a register-table point from `words`, which start at the point's address (extra
/// words after the value are ignored). Never panics, whatever the input.
pub fn decode_registers(spec: &RegisterSpec, words: &[u16]) -> Result<f64, DecodeError> {
    let needed = spec.data_type.registers();
    let n = usize::from(needed);
    let Some(words) = words.get(..n) else {
        return Err(DecodeError::MissingData {
            needed,
            got: words.len(),
        });
    };
    let mut buf = [0u8; 8];
    let bytes = &mut buf[..2 * n];
    for (chunk, word) in bytes.chunks_exact_mut(2).zip(words) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    reorder(bytes, spec.word_order);
    let b = buf;
    let raw = match spec.data_type {
        DataType::Bool => {
            let register = u16::from_be_bytes([b[0], b[1]]);
            let set = match spec.bit {
                Some(bit) if bit > 15 => return Err(DecodeError::BitOutOfRange(bit)),
                Some(bit) => register >> bit & 1 == 1,
                None => register != 0,
            };
            if set { 1.0 } else { 0.0 }
        }
        DataType::I16 => f64::from(i16::from_be_bytes([b[0], b[1]])),
        DataType::U16 => f64::from(u16::from_be_bytes([b[0], b[1]])),
        DataType::I32 => f64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::U32 => f64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::F32 => f64::from(f32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        DataType::I64 => i64::from_be_bytes(b) as f64,
        DataType::U64 => u64::from_be_bytes(b) as f64,
        DataType::F64 => f64::from_be_bytes(b),
    };
    scale(spec, raw)
}

/// Decodes a coil or discrete input (or any single bit) as 0 or 1, scaled.
pub fn decode_bit(spec: &RegisterSpec, bit: bool) -> Result<f64, DecodeError> {
    scale(spec, if bit { 1.0 } else { 0.0 })
}

fn scale(spec: &RegisterSpec, raw: f64) -> Result<f64, DecodeError> {
    let value = raw * spec.scale + spec.offset;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(DecodeError::NotFinite)
    }
}

/// Maps wire bytes to big-endian bytes. Every order is its own inverse, so the same function
/// maps big-endian bytes to wire bytes.
fn reorder(bytes: &mut [u8], order: WordOrder) {
    match order {
        WordOrder::ABCD => {}
        WordOrder::DCBA => bytes.reverse(),
        WordOrder::BADC => bytes.chunks_exact_mut(2).for_each(|w| w.swap(0, 1)),
        WordOrder::CDAB => {
            bytes.reverse();
            bytes.chunks_exact_mut(2).for_each(|w| w.swap(0, 1));
        }
    }
}

/// The registers a device would hold for the big-endian bytes `be` in `order`; for tests and
/// test servers.
#[cfg(test)]
pub(crate) fn encode(be: &[u8], order: WordOrder) -> Vec<u16> {
    let mut bytes = be.to_vec();
    reorder(&mut bytes, order);
    bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ORDERS: [WordOrder; 4] = [
        WordOrder::ABCD,
        WordOrder::DCBA,
        WordOrder::BADC,
        WordOrder::CDAB,
    ];

    fn spec(data_type: DataType, word_order: WordOrder) -> RegisterSpec {
        RegisterSpec {
            word_order,
            ..RegisterSpec::new(Table::Holding, 0, data_type)
        }
    }

    #[test]
    fn ne43_bands() {
        let span = [0.0, 100.0];
        assert_eq!(from_milliamps(4.0, span), (0.0, Quality::Good));
        assert_eq!(from_milliamps(12.0, span), (50.0, Quality::Good));
        assert_eq!(from_milliamps(20.0, span), (100.0, Quality::Good));
        assert_eq!(from_milliamps(3.8, span).1, Quality::Good);
        assert_eq!(from_milliamps(20.5, span).1, Quality::Good);
        let (v, q) = from_milliamps(3.7, span);
        assert_eq!(q, Quality::Saturated);
        assert!((v - -1.875).abs() < 1e-9);
        assert_eq!(from_milliamps(20.9, span).1, Quality::Saturated);
        for bad in [3.6, 3.0, 0.0, 21.0, 22.5, f64::NAN] {
            let (v, q) = from_milliamps(bad, span);
            assert_eq!(q, Quality::SensorFault, "{bad} mA");
            assert!(v.is_nan());
        }
    }

    #[test]
    fn status_word_bits_map_to_quality() {
        let s = StatusSpec {
            table: Table::Input,
            address: 1,
            fault_bit: Some(2),
            warmup_bit: Some(3),
            calibration_bit: Some(4),
        };
        assert_eq!(s.quality(0), Quality::Good);
        assert_eq!(
            s.quality(0b0000_0011),
            Quality::Good,
            "other bits are ignored"
        );
        assert_eq!(s.quality(1 << 2), Quality::SensorFault);
        assert_eq!(s.quality(1 << 3), Quality::NotMeasuring);
        assert_eq!(s.quality(1 << 4), Quality::NotMeasuring);
        assert_eq!(
            s.quality(1 << 2 | 1 << 3),
            Quality::SensorFault,
            "a fault wins"
        );
        let mut reg = RegisterSpec::new(Table::Input, 0, DataType::U16);
        reg.status = Some(StatusSpec {
            table: Table::Coil,
            ..s.clone()
        });
        assert_eq!(reg.validate(), Err(SpecError::StatusNeedsRegister));
        reg.status = Some(StatusSpec {
            fault_bit: Some(16),
            ..s
        });
        assert_eq!(reg.validate(), Err(SpecError::BitOutOfRange(16)));
    }

    #[test]
    fn word_orders_match_the_table_in_the_module_doc() {
        let be = 0x1122_3344_u32.to_be_bytes();
        assert_eq!(encode(&be, WordOrder::ABCD), [0x1122, 0x3344]);
        assert_eq!(encode(&be, WordOrder::DCBA), [0x4433, 0x2211]);
        assert_eq!(encode(&be, WordOrder::BADC), [0x2211, 0x4433]);
        assert_eq!(encode(&be, WordOrder::CDAB), [0x3344, 0x1122]);
        let be64 = 0x1122_3344_5566_7788_u64.to_be_bytes();
        assert_eq!(
            encode(&be64, WordOrder::CDAB),
            [0x7788, 0x5566, 0x3344, 0x1122]
        );
        assert_eq!(
            encode(&be64, WordOrder::BADC),
            [0x2211, 0x4433, 0x6655, 0x8877]
        );
    }

    #[test]
    fn known_values() {
        // 123.456 as f32 is 0x42F6E979.
        let s = spec(DataType::F32, WordOrder::CDAB);
        let v = decode_registers(&s, &[0xE979, 0x42F6]).unwrap();
        assert!((v - 123.456).abs() < 1e-4);
        let s = spec(DataType::I16, WordOrder::ABCD);
        assert_eq!(decode_registers(&s, &[0xFFFE]), Ok(-2.0));
        let s = spec(DataType::U16, WordOrder::DCBA);
        assert_eq!(decode_registers(&s, &[0x0100]), Ok(1.0));
        let s = spec(DataType::I32, WordOrder::ABCD);
        assert_eq!(decode_registers(&s, &[0xFFFF, 0xFFFF]), Ok(-1.0));
    }

    #[test]
    fn scale_and_offset_apply() {
        let mut s = spec(DataType::U16, WordOrder::ABCD);
        s.scale = 0.1;
        s.offset = -40.0;
        let v = decode_registers(&s, &[650]).unwrap();
        assert!((v - 25.0).abs() < 1e-9);
        assert_eq!(
            decode_bit(
                &RegisterSpec {
                    scale: 5.0,
                    ..s.clone()
                },
                true
            ),
            Ok(5.0 - 40.0)
        );
    }

    #[test]
    fn non_finite_floats_are_bad_values() {
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for order in ORDERS {
                let words = encode(&x.to_be_bytes(), order);
                assert_eq!(
                    decode_registers(&spec(DataType::F32, order), &words),
                    Err(DecodeError::NotFinite)
                );
            }
        }
        let words = encode(&f64::NAN.to_be_bytes(), WordOrder::ABCD);
        assert_eq!(
            decode_registers(&spec(DataType::F64, WordOrder::ABCD), &words),
            Err(DecodeError::NotFinite)
        );
        // Finite raw value, infinite after scaling.
        let mut s = spec(DataType::F64, WordOrder::ABCD);
        s.scale = 10.0;
        let words = encode(&f64::MAX.to_be_bytes(), WordOrder::ABCD);
        assert_eq!(decode_registers(&s, &words), Err(DecodeError::NotFinite));
    }

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        assert_eq!(
            decode_registers(&spec(DataType::F64, WordOrder::ABCD), &[1, 2]),
            Err(DecodeError::MissingData { needed: 4, got: 2 })
        );
        assert_eq!(
            decode_registers(&spec(DataType::U16, WordOrder::ABCD), &[]),
            Err(DecodeError::MissingData { needed: 1, got: 0 })
        );
    }

    #[test]
    fn bits_of_a_register() {
        let mut s = spec(DataType::Bool, WordOrder::ABCD);
        assert_eq!(decode_registers(&s, &[0]), Ok(0.0));
        assert_eq!(decode_registers(&s, &[0x8000]), Ok(1.0));
        s.bit = Some(15);
        assert_eq!(decode_registers(&s, &[0x8000]), Ok(1.0));
        s.bit = Some(0);
        assert_eq!(decode_registers(&s, &[0x8000]), Ok(0.0));
        s.word_order = WordOrder::BADC;
        assert_eq!(decode_registers(&s, &[0x0100]), Ok(1.0));
        s.bit = Some(16);
        assert_eq!(
            decode_registers(&s, &[0xFFFF]),
            Err(DecodeError::BitOutOfRange(16))
        );
    }

    #[test]
    fn registers_per_type() {
        assert_eq!(DataType::Bool.registers(), 1);
        assert_eq!(DataType::U16.registers(), 1);
        assert_eq!(DataType::F32.registers(), 2);
        assert_eq!(DataType::U64.registers(), 4);
        let mut s = spec(DataType::F64, WordOrder::ABCD);
        assert_eq!(s.width(), 4);
        s.table = Table::Coil;
        assert_eq!(s.width(), 1);
    }

    #[test]
    fn validation_rejects_impossible_specs() {
        let ok = spec(DataType::F32, WordOrder::ABCD);
        assert_eq!(ok.validate(), Ok(()));
        let coil_f32 = RegisterSpec {
            table: Table::Coil,
            ..ok.clone()
        };
        assert!(matches!(
            coil_f32.validate(),
            Err(SpecError::BitTableNeedsBool { .. })
        ));
        let bit_on_f32 = RegisterSpec {
            bit: Some(1),
            ..ok.clone()
        };
        assert_eq!(bit_on_f32.validate(), Err(SpecError::BitNeedsBoolRegister));
        let bit_16 = RegisterSpec {
            bit: Some(16),
            ..spec(DataType::Bool, WordOrder::ABCD)
        };
        assert_eq!(bit_16.validate(), Err(SpecError::BitOutOfRange(16)));
        let past_end = RegisterSpec {
            address: 65535,
            ..ok.clone()
        };
        assert!(matches!(
            past_end.validate(),
            Err(SpecError::PastAddressSpace { .. })
        ));
        let last = RegisterSpec {
            address: 65534,
            ..ok.clone()
        };
        assert_eq!(last.validate(), Ok(()));
        let nan_scale = RegisterSpec {
            scale: f64::NAN,
            ..ok
        };
        assert_eq!(nan_scale.validate(), Err(SpecError::NonFiniteScaling));
    }

    fn order() -> impl Strategy<Value = WordOrder> {
        prop::sample::select(ORDERS.to_vec())
    }

    fn round_trip(data_type: DataType, order: WordOrder, be: &[u8]) -> Result<f64, DecodeError> {
        let words = encode(be, order);
        assert_eq!(words.len(), usize::from(data_type.registers()));
        decode_registers(&spec(data_type, order), &words)
    }

    proptest! {
        #[test]
        fn i16_round_trips(x: i16, o in order()) {
            prop_assert_eq!(round_trip(DataType::I16, o, &x.to_be_bytes()), Ok(f64::from(x)));
        }

        #[test]
        fn u16_round_trips(x: u16, o in order()) {
            prop_assert_eq!(round_trip(DataType::U16, o, &x.to_be_bytes()), Ok(f64::from(x)));
        }

        #[test]
        fn i32_round_trips(x: i32, o in order()) {
            prop_assert_eq!(round_trip(DataType::I32, o, &x.to_be_bytes()), Ok(f64::from(x)));
        }

        #[test]
        fn u32_round_trips(x: u32, o in order()) {
            prop_assert_eq!(round_trip(DataType::U32, o, &x.to_be_bytes()), Ok(f64::from(x)));
        }

        #[test]
        fn i64_round_trips(x: i64, o in order()) {
            prop_assert_eq!(round_trip(DataType::I64, o, &x.to_be_bytes()), Ok(x as f64));
        }

        #[test]
        fn u64_round_trips(x: u64, o in order()) {
            prop_assert_eq!(round_trip(DataType::U64, o, &x.to_be_bytes()), Ok(x as f64));
        }

        #[test]
        fn f32_round_trips(x in any::<f32>().prop_filter("finite", |x| x.is_finite()), o in order()) {
            prop_assert_eq!(round_trip(DataType::F32, o, &x.to_be_bytes()), Ok(f64::from(x)));
        }

        #[test]
        fn f64_round_trips(x in any::<f64>().prop_filter("finite", |x| x.is_finite()), o in order()) {
            prop_assert_eq!(round_trip(DataType::F64, o, &x.to_be_bytes()), Ok(x));
        }

        #[test]
        fn register_bits_round_trip(x: u16, bit in 0u8..16, o in order()) {
            let mut s = spec(DataType::Bool, o);
            s.bit = Some(bit);
            let expected = if x >> bit & 1 == 1 { 1.0 } else { 0.0 };
            prop_assert_eq!(decode_registers(&s, &encode(&x.to_be_bytes(), o)), Ok(expected));
        }

        #[test]
        fn any_input_decodes_without_panic(
            words in prop::collection::vec(any::<u16>(), 0..6),
            t in prop::sample::select(vec![
                DataType::Bool, DataType::I16, DataType::U16, DataType::I32, DataType::U32,
                DataType::I64, DataType::U64, DataType::F32, DataType::F64,
            ]),
            o in order(),
            bit in prop::option::of(any::<u8>()),
            scale in any::<f64>(),
        ) {
            let s = RegisterSpec { bit, scale, ..spec(t, o) };
            if let Ok(v) = decode_registers(&s, &words) {
                prop_assert!(v.is_finite());
            }
        }
    }
}

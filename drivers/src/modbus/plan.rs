//! Groups a device's points into the fewest read requests the limits allow.
//!
//! Per table, points are sorted by address and packed greedily: a point joins the current
//! request when the unused addresses between them are at most `max_gap` and the request stays
//! within its limit (125 registers or 2000 bits by protocol, and the device's own
//! `max_registers_per_request` for registers). A point wider than the device limit gets a
//! request of exactly its width. Points that overlap (two bits of one register, a register read
//! both as `u16` and as part of a `u32`) share a request.
//!
//! A point's status word (gas detectors) is planned like a point of its own, tagged
//! [`Part::Status`], so it is read in the same cycle as the value, usually in the same request.
//! Points with a slower `interval_ms` are planned apart, in requests that run every n-th cycle.

use std::fmt;

use alert_rules::PointId;

use super::decode::SpecError;
use super::{DeviceSettings, PolledPoint, RegisterSpec, Table};

/// Request-size limits of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// See [`DeviceSettings::max_registers_per_request`]; `0` means the protocol limit.
    pub max_registers_per_request: u16,
    pub max_gap: u16,
    /// The device's poll interval, to turn a point's `interval_ms` into a number of cycles;
    /// `0` polls every point every cycle.
    pub poll_interval_ms: u64,
}

impl PlanLimits {
    pub fn from_settings(settings: &DeviceSettings) -> Self {
        Self {
            max_registers_per_request: settings.max_registers_per_request,
            max_gap: settings.max_gap,
            poll_interval_ms: u64::try_from(settings.poll_interval.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Every how many cycles a point with this spec is read (at least 1). An interval that is
    /// not a whole multiple of the poll interval is rounded to the nearest one.
    pub fn every(self, register: &RegisterSpec) -> u32 {
        match register.interval_ms {
            Some(ms) if self.poll_interval_ms > 0 => {
                let cycles = (ms + self.poll_interval_ms / 2) / self.poll_interval_ms;
                u32::try_from(cycles).unwrap_or(u32::MAX).max(1)
            }
            _ => 1,
        }
    }

    /// Most addresses one request of `table` may cover (at least 1).
    pub fn limit(self, table: Table) -> u16 {
        let protocol = table.protocol_limit();
        if table.is_bits() || self.max_registers_per_request == 0 {
            protocol
        } else {
            self.max_registers_per_request.min(protocol)
        }
    }
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self {
            max_registers_per_request: super::MAX_REGISTERS_PER_REQUEST,
            max_gap: super::DEFAULT_MAX_GAP,
            poll_interval_ms: 0,
        }
    }
}

/// Which of a point's locations a planned read serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Part {
    Value,
    /// The point's status word ([`super::StatusSpec`]); `register` is that word as a `u16`.
    Status,
}

/// A point served by a request, and where its value starts in the response.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPoint {
    pub id: PointId,
    pub register: RegisterSpec,
    /// Index of the point's first register (or bit) in the response.
    pub offset: u16,
    pub part: Part,
}

/// One read: `count` registers (or bits) of `table` from `start`.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRequest {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    pub points: Vec<PlannedPoint>,
    /// The request runs on every `every`-th cycle (1: each cycle).
    pub every: u32,
}

impl ReadRequest {
    /// The Modbus function code of the read.
    pub const fn function_code(&self) -> u8 {
        match self.table {
            Table::Coil => 1,
            Table::DiscreteInput => 2,
            Table::Holding => 3,
            Table::Input => 4,
        }
    }
}

/// A point left out of the plan because its spec can never decode.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedPoint {
    pub id: PointId,
    pub error: SpecError,
}

/// The reads one poll cycle makes, in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReadPlan {
    pub requests: Vec<ReadRequest>,
    pub rejected: Vec<RejectedPoint>,
}

/// Order in which tables are read in a cycle.
const TABLES: [Table; 4] = [
    Table::Holding,
    Table::Input,
    Table::Coil,
    Table::DiscreteInput,
];

impl ReadPlan {
    pub fn for_device(settings: &DeviceSettings) -> Self {
        Self::build(&settings.points, PlanLimits::from_settings(settings))
    }

    pub fn build(points: &[PolledPoint], limits: PlanLimits) -> Self {
        let mut plan = ReadPlan::default();
        let mut locations: Vec<Location> = Vec::new();
        for p in points {
            if let Err(error) = p.register.validate() {
                plan.rejected.push(RejectedPoint { id: p.id, error });
                continue;
            }
            let every = limits.every(&p.register);
            locations.push(Location {
                id: p.id,
                register: p.register.clone(),
                part: Part::Value,
                every,
            });
            if let Some(register) = p.register.status_register() {
                locations.push(Location {
                    id: p.id,
                    register,
                    part: Part::Status,
                    every,
                });
            }
        }
        let mut everies: Vec<u32> = locations.iter().map(|l| l.every).collect();
        everies.sort_unstable();
        everies.dedup();
        for every in everies {
            for table in TABLES {
                let mut group: Vec<&Location> = locations
                    .iter()
                    .filter(|l| l.every == every && l.register.table == table)
                    .collect();
                group.sort_by_key(|l| (l.register.address, l.id, l.part));
                plan.pack(table, every, &group, limits);
            }
        }
        plan.rejected.sort_by_key(|r| r.id);
        // Grown by doubling while packing; a plan lives as long as its device is polled.
        for request in &mut plan.requests {
            request.points.shrink_to_fit();
        }
        plan.requests.shrink_to_fit();
        plan
    }

    fn pack(&mut self, table: Table, every: u32, points: &[&Location], limits: PlanLimits) {
        let limit = u32::from(limits.limit(table));
        let max_gap = u32::from(limits.max_gap);
        // The request being filled, and the end (exclusive) of the addresses it covers.
        let mut current: Option<(ReadRequest, u32)> = None;
        for p in points {
            let address = u32::from(p.register.address);
            let end = address + u32::from(p.register.width());
            if let Some((request, covered_end)) = &mut current {
                let start = u32::from(request.start);
                let new_end = end.max(*covered_end);
                if address <= *covered_end + max_gap && new_end - start <= limit {
                    request.points.push(p.planned((address - start) as u16));
                    *covered_end = new_end;
                    request.count = (new_end - start) as u16;
                    continue;
                }
            }
            if let Some((done, _)) = current.take() {
                self.requests.push(done);
            }
            let request = ReadRequest {
                table,
                start: p.register.address,
                count: p.register.width(),
                points: vec![p.planned(0)],
                every,
            };
            current = Some((request, end));
        }
        if let Some((done, _)) = current {
            self.requests.push(done);
        }
    }

    /// How many points the plan reads (rejected ones excluded; status words not counted).
    pub fn point_count(&self) -> usize {
        self.requests
            .iter()
            .flat_map(|r| &r.points)
            .filter(|p| p.part == Part::Value)
            .count()
    }

    /// The plan as text, one line per request, naming points with `name` (a tag, say).
    pub fn explain(&self, name: &dyn Fn(PointId) -> String) -> String {
        use fmt::Write as _;
        let mut out = String::new();
        for r in &self.requests {
            let unit = if r.table.is_bits() {
                "bits"
            } else {
                "registers"
            };
            let last = u32::from(r.start) + u32::from(r.count) - 1;
            let _ = write!(
                out,
                "fc{:02} {} {}..={} ({} {unit}):",
                r.function_code(),
                r.table,
                r.start,
                last,
                r.count
            );
            for (i, p) in r.points.iter().enumerate() {
                let sep = if i == 0 { " " } else { ", " };
                let part = match p.part {
                    Part::Value => "",
                    Part::Status => " status",
                };
                let _ = write!(out, "{sep}{}{part} @{}", name(p.id), p.offset);
            }
            if r.every > 1 {
                let _ = write!(out, " (every {} cycles)", r.every);
            }
            out.push('\n');
        }
        for r in &self.rejected {
            let _ = writeln!(out, "not read: {}: {}", name(r.id), r.error);
        }
        out
    }
}

/// One address range to read for a point: its value or its status word.
struct Location {
    id: PointId,
    register: RegisterSpec,
    part: Part,
    every: u32,
}

impl Location {
    fn planned(&self, offset: u16) -> PlannedPoint {
        PlannedPoint {
            id: self.id,
            register: self.register.clone(),
            offset,
            part: self.part,
        }
    }
}

impl fmt::Display for ReadPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.explain(&|id| format!("#{}", id.0)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::modbus::DataType;

    fn point(id: u32, table: Table, address: u16, data_type: DataType) -> PolledPoint {
        PolledPoint::new(PointId(id), RegisterSpec::new(table, address, data_type))
    }

    fn limits(max_registers_per_request: u16, max_gap: u16) -> PlanLimits {
        PlanLimits {
            max_registers_per_request,
            max_gap,
            poll_interval_ms: 0,
        }
    }

    #[test]
    fn status_words_are_planned_with_their_points() {
        let mut gas = point(0, Table::Input, 0, DataType::F32);
        gas.register.status = Some(crate::modbus::StatusSpec {
            table: Table::Input,
            address: 4,
            fault_bit: Some(0),
            warmup_bit: None,
            calibration_bit: None,
        });
        let plan = ReadPlan::build(&[gas], PlanLimits::default());
        assert_eq!(spans(&plan), [(Table::Input, 0, 5)]);
        let parts: Vec<(Part, u16)> = plan.requests[0]
            .points
            .iter()
            .map(|p| (p.part, p.offset))
            .collect();
        assert_eq!(parts, [(Part::Value, 0), (Part::Status, 4)]);
        assert_eq!(plan.point_count(), 1);
        assert!(plan.to_string().contains("#0 @0, #0 status @4"));
    }

    #[test]
    fn slower_points_get_requests_of_their_own() {
        let mut slow = point(1, Table::Holding, 1, DataType::U16);
        slow.register.interval_ms = Some(5000);
        let points = [point(0, Table::Holding, 0, DataType::U16), slow];
        let lim = PlanLimits {
            poll_interval_ms: 1000,
            ..PlanLimits::default()
        };
        let plan = ReadPlan::build(&points, lim);
        let every: Vec<(u16, u32)> = plan.requests.iter().map(|r| (r.start, r.every)).collect();
        assert_eq!(every, [(0, 1), (1, 5)]);
        assert!(plan.to_string().ends_with("(every 5 cycles)\n"));
    }

    fn spans(plan: &ReadPlan) -> Vec<(Table, u16, u16)> {
        plan.requests
            .iter()
            .map(|r| (r.table, r.start, r.count))
            .collect()
    }

    #[test]
    fn contiguous_and_small_gaps_merge() {
        let points = [
            point(0, Table::Holding, 0, DataType::U16),
            point(1, Table::Holding, 1, DataType::F32),
            point(2, Table::Holding, 13, DataType::U16), // gap of 10 after 0..=2
            point(3, Table::Holding, 25, DataType::U16), // gap of 11
        ];
        let plan = ReadPlan::build(&points, PlanLimits::default());
        assert_eq!(
            spans(&plan),
            [(Table::Holding, 0, 14), (Table::Holding, 25, 1)]
        );
        let offsets: Vec<u16> = plan.requests[0].points.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [0, 1, 13]);
    }

    #[test]
    fn gap_zero_splits_non_contiguous() {
        let points = [
            point(0, Table::Holding, 0, DataType::U16),
            point(1, Table::Holding, 2, DataType::U16),
        ];
        let plan = ReadPlan::build(&points, limits(125, 0));
        assert_eq!(
            spans(&plan),
            [(Table::Holding, 0, 1), (Table::Holding, 2, 1)]
        );
    }

    #[test]
    fn tables_never_mix() {
        let points = [
            point(0, Table::Holding, 0, DataType::U16),
            point(1, Table::Input, 1, DataType::U16),
            point(2, Table::Coil, 0, DataType::Bool),
            point(3, Table::Coil, 1999, DataType::Bool),
            point(4, Table::Coil, 2000, DataType::Bool),
        ];
        let plan = ReadPlan::build(&points, limits(125, 5000));
        assert_eq!(
            spans(&plan),
            [
                (Table::Holding, 0, 1),
                (Table::Input, 1, 1),
                (Table::Coil, 0, 2000),
                (Table::Coil, 2000, 1)
            ]
        );
    }

    #[test]
    fn protocol_limit_of_125_registers() {
        let points: Vec<_> = (0..200)
            .map(|i| point(i, Table::Input, i as u16, DataType::U16))
            .collect();
        let plan = ReadPlan::build(&points, limits(0, 10));
        assert_eq!(
            spans(&plan),
            [(Table::Input, 0, 125), (Table::Input, 125, 75)]
        );
    }

    #[test]
    fn device_limit_of_one_register_still_reads_wide_types_whole() {
        let points = [
            point(0, Table::Holding, 0, DataType::U16),
            point(1, Table::Holding, 1, DataType::F64),
            point(2, Table::Holding, 5, DataType::U16),
        ];
        let plan = ReadPlan::build(&points, limits(1, 10));
        assert_eq!(
            spans(&plan),
            [
                (Table::Holding, 0, 1),
                (Table::Holding, 1, 4),
                (Table::Holding, 5, 1)
            ]
        );
    }

    #[test]
    fn overlapping_points_share_a_request() {
        let mut bit3 = point(1, Table::Holding, 10, DataType::Bool);
        bit3.register.bit = Some(3);
        let points = [
            point(0, Table::Holding, 10, DataType::U32),
            bit3,
            point(2, Table::Holding, 11, DataType::U16),
        ];
        let plan = ReadPlan::build(&points, limits(2, 0));
        assert_eq!(spans(&plan), [(Table::Holding, 10, 2)]);
        assert_eq!(plan.point_count(), 3);
    }

    #[test]
    fn impossible_specs_are_rejected_not_planned() {
        let points = [
            point(0, Table::Holding, 65535, DataType::U32),
            point(1, Table::Coil, 0, DataType::F32),
        ];
        let plan = ReadPlan::build(&points, PlanLimits::default());
        assert!(plan.requests.is_empty());
        assert_eq!(plan.rejected.len(), 2);
    }

    #[test]
    fn display_lists_one_line_per_request() {
        let points = [
            point(7, Table::Holding, 100, DataType::F32),
            point(3, Table::Holding, 102, DataType::U16),
            point(9, Table::DiscreteInput, 4, DataType::Bool),
            point(5, Table::Coil, 0, DataType::F32),
        ];
        let plan = ReadPlan::build(&points, PlanLimits::default());
        assert_eq!(
            plan.to_string(),
            "fc03 holding 100..=102 (3 registers): #7 @0, #3 @2\n\
             fc02 discrete_input 4..=4 (1 bits): #9 @0\n\
             not read: #5: a coil point must have type bool, not f32\n"
        );
        let named = plan.explain(&|id| format!("TAG-{}", id.0));
        assert!(named.starts_with("fc03 holding 100..=102 (3 registers): TAG-7 @0, TAG-3 @2\n"));
    }

    fn arb_point() -> impl Strategy<Value = (Table, u16, DataType, bool)> {
        let table = prop::sample::select(vec![
            Table::Coil,
            Table::DiscreteInput,
            Table::Holding,
            Table::Input,
        ]);
        let data_type = prop::sample::select(vec![
            DataType::Bool,
            DataType::U16,
            DataType::I32,
            DataType::F32,
            DataType::U64,
            DataType::F64,
        ]);
        // Mostly dense addresses so that requests fill up, sometimes the end of the space.
        let address = prop_oneof![9 => 0u16..3000, 1 => 65530u16..=65535];
        (table, address, data_type, any::<bool>())
    }

    proptest! {
        #[test]
        fn plan_respects_limits_and_covers_every_point_once(
            raw in prop::collection::vec(arb_point(), 0..300),
            max_regs in 0u16..140,
            max_gap in 0u16..40,
        ) {
            let points: Vec<PolledPoint> = raw
                .iter()
                .enumerate()
                .map(|(i, &(table, address, data_type, with_bit))| {
                    let data_type = if table.is_bits() { DataType::Bool } else { data_type };
                    let mut p = point(i as u32, table, address, data_type);
                    if with_bit && data_type == DataType::Bool && !table.is_bits() {
                        p.register.bit = Some((i % 16) as u8);
                    }
                    p
                })
                .collect();
            let lim = limits(max_regs, max_gap);
            let plan = ReadPlan::build(&points, lim);

            let mut seen: HashMap<PointId, usize> = HashMap::new();
            for r in &plan.requests {
                prop_assert!(r.count >= 1);
                prop_assert!(r.count <= r.table.protocol_limit());
                prop_assert!(u32::from(r.start) + u32::from(r.count) <= 0x1_0000);
                let widest = r.points.iter().map(|p| p.register.width()).max().unwrap_or(0);
                prop_assert!(
                    r.count <= lim.limit(r.table) || (r.points.len() == 1 && r.count == widest),
                    "request {:?} exceeds the device limit", (r.table, r.start, r.count)
                );
                for p in &r.points {
                    prop_assert_eq!(p.part, Part::Value);
                    prop_assert_eq!(p.register.table, r.table);
                    prop_assert_eq!(u32::from(r.start) + u32::from(p.offset), u32::from(p.register.address));
                    prop_assert!(p.offset + p.register.width() <= r.count);
                    *seen.entry(p.id).or_default() += 1;
                }
            }
            for r in &plan.rejected {
                *seen.entry(r.id).or_default() += 1;
            }
            prop_assert_eq!(seen.len(), points.len());
            prop_assert!(seen.values().all(|&n| n == 1));
            let expected_rejected = points.iter().filter(|p| p.register.validate().is_err()).count();
            prop_assert_eq!(plan.rejected.len(), expected_rejected);
        }
    }
}

//! Readings per second through the engine, one core, 10,000 points.
//!
//! Run: `cargo bench -p alert-rules -- --warm-up-time 1 --measurement-time 3`
//!
//! - `limits`: typical rules (L, H, HH with deadband and delays, fault and data-interruption
//!   alarms), values in the normal band: the common case.
//! - `limits_in_alarm`: every point standing in alarm, values moving inside the deadband:
//!   every reading is judged in full.
//! - `mixed`: the typical rules plus a rate-of-change rule on one point in ten, redundant-sensor
//!   deviations and 100 conditions over points.

use std::hint::black_box;

use alert_rules::{
    AlarmEvent, Condition, ConditionRule, DataInterruptionRule, DeviationRule, Engine,
    EngineConfig, FaultRule, Level, LimitLevel, LimitRule, PointId, PointRules, Priority, Quality,
    RateRule, Reading,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const POINTS: u32 = 10_000;
/// Readings per iteration: ten per point.
const BATCH: usize = 100_000;

fn typical_point() -> PointRules {
    PointRules {
        limits: Some(Box::new(LimitRule {
            levels: vec![
                LimitLevel {
                    level: Level::Low,
                    setpoint: 10.0,
                    priority: Priority::Medium,
                },
                LimitLevel {
                    level: Level::High,
                    setpoint: 80.0,
                    priority: Priority::Medium,
                },
                LimitLevel {
                    level: Level::HighHigh,
                    setpoint: 90.0,
                    priority: Priority::High,
                },
            ],
            deadband: 2.0,
            on_delay_ms: 2_000,
            off_delay_ms: 5_000,
            ..Default::default()
        })),
        fault: Some(FaultRule::default()),
        data_interruption: Some(DataInterruptionRule {
            after_ms: 60_000,
            priority: Priority::Low,
        }),
        ..Default::default()
    }
}

fn typical() -> EngineConfig {
    EngineConfig {
        points: (0..POINTS).map(|_| typical_point()).collect(),
        ..Default::default()
    }
}

fn mixed() -> EngineConfig {
    let mut config = typical();
    for (i, p) in config.points.iter_mut().enumerate() {
        if i % 10 == 0 {
            p.rate = Some(Box::new(RateRule {
                max_rise_per_min: Some(500.0),
                window_ms: 60_000,
                ..Default::default()
            }));
        }
        if i % 100 == 1 {
            p.deviation = Some(Box::new(DeviationRule {
                other: PointId(i as u32 + 1),
                max_difference: 60.0,
                ..Default::default()
            }));
        }
    }
    let resolve = |t: &str| {
        t.strip_prefix("P")
            .and_then(|n| n.parse().ok())
            .map(PointId)
    };
    config.conditions = (0..100)
        .map(|k| ConditionRule {
            name: format!("condition {k}"),
            when: Condition::compile(&format!("P{} > 85 && !P{}", k * 97, k * 97 + 3), resolve)
                .expect("compiles"),
            priority: Priority::High,
            on_delay_ms: 0,
            off_delay_ms: 0,
            realarm_ms: None,
            latch: false,
        })
        .collect();
    config
}

/// Ten rounds over all points, values from a cheap generator in `[lo, lo + width)`.
fn readings(lo: f64, width: f64) -> Vec<Reading> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(BATCH);
    for i in 0..BATCH {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let value = lo + width * (x >> 11) as f64 / (1u64 << 53) as f64;
        out.push(Reading {
            point: PointId((i % POINTS as usize) as u32),
            time: (i / POINTS as usize) as i64 * 1_000,
            value,
            quality: Quality::Good,
        });
    }
    out
}

fn run(engine: &mut Engine, readings: &[Reading], out: &mut Vec<AlarmEvent>, epoch: &mut i64) {
    // Time moves on between batches, as it does in the field.
    *epoch += 10_000;
    for r in readings {
        let now = *epoch + r.time;
        engine.on_reading(black_box(r), now, out);
    }
    out.clear();
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("on_reading_10k_points");
    group.throughput(Throughput::Elements(BATCH as u64));

    let normal = readings(20.0, 50.0);
    let mut out = Vec::with_capacity(BATCH);

    let mut engine = Engine::new(typical(), 1);
    let mut epoch = 0;
    run(&mut engine, &normal, &mut out, &mut epoch);
    group.bench_function("limits", |b| {
        b.iter(|| run(&mut engine, &normal, &mut out, &mut epoch))
    });

    // Every point held in its H alarm; values in [78, 80): inside the deadband, judged in full.
    let mut engine = Engine::new(typical(), 1);
    let mut epoch = 0;
    let high: Vec<Reading> = normal
        .iter()
        .map(|r| Reading { value: 85.0, ..*r })
        .collect();
    for _ in 0..3 {
        run(&mut engine, &high, &mut out, &mut epoch);
    }
    assert!(
        engine.open_alarms().len() >= POINTS as usize,
        "all points in alarm"
    );
    let deadband = readings(78.0, 2.0);
    group.bench_function("limits_in_alarm", |b| {
        b.iter(|| run(&mut engine, &deadband, &mut out, &mut epoch))
    });

    let mut engine = Engine::new(mixed(), 1);
    let mut epoch = 0;
    run(&mut engine, &normal, &mut out, &mut epoch);
    group.bench_function("mixed", |b| {
        b.iter(|| run(&mut engine, &normal, &mut out, &mut epoch))
    });

    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

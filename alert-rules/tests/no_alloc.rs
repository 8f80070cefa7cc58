//! The engine's hot path allocates nothing in steady state: readings that change no alarm,
//! and ticks that complete no timer, cost no heap allocation whatever the rules.
//!
//! A counting global allocator sees every allocation of the process, so this file holds a
//! single test: nothing else runs while it measures.

use std::alloc::System;

use alert_rules::{
    Condition, ConditionRule, DataInterruptionRule, DeviationRule, DeviceRules, Engine,
    EngineConfig, FaultRule, Level, LimitLevel, LimitRule, Millis, PointId, PointRules, Priority,
    Quality, RateRule, Reading,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const POINTS: u32 = 10_000;

fn config() -> EngineConfig {
    let mut points = Vec::new();
    for i in 0..POINTS {
        let mut p = PointRules {
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
                on_delay_ms: 5_000,
                off_delay_ms: 5_000,
                ..Default::default()
            })),
            fault: Some(FaultRule::default()),
            data_interruption: Some(DataInterruptionRule {
                after_ms: 60_000,
                priority: Priority::Low,
            }),
            device: Some(alert_rules::DeviceId(i % 100)),
            ..Default::default()
        };
        if i % 10 == 0 {
            p.rate = Some(Box::new(RateRule {
                max_rise_per_min: Some(50.0),
                window_ms: 60_000,
                ..Default::default()
            }));
        }
        if i % 100 == 1 {
            p.deviation = Some(Box::new(DeviationRule {
                other: PointId(i + 1),
                max_difference: 60.0,
                ..Default::default()
            }));
        }
        points.push(p);
    }
    let resolve = |t: &str| {
        t.strip_prefix("P")
            .and_then(|n| n.parse().ok())
            .map(PointId)
    };
    let conditions = (0..100)
        .map(|k| ConditionRule {
            name: format!("condition {k}"),
            when: Condition::compile(
                &format!(
                    "P{} > 85 && !P{} || abs(P{} - P{}) > 60",
                    k * 7,
                    k * 7 + 3,
                    k,
                    k + 50
                ),
                resolve,
            )
            .expect("compiles"),
            priority: Priority::High,
            on_delay_ms: 0,
            off_delay_ms: 0,
            realarm_ms: None,
            latch: false,
        })
        .collect();
    EngineConfig {
        points,
        devices: vec![DeviceRules::default(); 100],
        conditions,
        ..Default::default()
    }
}

/// A value between 20 and 70 that moves a little every round: never near a limit.
fn normal_value(point: u32, round: u32) -> f64 {
    20.0 + f64::from((point * 7) % 50) + f64::from(round % 2) * 0.5
}

#[test]
fn steady_state_readings_and_ticks_do_not_allocate() {
    let mut engine = Engine::new(config(), 1);
    // Point 5 stands in alarm with its value moving inside the deadband: the busy path.
    let mut out = Vec::with_capacity(1_024);
    let mut now: Millis = 0;
    let round = |engine: &mut Engine, out: &mut Vec<_>, now: Millis, r: u32| {
        for p in 0..POINTS {
            let value = match (p, r) {
                (5, 0..10) => 85.0,
                // At the setpoint and inside the deadband below it: active, nothing changes.
                (5, _) => 79.0 + f64::from(r % 2),
                _ => normal_value(p, r),
            };
            let reading = Reading {
                point: PointId(p),
                time: now,
                value,
                quality: Quality::Good,
            };
            engine.on_reading(&reading, now, out);
        }
        for d in 0..100 {
            engine.on_device_status(alert_rules::DeviceId(d), true, now, out);
        }
        engine.tick(now, out);
    };
    // Warm up: rate windows fill, point 5's alarm is raised.
    for r in 0..10 {
        now += 1_000;
        round(&mut engine, &mut out, now, r);
    }
    assert!(
        out.iter()
            .any(|e| e.alarm.source.point() == Some(PointId(5))),
        "the busy point is in alarm"
    );
    out.clear();

    let region = Region::new(GLOBAL);
    for r in 10..60 {
        now += 1_000;
        round(&mut engine, &mut out, now, r);
    }
    let stats = region.change();
    assert!(out.is_empty(), "steady state: no events, got {}", out.len());
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
    println!("{} readings, {} ticks, {stats:?}", 50 * POINTS, 50);
}

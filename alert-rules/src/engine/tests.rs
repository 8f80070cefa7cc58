//! Every state transition and every rule kind, with explicit time.

use super::*;
use crate::alarm::{ConditionId, Level, Priority, SystemCheck, Transition};
use crate::condition::Condition;
use crate::reading::Quality;
use crate::rules::{
    ConditionRule, DataInterruptionRule, DeviationRule, DeviceRules, FaultRule, LimitLevel,
    LimitRule, PointRules, RateRule, Span,
};

use AlarmState::*;

fn limits(levels: &[(Level, f64)], deadband: f64) -> LimitRule {
    LimitRule {
        levels: levels
            .iter()
            .map(|&(level, setpoint)| LimitLevel {
                level,
                setpoint,
                priority: if level.is_second() {
                    Priority::High
                } else {
                    Priority::Medium
                },
            })
            .collect(),
        deadband,
        ..Default::default()
    }
}

fn with_limits(rule: LimitRule) -> PointRules {
    PointRules {
        limits: Some(Box::new(rule)),
        ..Default::default()
    }
}

fn engine(points: Vec<PointRules>) -> Engine {
    Engine::new(
        EngineConfig {
            points,
            ..Default::default()
        },
        1,
    )
}

/// Gas point 0 with H 25 and HH 50 % LEL, deadband 2.
fn gas_engine() -> Engine {
    engine(vec![with_limits(limits(
        &[(Level::High, 25.0), (Level::HighHigh, 50.0)],
        2.0,
    ))])
}

fn good(point: u32, time: Millis, value: f64) -> Reading {
    Reading {
        point: PointId(point),
        time,
        value,
        quality: Quality::Good,
    }
}

fn with_quality(point: u32, time: Millis, value: f64, quality: Quality) -> Reading {
    Reading {
        point: PointId(point),
        time,
        value,
        quality,
    }
}

fn read(e: &mut Engine, point: u32, t: Millis, v: f64) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    e.on_reading(&good(point, t, v), t, &mut out);
    out
}

fn read_q(e: &mut Engine, point: u32, t: Millis, v: f64, q: Quality) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    e.on_reading(&with_quality(point, t, v, q), t, &mut out);
    out
}

fn tick(e: &mut Engine, t: Millis) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    e.tick(t, &mut out);
    out
}

fn ack(e: &mut Engine, id: AlarmId, t: Millis) -> Result<Vec<AlarmEvent>, CommandError> {
    let mut out = Vec::new();
    e.acknowledge(id, "op", None, t, &mut out).map(|()| out)
}

/// (transition, state after) of each event.
fn ts(events: &[AlarmEvent]) -> Vec<(Transition, AlarmState)> {
    events
        .iter()
        .map(|e| (e.transition, e.alarm.state))
        .collect()
}

fn h(point: u32) -> AlarmSource {
    AlarmSource::Limit {
        point: PointId(point),
        level: Level::High,
    }
}

// ---------------------------------------------------------------- lifecycle of a limit alarm

#[test]
fn raise_ack_clear() {
    let mut e = gas_engine();
    assert!(read(&mut e, 0, 0, 10.0).is_empty());
    let ev = read(&mut e, 0, 1_000, 30.0);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    assert!(ev[0].announce());
    assert_eq!(ev[0].seq, 1);
    assert_eq!(
        (ev[0].alarm.value, ev[0].alarm.limit),
        (Some(30.0), Some(25.0))
    );
    assert_eq!(ev[0].alarm.priority, Priority::Medium);
    let id = ev[0].alarm.id;
    let ev = ack(&mut e, id, 2_000).unwrap();
    assert_eq!(ts(&ev), [(Transition::Acknowledged, ActiveAcked)]);
    assert_eq!(ev[0].by.as_deref(), Some("op"));
    assert!(!ev[0].announce());
    let ev = read(&mut e, 0, 3_000, 10.0);
    assert_eq!(ts(&ev), [(Transition::Cleared, Normal)]);
    assert_eq!(ev[0].seq, 3);
    assert!(e.open_alarms().is_empty());
    assert_eq!(e.recent_alarms().count(), 1);
}

#[test]
fn returned_unacked_then_ack() {
    let mut e = gas_engine();
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    assert_eq!(
        ts(&read(&mut e, 0, 1_000, 10.0)),
        [(Transition::Cleared, ReturnedUnacked)]
    );
    assert_eq!(e.open_alarms()[0].cleared_at, Some(1_000));
    assert_eq!(
        ts(&ack(&mut e, id, 2_000).unwrap()),
        [(Transition::Acknowledged, Normal)]
    );
    assert!(e.open_alarms().is_empty());
}

#[test]
fn returned_unacked_raised_again_is_the_same_alarm() {
    let mut e = gas_engine();
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    read(&mut e, 0, 1_000, 10.0);
    let ev = read(&mut e, 0, 2_000, 31.0);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    assert_eq!((ev[0].alarm.id, ev[0].seq), (id, 3));
    assert!(ev[0].announce());
}

#[test]
fn both_levels_raise_and_clear_independently() {
    let mut e = gas_engine();
    let ev = read(&mut e, 0, 0, 55.0);
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[1].alarm.source,
        AlarmSource::Limit {
            point: PointId(0),
            level: Level::HighHigh
        }
    );
    assert_eq!(ev[1].alarm.priority, Priority::High);
    let ev = read(&mut e, 0, 1_000, 40.0);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].alarm.source.level(), Some(Level::HighHigh));
    assert_eq!(
        e.point_summary(PointId(0)),
        PointAlarmSummary {
            open: 2,
            worst: ActiveUnacked
        }
    );
}

#[test]
fn acknowledge_errors() {
    let mut e = gas_engine();
    assert_eq!(
        ack(&mut e, 99, 0).unwrap_err(),
        CommandError::UnknownAlarm(99)
    );
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    ack(&mut e, id, 1).unwrap();
    assert_eq!(
        ack(&mut e, id, 2).unwrap_err(),
        CommandError::AlreadyAcknowledged(id)
    );
    assert!(CommandError::UnknownAlarm(1).is_not_found());
    assert!(!CommandError::AlreadyAcknowledged(1).is_not_found());
}

// ---------------------------------------------------------------- deadband and delays

#[test]
fn deadband_acts_on_clearing_only() {
    let mut e = gas_engine();
    // Raising is at the setpoint itself, not setpoint + deadband.
    assert_eq!(read(&mut e, 0, 0, 25.0).len(), 1);
    // Inside the deadband (23..25): stays active.
    assert!(read(&mut e, 0, 1_000, 24.0).is_empty());
    assert!(read(&mut e, 0, 2_000, 23.0).is_empty());
    assert_eq!(
        ts(&read(&mut e, 0, 3_000, 22.9)),
        [(Transition::Cleared, ReturnedUnacked)]
    );
}

#[test]
fn deadband_in_percent_of_span() {
    let rule = LimitRule {
        deadband_pct: Some(5.0),
        ..limits(&[(Level::High, 80.0)], 0.0)
    };
    let mut e = engine(vec![PointRules {
        span: Some(Span {
            low: 0.0,
            high: 200.0,
        }),
        ..with_limits(rule)
    }]);
    read(&mut e, 0, 0, 85.0);
    assert!(
        read(&mut e, 0, 1_000, 70.5).is_empty(),
        "80 - 5 % of 200 = 70"
    );
    assert_eq!(read(&mut e, 0, 2_000, 69.9).len(), 1);
}

#[test]
fn low_levels_alarm_below_and_clear_above_the_deadband() {
    let mut e = engine(vec![with_limits(limits(
        &[(Level::LowLow, 18.0), (Level::Low, 19.5)],
        0.3,
    ))]);
    let ev = read(&mut e, 0, 0, 19.0);
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].alarm.source.level(), Some(Level::Low));
    assert!(read(&mut e, 0, 1_000, 19.7).is_empty());
    assert_eq!(read(&mut e, 0, 2_000, 19.9).len(), 1);
    assert_eq!(read(&mut e, 0, 3_000, 17.0).len(), 2, "L again and LL");
}

#[test]
fn on_delay_needs_the_condition_to_hold_throughout() {
    let rule = LimitRule {
        on_delay_ms: 5_000,
        ..limits(&[(Level::High, 25.0)], 0.0)
    };
    let mut e = engine(vec![with_limits(rule)]);
    assert!(read(&mut e, 0, 0, 30.0).is_empty());
    assert!(read(&mut e, 0, 3_000, 30.0).is_empty());
    // Interrupted: the delay starts again.
    assert!(read(&mut e, 0, 4_000, 20.0).is_empty());
    assert!(read(&mut e, 0, 5_000, 30.0).is_empty());
    assert!(tick(&mut e, 9_999).is_empty());
    // No new data is needed: the tick completes the delay.
    let ev = tick(&mut e, 10_000);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    assert_eq!(ev[0].alarm.raised_at, 10_000);
}

#[test]
fn off_delay_needs_the_return_to_hold_throughout() {
    let rule = LimitRule {
        off_delay_ms: 10_000,
        ..limits(&[(Level::High, 25.0)], 0.0)
    };
    let mut e = engine(vec![with_limits(rule)]);
    read(&mut e, 0, 0, 30.0);
    assert!(read(&mut e, 0, 1_000, 20.0).is_empty());
    assert!(
        read(&mut e, 0, 5_000, 26.0).is_empty(),
        "back in alarm: off-delay restarts"
    );
    assert!(read(&mut e, 0, 6_000, 20.0).is_empty());
    assert!(tick(&mut e, 15_999).is_empty());
    assert_eq!(
        ts(&tick(&mut e, 16_000)),
        [(Transition::Cleared, ReturnedUnacked)]
    );
}

#[test]
fn realarm_after_acknowledged_alarm_stays_active() {
    let rule = LimitRule {
        realarm_ms: Some(60_000),
        ..limits(&[(Level::High, 25.0)], 0.0)
    };
    let mut e = engine(vec![with_limits(rule)]);
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    ack(&mut e, id, 10_000).unwrap();
    assert!(tick(&mut e, 69_999).is_empty());
    let ev = tick(&mut e, 70_000);
    assert_eq!(ts(&ev), [(Transition::Realarmed, ActiveUnacked)]);
    assert!(ev[0].announce());
    assert_eq!(ev[0].alarm.acked_at, None);
    // Unacknowledged now: no second re-alarm until acknowledged again.
    assert!(tick(&mut e, 200_000).is_empty());
}

#[test]
fn bad_quality_neither_raises_nor_clears_and_restarts_delays() {
    let rule = LimitRule {
        on_delay_ms: 5_000,
        ..limits(&[(Level::High, 25.0)], 0.0)
    };
    let mut e = engine(vec![with_limits(rule)]);
    read(&mut e, 0, 0, 30.0);
    assert!(read_q(&mut e, 0, 3_000, 99.0, Quality::CommLost).is_empty());
    assert!(
        tick(&mut e, 6_000).is_empty(),
        "the bad reading restarted the on-delay"
    );
    read(&mut e, 0, 7_000, 30.0);
    assert_eq!(tick(&mut e, 12_000).len(), 1);
    assert!(
        read_q(&mut e, 0, 13_000, 0.0, Quality::SensorFault).is_empty(),
        "a fault does not clear"
    );
    assert!(read(&mut e, 0, 14_000, f64::NAN).is_empty());
    // Uncertain values are still judged: saturated high gas is alarming.
    assert_eq!(read_q(&mut e, 0, 15_000, 10.0, Quality::Saturated).len(), 1);
}

// ---------------------------------------------------------------- latching

fn latching() -> Engine {
    let rule = LimitRule {
        latch: true,
        ..limits(&[(Level::High, 25.0)], 0.0)
    };
    engine(vec![with_limits(rule)])
}

fn reset(e: &mut Engine, id: AlarmId, t: Millis) -> Result<Vec<AlarmEvent>, CommandError> {
    let mut out = Vec::new();
    e.reset(id, "op", "checked the detector", t, &mut out)
        .map(|()| out)
}

#[test]
fn latched_alarm_stands_until_reset() {
    let mut e = latching();
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    assert_eq!(
        reset(&mut e, id, 500).unwrap_err(),
        CommandError::ConditionActive(id)
    );
    assert_eq!(
        ts(&read(&mut e, 0, 1_000, 10.0)),
        [(Transition::Cleared, Latched)]
    );
    assert_eq!(
        ts(&ack(&mut e, id, 2_000).unwrap()),
        [(Transition::Acknowledged, Latched)]
    );
    assert_eq!(
        ack(&mut e, id, 2_500).unwrap_err(),
        CommandError::AlreadyAcknowledged(id)
    );
    let ev = reset(&mut e, id, 3_000).unwrap();
    assert_eq!(ts(&ev), [(Transition::Reset, Normal)]);
    assert_eq!(ev[0].comment.as_deref(), Some("checked the detector"));
    assert!(e.open_alarms().is_empty());
}

#[test]
fn reset_of_an_unacknowledged_latched_alarm_acknowledges_it() {
    let mut e = latching();
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    read(&mut e, 0, 1_000, 10.0);
    let ev = reset(&mut e, id, 2_000).unwrap();
    assert_eq!(ev[0].alarm.acked_by.as_deref(), Some("op"));
    assert_eq!(ev[0].alarm.state, Normal);
}

#[test]
fn latched_alarm_raised_again_needs_a_new_acknowledgement() {
    let mut e = latching();
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    ack(&mut e, id, 500).unwrap();
    read(&mut e, 0, 1_000, 10.0);
    let ev = read(&mut e, 0, 2_000, 30.0);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    assert_eq!(ev[0].alarm.acked_at, None);
    // An acked, active latching alarm: clearing latches it rather than ending it.
    ack(&mut e, id, 2_500).unwrap();
    assert_eq!(
        ts(&read(&mut e, 0, 3_000, 10.0)),
        [(Transition::Cleared, Latched)]
    );
}

#[test]
fn reset_of_a_non_latching_alarm_is_refused() {
    let mut e = gas_engine();
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    assert_eq!(
        reset(&mut e, id, 1).unwrap_err(),
        CommandError::NotLatched(id)
    );
    assert_eq!(
        reset(&mut e, 77, 1).unwrap_err(),
        CommandError::UnknownAlarm(77)
    );
}

// ---------------------------------------------------------------- fault, silence, devices

fn fault_engine() -> Engine {
    engine(vec![PointRules {
        fault: Some(FaultRule {
            priority: Priority::Medium,
            on_delay_ms: 2_000,
        }),
        ..with_limits(limits(&[(Level::High, 25.0)], 0.0))
    }])
}

#[test]
fn bad_signal_is_a_fault_alarm_not_a_process_alarm() {
    let mut e = fault_engine();
    assert!(
        read_q(&mut e, 0, 0, 99.0, Quality::SensorFault).is_empty(),
        "on-delay"
    );
    let ev = read_q(&mut e, 0, 2_000, 99.0, Quality::SensorFault);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    assert_eq!(ev[0].alarm.source, AlarmSource::Fault { point: PointId(0) });
    assert!(!ev[0].alarm.source.is_process());
    // Communication loss says nothing about the sensor: the fault stays.
    assert!(read_q(&mut e, 0, 3_000, 0.0, Quality::CommLost).is_empty());
    assert_eq!(
        ts(&read(&mut e, 0, 4_000, 10.0)),
        [(Transition::Cleared, ReturnedUnacked)]
    );
}

#[test]
fn fault_qualities() {
    for (q, faults) in [
        (Quality::SensorFault, true),
        (Quality::BadValue, true),
        (Quality::DeviceException, true),
        (Quality::CommLost, false),
        (Quality::NotMeasuring, false),
        (Quality::Saturated, false),
        (Quality::Stale, false),
    ] {
        let mut e = fault_engine();
        read_q(&mut e, 0, 0, 1.0, q);
        assert_eq!(
            read_q(&mut e, 0, 2_000, 1.0, q).len(),
            usize::from(faults),
            "{q:?}"
        );
    }
    let mut e = fault_engine();
    read(&mut e, 0, 0, f64::INFINITY);
    assert_eq!(
        read(&mut e, 0, 2_000, f64::NAN).len(),
        1,
        "undecodable value with good quality"
    );
}

#[test]
fn data_interruption() {
    let mut e = engine(vec![PointRules {
        data_interruption: Some(DataInterruptionRule {
            after_ms: 30_000,
            priority: Priority::Low,
        }),
        ..Default::default()
    }]);
    assert!(
        tick(&mut e, 0).is_empty(),
        "silence is measured from the first tick"
    );
    read(&mut e, 0, 10_000, 1.0);
    assert!(tick(&mut e, 39_999).is_empty());
    read_q(&mut e, 0, 35_000, 1.0, Quality::Stale);
    let ev = tick(&mut e, 40_000);
    assert_eq!(ev.len(), 1, "stale readings are not fresh data");
    assert_eq!(
        ev[0].alarm.source,
        AlarmSource::DataInterruption { point: PointId(0) }
    );
    assert_eq!(
        ts(&read(&mut e, 0, 41_000, 1.0)),
        [(Transition::Cleared, ReturnedUnacked)]
    );
}

#[test]
fn data_interruption_of_a_point_that_never_reported() {
    let mut e = engine(vec![PointRules {
        data_interruption: Some(DataInterruptionRule {
            after_ms: 30_000,
            priority: Priority::Low,
        }),
        ..Default::default()
    }]);
    tick(&mut e, 1_000);
    assert_eq!(tick(&mut e, 31_000).len(), 1);
}

#[test]
fn communication_loss() {
    let config = EngineConfig {
        points: vec![PointRules {
            device: Some(DeviceId(0)),
            ..Default::default()
        }],
        devices: vec![DeviceRules {
            comm_loss_after_ms: 10_000,
            comm_loss_priority: Priority::High,
        }],
        ..Default::default()
    };
    let mut e = Engine::new(config, 1);
    let mut out = Vec::new();
    e.on_device_status(DeviceId(0), true, 0, &mut out);
    e.on_device_status(DeviceId(0), false, 5_000, &mut out);
    assert!(tick(&mut e, 9_999).is_empty());
    let ev = tick(&mut e, 10_000);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    assert_eq!(
        ev[0].alarm.source,
        AlarmSource::CommLoss {
            device: DeviceId(0)
        }
    );
    assert!(tick(&mut e, 20_000).is_empty(), "raised once");
    e.on_device_status(DeviceId(0), true, 21_000, &mut out);
    assert_eq!(ts(&out), [(Transition::Cleared, ReturnedUnacked)]);
}

#[test]
fn a_reload_keeps_the_time_a_device_has_already_been_silent() {
    let config = EngineConfig {
        devices: vec![DeviceRules {
            comm_loss_after_ms: 10_000,
            comm_loss_priority: Priority::High,
        }],
        ..Default::default()
    };
    let mut old = Engine::new(config.clone(), 1);
    let mut out = Vec::new();
    old.on_device_status(DeviceId(0), true, 0, &mut out);
    assert!(tick(&mut old, 8_000).is_empty());
    // Reloaded at 8 s, the device still silent: the alarm is due at 10 s, not at 18 s.
    let mut new = Engine::new(config, old.next_id());
    new.carry_silence(&old, Some, Some);
    assert!(tick(&mut new, 9_999).is_empty());
    assert_eq!(tick(&mut new, 10_000).len(), 1);
}

#[test]
fn communication_loss_of_a_device_that_never_answered() {
    let config = EngineConfig {
        devices: vec![DeviceRules::default()],
        ..Default::default()
    };
    let mut e = Engine::new(config, 1);
    assert!(tick(&mut e, 0).is_empty());
    assert_eq!(tick(&mut e, 30_000).len(), 1);
}

// ---------------------------------------------------------------- rate, deviation, conditions

#[test]
fn rate_of_change() {
    let rate = RateRule {
        max_rise_per_min: Some(10.0),
        window_ms: 60_000,
        priority: Priority::High,
        ..Default::default()
    };
    let mut e = engine(vec![PointRules {
        rate: Some(Box::new(rate)),
        ..Default::default()
    }]);
    // 5 units a minute: fine.
    for s in 0..=120 {
        assert!(
            read(&mut e, 0, s * 1_000, 100.0 + s as f64 / 12.0).is_empty(),
            "at {s} s"
        );
    }
    // 30 units a minute: an alarm within half a window.
    let mut raised = None;
    for s in 121..=180 {
        let ev = read(&mut e, 0, s * 1_000, 110.0 + (s - 120) as f64 * 0.5);
        if !ev.is_empty() {
            raised = Some((s, ev));
            break;
        }
    }
    let (at, ev) = raised.expect("the fast rise raised a rate alarm");
    assert!(at <= 155, "raised at {at} s");
    assert_eq!(
        ev[0].alarm.source,
        AlarmSource::RateOfChange { point: PointId(0) }
    );
    assert_eq!(ev[0].alarm.limit, Some(10.0));
    assert!(ev[0].alarm.value.unwrap() > 10.0);
    // Steady again: clears once the window has forgotten the rise.
    let v = 110.0 + (at - 120) as f64 * 0.5;
    let mut cleared = false;
    for s in at + 1..at + 130 {
        if ts(&read(&mut e, 0, s * 1_000, v)) == [(Transition::Cleared, ReturnedUnacked)] {
            cleared = true;
            break;
        }
    }
    assert!(cleared);
}

#[test]
fn rate_of_fall() {
    let rate = RateRule {
        max_fall_per_min: Some(1.0),
        window_ms: 8_000,
        ..Default::default()
    };
    let mut e = engine(vec![PointRules {
        rate: Some(Box::new(rate)),
        ..Default::default()
    }]);
    let mut events = Vec::new();
    for s in 0..20 {
        events.extend(read(&mut e, 0, s * 1_000, 10.0 - s as f64));
    }
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].alarm.limit, Some(-1.0));
}

#[test]
fn deviation_between_redundant_sensors() {
    let dev = DeviationRule {
        other: PointId(1),
        max_difference: 5.0,
        deadband: 1.0,
        ..Default::default()
    };
    let mut e = engine(vec![
        PointRules {
            deviation: Some(Box::new(dev)),
            ..Default::default()
        },
        PointRules::default(),
    ]);
    read(&mut e, 0, 0, 20.0);
    assert!(read(&mut e, 1, 0, 24.0).is_empty());
    let ev = read(&mut e, 1, 1_000, 26.0);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    assert_eq!(
        ev[0].alarm.source,
        AlarmSource::Deviation {
            point: PointId(0),
            other: PointId(1)
        }
    );
    assert_eq!(
        (ev[0].alarm.value, ev[0].alarm.limit),
        (Some(6.0), Some(5.0))
    );
    assert!(
        read(&mut e, 0, 2_000, 21.5).is_empty(),
        "4.5 is inside the deadband"
    );
    assert_eq!(read(&mut e, 0, 3_000, 22.5).len(), 1, "3.5 clears");
    assert!(
        read_q(&mut e, 1, 4_000, 99.0, Quality::SensorFault).is_empty(),
        "unknown: no judgement"
    );
}

fn compile(text: &str) -> Condition {
    let tags = [
        "NH3-101",
        "FAN-101",
        "FT-201",
        "FT-202",
        "FURNACE-1-RUN",
        "TI-301",
    ];
    Condition::compile(text, |t| {
        tags.iter().position(|x| *x == t).map(|i| PointId(i as u32))
    })
    .unwrap()
}

#[test]
fn condition_alarm_over_several_points() {
    let config = EngineConfig {
        points: vec![PointRules::default(); 6],
        conditions: vec![ConditionRule {
            name: "Ammonia with exhaust fan stopped".into(),
            when: compile("NH3-101 > 28 && !FAN-101"),
            priority: Priority::Critical,
            on_delay_ms: 0,
            off_delay_ms: 0,
            realarm_ms: None,
            latch: false,
        }],
        ..Default::default()
    };
    let mut e = Engine::new(config, 1);
    assert!(
        read(&mut e, 0, 0, 40.0).is_empty(),
        "fan unknown: `x && unknown` is unknown"
    );
    let ev = read(&mut e, 1, 1_000, 0.0);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    assert_eq!(
        ev[0].alarm.source,
        AlarmSource::Condition {
            condition: ConditionId(0)
        }
    );
    assert_eq!(ev[0].alarm.priority, Priority::Critical);
    assert!(
        read_q(&mut e, 1, 2_000, 0.0, Quality::CommLost).is_empty(),
        "unknown holds the state"
    );
    assert_eq!(
        ts(&read(&mut e, 1, 3_000, 1.0)),
        [(Transition::Cleared, ReturnedUnacked)]
    );
}

#[test]
fn condition_with_on_delay_completes_on_tick() {
    let config = EngineConfig {
        points: vec![PointRules::default(); 6],
        conditions: vec![ConditionRule {
            name: "Cooling water leak".into(),
            when: compile("FT-201 - FT-202 > 5 && FURNACE-1-RUN"),
            priority: Priority::Critical,
            on_delay_ms: 10_000,
            off_delay_ms: 0,
            realarm_ms: None,
            latch: true,
        }],
        ..Default::default()
    };
    let mut e = Engine::new(config, 1);
    read(&mut e, 4, 0, 1.0);
    read(&mut e, 2, 0, 100.0);
    assert!(read(&mut e, 3, 0, 90.0).is_empty());
    assert!(tick(&mut e, 9_000).is_empty());
    assert_eq!(tick(&mut e, 10_000).len(), 1);
    assert_eq!(
        ts(&read(&mut e, 3, 11_000, 99.0)),
        [(Transition::Cleared, Latched)]
    );
}

// ---------------------------------------------------------------- suppression by design

/// Point 0: cooling-water outlet temperature, H 45, suppressed while the furnace (point 1)
/// is stopped.
fn furnace_engine() -> Engine {
    let tags = ["TI-OUT", "FURNACE-RUN"];
    let when = Condition::compile("!FURNACE-RUN", |t| {
        tags.iter().position(|x| *x == t).map(|i| PointId(i as u32))
    })
    .unwrap();
    engine(vec![
        PointRules {
            suppress_when: Some(Box::new(when)),
            fault: Some(FaultRule::default()),
            ..with_limits(limits(&[(Level::High, 45.0)], 1.0))
        },
        PointRules::default(),
    ])
}

#[test]
fn suppressed_by_design_is_recorded_never_announced() {
    let mut e = furnace_engine();
    read(&mut e, 1, 0, 0.0);
    assert!(e.is_suppressed_by_design(PointId(0)));
    let ev = read(&mut e, 0, 1_000, 50.0);
    assert_eq!(ts(&ev), [(Transition::Raised, SuppressedByDesign)]);
    assert!(!ev[0].announce());
    // Ack is refused: nobody was told.
    assert_eq!(
        ack(&mut e, ev[0].alarm.id, 1_500).unwrap_err(),
        CommandError::NotAnnounced(ev[0].alarm.id)
    );
    // Fault alarms are not process alarms: not suppressed.
    let ev = read_q(&mut e, 0, 2_000, 0.0, Quality::SensorFault);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    // Furnace starts while the temperature is still high: announced now.
    read(&mut e, 0, 2_500, 50.0);
    let ev = read(&mut e, 1, 3_000, 1.0);
    assert_eq!(ts(&ev), [(Transition::Unsuppressed, ActiveUnacked)]);
    assert!(ev[0].announce());
    assert_eq!(ev[0].by, None);
    assert_eq!(ev[0].comment.as_deref(), Some("plant state: !FURNACE-RUN"));
    let mut modes = Vec::new();
    e.drain_mode_events(&mut modes);
    assert_eq!(modes.len(), 2);
    assert!(modes[0].entered && !modes[1].entered);
    assert_eq!(modes[0].scope, Scope::Point(PointId(0)));
}

#[test]
fn suppression_hides_an_active_alarm_and_ends_it_if_it_clears() {
    let mut e = furnace_engine();
    read(&mut e, 1, 0, 1.0);
    let id = read(&mut e, 0, 0, 50.0)[0].alarm.id;
    assert_eq!(
        ts(&read(&mut e, 1, 1_000, 0.0)),
        [(Transition::Suppressed, SuppressedByDesign)]
    );
    let ev = read(&mut e, 0, 2_000, 20.0);
    assert_eq!(ts(&ev), [(Transition::Cleared, Normal)]);
    assert_eq!(ev[0].alarm.id, id);
    assert!(e.open_alarms().is_empty());
    assert!(
        read(&mut e, 1, 3_000, 1.0).is_empty(),
        "nothing left to announce"
    );
}

#[test]
fn returned_unacked_alarm_suppressed_ends() {
    let mut e = furnace_engine();
    read(&mut e, 1, 0, 1.0);
    read(&mut e, 0, 0, 50.0);
    read(&mut e, 0, 1_000, 20.0);
    assert_eq!(
        ts(&read(&mut e, 1, 2_000, 0.0)),
        [(Transition::Suppressed, Normal)]
    );
    assert!(e.open_alarms().is_empty());
}

// ---------------------------------------------------------------- shelving

fn shelve(
    e: &mut Engine,
    source: AlarmSource,
    ms: Millis,
    t: Millis,
) -> Result<Vec<AlarmEvent>, CommandError> {
    let mut out = Vec::new();
    e.shelve(
        source,
        ms,
        "op",
        "detector drifting, work order 17",
        t,
        &mut out,
    )
    .map(|()| out)
}

#[test]
fn shelving_an_active_alarm_and_unshelving_it() {
    let mut e = gas_engine();
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    let ev = shelve(&mut e, h(0), 3_600_000, 1_000).unwrap();
    assert_eq!(ts(&ev), [(Transition::Shelved, Shelved)]);
    assert_eq!(ev[0].by.as_deref(), Some("op"));
    assert_eq!(
        ev[0].comment.as_deref(),
        Some("detector drifting, work order 17")
    );
    assert_eq!(e.modes().len(), 1);
    assert_eq!(e.modes()[0].until, Some(3_601_000));
    let mut out = Vec::new();
    e.unshelve(h(0), "op", "detector replaced", 2_000, &mut out)
        .unwrap();
    assert_eq!(ts(&out), [(Transition::Unshelved, ActiveUnacked)]);
    assert!(out[0].announce());
    assert_eq!(out[0].alarm.id, id);
    assert!(e.modes().is_empty());
}

#[test]
fn shelved_alarm_raised_and_cleared_is_journaled_not_announced() {
    let mut e = gas_engine();
    assert!(
        shelve(&mut e, h(0), 60_000, 0).unwrap().is_empty(),
        "nothing open: only a mode event"
    );
    let ev = read(&mut e, 0, 1_000, 30.0);
    assert_eq!(ts(&ev), [(Transition::Raised, Shelved)]);
    assert!(!ev[0].announce());
    assert_eq!(
        ts(&read(&mut e, 0, 2_000, 10.0)),
        [(Transition::Cleared, Normal)]
    );
    assert!(e.open_alarms().is_empty());
}

#[test]
fn shelving_runs_out_by_itself() {
    let mut e = gas_engine();
    shelve(&mut e, h(0), 60_000, 0).unwrap();
    read(&mut e, 0, 1_000, 30.0);
    assert!(tick(&mut e, 59_999).is_empty());
    let ev = tick(&mut e, 60_000);
    assert_eq!(ts(&ev), [(Transition::Unshelved, ActiveUnacked)]);
    assert_eq!(ev[0].by, None);
    assert_eq!(ev[0].comment.as_deref(), Some("shelving time ran out"));
    assert!(ev[0].announce());
    let mut modes = Vec::new();
    e.drain_mode_events(&mut modes);
    assert_eq!(modes.len(), 2);
    assert_eq!((modes[1].entered, modes[1].by.as_ref()), (false, None));
}

#[test]
fn shelving_rules() {
    let mut e = gas_engine();
    let max = e.config().max_shelve_ms;
    assert_eq!(
        shelve(&mut e, h(0), max + 1, 0).unwrap_err(),
        CommandError::InvalidUntil { max_ms: max }
    );
    assert_eq!(
        shelve(&mut e, h(0), 0, 0).unwrap_err(),
        CommandError::InvalidUntil { max_ms: max }
    );
    let mut out = Vec::new();
    assert_eq!(
        e.shelve(h(0), 1_000, "op", " ", 0, &mut out).unwrap_err(),
        CommandError::MissingReason
    );
    assert_eq!(
        e.shelve(h(0), 1_000, "", "why", 0, &mut out).unwrap_err(),
        CommandError::MissingOperator
    );
    assert_eq!(
        shelve(&mut e, h(7), 1_000, 0).unwrap_err(),
        CommandError::UnknownSource(h(7))
    );
    assert_eq!(
        e.unshelve(h(0), "op", "why", 0, &mut out).unwrap_err(),
        CommandError::NotInMode {
            mode: Mode::Shelved,
            scope: Scope::Alarm(h(0))
        }
    );
    // Shelving is for single alarms.
    let mut e2 = gas_engine();
    let err = e2
        .begin_mode(
            Mode::Shelved,
            Scope::Point(PointId(0)),
            Some(1),
            "op",
            "why",
            0,
            &mut out,
        )
        .unwrap_err();
    assert_eq!(
        err,
        CommandError::ShelveNeedsAlarm(Scope::Point(PointId(0)))
    );
    // Shelving again renews.
    shelve(&mut e, h(0), 1_000, 0).unwrap();
    shelve(&mut e, h(0), 5_000, 500).unwrap();
    assert_eq!(e.modes().len(), 1);
    assert_eq!((e.modes()[0].since, e.modes()[0].until), (0, Some(5_500)));
    assert!(tick(&mut e, 2_000).is_empty());
    assert_eq!(e.modes().len(), 1);
}

// ---------------------------------------------------------------- out of service

#[test]
fn out_of_service_point_hides_all_its_alarms_until_a_set_time() {
    let mut e = fault_engine();
    let id = read(&mut e, 0, 0, 30.0)[0].alarm.id;
    let mut out = Vec::new();
    e.remove_from_service(
        Scope::Point(PointId(0)),
        3_600_000,
        "tech",
        "calibration, permit 42",
        1_000,
        &mut out,
    )
    .unwrap();
    assert_eq!(ts(&out), [(Transition::RemovedFromService, OutOfService)]);
    assert_eq!(out[0].alarm.id, id);
    // Calibration gas and a pulled sensor: journaled, silent.
    let ev = read_q(&mut e, 0, 2_000, 0.0, Quality::SensorFault);
    assert!(ev.is_empty(), "fault on-delay");
    let ev = read_q(&mut e, 0, 4_000, 0.0, Quality::SensorFault);
    assert_eq!(ts(&ev), [(Transition::Raised, OutOfService)]);
    assert!(!ev[0].announce());
    read(&mut e, 0, 5_000, 60.0);
    let ev = tick(&mut e, 3_600_000);
    // Back in service: the limit alarm is still active and announced again.
    assert_eq!(ts(&ev), [(Transition::ReturnedToService, ActiveUnacked)]);
    assert_eq!(
        ev[0].comment.as_deref(),
        Some("out-of-service time ran out")
    );
    assert!(ev[0].announce());
}

#[test]
fn out_of_service_rules() {
    let mut e = gas_engine();
    let mut out = Vec::new();
    let max = e.config().max_out_of_service_ms;
    let scope = Scope::Point(PointId(0));
    assert_eq!(
        e.remove_from_service(scope, 1_000, "tech", "why", 1_000, &mut out)
            .unwrap_err(),
        CommandError::InvalidUntil { max_ms: max }
    );
    assert_eq!(
        e.remove_from_service(scope, max + 2, "tech", "why", 1, &mut out)
            .unwrap_err(),
        CommandError::InvalidUntil { max_ms: max }
    );
    assert_eq!(
        e.remove_from_service(Scope::Point(PointId(5)), 10, "tech", "why", 1, &mut out)
            .unwrap_err(),
        CommandError::UnknownScope(Scope::Point(PointId(5)))
    );
    assert_eq!(
        e.return_to_service(scope, "tech", "done", 1, &mut out)
            .unwrap_err(),
        CommandError::NotInMode {
            mode: Mode::OutOfService,
            scope
        }
    );
}

#[test]
fn device_out_of_service_covers_its_points_and_comm_loss_and_overlaps_end_independently() {
    let config = EngineConfig {
        points: vec![
            PointRules {
                device: Some(DeviceId(0)),
                ..with_limits(limits(&[(Level::High, 25.0)], 0.0))
            },
            PointRules {
                device: None,
                ..with_limits(limits(&[(Level::High, 25.0)], 0.0))
            },
        ],
        devices: vec![DeviceRules {
            comm_loss_after_ms: 10_000,
            comm_loss_priority: Priority::High,
        }],
        ..Default::default()
    };
    let mut e = Engine::new(config, 1);
    let mut out = Vec::new();
    e.remove_from_service(
        Scope::Device(DeviceId(0)),
        100_000,
        "tech",
        "panel work",
        0,
        &mut out,
    )
    .unwrap();
    e.remove_from_service(
        Scope::Point(PointId(0)),
        200_000,
        "tech",
        "sensor swap",
        0,
        &mut out,
    )
    .unwrap();
    let ev = tick(&mut e, 0);
    assert!(ev.is_empty());
    let ev = tick(&mut e, 10_000);
    assert_eq!(
        ts(&ev),
        [(Transition::Raised, OutOfService)],
        "comm loss, hidden"
    );
    assert_eq!(
        ts(&read(&mut e, 0, 10_500, 30.0)),
        [(Transition::Raised, OutOfService)]
    );
    assert_eq!(
        ts(&read(&mut e, 1, 10_500, 30.0)),
        [(Transition::Raised, ActiveUnacked)],
        "other point"
    );
    e.return_to_service(
        Scope::Device(DeviceId(0)),
        "tech",
        "panel closed",
        20_000,
        &mut out,
    )
    .unwrap();
    let comm: Vec<_> = out
        .iter()
        .filter(|e| e.alarm.source.device().is_some())
        .collect();
    assert_eq!(
        comm.last().map(|e| (e.transition, e.alarm.state)),
        Some((Transition::ReturnedToService, ActiveUnacked))
    );
    assert_eq!(
        e.open_alarm(h(0)).map(|a| a.state),
        Some(OutOfService),
        "the point's own record still holds"
    );
    let ev = tick(&mut e, 200_000);
    assert!(ts(&ev).contains(&(Transition::ReturnedToService, ActiveUnacked)));
}

#[test]
fn stronger_hidden_state_shows_and_the_weaker_one_returns() {
    let mut e = gas_engine();
    read(&mut e, 0, 0, 30.0);
    shelve(&mut e, h(0), 600_000, 1_000).unwrap();
    let mut out = Vec::new();
    e.remove_from_service(
        Scope::Point(PointId(0)),
        100_000,
        "tech",
        "calibration",
        2_000,
        &mut out,
    )
    .unwrap();
    assert_eq!(ts(&out), [(Transition::RemovedFromService, OutOfService)]);
    out.clear();
    e.return_to_service(Scope::Point(PointId(0)), "tech", "done", 3_000, &mut out)
        .unwrap();
    assert_eq!(ts(&out), [(Transition::ReturnedToService, Shelved)]);
    assert!(!out[0].announce(), "still shelved");
}

#[test]
fn manual_suppression() {
    let mut e = fault_engine();
    let mut out = Vec::new();
    let scope = Scope::Point(PointId(0));
    e.suppress(
        scope,
        Some(50_000),
        "eng",
        "furnace stopped, signal not wired",
        0,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        ts(&read(&mut e, 0, 1_000, 30.0)),
        [(Transition::Raised, SuppressedByDesign)]
    );
    read_q(&mut e, 0, 2_000, 0.0, Quality::SensorFault);
    assert_eq!(
        ts(&read_q(&mut e, 0, 4_000, 0.0, Quality::SensorFault)),
        [(Transition::Raised, ActiveUnacked)]
    );
    read(&mut e, 0, 5_000, 30.0);
    e.unsuppress(scope, "eng", "furnace running", 6_000, &mut out)
        .unwrap();
    assert_eq!(
        out.last().map(|e| (e.transition, e.alarm.state)),
        Some((Transition::Unsuppressed, ActiveUnacked))
    );
    assert_eq!(
        e.suppress(scope, Some(0), "eng", "why", 7_000, &mut out)
            .unwrap_err(),
        CommandError::InvalidUntil {
            max_ms: e.config().max_out_of_service_ms
        }
    );
}

// ---------------------------------------------------------------- restart

#[test]
fn restore_keeps_ids_and_sequence_and_returns_orphans() {
    let mut e = gas_engine();
    let ev = read(&mut e, 0, 0, 30.0);
    let mut alarm = ev[0].alarm.clone();
    alarm.id = 40;
    let mut orphan = alarm.clone();
    orphan.id = 41;
    orphan.source = h(9);
    let mut fresh = gas_engine();
    let orphans = fresh.restore(vec![(alarm, 1), (orphan.clone(), 1)]);
    assert_eq!(orphans, vec![orphan]);
    assert_eq!(fresh.next_id(), 42);
    assert!(tick(&mut fresh, 1).is_empty());
    assert!(
        read(&mut fresh, 0, 1_000, 31.0).is_empty(),
        "already active: not raised twice"
    );
    let ev = read(&mut fresh, 0, 2_000, 10.0);
    assert_eq!(
        (ev[0].alarm.id, ev[0].seq, ev[0].transition),
        (40, 2, Transition::Cleared)
    );
}

#[test]
fn restore_modes_and_reconcile() {
    let mut e = gas_engine();
    read(&mut e, 0, 0, 30.0);
    shelve(&mut e, h(0), 60_000, 1_000).unwrap();
    let alarms: Vec<_> = e.open_alarms().iter().map(|a| (a.clone(), 2)).collect();
    let records = e.modes().to_vec();

    // Modes restored too: the alarm stays shelved, and is unshelved when the time runs out.
    let mut fresh = gas_engine();
    assert!(fresh.restore(alarms.clone()).is_empty());
    assert!(fresh.restore_modes(records).is_empty());
    assert!(tick(&mut fresh, 2_000).is_empty());
    assert_eq!(
        ts(&tick(&mut fresh, 61_000)),
        [(Transition::Unshelved, ActiveUnacked)]
    );

    // Modes lost: the alarm is announced rather than left hidden for ever.
    let mut fresh = gas_engine();
    fresh.restore(alarms);
    let ev = tick(&mut fresh, 2_000);
    assert_eq!(ts(&ev), [(Transition::Unshelved, ActiveUnacked)]);
    assert_eq!(
        ev[0].comment.as_deref(),
        Some("state restored after a restart")
    );
}

#[test]
fn every_alarm_ends_with_a_normal_event() {
    // The store closes an alarm when an event says normal; retired alarms must say it.
    let mut e = furnace_engine();
    let mut all = Vec::new();
    all.extend(read(&mut e, 1, 0, 1.0));
    all.extend(read(&mut e, 0, 0, 50.0));
    all.extend(read(&mut e, 1, 1_000, 0.0));
    all.extend(read(&mut e, 0, 2_000, 10.0));
    all.extend(read(&mut e, 0, 3_000, 50.0));
    let id = all.last().map(|e| e.alarm.id).unwrap();
    all.extend(read(&mut e, 1, 4_000, 1.0));
    all.extend(ack(&mut e, id, 4_500).unwrap());
    all.extend(read(&mut e, 0, 5_000, 10.0));
    assert!(e.open_alarms().is_empty());
    let mut last = std::collections::HashMap::new();
    for ev in &all {
        last.insert(ev.alarm.id, ev.alarm.state);
    }
    assert!(last.values().all(|s| *s == Normal), "{last:?}");
}

#[test]
fn mode_events_are_bounded_and_counted() {
    let mut e = gas_engine();
    let mut out = Vec::new();
    for i in 0..(MODE_EVENT_CAPACITY as i64 + 10) {
        e.shelve(h(0), 1_000, "op", "why", i, &mut out).unwrap();
    }
    assert_eq!(e.mode_events_dropped(), 10);
    let mut modes = Vec::new();
    e.drain_mode_events(&mut modes);
    assert_eq!(modes.len(), MODE_EVENT_CAPACITY);
    e.drain_mode_events(&mut modes);
    assert_eq!(modes.len(), MODE_EVENT_CAPACITY);
}

#[test]
fn sources_and_open_alarm_lookup() {
    let e = fault_engine();
    let sources: Vec<_> = e.sources().collect();
    let system = SystemCheck::ALL.map(|check| AlarmSource::System { check });
    assert_eq!(
        sources[..2],
        [h(0), AlarmSource::Fault { point: PointId(0) }]
    );
    assert_eq!(sources[2..], system);
    assert!(e.open_alarm(h(0)).is_none());
}

#[test]
fn unknown_points_and_devices_are_ignored() {
    let mut e = gas_engine();
    assert!(read(&mut e, 42, 0, 1.0).is_empty());
    let mut out = Vec::new();
    e.on_device_status(DeviceId(3), true, 0, &mut out);
    assert!(out.is_empty());
    assert!(e.last_reading(PointId(42)).is_none());
}

#[test]
fn swap_remove_keeps_slot_indices_right() {
    // Three points in alarm; retire the first; the others must still clear properly.
    let rule = limits(&[(Level::High, 25.0)], 0.0);
    let mut e = engine(vec![
        with_limits(rule.clone()),
        with_limits(rule.clone()),
        with_limits(rule),
    ]);
    let ids: Vec<_> = (0..3)
        .map(|p| read(&mut e, p, 0, 30.0)[0].alarm.id)
        .collect();
    ack(&mut e, ids[0], 1).unwrap();
    read(&mut e, 0, 2, 10.0);
    assert_eq!(e.open_alarms().len(), 2);
    for p in 1..3 {
        let ev = read(&mut e, p, 3, 10.0);
        assert_eq!(ev[0].alarm.id, ids[p as usize]);
        ack(&mut e, ids[p as usize], 4).unwrap();
    }
    assert!(e.open_alarms().is_empty());
}

#[test]
fn a_forward_clock_step_is_not_communication_loss() {
    let config = EngineConfig {
        points: vec![],
        devices: vec![DeviceRules {
            comm_loss_after_ms: 10_000,
            comm_loss_priority: Priority::High,
        }],
        ..EngineConfig::default()
    };
    let mut e = Engine::new(config, 1);
    let mut out = Vec::new();
    let d = DeviceId(0);
    for t in (0..5_000).step_by(1_000) {
        e.on_device_status(d, true, t, &mut out);
        e.tick(t, &mut out);
    }
    // The wall clock jumps an hour ahead between two polls.
    let step = 3_600_000;
    e.clock_stepped(step);
    e.tick(5_000 + step, &mut out);
    e.on_device_status(d, true, 5_200 + step, &mut out);
    e.tick(5_500 + step, &mut out);
    assert!(out.is_empty(), "a clock step raised {out:?}");
    // Real silence after the step still raises the alarm.
    e.tick(5_200 + step + 10_000, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].alarm.source, AlarmSource::CommLoss { device: d });
}

// ---------------------------------------------------------------- Sentinel's own checks

fn system(e: &mut Engine, check: SystemCheck, failing: bool, t: Millis) -> Vec<AlarmEvent> {
    let mut out = Vec::new();
    e.on_system_check(check, failing, t, &mut out);
    out
}

#[test]
fn system_check_raises_once_clears_and_needs_acknowledging() {
    let mut e = gas_engine();
    let ev = system(&mut e, SystemCheck::UpstreamRejected, true, 1_000);
    assert_eq!(ts(&ev), [(Transition::Raised, ActiveUnacked)]);
    assert!(ev[0].announce());
    assert_eq!(ev[0].alarm.priority, Priority::High);
    assert_eq!(
        ev[0].alarm.source,
        AlarmSource::System {
            check: SystemCheck::UpstreamRejected
        }
    );
    let id = ev[0].alarm.id;
    // Reported again while failing: nothing new. The other check is independent.
    assert!(system(&mut e, SystemCheck::UpstreamRejected, true, 2_000).is_empty());
    assert!(system(&mut e, SystemCheck::DiskBudget, false, 2_000).is_empty());
    assert!(tick(&mut e, 3_000).is_empty());
    let ev = system(&mut e, SystemCheck::UpstreamRejected, false, 4_000);
    assert_eq!(ts(&ev), [(Transition::Cleared, ReturnedUnacked)]);
    assert_eq!(
        ts(&ack(&mut e, id, 5_000).unwrap()),
        [(Transition::Acknowledged, Normal)]
    );
    assert!(e.open_alarms().is_empty());
}

#[test]
fn restored_system_alarm_waits_for_the_next_report() {
    let mut e = gas_engine();
    let ev = system(&mut e, SystemCheck::DiskBudget, true, 1_000);
    let restored = vec![(ev[0].alarm.clone(), ev[0].seq)];
    let mut fresh = gas_engine();
    assert!(fresh.restore(restored).is_empty());
    // Ticks alone do not clear it: nobody has said the store is fine yet.
    assert!(tick(&mut fresh, 2_000).is_empty());
    assert!(tick(&mut fresh, 60_000).is_empty());
    assert_eq!(fresh.open_alarms().len(), 1);
    let ev = system(&mut fresh, SystemCheck::DiskBudget, false, 61_000);
    assert_eq!(ts(&ev), [(Transition::Cleared, ReturnedUnacked)]);
}

#[test]
fn every_alarm_source_finds_its_own_slot() {
    let full = PointRules {
        device: Some(DeviceId(1)),
        rate: Some(Box::new(RateRule {
            max_rise_per_min: Some(5.0),
            ..Default::default()
        })),
        deviation: Some(Box::new(DeviationRule {
            other: PointId(0),
            max_difference: 3.0,
            ..Default::default()
        })),
        fault: Some(FaultRule::default()),
        data_interruption: Some(DataInterruptionRule::default()),
        ..with_limits(limits(
            &[
                (Level::Low, 2.0),
                (Level::High, 25.0),
                (Level::HighHigh, 50.0),
            ],
            1.0,
        ))
    };
    let condition = |name: &str| ConditionRule {
        name: name.into(),
        when: compile("NH3-101 > 28"),
        priority: Priority::High,
        on_delay_ms: 0,
        off_delay_ms: 0,
        realarm_ms: None,
        latch: false,
    };
    let e = Engine::new(
        EngineConfig {
            points: vec![PointRules::default(), full.clone(), full],
            devices: vec![DeviceRules::default(); 2],
            conditions: vec![condition("a"), condition("b")],
            ..Default::default()
        },
        1,
    );
    for (i, slot) in e.slots.iter().enumerate() {
        assert_eq!(e.slot_of(&slot.source), Some(i as u32), "{:?}", slot.source);
    }
    // Every kind of source is there: 2 × 7 point slots, 2 conditions, 2 devices, the checks.
    assert_eq!(e.slots.len(), 2 * 7 + 2 + 2 + SystemCheck::ALL.len());
    for absent in [
        h(0),
        AlarmSource::Limit {
            point: PointId(9),
            level: Level::High,
        },
        AlarmSource::Fault { point: PointId(0) },
        AlarmSource::CommLoss {
            device: DeviceId(2),
        },
        AlarmSource::Condition {
            condition: ConditionId(2),
        },
        AlarmSource::Condition {
            condition: ConditionId(u32::MAX),
        },
        AlarmSource::Deviation {
            point: PointId(1),
            other: PointId(2),
        },
    ] {
        assert_eq!(e.slot_of(&absent), None, "{absent:?}");
    }
}

//! Properties that must hold for any sequence of inputs:
//! - inside the deadband an alarm never flaps, and limit alarms follow the hysteresis model;
//! - a shelved or out-of-service alarm is never announced;
//! - the risk colour never falls while the set of active alarms only grows.

use alert_rules::{
    Alarm, AlarmEvent, AlarmSource, AlarmState, Colour, Engine, EngineConfig, FaultRule, Level,
    LimitLevel, LimitRule, Millis, PointId, PointRules, Priority, Quality, Reading, RiskMap,
    RiskUnit, RiskUnitConfig, Scope, Transition,
};
use proptest::prelude::*;

const SETPOINT: f64 = 50.0;

fn high_alarm_engine(deadband: f64, off_delay_ms: Millis) -> Engine {
    let limits = LimitRule {
        levels: vec![LimitLevel {
            level: Level::High,
            setpoint: SETPOINT,
            priority: Priority::High,
        }],
        deadband,
        off_delay_ms,
        ..Default::default()
    };
    Engine::new(
        EngineConfig {
            points: vec![PointRules {
                limits: Some(Box::new(limits)),
                ..Default::default()
            }],
            ..Default::default()
        },
        1,
    )
}

fn feed(e: &mut Engine, t: Millis, value: f64, out: &mut Vec<AlarmEvent>) {
    let r = Reading {
        point: PointId(0),
        time: t,
        value,
        quality: Quality::Good,
    };
    e.on_reading(&r, t, out);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Once raised, values that never leave the band above `setpoint - deadband` produce no
    /// event at all: no clear, no second raise.
    #[test]
    fn inside_the_deadband_an_alarm_never_flaps(
        deadband in 0.1f64..10.0,
        fractions in prop::collection::vec(0.0f64..=1.0, 1..200),
        above in prop::collection::vec(any::<bool>(), 200),
    ) {
        let mut e = high_alarm_engine(deadband, 0);
        let mut out = Vec::new();
        feed(&mut e, 0, SETPOINT + 1.0, &mut out);
        prop_assert_eq!(out.len(), 1);
        out.clear();
        for (i, f) in fractions.iter().enumerate() {
            // Inside the deadband [S - D, S), or back above the setpoint.
            let v = if above[i] { SETPOINT + f * 5.0 } else { SETPOINT - f * deadband };
            feed(&mut e, (i as i64 + 1) * 1_000, v, &mut out);
        }
        prop_assert!(out.is_empty(), "{:?}", out.iter().map(|e| e.transition).collect::<Vec<_>>());
    }

    /// For any sequence of values the engine follows the hysteresis model: raise at or above
    /// the setpoint, clear only below setpoint minus deadband, each only after its delay.
    #[test]
    fn limit_alarm_follows_the_hysteresis_model(
        deadband in 0.0f64..5.0,
        off_delay_s in 0i64..5,
        values in prop::collection::vec(40.0f64..60.0, 1..300),
    ) {
        let off_delay_ms = off_delay_s * 1_000;
        let mut e = high_alarm_engine(deadband, off_delay_ms);
        let mut out = Vec::new();
        let (mut active, mut clearing_since): (bool, Option<Millis>) = (false, None);
        for (i, v) in values.iter().enumerate() {
            let t = i as i64 * 1_000;
            out.clear();
            feed(&mut e, t, *v, &mut out);
            let expected = if !active && *v >= SETPOINT {
                active = true;
                Some(Transition::Raised)
            } else if active && *v < SETPOINT - deadband {
                let since = *clearing_since.get_or_insert(t);
                if t - since >= off_delay_ms {
                    active = false;
                    clearing_since = None;
                    Some(Transition::Cleared)
                } else {
                    None
                }
            } else {
                clearing_since = None;
                None
            };
            prop_assert_eq!(out.iter().map(|e| e.transition).collect::<Vec<_>>(), expected.into_iter().collect::<Vec<_>>());
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Read { point: u32, value: f64, fault: bool },
    Tick { ms: i64 },
    Shelve { point: u32, ms: i64 },
    Unshelve { point: u32 },
    OutOfService { point: u32, ms: i64 },
    ReturnToService { point: u32 },
    AckFirst,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..3, 0.0f64..100.0, prop::bool::weighted(0.1))
            .prop_map(|(point, value, fault)| Op::Read { point, value, fault }),
        2 => (1i64..120_000).prop_map(|ms| Op::Tick { ms }),
        1 => (0u32..3, 1i64..300_000).prop_map(|(point, ms)| Op::Shelve { point, ms }),
        1 => (0u32..3).prop_map(|point| Op::Unshelve { point }),
        1 => (0u32..3, 1i64..300_000).prop_map(|(point, ms)| Op::OutOfService { point, ms }),
        1 => (0u32..3).prop_map(|point| Op::ReturnToService { point }),
        1 => Just(Op::AckFirst),
    ]
}

fn hidden_by_a_record(e: &Engine, source: AlarmSource) -> bool {
    e.modes().iter().any(|r| match r.scope {
        Scope::Alarm(s) => s == source,
        Scope::Point(p) => source.point() == Some(p),
        Scope::Device(d) => source.device() == Some(d),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Whatever operators and the plant do, no event of an alarm that is shelved or out of
    /// service is announced, and every event of such an alarm shows a hidden (or ended) state.
    #[test]
    fn shelved_or_out_of_service_alarms_are_never_announced(ops in prop::collection::vec(op(), 1..120)) {
        let point = || PointRules {
            limits: Some(Box::new(LimitRule {
                levels: vec![
                    LimitLevel { level: Level::High, setpoint: 50.0, priority: Priority::Medium },
                    LimitLevel { level: Level::HighHigh, setpoint: 80.0, priority: Priority::High },
                ],
                deadband: 2.0,
                on_delay_ms: 2_000,
                realarm_ms: Some(60_000),
                ..Default::default()
            })),
            fault: Some(FaultRule::default()),
            ..Default::default()
        };
        let mut e = Engine::new(EngineConfig { points: vec![point(), point(), point()], ..Default::default() }, 1);
        let mut now = 0;
        let mut out = Vec::new();
        for op in ops {
            out.clear();
            now += 500;
            let h = |p: u32| AlarmSource::Limit { point: PointId(p), level: Level::High };
            match op {
                Op::Read { point, value, fault } => {
                    let quality = if fault { Quality::SensorFault } else { Quality::Good };
                    e.on_reading(&Reading { point: PointId(point), time: now, value, quality }, now, &mut out);
                }
                Op::Tick { ms } => {
                    now += ms;
                    e.tick(now, &mut out);
                }
                Op::Shelve { point, ms } => { let _ = e.shelve(h(point), ms, "op", "nuisance", now, &mut out); }
                Op::Unshelve { point } => { let _ = e.unshelve(h(point), "op", "fixed", now, &mut out); }
                Op::OutOfService { point, ms } => {
                    let _ = e.remove_from_service(Scope::Point(PointId(point)), now + ms, "tech", "calibration", now, &mut out);
                }
                Op::ReturnToService { point } => {
                    let _ = e.return_to_service(Scope::Point(PointId(point)), "tech", "done", now, &mut out);
                }
                Op::AckFirst => {
                    let first = e.open_alarms().first().map(|a| a.id);
                    if let Some(id) = first { let _ = e.acknowledge(id, "op", None, now, &mut out); }
                }
            }
            for ev in &out {
                if hidden_by_a_record(&e, ev.alarm.source) {
                    prop_assert!(!ev.announce(), "announced while hidden: {:?}", ev);
                    prop_assert!(
                        ev.alarm.state.is_hidden() || ev.alarm.state == AlarmState::Normal,
                        "visible state while hidden: {:?}", ev
                    );
                }
            }
            for a in e.open_alarms() {
                prop_assert_eq!(a.state.is_hidden(), hidden_by_a_record(&e, a.source), "{:?}", a);
            }
        }
    }
}

fn active_alarm(id: u64, point: u32, level: Level, priority: Priority, acked: bool) -> Alarm {
    Alarm {
        id,
        source: AlarmSource::Limit {
            point: PointId(point),
            level,
        },
        state: if acked {
            AlarmState::ActiveAcked
        } else {
            AlarmState::ActiveUnacked
        },
        priority,
        value: None,
        limit: None,
        raised_at: 0,
        acked_at: acked.then_some(0),
        acked_by: None,
        cleared_at: None,
    }
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::LowLow),
        Just(Level::Low),
        Just(Level::High),
        Just(Level::HighHigh)
    ]
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Low),
        Just(Priority::Medium),
        Just(Priority::High),
        Just(Priority::Critical)
    ]
}

fn colour() -> impl Strategy<Value = Colour> {
    prop_oneof![
        Just(Colour::Blue),
        Just(Colour::Yellow),
        Just(Colour::Orange),
        Just(Colour::Red)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Adding active alarms, and letting time pass, never lowers a unit's or the site's colour.
    #[test]
    fn risk_colour_never_falls_while_active_alarms_only_grow(
        statics in prop::collection::vec(colour(), 1..4),
        hold_ms in 0i64..100_000,
        steps in prop::collection::vec((0u32..6, level(), priority(), any::<bool>(), 0i64..200_000), 1..40),
    ) {
        let config: Vec<RiskUnitConfig> = statics
            .iter()
            .enumerate()
            .map(|(i, c)| RiskUnitConfig {
                name: format!("unit {i}"),
                static_colour: *c,
                points: vec![PointId(2 * i as u32), PointId(2 * i as u32 + 1)],
                hold_ms,
                ..Default::default()
            })
            .collect();
        let mut map = RiskMap::new(&config);
        let mut unit = RiskUnit::new(statics[0], hold_ms);
        let mut out = Vec::new();
        let mut now = 0;
        let (mut site, mut single) = (map.site_colour(), unit.colour());
        let mut units: Vec<Colour> = (0..statics.len()).map(|u| map.unit_colour(u).unwrap()).collect();
        for (id, (point, level, priority, acked, dt)) in steps.into_iter().enumerate() {
            let a = active_alarm(id as u64, point, level, priority, acked);
            map.on_alarm(&a, now, &mut out);
            unit.on_alarm(&a, now);
            now += dt;
            map.tick(now, &mut out);
            unit.tick(now);
            prop_assert!(map.site_colour() >= site);
            prop_assert!(unit.colour() >= single);
            for (u, before) in units.iter_mut().enumerate() {
                let c = map.unit_colour(u).unwrap();
                prop_assert!(c >= *before);
                *before = c;
            }
            site = map.site_colour();
            single = unit.colour();
        }
        prop_assert!(out.iter().all(|c| c.to > c.from));
    }
}

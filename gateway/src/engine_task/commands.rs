//! Requests from the API and other front ends, and how the engine task answers them.
//! Every change an operator makes is answered only once it is committed to the store.

use alert_rules::{AlarmId, AlarmState, CommandError, Engine, Millis, Scope};
use drivers::now_millis;
use tokio::sync::oneshot;

use super::State;
use super::views::{PointView, RiskView};
use crate::engine_task::SiteStatus;
use crate::event::{AlarmJson, scope_name};

/// Which alarms a view asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmFilter {
    /// Active or not yet acknowledged (and hidden ones: shelved, suppressed, out of service).
    Open,
    /// Active only.
    Active,
    /// Finished recently (cleared and acknowledged).
    Recent,
    All,
}

/// Counts of the open alarms (the [`AlarmFilter::Open`] set), for status documents that need
/// the numbers only: building every open alarm's view a few times a second, while a plant had
/// thousands open, was a measurable share of the engine's time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenAlarmCounts {
    pub open: u64,
    /// By priority rank: low, medium, high, critical.
    pub by_priority: [u64; 4],
    pub unacknowledged: u64,
}

/// A point or a device, by the name people use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Point(String),
    Device(String),
}

/// What an operator (or engineer) does to alarms.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Shelve {
        id: AlarmId,
        duration_ms: Millis,
        reason: String,
    },
    Unshelve {
        id: AlarmId,
        reason: String,
    },
    /// Reset a latched alarm whose condition has returned.
    Reset {
        id: AlarmId,
        reason: String,
    },
    OutOfService {
        target: Target,
        until: Millis,
        reason: String,
    },
    ReturnToService {
        target: Target,
        reason: String,
    },
    /// Suppress by design (an engineer standing in for a plant-state condition).
    Suppress {
        target: Target,
        until: Option<Millis>,
        reason: String,
    },
    Unsuppress {
        target: Target,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperateError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<CommandError> for OperateError {
    fn from(e: CommandError) -> Self {
        match e {
            e if e.is_not_found() => OperateError::NotFound(e.to_string()),
            e @ (CommandError::InvalidUntil { .. }
            | CommandError::MissingOperator
            | CommandError::MissingReason) => OperateError::Invalid(e.to_string()),
            e => OperateError::Conflict(e.to_string()),
        }
    }
}

/// Requests to the engine task. Each carries its reply channel.
pub enum Command {
    Points(oneshot::Sender<Vec<PointView>>),
    Alarms(AlarmFilter, oneshot::Sender<Vec<AlarmJson>>),
    OpenAlarmCounts(oneshot::Sender<OpenAlarmCounts>),
    /// Answered once the acknowledgement is durable.
    Acknowledge {
        id: AlarmId,
        by: String,
        comment: Option<String>,
        reply: oneshot::Sender<Result<AlarmJson, CommandError>>,
    },
    /// Answered once the change is durable, with the alarm it touched (if one).
    Operate {
        action: Action,
        by: String,
        reply: oneshot::Sender<Result<Option<AlarmJson>, OperateError>>,
    },
    /// Shelving, suppression and out-of-service in force.
    Modes(oneshot::Sender<Vec<serde_json::Value>>),
    Risk(oneshot::Sender<RiskView>),
    Kpi(oneshot::Sender<alert_rules::kpi::KpiSnapshot>),
    Status(oneshot::Sender<SiteStatus>),
    /// Swap in a new configuration (the drivers are stopped meanwhile). Journaled with `by`.
    Reload {
        plant: std::sync::Arc<crate::plant::Plant>,
        by: String,
        reply: oneshot::Sender<super::ReloadSummary>,
    },
    /// Append a record to the journal (for example a refused reload).
    Record {
        body: serde_json::Value,
        reply: oneshot::Sender<()>,
    },
}

impl State {
    /// Returns false when the store is gone (the engine stops).
    pub(super) async fn on_command(&mut self, engine: &mut Engine, cmd: Command) -> bool {
        match cmd {
            Command::Points(reply) => {
                let _ = reply.send(self.point_views(engine));
            }
            Command::Alarms(filter, reply) => {
                let _ = reply.send(self.alarms(engine, filter));
            }
            Command::OpenAlarmCounts(reply) => {
                let mut counts = OpenAlarmCounts::default();
                for a in engine.open_alarms() {
                    counts.open += 1;
                    counts.by_priority[a.priority.rank()] += 1;
                    if matches!(
                        a.state,
                        AlarmState::ActiveUnacked | AlarmState::ReturnedUnacked
                    ) {
                        counts.unacknowledged += 1;
                    }
                }
                let _ = reply.send(counts);
            }
            Command::Acknowledge {
                id,
                by,
                comment,
                reply,
            } => {
                let now = self.clock(engine);
                let result = engine.acknowledge(id, &by, comment.as_deref(), now, &mut self.events);
                match result {
                    Ok(()) => {
                        let alarm = engine
                            .open_alarm_by_id(id)
                            .or_else(|| engine.recent_alarms().find(|a| a.id == id));
                        let alarm = alarm.map(|a| AlarmJson::new(&self.plant, a));
                        return self
                            .reply_when_durable(reply, alarm.ok_or(CommandError::UnknownAlarm(id)))
                            .await;
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Operate { action, by, reply } => {
                let result = self.operate(engine, action, &by);
                engine.drain_mode_events(&mut self.modes);
                match result {
                    Ok(alarm) => return self.reply_when_durable(reply, Ok(alarm)).await,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::Modes(reply) => {
                let modes = engine
                    .modes()
                    .iter()
                    .map(|m| {
                        serde_json::json!({
                            "mode": m.mode.as_str(),
                            "scope": scope_name(&self.plant, &m.scope),
                            "since": crate::event::rfc3339(m.since),
                            "until": m.until.map(crate::event::rfc3339),
                            "by": m.by,
                            "reason": m.reason,
                        })
                    })
                    .collect();
                let _ = reply.send(modes);
            }
            Command::Risk(reply) => {
                let _ = reply.send(self.risk_view(engine));
            }
            Command::Kpi(reply) => {
                let _ = reply.send(self.kpi.snapshot(now_millis()));
            }
            Command::Status(reply) => {
                let _ = reply.send(self.site_status(engine));
            }
            Command::Record { body, reply } => {
                let now = self.clock(engine);
                self.batch.events.push(crate::store::JournalEntry {
                    event_id: body["id"].as_str().map_or_else(
                        || {
                            format!(
                                "{}-record-{now}-{:016x}",
                                self.plant.site.id,
                                fastrand::u64(..)
                            )
                        },
                        str::to_owned,
                    ),
                    seq: 0,
                    at: now,
                    body: body.to_string(),
                    alarm: None,
                    notify: false,
                });
                return self.reply_when_durable(reply, ()).await;
            }
            Command::Reload { plant, by, reply } => {
                let Some((next, summary)) = self.reload(engine, plant, &by).await else {
                    return false;
                };
                *engine = next;
                tracing::info!(
                    by = %summary.by,
                    added = summary.points_added.len(),
                    removed = summary.points_removed.len(),
                    alarms_carried = summary.alarms_carried,
                    "Configuration reloaded."
                );
                let _ = reply.send(summary);
            }
        }
        true
    }

    /// Commit what the command produced, then answer. The engine does not wait for the disk:
    /// a small task waits for the commit and replies.
    async fn reply_when_durable<T: Send + 'static>(
        &mut self,
        reply: oneshot::Sender<T>,
        value: T,
    ) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        if !self.flush(Some(done_tx)).await {
            return false;
        }
        tokio::spawn(async move {
            if done_rx.await.is_ok() {
                let _ = reply.send(value);
            }
        });
        true
    }

    fn alarms(&self, engine: &Engine, filter: AlarmFilter) -> Vec<AlarmJson> {
        let plant = &self.plant;
        let open = engine.open_alarms().iter();
        let mut list: Vec<AlarmJson> = match filter {
            AlarmFilter::Open => open.map(|a| AlarmJson::new(plant, a)).collect(),
            AlarmFilter::Active => open
                .filter(|a| a.state.is_active())
                .map(|a| AlarmJson::new(plant, a))
                .collect(),
            AlarmFilter::Recent => engine
                .recent_alarms()
                .map(|a| AlarmJson::new(plant, a))
                .collect(),
            AlarmFilter::All => open
                .chain(engine.recent_alarms())
                .map(|a| AlarmJson::new(plant, a))
                .collect(),
        };
        list.sort_by_key(|a| std::cmp::Reverse(a.alarm_id));
        list
    }

    fn scope(&self, target: &Target) -> Result<Scope, OperateError> {
        match target {
            Target::Point(tag) => self
                .plant
                .point_id(tag)
                .map(Scope::Point)
                .ok_or_else(|| OperateError::NotFound(format!("no point has tag {tag:?}"))),
            Target::Device(name) => self
                .plant
                .device_id(name)
                .map(Scope::Device)
                .ok_or_else(|| OperateError::NotFound(format!("no device is named {name:?}"))),
        }
    }

    fn operate(
        &mut self,
        engine: &mut Engine,
        action: Action,
        by: &str,
    ) -> Result<Option<AlarmJson>, OperateError> {
        let now = self.clock(engine);
        let out = &mut self.events;
        let source_of = |engine: &Engine, id: AlarmId| {
            engine
                .open_alarm_by_id(id)
                .map(|a| a.source)
                .ok_or_else(|| OperateError::NotFound(format!("no alarm with id {id} is open")))
        };
        let touched = match action {
            Action::Shelve {
                id,
                duration_ms,
                reason,
            } => {
                let source = source_of(engine, id)?;
                engine.shelve(source, duration_ms, by, &reason, now, out)?;
                Some(id)
            }
            Action::Unshelve { id, reason } => {
                let source = source_of(engine, id)?;
                engine.unshelve(source, by, &reason, now, out)?;
                Some(id)
            }
            Action::Reset { id, reason } => {
                engine.reset(id, by, &reason, now, out)?;
                Some(id)
            }
            Action::OutOfService {
                target,
                until,
                reason,
            } => {
                let scope = self.scope(&target)?;
                engine.remove_from_service(scope, until, by, &reason, now, &mut self.events)?;
                None
            }
            Action::ReturnToService { target, reason } => {
                let scope = self.scope(&target)?;
                engine.return_to_service(scope, by, &reason, now, &mut self.events)?;
                None
            }
            Action::Suppress {
                target,
                until,
                reason,
            } => {
                let scope = self.scope(&target)?;
                engine.suppress(scope, until, by, &reason, now, &mut self.events)?;
                None
            }
            Action::Unsuppress { target, reason } => {
                let scope = self.scope(&target)?;
                engine.unsuppress(scope, by, &reason, now, &mut self.events)?;
                None
            }
        };
        Ok(touched.and_then(|id| {
            engine
                .open_alarm_by_id(id)
                .or_else(|| engine.recent_alarms().find(|a| a.id == id))
                .map(|a| AlarmJson::new(&self.plant, a))
        }))
    }
}

//! Routing and escalation along the responsibility chains (包保责任人).
//!
//! Design: the store writer queues every announced alarm event on the `escalation` outbox
//! channel, in the same transaction as the journal. The router drains that queue in order; for
//! each event it decides who must be told (the pure [`Plan`] below), and in ONE transaction it
//! writes the per-contact notices to the `email` outbox, the escalation timer rows and marks the
//! event done. So a crash either redoes an event completely or not at all, and each notice has
//! a stable id (`{event}-t{tier}-{contact}`) that the outbox refuses twice.
//!
//! Timers are rows of `escalations` (alarm, chain, next tier, due time); the router sleeps until
//! the earliest due time, and after a restart it simply reads the table again: a tier that was
//! sent is never sent again, a tier that fell due while the gateway was down is sent at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alert_rules::{Millis, Priority};
use drivers::now_millis;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Contact, Language, Responsibility, RiskUnitSettings};
use crate::metrics::Metrics;

/// The outbox channel the store queues alarm events on for the router.
pub const CHANNEL: &str = "escalation";
/// The outbox channel of e-mail notices (one row per contact and notice).
pub const EMAIL_CHANNEL: &str = "email";

// ---------------------------------------------------------------- the pure plan ---

/// One chain's tiers, with times in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainPlan {
    /// (contacts, ms after the raise) per tier, in order.
    pub tiers: Vec<(Vec<String>, Millis)>,
    /// Repeat the last tier this often while unacknowledged; 0 = never.
    pub repeat_ms: Millis,
}

impl ChainPlan {
    pub fn from_config(r: &Responsibility) -> ChainPlan {
        ChainPlan {
            tiers: r
                .tiers
                .iter()
                .map(|t| {
                    (
                        t.contacts.clone(),
                        (t.after_secs as Millis).saturating_mul(1000),
                    )
                })
                .collect(),
            repeat_ms: (r.repeat_secs as Millis).saturating_mul(1000),
        }
    }
}

/// Where one alarm stands on one chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub raised_ms: Millis,
    /// Index of the next tier to tell; `tiers.len()` once all were told.
    pub next_tier: usize,
    /// Repeats of the last tier so far.
    pub repeats: u32,
    /// When the last notice went out.
    pub last_sent_ms: Millis,
}

/// A notice to send: tier index (0-based) and which repeat of it (0 = the first time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub tier: usize,
    pub repeat: u32,
    pub contacts: Vec<String>,
}

impl Progress {
    pub fn start(raised_ms: Millis) -> Progress {
        Progress {
            raised_ms,
            next_tier: 0,
            repeats: 0,
            last_sent_ms: raised_ms,
        }
    }

    /// Everything due at `now`, advancing the progress. Tiers that fell due while nobody was
    /// looking (a restart) all go out now, since each names other people; repeats do not
    /// pile up: at most one is sent, and the next counts from now.
    pub fn advance(&mut self, plan: &ChainPlan, now: Millis) -> Vec<Notice> {
        let mut out = Vec::new();
        while let Some((contacts, after)) = plan.tiers.get(self.next_tier) {
            let at = self.raised_ms + after;
            if at > now {
                return out;
            }
            out.push(Notice {
                tier: self.next_tier,
                repeat: 0,
                contacts: contacts.clone(),
            });
            self.next_tier += 1;
            self.last_sent_ms = now;
        }
        if plan.repeat_ms > 0
            && out.is_empty()
            && let Some((contacts, _)) = plan.tiers.last()
            && self.last_sent_ms + plan.repeat_ms <= now
        {
            self.repeats += 1;
            self.last_sent_ms = now;
            out.push(Notice {
                tier: plan.tiers.len() - 1,
                repeat: self.repeats,
                contacts: contacts.clone(),
            });
        }
        out
    }

    /// When [`advance`](Self::advance) will next have something to send; `None`: never.
    pub fn due(&self, plan: &ChainPlan) -> Option<Millis> {
        match plan.tiers.get(self.next_tier) {
            Some((_, after)) => Some(self.raised_ms + after),
            None if plan.repeat_ms > 0 => Some(self.last_sent_ms + plan.repeat_ms),
            None => None,
        }
    }

    /// Everyone told so far (for the "returned to normal" notice), without duplicates.
    pub fn told(&self, plan: &ChainPlan) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (contacts, _) in plan.tiers.iter().take(self.next_tier) {
            for c in contacts {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        out
    }
}

/// What an alarm event means for escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A new alarm: start its chains.
    Start,
    /// Returned to normal before anyone acknowledged: tell who was told, and stop.
    ReturnedUnacked,
    /// Acknowledged, shelved, out of service, finished: stop quietly.
    Stop,
    /// Anything else (still active and unacknowledged): carry on.
    Continue,
}

pub fn effect(transition: &str, state: &str) -> Effect {
    match (transition, state) {
        ("raised", _) => Effect::Start,
        (_, "returned_unacked") => Effect::ReturnedUnacked,
        (_, "active_unacked") => Effect::Continue,
        _ => Effect::Stop,
    }
}

/// Whether a chain covers an alarm: by the point's tag, or by its area.
pub fn covers(
    r: &Responsibility,
    units: &[RiskUnitSettings],
    point: &str,
    area: &str,
    priority: Priority,
) -> bool {
    priority >= r.min_priority && covers_place(r, units, point, area)
}

/// Whether a chain covers a tag (or device or condition name) and area, whatever the priority.
pub fn covers_place(
    r: &Responsibility,
    units: &[RiskUnitSettings],
    point: &str,
    area: &str,
) -> bool {
    let in_area = |areas: &[String]| !area.is_empty() && areas.iter().any(|a| a == area);
    r.points.iter().any(|p| p == point)
        || in_area(&r.areas)
        || units
            .iter()
            .filter(|u| r.risk_units.contains(&u.id))
            .any(|u| {
                u.points
                    .iter()
                    .chain(&u.devices)
                    .chain(&u.conditions)
                    .any(|p| p == point)
                    || in_area(&u.areas)
            })
}

// ----------------------------------------------------------------- the envelope ---

/// One e-mail notice as queued in the outbox: everything the sender needs to write it, so
/// that a message sent after a restart says what it would have said before.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// `alarm`, `repeat` or `returned`.
    pub notice: String,
    /// 1-based, as people count tiers.
    pub tier: usize,
    pub repeat: u32,
    pub role: String,
    pub chain: String,
    pub contact: String,
    pub to: String,
    pub name: String,
    pub language: Language,
    pub site_name: String,
    pub point_name: String,
    pub risk_colour: String,
    pub instruction: Option<String>,
    pub ack_url: Option<String>,
    pub link_expires: Option<String>,
    /// Set for notices that may be grouped: those of one contact with the same key go out
    /// together as one message (see `Responsibility::group_wait_secs`).
    #[serde(default)]
    pub group: Option<String>,
    /// The alarm event JSON (docs/api.md) the notice is about.
    pub event: Value,
}

/// What the router needs besides the store.
pub struct RouterSetup {
    pub config: Arc<Config>,
    pub data_dir: PathBuf,
    /// Wakes the router (the store writer notifies it after each commit).
    pub wake: Arc<Notify>,
    /// Wakes the e-mail sender when notices were queued.
    pub email_wake: Option<Arc<Notify>>,
    /// Wakes the ticket webhook's sender when a ticket was opened by an alarm.
    pub ticket_wake: Option<Arc<Notify>>,
    pub link_secret: Arc<Vec<u8>>,
    pub metrics: Arc<Metrics>,
}

pub struct Router {
    setup: RouterSetup,
    chains: Vec<(Responsibility, ChainPlan)>,
    contacts: HashMap<String, Contact>,
}

impl Router {
    pub fn new(setup: RouterSetup) -> Router {
        let chains = setup
            .config
            .responsibility
            .iter()
            .map(|r| (r.clone(), ChainPlan::from_config(r)))
            .collect();
        let contacts = setup
            .config
            .contacts
            .iter()
            .map(|c| (c.name.clone(), c.clone()))
            .collect();
        Router {
            setup,
            chains,
            contacts,
        }
    }

    /// Route until `shutdown`. Work is done in short blocking transactions on its own connection.
    pub async fn run(self, shutdown: CancellationToken) {
        let conn = match crate::store::open_reader(&self.setup.data_dir) {
            Ok(c) => c,
            Err(error) => {
                tracing::error!(%error, "The escalation router could not open the store; alarms are not escalated.");
                return;
            }
        };
        let this = Arc::new(self);
        let conn = Arc::new(std::sync::Mutex::new(conn));
        loop {
            let (router, c) = (Arc::clone(&this), Arc::clone(&conn));
            let step = tokio::task::spawn_blocking(move || {
                let mut conn = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                router.step(&mut conn, now_millis())
            })
            .await;
            let next_due = match step {
                Ok(Ok(step)) => {
                    if step.mails > 0
                        && let Some(w) = &this.setup.email_wake
                    {
                        w.notify_one();
                    }
                    if step.tickets > 0
                        && let Some(w) = &this.setup.ticket_wake
                    {
                        w.notify_one();
                    }
                    if step.more {
                        continue;
                    }
                    step.next_due
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "Escalation step failed; retrying.");
                    Some(now_millis() + 1000)
                }
                Err(error) => {
                    tracing::error!(%error, "Escalation step panicked; retrying.");
                    Some(now_millis() + 1000)
                }
            };
            let wait = next_due.map_or(Duration::from_secs(30), |due| {
                Duration::from_millis((due - now_millis()).clamp(0, 30_000) as u64)
            });
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = this.setup.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass: route up to a batch of queued events, then send what timers made due.
    fn step(&self, conn: &mut Connection, now: Millis) -> rusqlite::Result<Step> {
        let mut step = Step::default();
        let events: Vec<(i64, String)> = {
            let mut stmt = conn.prepare_cached(
                "SELECT id, body FROM outbox WHERE channel = ?1 AND delivered_ms IS NULL ORDER BY id LIMIT 64",
            )?;
            stmt.query_map(params![CHANNEL], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        step.more = events.len() == 64;
        for (row, body) in events {
            let tx = conn.transaction()?;
            match serde_json::from_str::<Value>(&body) {
                Ok(event) => self.route(&tx, &event, now, &mut step)?,
                Err(error) => {
                    tracing::error!(%error, "An event in the escalation queue is not JSON; skipped.")
                }
            }
            tx.execute(
                "UPDATE outbox SET delivered_ms = ?2, attempts = attempts + 1 WHERE id = ?1",
                params![row, now],
            )?;
            tx.commit()?;
            self.setup.metrics.deliveries.inc(CHANNEL, "routed");
        }
        // Timers.
        let tx = conn.transaction()?;
        let due: Vec<(i64, String, Progress, String)> = {
            let mut stmt = tx.prepare_cached(
                "SELECT alarm_id, chain, raised_ms, next_tier, repeats, last_sent_ms, event FROM escalations
                 WHERE due_ms IS NOT NULL AND due_ms <= ?1",
            )?;
            stmt.query_map(params![now], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    Progress {
                        raised_ms: r.get(2)?,
                        next_tier: r.get::<_, i64>(3)? as usize,
                        repeats: r.get(4)?,
                        last_sent_ms: r.get(5)?,
                    },
                    r.get(6)?,
                ))
            })?
            .collect::<Result<_, _>>()?
        };
        for (alarm_id, chain, mut progress, event) in due {
            let Some((r, plan)) = self.chains.iter().find(|(r, _)| r.name == chain) else {
                // The chain left the configuration: nobody to tell any more.
                tx.execute(
                    "DELETE FROM escalations WHERE alarm_id = ?1 AND chain = ?2",
                    params![alarm_id, chain],
                )?;
                continue;
            };
            let event: Value = serde_json::from_str(&event).unwrap_or(Value::Null);
            let notices = progress.advance(plan, now);
            for n in &notices {
                step.mails += self.queue_notice(&tx, r, n, &event, now)?;
            }
            save(&tx, alarm_id, &chain, &progress, progress.due(plan), None)?;
        }
        step.next_due = tx.query_row("SELECT MIN(due_ms) FROM escalations", [], |r| {
            r.get::<_, Option<i64>>(0)
        })?;
        tx.commit()?;
        Ok(step)
    }

    fn route(
        &self,
        tx: &Transaction<'_>,
        event: &Value,
        now: Millis,
        step: &mut Step,
    ) -> rusqlite::Result<()> {
        let s = |k: &str| event[k].as_str().unwrap_or_default();
        let Some(alarm_id) = event["alarm_id"].as_i64() else {
            return Ok(());
        };
        let priority = parse_priority(s("priority"));
        match effect(s("transition"), s("state")) {
            Effect::Start => {
                for (r, plan) in &self.chains {
                    if !covers(
                        r,
                        &self.setup.config.risk_units,
                        s("point"),
                        s("area"),
                        priority,
                    ) {
                        continue;
                    }
                    let raised = parse_ms(s("raised_at")).unwrap_or(now);
                    let mut progress = Progress::start(raised);
                    // Tell the tiers already due; the rest wait for their timers.
                    for n in progress.advance(plan, now.max(raised)) {
                        step.mails += self.queue_notice(tx, r, &n, event, now)?;
                    }
                    let body = event.to_string();
                    save(
                        tx,
                        alarm_id,
                        &r.name,
                        &progress,
                        progress.due(plan),
                        Some(&body),
                    )?;
                    tracing::info!(alarm_id, chain = %r.name, "Escalation started.");
                }
                if self
                    .setup
                    .config
                    .tickets
                    .open_for_priorities
                    .contains(&priority)
                {
                    step.tickets +=
                        crate::tickets::store::open_for_alarm(tx, &self.setup.config, event, now)?;
                }
            }
            Effect::ReturnedUnacked => {
                for (r, plan) in &self.chains {
                    let Some(progress) = load(tx, alarm_id, &r.name)? else {
                        continue;
                    };
                    for contact in progress.told(plan) {
                        step.mails +=
                            self.queue_mail(tx, r, "returned", 0, 0, &contact, event, now)?;
                    }
                }
                tx.execute(
                    "DELETE FROM escalations WHERE alarm_id = ?1",
                    params![alarm_id],
                )?;
            }
            Effect::Stop => {
                let n = tx.execute(
                    "DELETE FROM escalations WHERE alarm_id = ?1",
                    params![alarm_id],
                )?;
                if n > 0 {
                    tracing::info!(
                        alarm_id,
                        transition = s("transition"),
                        "Escalation stopped."
                    );
                }
            }
            Effect::Continue => {}
        }
        Ok(())
    }

    fn queue_notice(
        &self,
        tx: &Transaction<'_>,
        r: &Responsibility,
        n: &Notice,
        event: &Value,
        now: Millis,
    ) -> rusqlite::Result<usize> {
        let kind = if n.repeat > 0 { "repeat" } else { "alarm" };
        let mut queued = 0;
        for contact in &n.contacts {
            queued += self.queue_mail(tx, r, kind, n.tier, n.repeat, contact, event, now)?;
        }
        tracing::info!(alarm_id = event["alarm_id"].as_i64().unwrap_or(0), chain = %r.name, tier = n.tier + 1, repeat = n.repeat, contacts = n.contacts.len(), "Escalation tier notified.");
        Ok(queued)
    }

    /// One e-mail notice into the outbox; 0 when the contact has no address or e-mail is off.
    #[allow(clippy::too_many_arguments)]
    fn queue_mail(
        &self,
        tx: &Transaction<'_>,
        r: &Responsibility,
        notice: &str,
        tier: usize,
        repeat: u32,
        contact: &str,
        event: &Value,
        now: Millis,
    ) -> rusqlite::Result<usize> {
        let config = &self.setup.config;
        let (Some(email), Some(c)) = (&config.notify.email, self.contacts.get(contact)) else {
            return Ok(0);
        };
        let Some(to) = &c.email else { return Ok(0) };
        let event_id = event["id"].as_str().unwrap_or("?");
        let id = match notice {
            "returned" => format!("{event_id}-rtn-{contact}"),
            _ if repeat > 0 => format!("{event_id}-t{}r{repeat}-{contact}", tier + 1),
            _ => format!("{event_id}-t{}-{contact}", tier + 1),
        };
        let alarm_id = event["alarm_id"].as_u64().unwrap_or(0);
        let (ack_url, link_expires) = match &config.notify.public_url {
            Some(base) => {
                let expires =
                    now / 1000 + crate::config::to_ms(config.security.link_ttl_secs, 1000) / 1000;
                let token = super::signing::ack_token(
                    &self.setup.link_secret,
                    &super::signing::AckClaim {
                        alarm_id,
                        contact: contact.to_owned(),
                        expires_secs: expires,
                    },
                );
                (
                    Some(format!("{}/ack/{token}", base.trim_end_matches('/'))),
                    Some(crate::event::rfc3339(expires * 1000)),
                )
            }
            None => (None, None),
        };
        let point = event["point"].as_str().unwrap_or_default();
        let point = config.points.iter().find(|p| p.tag == point);
        let point_name = point.map(|p| p.name.clone()).unwrap_or_default();
        let language = c.language.unwrap_or(email.language);
        let instruction = instruction(
            point.and_then(|p| p.extra().instruction.as_deref()),
            r.instruction.as_deref(),
            language,
        );
        let envelope = Envelope {
            notice: notice.to_owned(),
            tier: tier + 1,
            repeat,
            role: r
                .tiers
                .get(tier)
                .map(|t| t.role.clone())
                .unwrap_or_default(),
            chain: r.name.clone(),
            contact: contact.to_owned(),
            to: to.clone(),
            name: c.display().to_owned(),
            language,
            site_name: config.site.name.clone(),
            point_name,
            risk_colour: risk_colour(
                config.site.risk_colour,
                event["priority"].as_str().unwrap_or(""),
            ),
            instruction,
            ack_url,
            link_expires,
            group: None,
            event: event.clone(),
        };
        let mut envelope = envelope;
        // Grouping and quiet hours may hold a notice back, never one of a safety alarm.
        let mut hold_until: Millis = 0;
        if deferrable(event) {
            if r.group_wait_secs > 0 {
                envelope.group = Some(r.name.clone());
                hold_until = now + (r.group_wait_secs as Millis).saturating_mul(1000);
            }
            if let Some(until) = c
                .quiet_hours
                .as_deref()
                .and_then(crate::config::parse_quiet_hours)
                .and_then(|w| crate::config::quiet_until(w, email.utc_offset_mins, now))
            {
                hold_until = hold_until.max(until);
            }
        }
        let body = serde_json::to_string(&envelope).unwrap_or_default();
        let n = tx.execute(
            "INSERT OR IGNORE INTO outbox (channel, event_id, body, created_ms, next_attempt_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![EMAIL_CHANNEL, id, body, now, hold_until],
        )?;
        Ok(n)
    }
}

#[derive(Debug, Default)]
struct Step {
    mails: usize,
    tickets: usize,
    /// More queued events than one pass takes.
    more: bool,
    next_due: Option<Millis>,
}

fn save(
    tx: &Transaction<'_>,
    alarm_id: i64,
    chain: &str,
    p: &Progress,
    due: Option<Millis>,
    event: Option<&str>,
) -> rusqlite::Result<()> {
    match event {
        Some(event) => tx.execute(
            "INSERT INTO escalations (alarm_id, chain, raised_ms, next_tier, repeats, last_sent_ms, due_ms, event)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (alarm_id, chain) DO NOTHING",
            params![alarm_id, chain, p.raised_ms, p.next_tier as i64, p.repeats, p.last_sent_ms, due, event],
        )?,
        None => tx.execute(
            "UPDATE escalations SET next_tier = ?3, repeats = ?4, last_sent_ms = ?5, due_ms = ?6
             WHERE alarm_id = ?1 AND chain = ?2",
            params![alarm_id, chain, p.next_tier as i64, p.repeats, p.last_sent_ms, due],
        )?,
    };
    Ok(())
}

fn load(tx: &Transaction<'_>, alarm_id: i64, chain: &str) -> rusqlite::Result<Option<Progress>> {
    tx.query_row(
        "SELECT raised_ms, next_tier, repeats, last_sent_ms FROM escalations WHERE alarm_id = ?1 AND chain = ?2",
        params![alarm_id, chain],
        |r| {
            Ok(Progress {
                raised_ms: r.get(0)?,
                next_tier: r.get::<_, i64>(1)? as usize,
                repeats: r.get(2)?,
                last_sent_ms: r.get(3)?,
            })
        },
    )
    .optional()
}

/// E-mail the people above the first tier of every chain that covers an overdue ticket (by its
/// point or area): overdue rectification is escalated, not just recorded. Returns mails queued.
pub fn queue_ticket_overdue(
    tx: &Transaction<'_>,
    config: &Config,
    ticket: &crate::tickets::store::Ticket,
    now: Millis,
) -> rusqlite::Result<usize> {
    let Some(email) = &config.notify.email else {
        return Ok(0);
    };
    let point = ticket.point.as_deref().unwrap_or_default();
    let area = ticket.area.as_deref().unwrap_or_default();
    let event = serde_json::to_value(ticket).unwrap_or(Value::Null);
    let mut told: Vec<&str> = Vec::new();
    let mut queued = 0;
    for r in &config.responsibility {
        if !covers_place(r, &config.risk_units, point, area) {
            continue;
        }
        let from = usize::from(r.tiers.len() > 1);
        for (i, tier) in r.tiers.iter().enumerate().skip(from) {
            for name in &tier.contacts {
                let Some(c) = config.contacts.iter().find(|c| &c.name == name) else {
                    continue;
                };
                let Some(to) = &c.email else { continue };
                if told.contains(&name.as_str()) {
                    continue;
                }
                told.push(name);
                let envelope = Envelope {
                    notice: "ticket_overdue".into(),
                    tier: i + 1,
                    repeat: 0,
                    role: tier.role.clone(),
                    chain: r.name.clone(),
                    contact: name.clone(),
                    to: to.clone(),
                    name: c.display().to_owned(),
                    language: c.language.unwrap_or(email.language),
                    site_name: config.site.name.clone(),
                    point_name: String::new(),
                    risk_colour: String::new(),
                    instruction: None,
                    ack_url: None,
                    link_expires: None,
                    group: None,
                    event: event.clone(),
                };
                let id = format!(
                    "{}-ticket-{}-overdue-{}-{name}",
                    config.site.id, ticket.ticket_id, ticket.state
                );
                queued += tx.execute(
                    "INSERT OR IGNORE INTO outbox (channel, event_id, body, created_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![EMAIL_CHANNEL, id, serde_json::to_string(&envelope).unwrap_or_default(), now],
                )?;
            }
        }
    }
    Ok(queued)
}

/// Whether grouping and quiet hours may hold back an alarm's notices: not for high or critical
/// priority, and not for second-level (HH, LL) alarms such as 二级 gas alarms.
pub fn deferrable(event: &Value) -> bool {
    let priority = parse_priority(event["priority"].as_str().unwrap_or_default());
    let second_level = matches!(event["level"].as_str(), Some("HH" | "LL"));
    priority < Priority::High && !second_level
}

pub fn parse_priority(s: &str) -> Priority {
    match s {
        "critical" => Priority::Critical,
        "high" => Priority::High,
        "medium" => Priority::Medium,
        _ => Priority::Low,
    }
}

/// RFC 3339 (as in the event JSON) to milliseconds.
pub fn parse_ms(s: &str) -> Option<Millis> {
    let t = humantime::parse_rfc3339(s).ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as Millis)
}

/// What a notice tells people to do: the point's own instruction (the most specific), then the
/// chain's, each once.
fn instruction(
    point: Option<&str>,
    chain: Option<&str>,
    language: crate::config::Language,
) -> Option<String> {
    let separator = match language {
        crate::config::Language::Zh => "；",
        crate::config::Language::En => "; ",
    };
    match (point, chain) {
        (Some(p), Some(c)) if p != c => Some(format!("{p}{separator}{c}")),
        (Some(one), _) | (None, Some(one)) => Some(one.to_owned()),
        (None, None) => None,
    }
}

/// The colour people see: the worse of the site's assessed colour and the alarm's priority.
pub fn risk_colour(site: crate::config::RiskColour, priority: &str) -> String {
    use crate::config::RiskColour;
    let by_priority = match priority {
        "critical" => RiskColour::Red,
        "high" => RiskColour::Orange,
        "medium" => RiskColour::Yellow,
        _ => RiskColour::Blue,
    };
    serde_json::to_value(site.max(by_priority))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_points_instruction_comes_first_then_the_chains() {
        use crate::config::Language::{En, Zh};
        let both = instruction(Some("关闭V-12阀门"), Some("撤离无关人员"), Zh);
        assert_eq!(both.as_deref(), Some("关闭V-12阀门；撤离无关人员"));
        let both = instruction(Some("Close V-12"), Some("Evacuate"), En);
        assert_eq!(both.as_deref(), Some("Close V-12; Evacuate"));
        assert_eq!(instruction(Some("a"), Some("a"), Zh).as_deref(), Some("a"));
        assert_eq!(instruction(Some("a"), None, Zh).as_deref(), Some("a"));
        assert_eq!(instruction(None, Some("b"), En).as_deref(), Some("b"));
        assert_eq!(instruction(None, None, En), None);
    }

    fn plan(repeat_ms: Millis) -> ChainPlan {
        ChainPlan {
            tiers: vec![
                (vec!["op".into()], 0),
                (vec!["tech".into()], 60_000),
                (vec!["main".into(), "op".into()], 180_000),
            ],
            repeat_ms,
        }
    }

    #[test]
    fn tiers_go_out_in_order_at_their_times() {
        let plan = plan(0);
        let mut p = Progress::start(1_000);
        let first = p.advance(&plan, 1_000);
        assert_eq!(
            first,
            vec![Notice {
                tier: 0,
                repeat: 0,
                contacts: vec!["op".into()]
            }]
        );
        assert_eq!(p.due(&plan), Some(61_000));
        assert!(p.advance(&plan, 60_999).is_empty(), "not before its time");
        assert_eq!(p.advance(&plan, 61_000)[0].tier, 1);
        assert!(p.advance(&plan, 100_000).is_empty());
        assert_eq!(p.advance(&plan, 181_000)[0].tier, 2);
        assert_eq!(p.due(&plan), None, "no repeat configured");
        assert!(p.advance(&plan, 10_000_000).is_empty());
        assert_eq!(
            p.told(&plan),
            vec!["op".to_owned(), "tech".into(), "main".into()]
        );
    }

    #[test]
    fn missed_tiers_all_go_out_and_repeats_do_not_pile_up() {
        let plan = plan(30_000);
        let mut p = Progress::start(0);
        p.advance(&plan, 0);
        // Down for ten minutes: both remaining tiers at once, no repeat in the same pass.
        let caught_up = p.advance(&plan, 600_000);
        assert_eq!(
            caught_up.iter().map(|n| n.tier).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(p.due(&plan), Some(630_000));
        assert!(p.advance(&plan, 629_999).is_empty());
        let r1 = p.advance(&plan, 700_000);
        assert_eq!(
            r1,
            vec![Notice {
                tier: 2,
                repeat: 1,
                contacts: vec!["main".into(), "op".into()]
            }]
        );
        assert_eq!(
            p.due(&plan),
            Some(730_000),
            "the next repeat counts from the last one sent"
        );
        assert_eq!(p.advance(&plan, 730_000)[0].repeat, 2);
    }

    #[test]
    fn a_restart_resumes_without_repeating_a_tier() {
        let plan = plan(0);
        let mut p = Progress::start(0);
        p.advance(&plan, 0);
        p.advance(&plan, 60_000);
        // What the table holds is all there is after a restart.
        let mut resumed = Progress { ..p };
        assert!(resumed.advance(&plan, 60_001).is_empty());
        assert_eq!(resumed.advance(&plan, 180_000)[0].tier, 2);
    }

    #[test]
    fn effects_of_transitions() {
        assert_eq!(effect("raised", "active_unacked"), Effect::Start);
        assert_eq!(effect("acknowledged", "active_acked"), Effect::Stop);
        assert_eq!(
            effect("cleared", "returned_unacked"),
            Effect::ReturnedUnacked
        );
        assert_eq!(effect("cleared", "normal"), Effect::Stop);
        assert_eq!(effect("shelved", "shelved"), Effect::Stop);
        assert_eq!(
            effect("priority_changed", "active_unacked"),
            Effect::Continue
        );
    }

    #[test]
    fn chains_cover_points_areas_and_risk_units() {
        let cfg = crate::config::load_str(
            r#"
[site]
id = "s"
name = "S"

[[devices]]
name = "plc"
protocol = "modbus_tcp"
host = "127.0.0.1"

[[points]]
tag = "NH3-1"
device = "plc"
kind = "toxic_gas"
area = "room"
register = { table = "input", address = 0 }

[[risk_units]]
id = "ammonia"
name = "Ammonia system"
colour = "orange"
areas = ["room"]
devices = ["plc"]

[[contacts]]
name = "a"

[[responsibility]]
name = "by-unit"
risk_units = ["ammonia"]
min_priority = "medium"
tiers = [{ contacts = ["a"] }]
"#,
            crate::config::EnvSource::Map(Default::default()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = &cfg.responsibility[0];
        let units = &cfg.risk_units;
        assert!(
            covers(r, units, "NH3-1", "room", Priority::High),
            "by the unit's area"
        );
        assert!(
            covers(r, units, "plc", "", Priority::High),
            "a device alarm of the unit"
        );
        assert!(
            !covers(r, units, "NH3-1", "room", Priority::Low),
            "below min_priority"
        );
        assert!(!covers(r, units, "TT-9", "yard", Priority::Critical));
    }

    #[test]
    fn safety_alarms_are_never_deferred() {
        use serde_json::json;
        assert!(deferrable(&json!({"priority": "medium", "level": "H"})));
        assert!(deferrable(&json!({"priority": "low", "kind": "comm_loss"})));
        assert!(!deferrable(&json!({"priority": "high", "level": "H"})));
        assert!(!deferrable(&json!({"priority": "critical"})));
        assert!(
            !deferrable(&json!({"priority": "medium", "level": "HH"})),
            "second-level alarms"
        );
        assert!(!deferrable(&json!({"priority": "low", "level": "LL"})));
    }

    #[test]
    fn colour_is_the_worse_of_site_and_priority() {
        use crate::config::RiskColour;
        assert_eq!(risk_colour(RiskColour::Blue, "critical"), "red");
        assert_eq!(risk_colour(RiskColour::Orange, "low"), "orange");
        assert_eq!(parse_ms("1970-01-01T00:00:01.500Z"), Some(1500));
    }
}

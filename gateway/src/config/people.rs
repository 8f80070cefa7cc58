//! The people side of the configuration: who is told about alarms and how (e-mail, contacts,
//! responsibility chains), hazard tickets, and API tokens. Documented in
//! `docs/configuration.md` and `docs/notifications.md`.

use alert_rules::Priority;
use serde::Deserialize;

use super::model::Secret;

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (port 587); refuses servers without it.
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

/// Which language a message is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    Zh,
    En,
}

/// The e-mail channel: one SMTP server; recipients come from the responsibility chains.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailNotify {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "default_smtp_tls")]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    /// Best given as `SENTINEL__NOTIFY__EMAIL__PASSWORD`. Never logged.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender, e.g. `Sentinel <sentinel@example.com>`.
    pub from: String,
    /// Language of contacts that name none.
    #[serde(default = "default_language")]
    pub language: Language,
    /// One SMTP conversation is abandoned (and retried) after this long.
    #[serde(default = "default_smtp_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest wait between two delivery attempts.
    #[serde(default = "default_backoff_secs")]
    pub max_backoff_secs: u64,
    /// The local time of contacts' `quiet_hours`, as minutes east of UTC (China: 480).
    #[serde(default = "default_utc_offset_mins")]
    pub utc_offset_mins: i32,
}

const fn default_utc_offset_mins() -> i32 {
    480
}

/// Quiet hours as minutes of the local day: `(start, end)`; the window may wrap midnight.
pub fn parse_quiet_hours(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    let minutes = |t: &str| {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (start, end) = (minutes(a)?, minutes(b)?);
    (start != end).then_some((start, end))
}

/// When the quiet window around `now_ms` ends (ms), or `None` when `now_ms` is outside it.
pub fn quiet_until(window: (u32, u32), utc_offset_mins: i32, now_ms: i64) -> Option<i64> {
    const DAY: i64 = 86_400_000;
    let local = now_ms + i64::from(utc_offset_mins) * 60_000;
    let day_start = local.div_euclid(DAY) * DAY;
    let minute = (local - day_start) / 60_000;
    let (start, end) = (i64::from(window.0), i64::from(window.1));
    let inside = if start < end {
        minute >= start && minute < end
    } else {
        minute >= start || minute < end
    };
    if !inside {
        return None;
    }
    let mut end_local = day_start + end * 60_000;
    if end_local <= local {
        end_local += DAY;
    }
    Some(end_local - i64::from(utc_offset_mins) * 60_000)
}

const fn default_smtp_port() -> u16 {
    587
}
const fn default_smtp_tls() -> SmtpTls {
    SmtpTls::Starttls
}
const fn default_language() -> Language {
    Language::Zh
}
const fn default_smtp_timeout_ms() -> u64 {
    10_000
}
const fn default_backoff_secs() -> u64 {
    60
}

/// A person who may be told about alarms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Unique, short (lowercase letters, digits, `-`, `_`): chains and links name it.
    pub name: String,
    /// How the person is addressed, e.g. `王工`.
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Default: `notify.email.language`.
    #[serde(default)]
    pub language: Option<Language>,
    /// `HH:MM-HH:MM` local time (`notify.email.utc_offset_mins`), e.g. `22:00-07:00`: notices
    /// of low and medium alarms wait until it ends. Never applies to high or critical alarms.
    #[serde(default)]
    pub quiet_hours: Option<String>,
}

impl Contact {
    pub fn display(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.name)
    }
}

/// A responsibility chain (包保责任): who is told, tier by tier, until someone acknowledges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Responsibility {
    /// Unique; names the chain in the escalation table and in messages.
    pub name: String,
    /// Point tags this chain covers.
    #[serde(default)]
    pub points: Vec<String>,
    /// Plant areas this chain covers (every point of the area, and device alarms naming it).
    #[serde(default)]
    pub areas: Vec<String>,
    /// Risk units (`risk_units[].id`) this chain covers: every alarm that counts for the unit
    /// (its points, areas, devices and conditions).
    #[serde(default)]
    pub risk_units: Vec<String>,
    /// Only alarms of at least this priority (default: all).
    #[serde(default = "default_min_priority")]
    pub min_priority: Priority,
    /// What to do, quoted in every message, e.g. `开启事故排风，撤离无关人员`.
    #[serde(default)]
    pub instruction: Option<String>,
    /// In order; the first is told at once (or after its `after_secs`).
    pub tiers: Vec<Tier>,
    /// While unacknowledged, the last tier is told again this often; 0 = once.
    #[serde(default)]
    pub repeat_secs: u64,
    /// Notices of non-safety alarms (below high priority, not a second-level HH/LL alarm) to
    /// one person on this chain are collected this long and sent as one message; 0 = at once.
    #[serde(default)]
    pub group_wait_secs: u64,
}

const fn default_min_priority() -> Priority {
    Priority::Low
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// E.g. `operational` (操作负责人), `technical` (技术负责人), `main` (主要负责人).
    #[serde(default)]
    pub role: String,
    /// `contacts[].name`s.
    pub contacts: Vec<String>,
    /// Seconds after the alarm was raised; non-decreasing along the chain.
    #[serde(default)]
    pub after_secs: u64,
}

/// Hazard tickets (隐患闭环).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tickets {
    /// A `notify.webhook` name: every ticket change is POSTed there (through its outbox).
    #[serde(default)]
    pub webhook: Option<String>,
    /// Alarms of these priorities open a ticket by themselves when raised.
    #[serde(default)]
    pub open_for_priorities: Vec<Priority>,
    /// How often deadlines are checked; an overdue ticket is announced once per state.
    #[serde(default = "default_overdue_check_secs")]
    pub overdue_check_secs: u64,
}

impl Default for Tickets {
    fn default() -> Self {
        Tickets {
            webhook: None,
            open_for_priorities: Vec::new(),
            overdue_check_secs: default_overdue_check_secs(),
        }
    }
}

const fn default_overdue_check_secs() -> u64 {
    60
}

/// A role an API token grants; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Bearer tokens of the API.
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
    /// Key that signs acknowledge links; best given as `SENTINEL__SECURITY__LINK_SECRET`.
    /// When unset a random key is made once and kept in the store, so links survive restarts.
    #[serde(default)]
    pub link_secret: Option<Secret>,
    /// An acknowledge link works this long after it was sent.
    #[serde(default = "default_link_ttl_secs")]
    pub link_ttl_secs: u64,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            tokens: Vec::new(),
            link_secret: None,
            link_ttl_secs: default_link_ttl_secs(),
        }
    }
}

const fn default_link_ttl_secs() -> u64 {
    24 * 3600
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Who the token belongs to: recorded as `by` of what it does.
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token (so the file holds no secret): `printf %s TOKEN | sha256sum`.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The token itself (then best given by environment, see docs/api.md); `sha256` is
    /// preferred in the file, so that the file holds no secret.
    #[serde(default)]
    pub token: Option<Secret>,
}

/// Checks across these sections: names resolve, chains are ordered, tokens are well formed.
pub(super) fn check(config: &super::Config, errors: &mut Vec<super::ConfigError>) {
    use std::collections::HashSet;

    use super::load::err;

    let short = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    };
    if let Some(email) = &config.notify.email {
        let at = |f: &str| format!("notify.email.{f}");
        if email.host.trim().is_empty() {
            errors.push(err(at("host"), "must not be empty"));
        }
        if email.from.parse::<lettre::message::Mailbox>().is_err() {
            errors.push(err(
                at("from"),
                format!(
                    "{:?} is not an address such as Sentinel <sentinel@example.com>",
                    email.from
                ),
            ));
        }
        if email.password.is_some() && email.username.is_none() {
            errors.push(err(at("username"), "a password needs a username"));
        }
        if !(1..=300_000).contains(&email.timeout_ms) {
            errors.push(err(at("timeout_ms"), "must be within 1..=300000"));
        }
        if email.max_backoff_secs == 0 {
            errors.push(err(at("max_backoff_secs"), "must be at least 1"));
        }
    }
    if let Some(url) = &config.notify.public_url {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => errors.push(err(
                "notify.public_url",
                format!("{url:?} is not an http(s) URL"),
            )),
        }
    }
    let mut contacts = HashSet::new();
    for (i, c) in config.contacts.iter().enumerate() {
        if !short(&c.name) {
            errors.push(err(
                format!("contacts[{i}].name"),
                "must use only lowercase letters, digits, '-' and '_'",
            ));
        } else if !contacts.insert(c.name.as_str()) {
            errors.push(err(
                format!("contacts[{i}].name"),
                format!("another contact is named {:?}", c.name),
            ));
        }
        if let Some(q) = &c.quiet_hours
            && parse_quiet_hours(q).is_none()
        {
            errors.push(err(
                format!("contacts[{i}].quiet_hours"),
                format!("{q:?} is not a window such as 22:00-07:00"),
            ));
        }
        if let Some(addr) = &c.email
            && addr.parse::<lettre::Address>().is_err()
        {
            errors.push(err(
                format!("contacts[{i}].email"),
                format!("{addr:?} is not an e-mail address"),
            ));
        }
    }
    let tags: HashSet<&str> = config.points.iter().map(|p| p.tag.as_str()).collect();
    let mut chains = HashSet::new();
    for (i, r) in config.responsibility.iter().enumerate() {
        let at = |f: &str| format!("responsibility[{i}].{f}");
        if !short(&r.name) {
            errors.push(err(
                at("name"),
                "must use only lowercase letters, digits, '-' and '_'",
            ));
        } else if !chains.insert(r.name.as_str()) {
            errors.push(err(
                at("name"),
                format!("another chain is named {:?}", r.name),
            ));
        }
        for (j, unit) in r.risk_units.iter().enumerate() {
            if !config.risk_units.iter().any(|u| &u.id == unit) {
                errors.push(err(
                    at(&format!("risk_units[{j}]")),
                    format!("no risk unit has id {unit:?}"),
                ));
            }
        }
        if r.points.is_empty() && r.areas.is_empty() && r.risk_units.is_empty() {
            errors.push(err(
                at("points"),
                "the chain covers nothing: name points, areas or risk_units",
            ));
        }
        for (j, tag) in r.points.iter().enumerate() {
            if !tags.contains(tag.as_str()) {
                errors.push(err(
                    at(&format!("points[{j}]")),
                    format!("no point has tag {tag:?}"),
                ));
            }
        }
        if r.tiers.is_empty() {
            errors.push(err(at("tiers"), "must have at least one tier"));
        }
        let mut previous = 0;
        for (j, tier) in r.tiers.iter().enumerate() {
            if tier.contacts.is_empty() {
                errors.push(err(
                    at(&format!("tiers[{j}].contacts")),
                    "must name at least one contact",
                ));
            }
            for name in &tier.contacts {
                if !config.contacts.iter().any(|c| &c.name == name) {
                    errors.push(err(
                        at(&format!("tiers[{j}].contacts")),
                        format!("no contact is named {name:?}"),
                    ));
                }
            }
            if tier.after_secs < previous {
                errors.push(err(
                    at(&format!("tiers[{j}].after_secs")),
                    format!(
                        "{} is before the previous tier's {previous}: tiers are in order",
                        tier.after_secs
                    ),
                ));
            }
            previous = tier.after_secs;
        }
    }
    if let Some(hook) = &config.tickets.webhook
        && !config.notify.webhook.iter().any(|w| &w.name == hook)
    {
        errors.push(err(
            "tickets.webhook",
            format!("no notify.webhook is named {hook:?}"),
        ));
    }
    if config.tickets.overdue_check_secs == 0 {
        errors.push(err("tickets.overdue_check_secs", "must be at least 1"));
    }
    for (i, t) in config.security.tokens.iter().enumerate() {
        let at = |f: &str| format!("security.tokens[{i}].{f}");
        match (&t.sha256, &t.token) {
            (Some(h), None) => {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    errors.push(err(
                        at("sha256"),
                        "must be 64 hex digits (printf %s TOKEN | sha256sum)",
                    ));
                }
            }
            (None, Some(tok)) => {
                if tok.expose().len() < 16 {
                    errors.push(err(at("token"), "must be at least 16 characters"));
                }
            }
            _ => errors.push(err(at("sha256"), "give exactly one of sha256 and token")),
        }
    }
    if config.security.link_ttl_secs == 0 {
        errors.push(err("security.link_ttl_secs", "must be at least 1"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hours_wrap_midnight_in_local_time() {
        let w = parse_quiet_hours("22:00-07:00").unwrap_or_else(|| panic!("valid"));
        assert_eq!(w, (1320, 420));
        let h = 3_600_000;
        // 15:00 UTC is 23:00 in UTC+8: quiet until 07:00 local = 23:00 UTC.
        assert_eq!(quiet_until(w, 480, 15 * h), Some(23 * h));
        // 02:00 UTC is 10:00 local: not quiet.
        assert_eq!(quiet_until(w, 480, 2 * h), None);
        // 20:00 UTC is 04:00 local the next day: quiet until 23:00 UTC.
        assert_eq!(quiet_until(w, 480, 20 * h), Some(23 * h));
        assert!(parse_quiet_hours("25:00-07:00").is_none());
        assert!(parse_quiet_hours("07:00-07:00").is_none());
        let day = parse_quiet_hours("12:00-13:00").unwrap_or_else(|| panic!("valid"));
        assert_eq!(quiet_until(day, 0, 12 * h + 1), Some(13 * h));
    }
}

//! A thin adapter over rumqttc's MQTT 3.1.1 and MQTT 5 clients, so that ingest and the alarm
//! publisher are written once. It only translates: options, the events we care about, and
//! the few requests we make. Every setter that rumqttc would panic on is validated first by
//! [`BrokerConfig::errors`] (called from `sentinel check`) and clamped again here.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5;
use serde::Deserialize;

/// One broker connection, as the configuration file describes it (`[devices.broker]`,
/// `[notify.mqtt.broker]`). Documented in docs/configuration.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub host: String,
    /// 1883 (8883 is the usual port with TLS; set it explicitly).
    #[serde(default = "default_port")]
    pub port: u16,
    /// 4 (MQTT 3.1.1) or 5.
    #[serde(default = "default_version")]
    pub mqtt_version: u8,
    /// Must be unique per broker; empty means one is derived from the site and device.
    #[serde(default)]
    pub client_id: String,
    /// `false` keeps the session (subscriptions and QoS 1 messages queued while we are away).
    /// Unset: `false` for ingest, `true` for the publisher (whose queue is the outbox).
    #[serde(default)]
    pub clean_session: Option<bool>,
    /// MQTT 5 only: how long the broker keeps the session after a disconnect.
    #[serde(default = "default_session_expiry_secs")]
    pub session_expiry_secs: u32,
    /// At least 1 (MQTT 3.1.1) or 5 (MQTT 5); rumqttc panics below.
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
    /// Outgoing QoS 1 messages in flight at once; at least 1.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Largest MQTT packet accepted from the broker. A larger one ends the connection, so keep
    /// it above anything the broker accepts (and let `max_payload_bytes` reject big payloads).
    #[serde(default = "default_max_packet_bytes")]
    pub max_packet_bytes: usize,
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Reconnect backoff: starts at half a second, doubles, capped here.
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
    /// Names of environment variables holding the credentials (never the secrets themselves).
    #[serde(default)]
    pub username_env: Option<String>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// TLS with rustls: a CA file (PEM) and optionally a client certificate and key (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca_file: PathBuf,
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

const fn default_port() -> u16 {
    1883
}
const fn default_version() -> u8 {
    4
}
const fn default_session_expiry_secs() -> u32 {
    86_400
}
const fn default_keep_alive_secs() -> u64 {
    30
}
const fn default_inflight() -> u16 {
    100
}
const fn default_max_packet_bytes() -> usize {
    16 * 1024 * 1024
}
const fn default_connect_timeout_secs() -> u64 {
    10
}
const fn default_reconnect_max_secs() -> u64 {
    30
}

impl BrokerConfig {
    /// Everything wrong with these settings, as `(field, message)`; empty when usable.
    pub fn errors(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut e = |f: &str, m: String| out.push((f.to_owned(), m));
        if self.host.trim().is_empty() {
            e("host", "must not be empty".into());
        }
        if self.port == 0 {
            e("port", "must not be 0".into());
        }
        if !matches!(self.mqtt_version, 4 | 5) {
            e(
                "mqtt_version",
                format!("{} is not 4 (MQTT 3.1.1) or 5", self.mqtt_version),
            );
        }
        let min_keep_alive = if self.mqtt_version == 5 { 5 } else { 1 };
        if self.keep_alive_secs < min_keep_alive || self.keep_alive_secs > 65_535 {
            e(
                "keep_alive_secs",
                format!(
                    "must be within {min_keep_alive}..=65535 for MQTT version {}",
                    self.mqtt_version
                ),
            );
        }
        if self.inflight == 0 {
            e("inflight", "must be at least 1".into());
        }
        if self.client_id.len() > 65_535 || self.client_id.starts_with(char::is_whitespace) {
            e(
                "client_id",
                "must not start with whitespace or exceed 65535 bytes".into(),
            );
        }
        // An empty id is replaced by a derived one before use (`client_id_or`), so a persistent
        // session never meets rumqttc's "empty id with clean_session = false" panic.
        if !(1024..=256 * 1024 * 1024).contains(&self.max_packet_bytes) {
            e("max_packet_bytes", "must be within 1024..=268435456".into());
        }
        if !(1..=300).contains(&self.connect_timeout_secs) {
            e("connect_timeout_secs", "must be within 1..=300".into());
        }
        if self.reconnect_max_secs == 0 {
            e("reconnect_max_secs", "must be at least 1".into());
        }
        for (field, var) in [
            ("username_env", &self.username_env),
            ("password_env", &self.password_env),
        ] {
            if let Some(var) = var
                && (var.is_empty() || var.contains('='))
            {
                e(
                    field,
                    format!("{var:?} is not an environment variable name"),
                );
            }
        }
        if self.password_env.is_some() && self.username_env.is_none() {
            e(
                "password_env",
                "needs username_env too (MQTT sends a password only with a username)".into(),
            );
        }
        if let Some(tls) = &self.tls {
            for (field, path) in [
                ("tls.ca_file", Some(&tls.ca_file)),
                ("tls.client_cert_file", tls.client_cert_file.as_ref()),
                ("tls.client_key_file", tls.client_key_file.as_ref()),
            ] {
                if let Some(p) = path
                    && !p.is_file()
                {
                    e(
                        field,
                        format!("{} does not exist or is not a file", p.display()),
                    );
                }
            }
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                e(
                    "tls.client_key_file",
                    "client_cert_file and client_key_file go together".into(),
                );
            }
        }
        out
    }

    /// The client id to use: the configured one, or `fallback` when empty.
    pub fn client_id_or(&self, fallback: &str) -> String {
        if self.client_id.is_empty() {
            fallback.to_owned()
        } else {
            self.client_id.clone()
        }
    }
}

/// A message to leave at the broker in case we vanish (MQTT's Last Will).
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// Why a client could not be built (bad TLS material, missing credentials).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
}

/// Options beyond the file: what each use decides.
#[derive(Debug, Clone)]
pub struct Session {
    pub client_id: String,
    pub clean: bool,
    pub manual_acks: bool,
    pub will: Option<Will>,
    /// Capacity of rumqttc's request queue (subscribe, ack, publish requests).
    pub request_capacity: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

/// A message received from the broker. Keeps the raw packet for the acknowledgement.
#[derive(Debug, Clone)]
pub struct Message {
    /// `None` when the topic is not UTF-8 (MQTT 5 lets a broker send such bytes).
    pub topic: Option<String>,
    raw: RawPublish,
}

impl Message {
    pub fn payload(&self) -> &[u8] {
        match &self.raw {
            RawPublish::V4(p) => &p.payload,
            RawPublish::V5(p) => &p.payload,
        }
    }
}

#[derive(Debug, Clone)]
enum RawPublish {
    V4(rumqttc::Publish),
    V5(v5::mqttbytes::v5::Publish),
}

/// What the event loop reports, reduced to what Sentinel acts on.
#[derive(Debug)]
pub enum Event {
    Connected {
        session_present: bool,
    },
    // Boxed: a message is much larger than the other events.
    Message(Box<Message>),
    /// A publish of ours was written to the network with this packet id (0 for QoS 0).
    Sent(u16),
    /// The broker acknowledged packet `pkid`; `ok` is false for an MQTT 5 failure reason code.
    PubAck {
        pkid: u16,
        ok: bool,
    },
    SubAck {
        ok: bool,
    },
    Other,
}

#[derive(Clone)]
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

pub enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// A client error: the request queue is closed or full.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(String);

/// Build a client and its event loop. Nothing connects until the event loop is polled.
pub fn build(config: &BrokerConfig, session: &Session) -> Result<(Client, EventLoop), BuildError> {
    let credentials = match &config.username_env {
        Some(var) => {
            let user = std::env::var(var).map_err(|_| BuildError::MissingEnv(var.clone()))?;
            let pass = match &config.password_env {
                Some(var) => std::env::var(var).map_err(|_| BuildError::MissingEnv(var.clone()))?,
                None => String::new(),
            };
            Some((user, pass))
        }
        None => None,
    };
    let tls = match &config.tls {
        Some(tls) => Some(rustls_config(tls)?),
        None => None,
    };
    let transport =
        tls.map(|c| rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(Arc::new(c))));
    // Clamp again what validation already rejected, so a bypassed check cannot panic here.
    let keep_alive = Duration::from_secs(config.keep_alive_secs.max(if config.mqtt_version == 5 {
        5
    } else {
        1
    }));
    let clean = session.clean || session.client_id.is_empty();
    let capacity = session.request_capacity.max(1);
    if config.mqtt_version == 5 {
        let mut o =
            v5::MqttOptions::new(session.client_id.clone(), config.host.clone(), config.port);
        o.set_keep_alive(keep_alive)
            .set_clean_start(clean)
            .set_manual_acks(session.manual_acks)
            .set_max_packet_size(Some(
                u32::try_from(config.max_packet_bytes).unwrap_or(u32::MAX),
            ))
            .set_outgoing_inflight_upper_limit(config.inflight.max(1))
            // The broker may then have at most this many unacknowledged messages out to us,
            // which bounds the acknowledgements Sentinel holds (see `mqtt::Ingest::run`).
            .set_receive_maximum(Some(config.inflight.max(1)))
            .set_connection_timeout(config.connect_timeout_secs.max(1));
        if !clean {
            // Without an expiry an MQTT 5 broker drops the session at disconnect.
            o.set_session_expiry_interval(Some(config.session_expiry_secs));
        }
        if let Some((u, p)) = credentials {
            o.set_credentials(u, p);
        }
        if let Some(t) = transport {
            o.set_transport(t);
        }
        if let Some(w) = &session.will {
            o.set_last_will(v5::mqttbytes::v5::LastWill::new(
                w.topic.clone(),
                w.payload.clone(),
                v5::mqttbytes::QoS::AtLeastOnce,
                w.retain,
                None,
            ));
        }
        let (client, eventloop) = v5::AsyncClient::new(o, capacity);
        Ok((Client::V5(client), EventLoop::V5(Box::new(eventloop))))
    } else {
        let mut o =
            rumqttc::MqttOptions::new(session.client_id.clone(), config.host.clone(), config.port);
        o.set_keep_alive(keep_alive)
            .set_clean_session(clean)
            .set_manual_acks(session.manual_acks)
            .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes)
            .set_inflight(config.inflight.max(1));
        if let Some((u, p)) = credentials {
            o.set_credentials(u, p);
        }
        if let Some(t) = transport {
            o.set_transport(t);
        }
        if let Some(w) = &session.will {
            o.set_last_will(rumqttc::LastWill::new(
                w.topic.clone(),
                w.payload.clone(),
                rumqttc::QoS::AtLeastOnce,
                w.retain,
            ));
        }
        let (client, mut eventloop) = rumqttc::AsyncClient::new(o, capacity);
        let mut net = eventloop.network_options();
        net.set_connection_timeout(config.connect_timeout_secs.max(1));
        eventloop.set_network_options(net);
        Ok((Client::V4(client), EventLoop::V4(Box::new(eventloop))))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        path: path.to_owned(),
        source,
    })
}

fn rustls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, BuildError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem_err = |path: &Path, e: rustls::pki_types::pem::Error| BuildError::Pem {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    let ca = read(&tls.ca_file)?;
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.map_err(|e| pem_err(&tls.ca_file, e))?)?;
    }
    if roots.is_empty() {
        return Err(BuildError::Pem {
            path: tls.ca_file.clone(),
            message: "no certificate in the file".into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read(cert)?;
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem_err(cert, e))?;
            let key_der =
                PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| pem_err(key, e))?;
            builder.with_client_auth_cert(chain, key_der)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

impl EventLoop {
    /// The next event. After an error, the next call reconnects (the caller backs off first).
    /// Messages are acknowledged by the caller ([`Client::ack`]) when manual acks are on.
    pub async fn poll(&mut self) -> Result<Event, String> {
        match self {
            EventLoop::V4(el) => {
                use rumqttc::{Event as E, Outgoing, Packet};
                match el.poll().await.map_err(|e| e.to_string())? {
                    E::Incoming(Packet::ConnAck(c)) => Ok(Event::Connected {
                        session_present: c.session_present,
                    }),
                    E::Incoming(Packet::Publish(p)) => Ok(Event::Message(Box::new(Message {
                        topic: Some(p.topic.clone()),
                        raw: RawPublish::V4(p),
                    }))),
                    E::Incoming(Packet::PubAck(a)) => Ok(Event::PubAck {
                        pkid: a.pkid,
                        ok: true,
                    }),
                    E::Incoming(Packet::SubAck(s)) => Ok(Event::SubAck {
                        ok: s
                            .return_codes
                            .iter()
                            .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                    }),
                    E::Outgoing(Outgoing::Publish(pkid)) => Ok(Event::Sent(pkid)),
                    _ => Ok(Event::Other),
                }
            }
            EventLoop::V5(el) => {
                use rumqttc::Outgoing;
                use v5::mqttbytes::v5::{Packet, PubAckReason, SubscribeReasonCode};
                match el.poll().await.map_err(|e| e.to_string())? {
                    v5::Event::Incoming(Packet::ConnAck(c)) => Ok(Event::Connected {
                        session_present: c.session_present,
                    }),
                    v5::Event::Incoming(Packet::Publish(p)) => {
                        Ok(Event::Message(Box::new(Message {
                            topic: std::str::from_utf8(&p.topic).ok().map(str::to_owned),
                            raw: RawPublish::V5(p),
                        })))
                    }
                    v5::Event::Incoming(Packet::PubAck(a)) => Ok(Event::PubAck {
                        pkid: a.pkid,
                        ok: matches!(
                            a.reason,
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                        ),
                    }),
                    v5::Event::Incoming(Packet::SubAck(s)) => Ok(Event::SubAck {
                        ok: s
                            .return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                    }),
                    v5::Event::Outgoing(Outgoing::Publish(pkid)) => Ok(Event::Sent(pkid)),
                    _ => Ok(Event::Other),
                }
            }
        }
    }
}

impl Client {
    /// Queue a subscription without waiting (safe to call from the task that polls).
    pub fn try_subscribe(&self, filter: &str, qos: Qos) -> Result<(), RequestError> {
        match self {
            Client::V4(c) => c
                .try_subscribe(filter, qos4(qos))
                .map_err(|e| RequestError(e.to_string())),
            Client::V5(c) => c
                .try_subscribe(filter, qos5(qos))
                .map_err(|e| RequestError(e.to_string())),
        }
    }

    /// Queue the acknowledgement of a received message without waiting.
    pub fn try_ack(&self, message: &Message) -> Result<(), RequestError> {
        match (self, &message.raw) {
            (Client::V4(c), RawPublish::V4(p)) => {
                c.try_ack(p).map_err(|e| RequestError(e.to_string()))
            }
            (Client::V5(c), RawPublish::V5(p)) => {
                c.try_ack(p).map_err(|e| RequestError(e.to_string()))
            }
            _ => Err(RequestError("message from another protocol version".into())),
        }
    }

    /// Queue a publish; resolves when queued, not when the broker has it (see [`Event::PubAck`]).
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        qos: Qos,
        retain: bool,
    ) -> Result<(), RequestError> {
        match self {
            Client::V4(c) => c
                .publish(topic, qos4(qos), retain, payload)
                .await
                .map_err(|e| RequestError(e.to_string())),
            Client::V5(c) => c
                .publish(topic, qos5(qos), retain, payload)
                .await
                .map_err(|e| RequestError(e.to_string())),
        }
    }

    pub async fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
    }
}

fn qos4(q: Qos) -> rumqttc::QoS {
    match q {
        Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
        Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
    }
}

fn qos5(q: Qos) -> v5::mqttbytes::QoS {
    match q {
        Qos::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        Qos::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
    }
}

/// Wait before reconnect attempt `failures + 1`: 0.5 s doubling to `cap`, with ±20 % jitter.
pub fn reconnect_delay(failures: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(500).saturating_mul(1u32 << failures.min(16));
    base.min(cap).mul_f64(0.8 + 0.4 * fastrand::f64()).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(toml_like: impl FnOnce(&mut BrokerConfig)) -> BrokerConfig {
        let mut b: BrokerConfig = serde_json::from_str(r#"{"host": "127.0.0.1"}"#).unwrap();
        toml_like(&mut b);
        b
    }

    #[test]
    fn settings_that_would_panic_are_rejected() {
        assert!(broker(|_| {}).errors().is_empty());
        let fields = |b: BrokerConfig| b.errors().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(
            fields(broker(|b| b.keep_alive_secs = 0)),
            ["keep_alive_secs"]
        );
        assert_eq!(
            fields(broker(|b| {
                b.mqtt_version = 5;
                b.keep_alive_secs = 3
            })),
            ["keep_alive_secs"]
        );
        assert_eq!(fields(broker(|b| b.inflight = 0)), ["inflight"]);
        assert_eq!(fields(broker(|b| b.mqtt_version = 3)), ["mqtt_version"]);
        assert_eq!(
            fields(broker(|b| b.password_env = Some("P".into()))),
            ["password_env"]
        );
        let tls = broker(|b| {
            b.tls = Some(TlsConfig {
                ca_file: "/nonexistent/ca.pem".into(),
                client_cert_file: Some("/nonexistent/c.pem".into()),
                client_key_file: None,
            });
        });
        assert_eq!(
            fields(tls),
            ["tls.ca_file", "tls.client_cert_file", "tls.client_key_file"]
        );
    }

    #[test]
    fn building_never_panics_on_edge_values() {
        for version in [4, 5] {
            let b = broker(|b| {
                b.mqtt_version = version;
                b.keep_alive_secs = 0;
                b.inflight = 0;
            });
            let session = Session {
                client_id: String::new(),
                clean: false,
                manual_acks: true,
                will: None,
                request_capacity: 0,
            };
            assert!(build(&b, &session).is_ok());
        }
    }

    #[test]
    fn reconnect_delay_is_capped() {
        let cap = Duration::from_secs(30);
        for n in 0..64 {
            assert!(reconnect_delay(n, cap) <= cap);
        }
        assert!(reconnect_delay(0, cap) <= Duration::from_millis(600));
    }
}

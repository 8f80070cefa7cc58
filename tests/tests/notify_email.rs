//! Alarms that reach people: a Chinese e-mail received by a real SMTP server (aiosmtpd) naming
//! everything needed to act, whose acknowledge link works (GET only shows, POST acknowledges,
//! and escalation stops); a signed webhook whose signature a receiver verifies; and an SMTP
//! server that is down when the alarm comes, then up: the mail is retried and delivered.
#![allow(clippy::unwrap_used)] // a test: a panic is a failed test

mod notify_common;

use std::time::Duration;

use notify_common::{RawReceiver, Smtp, find_link, verify_signature};
use sentinel_tests::{PyModbusDevice, Sentinel, wait_for};

const SECRET: &str = "whsec-test-0123456789";

fn config(device_port: u16, smtp_port: u16, hook: &str, tier2_secs: u64) -> String {
    format!(
        r#"
[site]
id = "cold-store"
name = "冷库一厂"
risk_colour = "orange"

[store]
data_dir = "{{data_dir}}"
flush_interval_ms = 50

[engine]
tick_ms = 50

[[devices]]
name = "gas"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {device_port}
poll_interval_ms = 100
timeout_ms = 500
comm_loss_after_secs = 30

[[points]]
tag = "NH3-101"
name = "氨压缩机房氨气浓度"
device = "gas"
kind = "toxic_gas"
unit = "ppm"
span = [0.0, 100.0]
area = "氨制冷机房"
register = {{ table = "holding", address = 0 }}
limits = {{ levels = [{{ level = "H", setpoint = 28.0 }}, {{ level = "HH", setpoint = 57.0, priority = "critical" }}] }}
instruction = "关闭NH3-101所在机房供液阀"

[notify]
public_url = "http://127.0.0.1:1"

[notify.email]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
from = "Sentinel <sentinel@cold-store.example>"
timeout_ms = 2000
max_backoff_secs = 1

[[notify.webhook]]
name = "soc"
url = "{hook}"
secret = "{SECRET}"
max_backoff_secs = 1

[[contacts]]
name = "wang"
display_name = "王工"
email = "wang@cold-store.example"

[[contacts]]
name = "li"
display_name = "李工"
email = "li@cold-store.example"

[[responsibility]]
name = "nh3-room"
areas = ["氨制冷机房"]
instruction = "开启事故排风，撤离无关人员，佩戴正压式空气呼吸器检查泄漏点"
tiers = [
    {{ role = "operational", contacts = ["wang"] }},
    {{ role = "technical", contacts = ["li"], after_secs = {tier2_secs} }},
]
"#
    )
}

/// The gateway's own address replaces the placeholder public URL once it is known: the link
/// in the mail names `http://127.0.0.1:1`, and the test follows it to the real port.
fn real(link: &str, s: &Sentinel) -> String {
    link.replace("http://127.0.0.1:1", &format!("http://{}", s.addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chinese_mail_with_working_ack_link_and_signed_webhook() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let Some(smtp) = Smtp::started().await else {
        return;
    };
    let hook = RawReceiver::start().await;
    let sentinel = Sentinel::start(&config(device.port, smtp.port, &hook.url(), 6)).await;
    let t = Duration::from_secs(15);

    // 60 ppm crosses both levels: two alarms, two mails; this test follows the second-level one.
    device.write_register(0, 60).await;
    let mail = smtp.wait_mail("wang@cold-store.example", "高高报", t).await;
    assert!(
        mail.subject
            .starts_with("【报警】冷库一厂 氨制冷机房 NH3-101 60ppm"),
        "{}",
        mail.subject
    );
    for needle in [
        "王工，您好",
        "冷库一厂（cold-store）",
        "氨制冷机房",
        "NH3-101（氨压缩机房氨气浓度）",
        "60 ppm",
        "57 ppm",
        "高高报（二级报警）",
        "紧急",
        "红色（重大风险）",
        "北京时间",
        "关闭NH3-101所在机房供液阀；开启事故排风，撤离无关人员",
        "nh3-room",
    ] {
        assert!(
            mail.text.contains(needle),
            "the mail lacks {needle:?}:\n{}",
            mail.text
        );
    }
    assert!(mail.html.contains("开启事故排风"), "HTML part too");
    assert!(mail.message_id.contains("-t1-wang@"), "{}", mail.message_id);

    // The webhook carries the event, signed over timestamp and body.
    let (headers, body, event) = hook
        .wait("the raised HH event", t, |v| {
            v["transition"] == "raised" && v["level"] == "HH"
        })
        .await;
    let signature = headers["x-sentinel-signature"].to_str().unwrap().to_owned();
    assert!(
        signature.starts_with("t=") && signature.contains(",v1="),
        "{signature}"
    );
    assert!(
        verify_signature(SECRET, &signature, &body).await,
        "a receiver verifies the signature"
    );
    assert!(!verify_signature("wrong-secret", &signature, &body).await);
    let mut forged = body.clone();
    forged.extend_from_slice(b" ");
    assert!(
        !verify_signature(SECRET, &signature, &forged).await,
        "a changed body fails"
    );
    assert_eq!(headers["idempotency-key"], event["id"].as_str().unwrap());

    // The link: GET shows a confirmation page and acknowledges nothing.
    let link = real(
        &find_link(&mail.text, "http://127.0.0.1:1/ack/").expect("an acknowledge link"),
        &sentinel,
    );
    let page = sentinel.http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<form method=\"post\"") && html.contains("NH3-101"),
        "{html}"
    );
    let open = sentinel.get("/api/v1/alarms?state=open").await;
    assert!(
        open.as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "active_unacked"),
        "GET must not acknowledge"
    );

    // A forged link is refused.
    // The last character changed (to one it is not: the signature may end in a '0').
    let last = if link.ends_with('0') { '1' } else { '0' };
    let forged_link = format!("{}{last}", &link[..link.len() - 1]);
    let refused = sentinel
        .http
        .post(&forged_link)
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // POST acknowledges, recording who, and the engine journals it.
    let done = sentinel
        .http
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("comment=%E5%B7%B2%E5%BC%80%E5%90%AF%E6%8E%92%E9%A3%8E")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let (_, _, acked) = hook
        .wait("the acknowledged event", t, |v| {
            v["transition"] == "acknowledged"
        })
        .await;
    assert_eq!(acked["by"], "wang (e-mail link)");
    assert_eq!(acked["comment"], "已开启排风");
    let again = sentinel.http.post(&link).body("").send().await.unwrap();
    assert_eq!(again.status(), 409, "acknowledged once");

    // Tier 2 falls due 6 s after the raise: the unacknowledged first-level alarm escalates to
    // li, the acknowledged second-level one does not.
    let escalated = smtp
        .wait_mail("li@cold-store.example", "【升级至第2级】", t)
        .await;
    assert!(
        escalated.subject.contains("高报（一级报警）"),
        "{}",
        escalated.subject
    );
    assert!(escalated.text.contains("技术负责人"), "{}", escalated.text);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hh_to_li = smtp
        .messages()
        .await
        .into_iter()
        .filter(|m| m.to.contains("li@") && m.subject.contains("高高报"))
        .count();
    assert_eq!(hh_to_li, 0, "acknowledgement stops escalation");
    let (code, _) = sentinel.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_then_up_is_retried_and_delivered() {
    let Some(device) = PyModbusDevice::start(&[]).await else {
        return;
    };
    let Some(mut smtp) = Smtp::new() else { return };
    let hook = RawReceiver::start().await;
    let sentinel = Sentinel::start(&config(device.port, smtp.port, &hook.url(), 3600)).await;
    let t = Duration::from_secs(15);

    device.write_register(0, 40).await;
    hook.wait("the raised event", t, |v| v["transition"] == "raised")
        .await;
    // The notice waits in the outbox and fails a few times while nothing listens.
    let db = rusqlite::Connection::open(sentinel.data_dir().join("sentinel.db")).unwrap();
    wait_for("failed e-mail attempts", t, || async {
        let attempts: i64 = db
            .query_row("SELECT COALESCE(MAX(attempts), 0) FROM outbox WHERE channel = 'email' AND delivered_ms IS NULL", [], |r| r.get(0))
            .unwrap();
        (attempts >= 2).then_some(())
    })
    .await;
    assert!(smtp.messages().await.is_empty());

    smtp.start().await;
    let mail = smtp
        .wait_mail("wang@cold-store.example", "NH3-101", t)
        .await;
    assert!(mail.text.contains("高报（一级报警）"), "{}", mail.text);
    let delivered: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM outbox WHERE channel = 'email' AND delivered_ms IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(delivered, 1);
    assert!(
        sentinel
            .log()
            .contains("E-mail delivery failed; will retry.")
    );
    sentinel.terminate().await;
}

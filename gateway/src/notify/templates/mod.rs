//! Message texts for people, in Chinese and English: subject, plain text and HTML of one
//! notice. Everything a person needs to act without opening anything else: site, area, tag,
//! value and unit, limit, level, time, risk colour, the chain's response instruction, and the
//! acknowledge link.

use serde_json::Value;

use crate::config::Language;
use crate::notify::escalation::{Envelope, parse_ms};

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Labels and values in one language, in display order.
struct Lines {
    subject: String,
    greeting: String,
    lead: String,
    fields: Vec<(&'static str, String)>,
    ack_line: Option<(String, String)>,
    footer: String,
}

pub fn render(e: &Envelope) -> Rendered {
    let lines = match (e.language, e.notice.as_str()) {
        (Language::Zh, "ticket_overdue") => ticket_zh(e),
        (Language::En, "ticket_overdue") => ticket_en(e),
        (Language::Zh, _) => zh(e),
        (Language::En, _) => en(e),
    };
    let mut text = format!("{}\n\n{}\n\n", lines.greeting, lines.lead);
    let width = lines
        .fields
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in &lines.fields {
        let pad = width - k.chars().count();
        text.push_str(&format!("  {k}{}  {v}\n", " ".repeat(pad)));
    }
    if let Some((label, url)) = &lines.ack_line {
        text.push_str(&format!("\n{label}\n{url}\n"));
    }
    text.push_str(&format!("\n-- \n{}\n", lines.footer));

    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"></head><body style=\"font-family:sans-serif\">",
    );
    html.push_str(&format!(
        "<p>{}</p><p><strong>{}</strong></p><table cellpadding=\"4\">",
        esc(&lines.greeting),
        esc(&lines.lead)
    ));
    for (k, v) in &lines.fields {
        html.push_str(&format!(
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            esc(k),
            esc(v)
        ));
    }
    html.push_str("</table>");
    if let Some((label, url)) = &lines.ack_line {
        html.push_str(&format!(
            "<p><a href=\"{}\">{}</a></p>",
            esc(url),
            esc(label)
        ));
    }
    html.push_str(&format!(
        "<p style=\"color:#666\">{}</p></body></html>",
        esc(&lines.footer)
    ));
    Rendered {
        subject: lines.subject,
        text,
        html,
    }
}

fn s<'a>(event: &'a Value, key: &str) -> &'a str {
    event[key].as_str().unwrap_or("")
}

fn num(event: &Value, key: &str) -> String {
    match event[key].as_f64() {
        Some(v) => {
            let t = format!("{v:.3}");
            t.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
        None => "-".to_owned(),
    }
}

/// Beijing time (UTC+8, all of China), as people on site read clocks.
fn beijing(rfc: &str) -> String {
    match parse_ms(rfc) {
        Some(ms) => {
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(
                    ms.saturating_add(8 * 3_600_000)
                        .clamp(0, crate::event::MAX_RFC3339_MS) as u64,
                );
            let s = humantime::format_rfc3339_seconds(t).to_string();
            s.trim_end_matches('Z').replace('T', " ")
        }
        None => rfc.to_owned(),
    }
}

fn zh_level(level: &str) -> &'static str {
    match level {
        "HH" => "高高报（二级报警）",
        "H" => "高报（一级报警）",
        "L" => "低报",
        "LL" => "低低报",
        _ => "报警",
    }
}

fn zh_priority(p: &str) -> &'static str {
    match p {
        "critical" => "紧急",
        "high" => "高",
        "medium" => "中",
        _ => "低",
    }
}

fn zh_colour(c: &str) -> &'static str {
    match c {
        "red" => "红色（重大风险）",
        "orange" => "橙色（较大风险）",
        "yellow" => "黄色（一般风险）",
        _ => "蓝色（低风险）",
    }
}

fn zh_role(role: &str) -> String {
    match role {
        "operational" => "操作负责人".into(),
        "technical" => "技术负责人".into(),
        "main" => "主要负责人".into(),
        other => other.to_owned(),
    }
}

fn zh(e: &Envelope) -> Lines {
    let ev = &e.event;
    let unit = s(ev, "unit");
    let tag = s(ev, "point");
    let level = s(ev, "level");
    let what = if level.is_empty() {
        s(ev, "kind").to_owned()
    } else {
        zh_level(level).to_owned()
    };
    let (tag_prefix, lead) = match e.notice.as_str() {
        "returned" => (
            "【已恢复正常，待确认】".to_owned(),
            "以下报警已恢复正常，但尚未有人确认，请确认并核查原因。".to_owned(),
        ),
        "repeat" => (
            format!("【第{}次提醒】", e.repeat + 1),
            "以下报警仍未确认，请立即处置。".to_owned(),
        ),
        _ if e.tier > 1 => (
            format!("【升级至第{}级】", e.tier),
            format!(
                "以下报警在规定时间内无人确认，已升级至{}，请立即处置。",
                zh_role(&e.role)
            ),
        ),
        _ => (
            "【报警】".to_owned(),
            "发生以下报警，请立即处置。".to_owned(),
        ),
    };
    let subject = format!(
        "{tag_prefix}{} {} {} {}{unit} {what}",
        e.site_name,
        s(ev, "area"),
        tag,
        num(ev, "value")
    );
    let mut fields = vec![
        ("企业/站点", format!("{}（{}）", e.site_name, s(ev, "site"))),
        ("区域", s(ev, "area").to_owned()),
        (
            "位号",
            if e.point_name.is_empty() {
                tag.to_owned()
            } else {
                format!("{tag}（{}）", e.point_name)
            },
        ),
        ("当前值", format!("{} {unit}", num(ev, "value"))),
        ("报警限值", format!("{} {unit}", num(ev, "limit"))),
        (
            "报警级别",
            format!("{what}，优先级{}", zh_priority(s(ev, "priority"))),
        ),
        ("风险颜色", zh_colour(&e.risk_colour).to_owned()),
        (
            "报警时间",
            format!("{}（北京时间）", beijing(s(ev, "raised_at"))),
        ),
    ];
    if e.notice == "returned" {
        fields.push(("恢复时间", format!("{}（北京时间）", beijing(s(ev, "at")))));
    }
    fields.push((
        "处置要求",
        e.instruction
            .clone()
            .unwrap_or_else(|| "按现场应急处置方案执行".into()),
    ));
    fields.push(("报警内容", s(ev, "message").to_owned()));
    Lines {
        subject,
        greeting: format!("{}，您好：", e.name),
        lead,
        fields,
        ack_line: e.ack_url.as_ref().map(|u| {
            let until = e.link_expires.as_deref().map(beijing).unwrap_or_default();
            (
                format!("确认报警（打开链接后点击“确认”，{until}前有效）："),
                u.clone(),
            )
        }),
        footer: format!(
            "Sentinel 报警通知 · 责任链 {} 第{}级（{}） · 事件编号 {}",
            e.chain,
            e.tier,
            zh_role(&e.role),
            s(ev, "id")
        ),
    }
}

fn en(e: &Envelope) -> Lines {
    let ev = &e.event;
    let unit = s(ev, "unit");
    let tag = s(ev, "point");
    let level = s(ev, "level");
    let what = if level.is_empty() {
        s(ev, "kind").to_owned()
    } else {
        level.to_owned()
    };
    let (prefix, lead) = match e.notice.as_str() {
        "returned" => ("[Returned to normal, unacknowledged]".to_owned(), "This alarm has returned to normal but nobody acknowledged it. Please acknowledge and check why.".to_owned()),
        "repeat" => (format!("[Reminder {}]", e.repeat + 1), "This alarm is still unacknowledged. Act now.".to_owned()),
        _ if e.tier > 1 => (
            format!("[Escalated to tier {}]", e.tier),
            format!("Nobody acknowledged this alarm in time; it is escalated to you ({}). Act now.", e.role),
        ),
        _ => ("[Alarm]".to_owned(), "An alarm needs action.".to_owned()),
    };
    let subject = format!(
        "{prefix} {} {} {} {}{unit} {what}",
        e.site_name,
        s(ev, "area"),
        tag,
        num(ev, "value")
    );
    let mut fields = vec![
        ("Site", format!("{} ({})", e.site_name, s(ev, "site"))),
        ("Area", s(ev, "area").to_owned()),
        (
            "Tag",
            if e.point_name.is_empty() {
                tag.to_owned()
            } else {
                format!("{tag} ({})", e.point_name)
            },
        ),
        ("Value", format!("{} {unit}", num(ev, "value"))),
        ("Limit", format!("{} {unit}", num(ev, "limit"))),
        ("Level", format!("{what}, priority {}", s(ev, "priority"))),
        ("Risk colour", e.risk_colour.clone()),
        ("Raised at", s(ev, "raised_at").to_owned()),
    ];
    if e.notice == "returned" {
        fields.push(("Returned at", s(ev, "at").to_owned()));
    }
    fields.push((
        "Instruction",
        e.instruction
            .clone()
            .unwrap_or_else(|| "Follow the site's emergency response plan".into()),
    ));
    fields.push(("Message", s(ev, "message").to_owned()));
    Lines {
        subject,
        greeting: format!("Dear {},", e.name),
        lead,
        fields,
        ack_line: e.ack_url.as_ref().map(|u| {
            (
                format!(
                    "Acknowledge (open the link, then press Acknowledge; valid until {}):",
                    e.link_expires.as_deref().unwrap_or("")
                ),
                u.clone(),
            )
        }),
        footer: format!(
            "Sentinel alarm notice · chain {} tier {} ({}) · event {}",
            e.chain,
            e.tier,
            e.role,
            s(ev, "id")
        ),
    }
}

fn zh_ticket_state(s: &str) -> &'static str {
    match s {
        "found" => "已发现",
        "dispatched" => "已派发",
        "rectifying" => "整改中",
        "rectified" => "已整改",
        "verified" => "已验收",
        "closed" => "已销号",
        _ => "未知",
    }
}

/// An overdue hazard ticket, in Chinese.
fn ticket_zh(e: &Envelope) -> Lines {
    let t = &e.event;
    let id = t["ticket_id"].as_i64().unwrap_or(0);
    Lines {
        subject: format!("【隐患逾期】{} 隐患#{id} {}", e.site_name, s(t, "title")),
        greeting: format!("{}，您好：", e.name),
        lead: "以下隐患已超过整改期限仍未完成，请督办。".to_owned(),
        fields: vec![
            ("隐患编号", format!("#{id}")),
            ("隐患内容", s(t, "title").to_owned()),
            ("当前状态", zh_ticket_state(s(t, "state")).to_owned()),
            ("整改责任人", s(t, "assignee").to_owned()),
            (
                "整改期限",
                format!("{}（北京时间）", beijing(s(t, "deadline"))),
            ),
            ("区域", s(t, "area").to_owned()),
            ("位号", s(t, "point").to_owned()),
        ],
        ack_line: None,
        footer: format!(
            "Sentinel 隐患督办 · 责任链 {} 第{}级（{}）",
            e.chain,
            e.tier,
            zh_role(&e.role)
        ),
    }
}

/// An overdue hazard ticket, in English.
fn ticket_en(e: &Envelope) -> Lines {
    let t = &e.event;
    let id = t["ticket_id"].as_i64().unwrap_or(0);
    Lines {
        subject: format!(
            "[Hazard overdue] {} ticket #{id} {}",
            e.site_name,
            s(t, "title")
        ),
        greeting: format!("Dear {},", e.name),
        lead: "This hazard ticket is past its deadline and not rectified. Please follow it up."
            .to_owned(),
        fields: vec![
            ("Ticket", format!("#{id}")),
            ("Hazard", s(t, "title").to_owned()),
            ("State", s(t, "state").to_owned()),
            ("Assignee", s(t, "assignee").to_owned()),
            ("Deadline", s(t, "deadline").to_owned()),
            ("Area", s(t, "area").to_owned()),
            ("Tag", s(t, "point").to_owned()),
        ],
        ack_line: None,
        footer: format!(
            "Sentinel hazard follow-up · chain {} tier {} ({})",
            e.chain, e.tier, e.role
        ),
    }
}

/// Several grouped notices to one person as one message: a summary line, then each notice.
pub fn render_digest(items: &[Envelope]) -> Rendered {
    let Some(first) = items.first() else {
        return Rendered {
            subject: String::new(),
            text: String::new(),
            html: String::new(),
        };
    };
    if items.len() == 1 {
        return render(first);
    }
    let parts: Vec<Rendered> = items.iter().map(render).collect();
    let subject = match first.language {
        Language::Zh => format!("【汇总】{} 条报警通知 {}", items.len(), first.site_name),
        Language::En => format!(
            "[Summary] {} alarm notices {}",
            items.len(),
            first.site_name
        ),
    };
    let mut text = String::new();
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"></head><body style=\"font-family:sans-serif\">",
    );
    for (i, p) in parts.iter().enumerate() {
        text.push_str(&format!(
            "==== {}/{}: {} ====\n{}\n",
            i + 1,
            parts.len(),
            p.subject,
            p.text
        ));
        let body = p
            .html
            .split_once("<body")
            .and_then(|(_, b)| b.split_once('>'))
            .map_or("", |(_, b)| b);
        html.push_str(&format!(
            "<h3>{}</h3>{}<hr>",
            esc(&p.subject),
            body.trim_end_matches("</body></html>")
        ));
    }
    html.push_str("</body></html>");
    Rendered {
        subject,
        text,
        html,
    }
}

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(language: Language, notice: &str, tier: usize) -> Envelope {
        Envelope {
            notice: notice.into(),
            tier,
            repeat: 0,
            role: "technical".into(),
            chain: "nh3-room".into(),
            contact: "li".into(),
            to: "li@example.com".into(),
            name: "李工".into(),
            language,
            site_name: "冷库一厂".into(),
            point_name: "氨气浓度".into(),
            risk_colour: "red".into(),
            instruction: Some("开启事故排风，撤离无关人员".into()),
            ack_url: Some("http://gw/ack/abc.def".into()),
            link_expires: Some("2026-11-23T00:00:00.000Z".into()),
            group: None,
            event: serde_json::json!({
                "id": "plant-2-1", "site": "plant", "area": "机房", "point": "NH3-101", "unit": "ppm",
                "value": 57.2, "limit": 57.0, "level": "HH", "priority": "critical", "kind": "limit",
                "raised_at": "2026-11-22T23:23:59.820Z", "at": "2026-11-22T23:23:59.820Z",
                "message": "NH3-101 HH 57.2 ppm (limit 57 ppm)"
            }),
        }
    }

    #[test]
    fn chinese_names_everything_needed_to_act() {
        let r = render(&envelope(Language::Zh, "alarm", 2));
        for needle in [
            "冷库一厂",
            "机房",
            "NH3-101",
            "57.2 ppm",
            "57 ppm",
            "高高报（二级报警）",
            "红色",
            "2026-11-23 07:23:59（北京时间）",
            "开启事故排风",
            "http://gw/ack/abc.def",
            "技术负责人",
        ] {
            assert!(r.text.contains(needle), "text lacks {needle}: {}", r.text);
        }
        assert!(r.subject.starts_with("【升级至第2级】"), "{}", r.subject);
        assert!(r.html.contains("<a href=\"http://gw/ack/abc.def\">"));
    }

    #[test]
    fn english_and_returned_to_normal() {
        let r = render(&envelope(Language::En, "returned", 1));
        assert!(
            r.subject
                .starts_with("[Returned to normal, unacknowledged]"),
            "{}",
            r.subject
        );
        assert!(
            r.text.contains("Limit") && r.text.contains("57 ppm") && r.text.contains("Returned at")
        );
    }

    #[test]
    fn a_digest_names_every_notice() {
        let a = envelope(Language::Zh, "alarm", 1);
        let mut b = envelope(Language::Zh, "alarm", 1);
        b.event["point"] = "NH3-102".into();
        let r = render_digest(&[a, b]);
        assert!(
            r.subject.starts_with("【汇总】2 条报警通知"),
            "{}",
            r.subject
        );
        assert!(r.text.contains("NH3-101") && r.text.contains("NH3-102"));
        assert_eq!(r.html.matches("<h3>").count(), 2);
    }

    #[test]
    fn an_overdue_ticket_in_chinese() {
        let mut e = envelope(Language::Zh, "ticket_overdue", 2);
        e.event = serde_json::json!({
            "ticket_id": 4, "title": "冷却水软管磨损", "state": "rectifying", "assignee": "li",
            "deadline": "2026-11-22T16:00:00.000Z", "area": "炉区", "point": null
        });
        let r = render(&e);
        assert_eq!(r.subject, "【隐患逾期】冷库一厂 隐患#4 冷却水软管磨损");
        assert!(
            r.text.contains("整改中") && r.text.contains("2026-11-23 00:00:00（北京时间）"),
            "{}",
            r.text
        );
    }

    #[test]
    fn html_is_escaped() {
        let mut e = envelope(Language::En, "alarm", 1);
        e.instruction = Some("<script>".into());
        assert!(render(&e).html.contains("&lt;script&gt;"));
    }
}

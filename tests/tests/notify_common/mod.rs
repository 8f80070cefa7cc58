//! Shared by the notification tests: a private SMTP server (aiosmtpd, writing a Maildir) that a
//! test can stop and start again on the same port, and a MIME reader (Python's `email`
//! package, an implementation independent of ours).
#![allow(dead_code)] // each test file uses its own part
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use sentinel_tests::{free_port, service, wait_for};
use serde_json::Value;
use tokio::process::{Child, Command};

pub struct Smtp {
    child: Option<Child>,
    pub port: u16,
    pub maildir: tempfile::TempDir,
    python: String,
}

impl Smtp {
    /// Not started yet: the port is chosen and free.
    pub fn new() -> Option<Smtp> {
        let python = service("SENTINEL_TEST_PYTHON")?;
        let maildir = tempfile::tempdir().unwrap();
        for d in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.path().join(d)).unwrap();
        }
        Some(Smtp {
            child: None,
            port: free_port(),
            maildir,
            python,
        })
    }

    pub async fn started() -> Option<Smtp> {
        let mut s = Smtp::new()?;
        s.start().await;
        Some(s)
    }

    pub async fn start(&mut self) {
        let child = Command::new(&self.python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{}", self.port),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(self.maildir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "the SMTP server to listen",
            Duration::from_secs(20),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// Every message received so far, parsed.
    pub async fn messages(&self) -> Vec<Mail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.maildir.path().join("new"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            out.push(parse(&self.python, &f).await);
        }
        out
    }

    /// Wait until a message to `to` whose subject contains `subject` arrives.
    pub async fn wait_mail(&self, to: &str, subject: &str, timeout: Duration) -> Mail {
        wait_for(
            &format!("mail to {to} with {subject:?}"),
            timeout,
            || async {
                self.messages()
                    .await
                    .into_iter()
                    .find(|m| m.to.contains(to) && m.subject.contains(subject))
            },
        )
        .await
    }
}

#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
}

const PARSE: &str = r#"
import email, json, sys
from email import policy
with open(sys.argv[1], "rb") as f:
    m = email.message_from_binary_file(f, policy=policy.default)
text = m.get_body(("plain",))
html = m.get_body(("html",))
print(json.dumps({
    "to": str(m["To"]), "subject": str(m["Subject"]), "message_id": str(m["Message-ID"]),
    "text": text.get_content() if text else "", "html": html.get_content() if html else "",
}))
"#;

async fn parse(python: &str, path: &std::path::Path) -> Mail {
    let out = Command::new(python)
        .args(["-c", PARSE])
        .arg(path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "parsing {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    Mail {
        to: s("to"),
        subject: s("subject"),
        text: s("text"),
        html: s("html"),
        message_id: s("message_id"),
    }
}

/// Check an `X-Sentinel-Signature` header as a receiver would, with Python's hmac.
pub async fn verify_signature(secret: &str, header: &str, body: &[u8]) -> bool {
    let python = std::env::var("SENTINEL_TEST_PYTHON").unwrap();
    let script = r#"
import hmac, hashlib, sys, time
secret, header, body = sys.argv[1].encode(), sys.argv[2], open(sys.argv[3], "rb").read()
parts = dict(p.split("=", 1) for p in header.split(","))
t = int(parts["t"])
assert abs(time.time() - t) < 300, "stale"
want = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
sys.exit(0 if hmac.compare_digest(want, parts["v1"]) else 1)
"#;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    let status = Command::new(python)
        .args(["-c", script, secret, header])
        .arg(file.path())
        .status()
        .await
        .unwrap();
    status.success()
}

/// The value of the first line in `text` that starts with `prefix` (an URL in a mail).
pub fn find_link(text: &str, prefix: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.starts_with(prefix))
        .map(str::to_owned)
}

/// Requests as received: headers and the raw body.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, Vec<u8>)>>>;

/// A webhook receiver that keeps the raw bytes (a signature covers the exact body).
#[derive(Clone)]
pub struct RawReceiver {
    pub addr: std::net::SocketAddr,
    pub received: Received,
}

impl RawReceiver {
    pub async fn start() -> RawReceiver {
        use axum::routing::post;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let r = std::sync::Arc::clone(&received);
        let app = axum::Router::new().route(
            "/hook",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let r = std::sync::Arc::clone(&r);
                    async move {
                        r.lock().unwrap().push((headers, body.to_vec()));
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        RawReceiver { addr, received }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn all(&self) -> Vec<(axum::http::HeaderMap, Vec<u8>, Value)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(h, b)| {
                (
                    h.clone(),
                    b.clone(),
                    serde_json::from_slice(b).unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Value) -> bool,
    ) -> (axum::http::HeaderMap, Vec<u8>, Value) {
        wait_for(what, timeout, || {
            let found = self.all().into_iter().find(|(_, _, v)| f(v));
            async move { found }
        })
        .await
    }
}

//! MQTT helpers: a private Mosquitto per test (for restarts, TLS and passwords), the Mosquitto
//! command-line clients, test certificates made with `openssl`, and reading `/metrics`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{Sentinel, free_port, service, wait_for};

/// The shared broker started by tests/run.sh, as (host, port).
pub fn shared_broker() -> Option<(String, u16)> {
    let addr = service("SENTINEL_TEST_MQTT")?;
    let (host, port) = addr.rsplit_once(':').unwrap();
    Some((host.to_owned(), port.parse().unwrap()))
}

/// A unique suffix for topics and client ids, so tests sharing a broker never meet.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A Mosquitto of our own on a free port, with its configuration and persistence in a temp dir.
pub struct Mosquitto {
    child: Option<Child>,
    bin: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Mosquitto {
    /// `listener` lines are written by this function; `extra` is appended (TLS, passwords).
    pub async fn start(extra: &str) -> Option<Mosquitto> {
        let bin = service("SENTINEL_TEST_MOSQUITTO_BIN")?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let user = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        let conf = format!(
            "listener {port} 127.0.0.1\npersistence true\npersistence_location {}/\nautosave_interval 1\nlog_dest stdout\nlog_type all\nuser {user}\n{extra}\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut m = Mosquitto {
            child: None,
            bin,
            port,
            dir,
        };
        m.launch().await;
        Some(m)
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_for(
            "mosquitto to listen",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            },
        )
        .await;
    }

    /// SIGTERM (Mosquitto saves its persistence file) and wait.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().unwrap();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.launch().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

/// `mosquitto_pub` with the payload on stdin (binary-safe). Panics when it fails.
pub async fn publish(
    port: u16,
    topic: &str,
    payload: &[u8],
    qos: u8,
    retain: bool,
    extra: &[&str],
) {
    use tokio::io::AsyncWriteExt;
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-t",
        topic,
        "-q",
        &qos.to_string(),
        "-s",
    ])
    .args(extra)
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if retain {
        cmd.arg("-r");
    }
    let mut child = cmd
        .spawn()
        .expect("mosquitto_pub (package mosquitto-clients)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(payload).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub to {topic} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One message per line of `lines` (`mosquitto_pub -l`): fast for floods.
pub async fn publish_lines(port: u16, topic: &str, lines: &str, qos: u8) {
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-q",
            &qos.to_string(),
            "-l",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub -l failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A subscriber running in the background (`mosquitto_sub -v`): one `topic payload` per line.
pub struct Subscriber {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Subscriber {
    pub async fn start(port: u16, topic: &str, extra: &[&str]) -> Subscriber {
        use tokio::io::{AsyncBufReadExt, BufReader};
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                topic,
                "-v",
                "-q",
                "1",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        let mut reader = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        // Give the subscription a moment to reach the broker.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Subscriber { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Wait for a line whose payload satisfies `f`, returning the payload parsed as JSON.
    pub async fn wait_json(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_for(what, timeout, || {
            let found = self.lines().iter().find_map(|l| {
                let (_, payload) = l.split_once(' ')?;
                let v: serde_json::Value = serde_json::from_str(payload).ok()?;
                f(&v).then_some(v)
            });
            async move { found }
        })
        .await
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The retained message at `topic`, if any, within `timeout_secs`.
pub async fn retained(port: u16, topic: &str, extra: &[&str]) -> Option<String> {
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "3",
            "--retained-only",
        ])
        .args(extra)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// Certificates for a TLS test: a CA, a server certificate for 127.0.0.1, a client certificate.
pub struct Certs {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// Made with the `openssl` command; `None` (test skipped) when it is missing.
pub fn make_certs(dir: &Path) -> Option<Certs> {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(()),
            Ok(o) => panic!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) => None,
        }
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sentinel-test-ca",
        ],
    ]
    .concat())?;
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for who in ["server", "client"] {
        run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                &format!("{who}.key"),
                "-out",
                &format!("{who}.csr"),
                "-subj",
                &format!("/CN=sentinel-test-{who}"),
            ],
        ]
        .concat())?;
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{who}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{who}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{who}.ext"),
        ])?;
    }
    Some(Certs {
        ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    })
}

impl Sentinel {
    /// Like [`Sentinel::start`], with extra environment variables (credentials for MQTT).
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Sentinel {
        Sentinel::start_in_with_env(config, tempfile::tempdir().unwrap(), env).await
    }

    /// A point as `/api/v1/points` shows it.
    pub async fn point(&self, tag: &str) -> Option<serde_json::Value> {
        let points = self.get("/api/v1/points").await;
        points.as_array()?.iter().find(|p| p["tag"] == tag).cloned()
    }
}

/// An MQTT device `src` (client id `base`) reading `{base}/v`, and `n` pressure points
/// `PT-0000`, `PT-0001`, ... taken from `/p0000`, `/p0001`, ... of its JSON, each with a high
/// limit at 1.0: one [`storm_message`] moves them all at once.
pub fn storm_plant(base: &str, ingest: u16, n: usize) -> String {
    let mut toml = format!(
        "[[devices]]\nname = \"src\"\nprotocol = \"mqtt\"\n\
         broker = {{ host = \"127.0.0.1\", port = {ingest}, client_id = \"{base}\" }}\n\
         topics = [\"{base}/v\"]\n\n"
    );
    for i in 0..n {
        toml += &format!(
            "[[points]]\ntag = \"PT-{i:04}\"\ndevice = \"src\"\nkind = \"pressure\"\n\
             json_pointer = \"/p{i:04}\"\n\
             limits = {{ levels = [{{ level = \"H\", setpoint = 1.0, priority = \"high\" }}] }}\n\n"
        );
    }
    toml
}

/// The message that sets every point of [`storm_plant`] to `value`.
pub fn storm_message(n: usize, value: f64) -> String {
    let fields: Vec<String> = (0..n).map(|i| format!("\"p{i:04}\": {value}")).collect();
    format!("{{{}}}", fields.join(", "))
}

//! Harness for the end-to-end tests: starts the real `sentinel` binary, real Modbus devices
//! (pymodbus, an independent implementation) and a webhook receiver, all on loopback.
//!
//! Services come from `tests/run.sh`, which exports their addresses in `SENTINEL_TEST_*`
//! variables. Run outside that script, a test that needs a missing service is skipped with a
//! message, unless `SENTINEL_REQUIRE_SERVICES=1`, in which case it fails.
#![allow(clippy::unwrap_used)] // test harness: a panic is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The value of a service variable, or `None` (test skipped) when it is not set.
pub fn service(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("SENTINEL_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{var} is not set but SENTINEL_REQUIRE_SERVICES=1: run the tests through tests/run.sh"
            );
            eprintln!("skipped: {var} is not set (run through tests/run.sh for the real services)");
            None
        }
    }
}

/// The `sentinel` binary built from this workspace.
pub fn sentinel_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug").join("sentinel");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p sentinel-gateway` first",
        bin.display()
    );
    bin
}

/// A free TCP port on loopback (bound and released; fine for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` until it returns `Some`, or fail after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A Modbus TCP device served by pymodbus (`tests/devices/pymodbus_device.py`).
pub struct PyModbusDevice {
    child: Child,
    pub port: u16,
}

impl PyModbusDevice {
    /// `None` when the Python environment is not available (test skipped).
    pub async fn start(extra_args: &[&str]) -> Option<PyModbusDevice> {
        Self::start_on(free_port(), extra_args).await
    }

    pub async fn start_on(port: u16, extra_args: &[&str]) -> Option<PyModbusDevice> {
        let python = service("SENTINEL_TEST_PYTHON")?;
        let script = service("SENTINEL_TEST_PYMODBUS_DEVICE")?;
        let mut child = Command::new(python)
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.starts_with("READY") {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(ready, Ok(true)),
            "pymodbus device on port {port} did not become ready"
        );
        // Keep draining stdout so the device never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(PyModbusDevice { child, port })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Write a holding register (the device mirrors it into the input register of the same address).
    pub async fn write_register(&self, address: u16, value: u16) {
        use tokio_modbus::prelude::*;
        let mut ctx = tcp::connect_slave(self.addr(), Slave(1)).await.unwrap();
        ctx.write_single_register(address, value)
            .await
            .unwrap()
            .unwrap();
        let _ = ctx.disconnect().await;
    }

    pub async fn write_registers(&self, address: u16, values: &[u16]) {
        use tokio_modbus::prelude::*;
        let mut ctx = tcp::connect_slave(self.addr(), Slave(1)).await.unwrap();
        ctx.write_multiple_registers(address, values)
            .await
            .unwrap()
            .unwrap();
        let _ = ctx.disconnect().await;
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// A running `sentinel run` process with its own data directory.
pub struct Sentinel {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

impl Sentinel {
    /// Start with a configuration. `{data_dir}` in the text is replaced by the process's data
    /// directory; the HTTP server listens on a free port chosen by the OS.
    pub async fn start(config: &str) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(config, dir).await
    }

    pub async fn start_in(config: &str, dir: tempfile::TempDir) -> Sentinel {
        let data_dir = dir.path().join("data");
        let config = config.replace("{data_dir}", &data_dir.display().to_string());
        let config_path = dir.path().join("sentinel.toml");
        std::fs::write(&config_path, config).unwrap();
        let ready = dir.path().join("ready");
        let _ = std::fs::remove_file(&ready);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("sentinel.log"))
            .unwrap();
        let child = Command::new(sentinel_bin())
            .args(["run", "-c"])
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready)
            .env("SENTINEL__HTTP__LISTEN", "127.0.0.1:0")
            .env("SENTINEL_LOG", "info,sentinel=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = wait_for("sentinel to listen", Duration::from_secs(30), || {
            let ready = ready.clone();
            async move {
                std::fs::read_to_string(&ready)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
            }
        })
        .await;
        Sentinel {
            child,
            addr,
            dir,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Send SIGTERM and wait for the exit code.
    pub async fn terminate(mut self) -> (Option<i32>, tempfile::TempDir) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        let code = match exit {
            Ok(Ok(s)) => s.code(),
            _ => {
                let _ = self.child.kill().await;
                panic!(
                    "sentinel did not exit within 20 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
        };
        (code, self.dir)
    }

    /// SIGKILL: no chance to flush.
    pub async fn kill9(mut self) -> tempfile::TempDir {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
        self.dir
    }
}

/// A webhook receiver on loopback that records every request body and its headers.
#[derive(Clone)]
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<(axum::http::HeaderMap, serde_json::Value)>>>,
    /// While set, answer 503 (to test retries).
    pub failing: Arc<std::sync::atomic::AtomicBool>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        use axum::routing::post;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, f) = (Arc::clone(&received), Arc::clone(&failing));
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: axum::http::HeaderMap, body: String| {
                let (r, f) = (Arc::clone(&r), Arc::clone(&f));
                async move {
                    if f.load(std::sync::atomic::Ordering::SeqCst) {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let v: serde_json::Value =
                        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
                    r.lock().unwrap().push((headers, v));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        WebhookReceiver {
            addr,
            received,
            failing,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Wait for an event with this point and transition.
    pub async fn wait_event(
        &self,
        point: &str,
        transition: &str,
        timeout: Duration,
    ) -> serde_json::Value {
        wait_for(&format!("webhook {transition} of {point}"), timeout, || {
            let found = self
                .bodies()
                .into_iter()
                .find(|b| b["point"] == point && b["transition"] == transition);
            async move { found }
        })
        .await
    }
}

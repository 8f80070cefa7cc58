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

pub mod api;
pub mod mqtt;

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
    // Benchmarks run a release build: SENTINEL_BIN=target/release/sentinel.
    if let Some(bin) = std::env::var_os("SENTINEL_BIN") {
        return PathBuf::from(bin);
    }
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
        Self::start_in_with_env(config, dir, &[]).await
    }

    /// Like `start_in`, with extra environment variables (API tokens, overrides).
    pub async fn start_in_with_env(
        config: &str,
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
    ) -> Sentinel {
        clear_of_the_hour().await;
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
            .envs(env.iter().copied())
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

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
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

    /// Replace the configuration file (same `{data_dir}` substitution) and send SIGHUP.
    pub fn reload(&self, config: &str) {
        let data_dir = self.data_dir();
        let config = config.replace("{data_dir}", &data_dir.display().to_string());
        std::fs::write(self.dir.path().join("sentinel.toml"), config).unwrap();
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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

/// A private VictoriaMetrics (from `SENTINEL_TEST_VM_BIN`) with its own port and storage, for
/// tests that stop and restart it.
pub struct VictoriaMetrics {
    child: Option<Child>,
    pub port: u16,
    storage: tempfile::TempDir,
    extra: Vec<String>,
}

impl VictoriaMetrics {
    /// `None` when the binary is not available (test skipped).
    pub async fn start_private(extra_args: &[&str]) -> Option<VictoriaMetrics> {
        service("SENTINEL_TEST_VM_BIN")?;
        let mut vm = VictoriaMetrics {
            child: None,
            port: free_port(),
            storage: tempfile::tempdir().unwrap(),
            extra: extra_args.iter().map(|s| (*s).to_owned()).collect(),
        };
        vm.start().await;
        Some(vm)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and storage.
    pub async fn start(&mut self) {
        let bin = std::env::var("SENTINEL_TEST_VM_BIN").unwrap();
        let child = Command::new(bin)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.storage.path().display()
            ))
            .args([
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-search.disableCache",
                "-loggerLevel=ERROR",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let health = format!("{}/health", self.url());
        let http = reqwest::Client::new();
        wait_for(
            "VictoriaMetrics to answer /health",
            Duration::from_secs(30),
            || {
                let req = http.get(&health).send();
                async move { req.await.ok().filter(|r| r.status().is_success()).map(drop) }
            },
        )
        .await;
    }

    /// SIGTERM (VictoriaMetrics flushes what it holds) and wait for the exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// Samples per series in VictoriaMetrics for a selector, keyed `name{point}`, after a flush.
pub async fn vm_counts(base: &str, selector: &str) -> std::collections::BTreeMap<String, usize> {
    vm_export(base, selector)
        .await
        .into_iter()
        .map(|(k, v)| (k, v.len()))
        .collect()
}

/// Every series matching `selector`: `name{point}` → (timestamp ms, value) pairs. Several
/// export lines of one series are merged.
pub async fn vm_export(
    base: &str,
    selector: &str,
) -> std::collections::BTreeMap<String, Vec<(i64, f64)>> {
    let http = reqwest::Client::new();
    let _ = http
        .get(format!("{base}/internal/force_flush"))
        .send()
        .await;
    let body = http
        .get(format!("{base}/api/v1/export"))
        .query(&[("match[]", selector)])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut out: std::collections::BTreeMap<String, Vec<(i64, f64)>> = Default::default();
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = v["metric"]["__name__"].as_str().unwrap_or("?");
        let point = v["metric"]["point"].as_str().unwrap_or("?");
        let entry = out.entry(format!("{name}{{{point}}}")).or_default();
        let ts = v["timestamps"].as_array().unwrap();
        let vals = v["values"].as_array().unwrap();
        for (t, x) in ts.iter().zip(vals) {
            entry.push((t.as_i64().unwrap(), x.as_f64().unwrap_or(f64::NAN)));
        }
    }
    out
}

/// Poll VictoriaMetrics until its counts equal `expected` (or `timeout` passes); returns the last
/// counts seen, for the caller to assert on.
pub async fn vm_wait_counts(
    base: &str,
    selector: &str,
    expected: &std::collections::BTreeMap<String, usize>,
    timeout: Duration,
) -> std::collections::BTreeMap<String, usize> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got = vm_counts(base, selector).await;
        if &got == expected || tokio::time::Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// What the store holds, in the same keys as [`vm_counts`]: `{kind}_value{tag}` counts readings
/// with a value, `{kind}_quality{tag}` counts every reading. `kinds` maps tag → kind.
pub fn store_counts(
    data_dir: &Path,
    kinds: &[(&str, &str)],
) -> std::collections::BTreeMap<String, usize> {
    let db = rusqlite::Connection::open(data_dir.join("sentinel.db")).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for (tag, kind) in kinds {
        let (all, with_value): (i64, i64) = db
            .query_row(
                "SELECT COUNT(*), COUNT(r.value) FROM readings r JOIN points p ON p.id = r.point WHERE p.tag = ?1",
                [tag],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        if with_value > 0 {
            out.insert(format!("{kind}_value{{{tag}}}"), with_value as usize);
        }
        if all > 0 {
            out.insert(format!("{kind}_quality{{{tag}}}"), all as usize);
        }
    }
    out
}

/// A site id no other test (or earlier run against the same VictoriaMetrics) uses.
pub fn unique_site(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

impl PyModbusDevice {
    /// Write holding registers of one unit (mirrored into its input registers).
    pub async fn write_registers_unit(&self, unit: u8, address: u16, values: &[u16]) {
        use tokio_modbus::prelude::*;
        let mut ctx = tcp::connect_slave(self.addr(), Slave(unit)).await.unwrap();
        ctx.write_multiple_registers(address, values)
            .await
            .unwrap()
            .unwrap();
        let _ = ctx.disconnect().await;
    }

    /// Write coils of one unit (mirrored into its discrete inputs).
    pub async fn write_coils_unit(&self, unit: u8, address: u16, values: &[bool]) {
        use tokio_modbus::prelude::*;
        let mut ctx = tcp::connect_slave(self.addr(), Slave(unit)).await.unwrap();
        ctx.write_multiple_coils(address, values)
            .await
            .unwrap()
            .unwrap();
        let _ = ctx.disconnect().await;
    }
}

impl Sentinel {
    /// `/metrics` as text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one sample line of `/metrics` (`name{labels}`), if present.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.metrics_text().await;
        text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
    }
}

/// A virtual serial cable: two pseudo-terminals joined by socat (`SENTINEL_TEST_SOCAT_BIN`).
/// Whatever is written to one end is read at the other, like two RS-485 adapters on one pair.
pub struct SerialPair {
    child: Child,
    _dir: tempfile::TempDir,
    pub a: PathBuf,
    pub b: PathBuf,
}

impl SerialPair {
    /// `None` when socat is not available (test skipped).
    pub async fn start() -> Option<SerialPair> {
        let socat = service("SENTINEL_TEST_SOCAT_BIN")?;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let child = Command::new(socat)
            .arg(format!("pty,raw,echo=0,link={}", a.display()))
            .arg(format!("pty,raw,echo=0,link={}", b.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_for("socat's pty links", Duration::from_secs(10), || {
            let ready = a.exists() && b.exists();
            async move { ready.then_some(()) }
        })
        .await;
        Some(SerialPair {
            child,
            _dir: dir,
            a,
            b,
        })
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        let _ = self.child.wait().await;
    }
}

/// `sentinel journal verify` on a data directory: (intact, what it printed).
pub fn journal_verify(data_dir: &Path) -> (bool, String) {
    let out = std::process::Command::new(sentinel_bin())
        .args(["journal", "verify", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && text.contains("journal intact"),
        text,
    )
}

/// Tests count rows of the raw `readings` table, and every hour the store moves the finished
/// hour's rows into compressed blocks. A test that straddled the hour would see rows vanish
/// from under it (they are in the blocks, not lost). So a Sentinel is started only when at
/// least [`HOUR_MARGIN`] remains before the next full hour; otherwise after it.
pub async fn clear_of_the_hour() {
    const HOUR_MS: u128 = 3_600_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let left = HOUR_MS - now % HOUR_MS;
    if left < HOUR_MARGIN.as_millis() {
        eprintln!("waiting {left} ms for the full hour to pass (hourly compaction)");
        tokio::time::sleep(Duration::from_millis(left as u64 + 2_000)).await;
    }
}

/// Longer than any test that counts raw readings runs (the longest, fault_injection's kill -9
/// rounds, take about 25 s).
pub const HOUR_MARGIN: Duration = Duration::from_secs(75);

//! HTTPS served by the binary itself (`[http] tls_cert`, `tls_key`), with a self-signed
//! certificate made for the test by the openssl command line.

use std::process::Command;

use sentinel_tests::Sentinel;
use sentinel_tests::api::config;

fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(out) if out.status.success() => Some((cert, key)),
        Ok(out) => panic!("openssl failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => {
            assert!(
                std::env::var("SENTINEL_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "openssl is needed for the TLS test: {e}"
            );
            eprintln!("skipped: no openssl ({e})");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_configured_certificate() {
    let certs = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let Some((cert, key)) = self_signed(certs.path()) else {
        return;
    };
    let extra = format!(
        "\n[http]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let s = Sentinel::start(&config(&extra)).await;
    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("https://{}/healthz", s.addr);
    let res = https
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body["site"], "api");
    let api = https
        .get(format!("https://{}/api/v1/site", s.addr))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(api.status(), 200);
    // Plain HTTP on the TLS port gets no answer.
    let plain = s.http.get(s.url("/healthz")).send().await;
    assert!(
        plain.is_err() || !plain.as_ref().is_ok_and(|r| r.status().is_success()),
        "{plain:?}"
    );
    assert!(s.log().contains("tls=true"));
    let (code, _) = s.terminate().await;
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let extra =
        "\n[http]\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n";
    let path = dir.path().join("sentinel.toml");
    std::fs::write(
        &path,
        config(extra).replace("{data_dir}", &dir.path().join("data").display().to_string()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = tokio::process::Command::new(sentinel_tests::sentinel_bin())
        .args(["run", "-c"])
        .arg(&path)
        .env("SENTINEL__HTTP__LISTEN", "127.0.0.1:0")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.tls_cert"), "{stderr}");
}

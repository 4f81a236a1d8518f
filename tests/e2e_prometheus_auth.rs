//! Real Prometheus 2.42 senders against promlink's authenticated HTTPS receiver:
//!
//! ```text
//! Prometheus "a": authorization.credentials_file (a valid token) + tls_config.ca_file  --\
//! Prometheus "b": tls_config cert_file/key_file (a client certificate on the allow-list) --> promlink (the binary) --> DCE emulator
//! Prometheus "c": authorization.credentials_file (a wrong token)                       --/
//! ```
//!
//! Each sender scrapes itself and tags its series with an external label `sender`. promlink must
//! forward a's and b's series, refuse c's with 401 (which Prometheus counts as failed samples and
//! does not retry), count the refusals, and never forward a series of c.
//!
//! Needs `/usr/bin/prometheus` (or `PROMLINK_E2E_PROMETHEUS`); under `CI=true` a missing
//! Prometheus fails the test (`scripts/test.sh` installs it).

mod e2e;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::prom::{prometheus_bin, start_sender, wait_for_result};
use e2e::{free_ports, get_text, sum_of, value_of, write, Proc};
use promlink::emulator::dce::{DceConfig, DceEmulator, DceTls};
use promlink::emulator::tls::TestCa;

fn sender_config(name: &str, port: u16, promlink_port: u16, client: &str) -> String {
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  external_labels: {{sender: {name}}}
scrape_configs:
  - job_name: sender
    static_configs: [{{targets: ["127.0.0.1:{port}"]}}]
remote_write:
  - url: https://127.0.0.1:{promlink_port}/api/v1/write
    name: promlink
{client}
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_senders_authenticate_with_tokens_and_client_certificates() {
    let Some(prometheus) = prometheus_bin(
        "e2e_prometheus_auth",
        "the authenticated-receiver test against real Prometheus",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ports = free_ports(4);
    let (promlink_port, a_port, b_port, c_port) = (ports[0], ports[1], ports[2], ports[3]);

    let ca = TestCa::new("gateway CA").unwrap();
    let server = ca.issue(&["127.0.0.1"]).unwrap();
    let senders_ca = TestCa::new("senders CA").unwrap();
    let b_cert = senders_ca.issue(&["prometheus-b.monitoring.svc"]).unwrap();
    let secret = |name: &str, text: &str| {
        let p = d.join(name);
        write(&p, text);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    };
    let ca_file = secret("ca.pem", ca.cert_pem());
    let tls_cert = secret("tls.crt", &server.cert_pem);
    let tls_key = secret("tls.key", &server.key_pem);
    let client_ca = secret("senders-ca.pem", senders_ca.cert_pem());
    let tokens = secret("tokens", "a-good-token-5e1f\n");
    let token_a = secret("token-a", "a-good-token-5e1f");
    let token_c = secret("token-c", "a-wrong-token-0000");
    let b_crt = secret("b.crt", &b_cert.cert_pem);
    let b_key = secret("b.key", &b_cert.key_pem);
    let upstream_token = secret("upstream-token", "upstream-token-not-checked");

    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        auth: None,
        keep_accepted: 100_000,
        ..DceConfig::default()
    })
    .await
    .unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promlink"));
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{promlink_port}")])
        .args(["--ingestion-url", dce.url()])
        // The emulated DCE (plain HTTP here) does not check the upstream token.
        .args([
            "--allow-plain-http",
            "--identity",
            "token-file",
            "--token-file",
            &upstream_token,
        ])
        .args(["--tls-cert", &tls_cert, "--tls-key", &tls_key])
        .args(["--client-ca", &client_ca])
        .args(["--client-allowed-name", "prometheus-b.monitoring.svc"])
        .args(["--bearer-token-file", &tokens])
        .args(["--flush-interval", "500ms", "--shutdown-grace", "5s"])
        .args(["--log-format", "json"]);
    let mut promlink = Proc::spawn("promlink", cmd, &d.join("promlink.log"));
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("https://127.0.0.1:{promlink_port}");
    let health = format!("{base}/health");
    let up = Instant::now() + Duration::from_secs(20);
    while get_text(&https, &health).await.is_err() {
        promlink.assert_running();
        assert!(
            Instant::now() < up,
            "promlink /health over TLS did not answer in 20s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for (name, port, client) in [
        (
            "a",
            a_port,
            format!("    authorization:\n      credentials_file: {token_a}\n    tls_config:\n      ca_file: {ca_file}"),
        ),
        (
            "b",
            b_port,
            format!("    tls_config:\n      ca_file: {ca_file}\n      cert_file: {b_crt}\n      key_file: {b_key}"),
        ),
        (
            "c",
            c_port,
            format!("    authorization:\n      credentials_file: {token_c}\n    tls_config:\n      ca_file: {ca_file}"),
        ),
    ] {
        let sd = d.join(name);
        std::fs::create_dir_all(&sd).unwrap();
        let (proc, sender_base) = start_sender(
            &prometheus,
            &sd,
            port,
            &sender_config(name, port, promlink_port, &client),
            &http,
        )
        .await;
        senders.push((name, proc, sender_base));
    }
    for (name, _, sender_base) in &senders {
        wait_for_result(
            &http,
            &format!("sender {name}'s first scrape"),
            Duration::from_secs(15),
            &format!(r#"{sender_base}/api/v1/query?query=up{{job="sender"}}"#),
        )
        .await;
    }

    // Until a and b have been forwarded and c has been refused a few times.
    let deadline = Instant::now() + Duration::from_secs(30);
    let forwarded_senders = loop {
        let seen: BTreeSet<String> = dce
            .accepted()
            .iter()
            .flat_map(|r| r.timeseries.iter())
            .flat_map(|ts| ts.labels.iter())
            .filter(|l| l.name == "sender")
            .map(|l| l.value.clone())
            .collect();
        let m = get_text(&https, &format!("{base}/metrics")).await.unwrap();
        let refused = value_of(
            &m,
            r#"promlink_receive_unauthorized_total{reason="bad_token"}"#,
        )
        .unwrap_or(0.0);
        if seen.contains("a") && seen.contains("b") && refused >= 3.0 {
            break seen;
        }
        promlink.assert_running();
        assert!(
            Instant::now() < deadline,
            "forwarded senders {seen:?}, bad-token refusals {refused}; promlink log:\n{}",
            promlink.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        !forwarded_senders.contains("c"),
        "a series of the sender with the wrong token was forwarded"
    );

    for (name, proc, sender_base) in &mut senders {
        let m = get_text(&http, &format!("{sender_base}/metrics"))
            .await
            .unwrap();
        let sent = sum_of(&m, "prometheus_remote_storage_samples_total").unwrap_or(0.0);
        let failed = sum_of(&m, "prometheus_remote_storage_samples_failed_total").unwrap_or(0.0);
        if *name == "c" {
            assert!(
                failed > 0.0,
                "sender c: 401s are failed samples in Prometheus ({m})"
            );
        } else {
            assert!(
                sent > 0.0,
                "sender {name} sent nothing; log:\n{}",
                proc.log_tail(20)
            );
            assert_eq!(
                failed,
                0.0,
                "sender {name} had failed samples; log:\n{}",
                proc.log_tail(20)
            );
        }
        let (status, in_time) = proc.terminate(Duration::from_secs(20));
        assert!(in_time, "sender {name} did not stop ({status})");
    }
    let m = get_text(&https, &format!("{base}/metrics")).await.unwrap();
    assert_eq!(
        value_of(
            &m,
            r#"promlink_receive_unauthorized_total{reason="name_not_allowed"}"#
        ),
        None,
        "b's certificate is on the allow-list"
    );
    assert!(!promlink.log().contains("a-good-token") && !promlink.log().contains("a-wrong-token"));
    let (status, in_time) = promlink.terminate(Duration::from_secs(20));
    assert!(
        in_time && status.success(),
        "promlink did not stop cleanly ({status})"
    );
    dce.shutdown().await;
}

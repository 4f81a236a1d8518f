//! The receiver on a network: TLS (and its reload), bearer tokens (and their rotation), mutual
//! TLS with an allow-list, the refusal to take tokens in clear text, and slow or greedy senders
//! (slow loris, trickled bodies, too many connections) that must not block well-behaved ones.
//! Everything runs on 127.0.0.1 with real TLS (rustls both sides) and the DCE emulator upstream.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fixture, Rig, RigOptions};
use promlink::config::Settings;
use promlink::emulator::tls::{LeafCert, TestCa};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V1: &str = "application/x-protobuf";

fn write_secret(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Writes via a temporary file and a rename, as a secret volume or cert-manager does.
fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, content).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An HTTPS client trusting `ca`, optionally presenting `identity`.
fn client(ca: &TestCa, identity: Option<&LeafCert>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some(id) = identity {
        let pem = format!("{}{}", id.cert_pem, id.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn post(http: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String, bool) {
    let mut req = http
        .post(url)
        .header("Content-Type", V1)
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(fixture("prom242_rw1_500samples_a.snappy"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let www = resp.headers().contains_key("www-authenticate");
    (resp.status().as_u16(), resp.text().await.unwrap(), www)
}

/// Text of promlink's /metrics over HTTPS.
async fn metrics(http: &reqwest::Client, rig: &Rig) -> String {
    http.get(format!("https://{}/metrics", rig.promlink.local_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `promlink_receive_reloads_total` for `what` and `result`.
async fn reloads(http: &reqwest::Client, rig: &Rig, what: &str, result: &str) -> f64 {
    let series = format!("promlink_receive_reloads_total{{what=\"{what}\",result=\"{result}\"}}");
    value(&metrics(http, rig).await, &series)
}

/// Waits (5 s at most) until promlink has counted more reloads of `what` with `result` than
/// `before`. Its watcher looks at the files every 100 ms, but on a loaded machine a fixed
/// pause may end before it has.
async fn reloaded(http: &reqwest::Client, rig: &Rig, what: &str, result: &str, before: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while reloads(http, rig, what, result).await <= before {
        assert!(
            Instant::now() < deadline,
            "no reload of {what} with result {result} was counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The certificate a TLS handshake with `addr` presents.
async fn served_certificate(ca: &TestCa, addr: std::net::SocketAddr) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_rotating_bearer_tokens_and_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("sender-side CA").unwrap();
    let first = ca.issue(&["127.0.0.1"]).unwrap();
    let cert = write_secret(dir.path(), "tls.crt", &first.cert_pem);
    let key = write_secret(dir.path(), "tls.key", &first.key_pem);
    let tokens = write_secret(dir.path(), "tokens", "token-one-3f9a\n");
    let rig = Rig::start(RigOptions {
        extra: Settings {
            tls_cert: Some(cert.clone()),
            tls_key: Some(key.clone()),
            bearer_token_file: Some(tokens.clone()),
            reload_interval: Some(Duration::from_millis(100)),
            ..Settings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let url = format!("https://{}/api/v1/write", rig.promlink.local_addr);
    let http = client(&ca, None);

    assert_eq!(post(&http, &url, Some("token-one-3f9a")).await.0, 204);
    let (status, text, www) = post(&http, &url, None).await;
    assert_eq!((status, www), (401, true), "{text}");
    assert!(text.contains("authentication required"), "{text}");
    let (status, text, _) = post(&http, &url, Some("token-one-3f9")).await;
    assert_eq!(status, 401);
    assert!(text.contains("bearer token is not accepted"), "{text}");
    assert!(
        !text.contains("token-one"),
        "no hint of the expected token: {text}"
    );

    // Plain HTTP to a TLS listener gets nothing served.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", rig.promlink.local_addr))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // Rotation: both tokens for a while, then only the new one.
    let ok = reloads(&http, &rig, "bearer_tokens", "ok").await;
    replace(&tokens, "token-one-3f9a\ntoken-two-77c1\n");
    reloaded(&http, &rig, "bearer_tokens", "ok", ok).await;
    assert_eq!(post(&http, &url, Some("token-two-77c1")).await.0, 204);
    assert_eq!(post(&http, &url, Some("token-one-3f9a")).await.0, 204);
    let ok = reloads(&http, &rig, "bearer_tokens", "ok").await;
    replace(&tokens, "token-two-77c1\n");
    reloaded(&http, &rig, "bearer_tokens", "ok", ok).await;
    assert_eq!(post(&http, &url, Some("token-one-3f9a")).await.0, 401);
    assert_eq!(post(&http, &url, Some("token-two-77c1")).await.0, 204);
    // A token file emptied by mistake keeps the last good tokens.
    let failed = reloads(&http, &rig, "bearer_tokens", "error").await;
    replace(&tokens, "\n");
    reloaded(&http, &rig, "bearer_tokens", "error", failed).await;
    assert_eq!(post(&http, &url, Some("token-two-77c1")).await.0, 204);

    // Certificate rotation: new connections get the new certificate.
    assert_eq!(
        served_certificate(&ca, rig.promlink.local_addr).await,
        der(&first.cert_pem)
    );
    let second = ca.issue(&["127.0.0.1"]).unwrap();
    replace(&key, &second.key_pem);
    replace(&cert, &second.cert_pem);
    let deadline = Instant::now() + Duration::from_secs(5);
    while served_certificate(&ca, rig.promlink.local_addr).await != der(&second.cert_pem) {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken key keeps the previous certificate serving.
    let failed = reloads(&http, &rig, "tls", "error").await;
    replace(
        &key,
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    reloaded(&http, &rig, "tls", "error", failed).await;
    let fresh = client(&ca, None);
    assert_eq!(post(&fresh, &url, Some("token-two-77c1")).await.0, 204);

    let m = metrics(&fresh, &rig).await;
    assert!(
        value(
            &m,
            "promlink_receive_unauthorized_total{reason=\"missing_credentials\"}"
        ) >= 1.0,
        "{m}"
    );
    assert!(
        value(
            &m,
            "promlink_receive_unauthorized_total{reason=\"bad_token\"}"
        ) >= 2.0,
        "{m}"
    );
    assert!(
        value(
            &m,
            "promlink_receive_reloads_total{what=\"bearer_tokens\",result=\"ok\"}"
        ) >= 2.0,
        "{m}"
    );
    assert!(
        value(
            &m,
            "promlink_receive_reloads_total{what=\"bearer_tokens\",result=\"error\"}"
        ) >= 1.0,
        "{m}"
    );
    assert!(
        value(
            &m,
            "promlink_receive_reloads_total{what=\"tls\",result=\"ok\"}"
        ) >= 1.0,
        "{m}"
    );
    assert!(
        value(
            &m,
            "promlink_receive_reloads_total{what=\"tls\",result=\"error\"}"
        ) >= 1.0,
        "{m}"
    );
    assert!(
        value(&m, "promlink_receive_tls_cert_not_after_seconds") > 1.7e9,
        "{m}"
    );
    assert!(!m.contains("token-one") && !m.contains("token-two"), "{m}");
    // Six writes were let in (the same fixture: the upstream sees repeats, so count at the edge).
    assert_eq!(
        value(&m, "promlink_samples_received_total{protocol=\"v1\"}"),
        3000.0,
        "{m}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_an_allow_list() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("server CA").unwrap();
    let client_ca = TestCa::new("sender CA").unwrap();
    let other_ca = TestCa::new("someone else's CA").unwrap();
    let leaf = server_ca.issue(&["127.0.0.1"]).unwrap();
    let rig = Rig::start(RigOptions {
        extra: Settings {
            tls_cert: Some(write_secret(dir.path(), "tls.crt", &leaf.cert_pem)),
            tls_key: Some(write_secret(dir.path(), "tls.key", &leaf.key_pem)),
            client_ca: Some(write_secret(dir.path(), "ca.crt", client_ca.cert_pem())),
            client_allowed_name: Some(vec!["prometheus-a.monitoring.svc".into()]),
            ..Settings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let addr = rig.promlink.local_addr;
    let url = format!("https://{addr}/api/v1/write");
    let allowed = client_ca.issue(&["prometheus-a.monitoring.svc"]).unwrap();
    let not_listed = client_ca.issue(&["prometheus-b.monitoring.svc"]).unwrap();
    let stranger = other_ca.issue(&["prometheus-a.monitoring.svc"]).unwrap();

    assert_eq!(
        post(&client(&server_ca, Some(&allowed)), &url, None)
            .await
            .0,
        204
    );
    let (status, text, www) = post(&client(&server_ca, Some(&not_listed)), &url, None).await;
    assert_eq!((status, www), (401, false));
    assert!(text.contains("not on the allow-list"), "{text}");
    let (status, text, _) = post(&client(&server_ca, None), &url, None).await;
    assert_eq!(status, 401);
    assert!(text.contains("present a client certificate"), "{text}");
    // A certificate from another CA fails the handshake itself.
    let refused = client(&server_ca, Some(&stranger))
        .post(&url)
        .body(vec![1u8])
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // Probes and scrapes need no certificate.
    let anon = client(&server_ca, None);
    let health = anon
        .get(format!("https://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let m = metrics(&anon, &rig).await;
    assert_eq!(
        value(
            &m,
            "promlink_receive_unauthorized_total{reason=\"name_not_allowed\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            "promlink_receive_unauthorized_total{reason=\"no_client_certificate\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(
        value(
            &m,
            "promlink_receive_connections_closed_total{reason=\"tls_handshake\"}"
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        value(&m, "promlink_samples_received_total{protocol=\"v1\"}"),
        500.0,
        "{m}"
    );
    rig.stop().await;
}

#[test]
fn tokens_in_clear_text_on_a_network_address_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_secret(dir.path(), "tokens", "t\n");
    let base = || Settings {
        ingestion_url: Some("http://127.0.0.1:9/api/v1/write".into()),
        allow_plain_http: Some(true),
        identity: Some(promlink::identity::IdentityKind::None),
        bearer_token_file: Some(tokens.clone()),
        ..Settings::default()
    };
    let e = Settings {
        listen: Some("0.0.0.0:8081".parse().unwrap()),
        ..base()
    }
    .resolve()
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("bearer_token_file")
            && e.contains("clear text")
            && e.contains("allow_insecure_auth"),
        "{e}"
    );
    for ok in [
        Settings {
            listen: Some("127.0.0.1:8081".parse().unwrap()),
            ..base()
        },
        Settings {
            listen: Some("0.0.0.0:8081".parse().unwrap()),
            allow_insecure_auth: Some(true),
            ..base()
        },
    ] {
        ok.resolve().unwrap();
    }
    // A world-readable secret is named in a warning; nothing of it is printed.
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&tokens, "very-secret-token\n").unwrap();
    let cfg = Settings {
        listen: Some("127.0.0.1:8081".parse().unwrap()),
        ..base()
    }
    .resolve()
    .unwrap();
    assert!(
        cfg.notices
            .iter()
            .any(|n| n.contains("bearer_token_file") && n.contains("mode 0644")),
        "{:?}",
        cfg.notices
    );
    assert!(!format!("{cfg:?}").contains("very-secret-token"));
}

/// Reads until the server closes the connection; returns what it sent.
async fn until_closed(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_do_not_block_well_behaved_ones() {
    const LORIS: usize = 200;
    let rig = Rig::start(RigOptions {
        extra: Settings {
            header_read_timeout: Some(Duration::from_secs(1)),
            body_read_timeout: Some(Duration::from_secs(1)),
            max_connections: Some(LORIS + 20),
            ..Settings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let addr = rig.promlink.local_addr;
    // Slow loris: each connection sends its request line and headers a byte at a time.
    let header = format!("POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {V1}\r\n");
    let mut trickling = Vec::new();
    for i in 0..LORIS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&header.as_bytes()[..1 + i % 5]).await.unwrap();
        trickling.push(s);
    }
    // Trickled bodies: headers complete, body far slower than body_read_timeout allows.
    let mut slow_bodies = Vec::new();
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("{header}Content-Encoding: snappy\r\nContent-Length: 100000\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        s.write_all(b"\x01").await.unwrap();
        slow_bodies.push(s);
    }
    let trickle = tokio::spawn(async move {
        for round in 0..8 {
            for (i, s) in trickling.iter_mut().enumerate() {
                let at = 1 + i % 5 + round;
                let _ = s.write_all(&header.as_bytes()[at..at + 1]).await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        trickling
    });
    // Meanwhile, well-behaved senders are served promptly.
    for _ in 0..10 {
        let started = Instant::now();
        let resp = rig
            .post(fixture("prom242_rw1_500samples_a.snappy"), V1)
            .await;
        assert_eq!(resp.status().as_u16(), 204);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "a good write took {:?}",
            started.elapsed()
        );
    }
    // The trickled bodies got 408 and their connections closed.
    for mut s in slow_bodies {
        let answer = until_closed(&mut s, Duration::from_secs(5))
            .await
            .expect("closed");
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("body_read_timeout"), "{text}");
    }
    // Every loris connection was closed by promlink although it kept sending.
    let mut trickling = trickle.await.unwrap();
    for s in &mut trickling {
        assert!(until_closed(s, Duration::from_secs(5)).await.is_some());
    }
    let closed = rig
        .metric("promlink_receive_connections_closed_total{reason=\"header_timeout\"}")
        .await;
    assert!(closed >= LORIS as f64, "header timeouts counted: {closed}");
    assert!(
        rig.metric("promlink_receive_rejected_total{reason=\"body_timeout\"}")
            .await
            >= 5.0
    );
    drop(trickling);

    // Over max_connections: the extra connection gets a 503 line and is closed.
    let mut held = Vec::new();
    for _ in 0..LORIS + 20 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let answer = until_closed(&mut extra, Duration::from_secs(5))
        .await
        .expect("closed");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 503"));
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rig.metric("promlink_receive_connections_closed_total{reason=\"max_connections\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        rig.post(fixture("prom242_rw1_500samples_a.snappy"), V1)
            .await
            .status()
            .as_u16(),
        204,
        "served again once connections are free"
    );
    assert_eq!(
        rig.metric("promlink_samples_received_total{protocol=\"v1\"}")
            .await,
        11.0 * 500.0
    );
    rig.stop().await;
}

/// Upstream TLS is always verified: a DCE whose certificate is not from a trusted CA never gets
/// a request, and the failure is counted as a connection problem (there is no switch to skip
/// verification).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_upstream_certificate_is_never_sent_data() {
    use promlink::emulator::dce::{DceConfig, DceEmulator, DceTls};
    let dir = tempfile::tempdir().unwrap();
    let real_ca = TestCa::new("the DCE's real CA").unwrap();
    let other_ca = TestCa::new("a CA promlink trusts").unwrap();
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::from_ca(&real_ca).unwrap(),
        ..DceConfig::default()
    })
    .await
    .unwrap();
    let rig_settings = Settings {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ingestion_url: Some(dce.url().to_string()),
        identity: Some(promlink::identity::IdentityKind::TokenFile),
        token_file: Some(write_secret(dir.path(), "token", "upstream-token")),
        ca_file: Some(write_secret(dir.path(), "ca.pem", other_ca.cert_pem())),
        private_link: Some(promlink::privatelink::Mode::Off),
        flush_interval: Some(Duration::from_millis(100)),
        retry_min_backoff: Some(Duration::from_millis(20)),
        retry_max_backoff: Some(Duration::from_millis(100)),
        shutdown_grace: Some(Duration::from_secs(1)),
        // Not a test of the shutdown handshake: stop accepting at once, so teardown is quick.
        shutdown_quiet_period: Some(Duration::ZERO),
        ..Settings::default()
    };
    let running = promlink::serve::start(rig_settings.resolve().unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("http://{}/api/v1/write", running.local_addr))
        .header("Content-Type", V1)
        .header("Content-Encoding", "snappy")
        .body(fixture("prom242_rw1_500samples_a.snappy"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204, "accepted into the queue");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let retries = common::metric(
            &http,
            running.local_addr,
            "promlink_upstream_retries_total{reason=\"connection\"}",
        )
        .await;
        if retries >= 3.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection retries counted: {retries}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dce.stats().requests,
        0,
        "no request passed an unverified TLS handshake"
    );
    running.shutdown.cancel();
    running.wait().await;
    dce.shutdown().await;
}

/// Concurrency and body-byte budgets: a request over either gets a retryable 503 naming the
/// limit (a 4xx would make Prometheus drop the data), counted; once the holder finishes, the
/// next write goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_body_budgets_answer_retryable_503() {
    let good = fixture("prom242_rw1_500samples_a.snappy");
    for (limit, settings, message, reason) in [
        (
            "max_concurrent_requests",
            Settings {
                max_concurrent_requests: Some(1),
                ..Settings::default()
            },
            "max_concurrent_requests = 1",
            "too_many_requests",
        ),
        (
            "max_inflight_body_bytes",
            Settings {
                max_inflight_body_bytes: Some(good.len() + 100),
                ..Settings::default()
            },
            "too many request bodies are being read",
            "body_busy",
        ),
    ] {
        let rig = Rig::start(RigOptions {
            extra: settings,
            ..RigOptions::default()
        })
        .await;
        let addr = rig.promlink.local_addr;
        // A sender that declares a body and sends only part of it holds its share meanwhile.
        let mut holder = TcpStream::connect(addr).await.unwrap();
        holder
            .write_all(
                format!(
                    "POST /api/v1/write HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {V1}\r\nContent-Encoding: snappy\r\nContent-Length: {}\r\n\r\n",
                    good.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        holder.write_all(&good[..100]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let refused = rig.post(good.clone(), V1).await;
        assert_eq!(refused.status().as_u16(), 503, "{limit}");
        assert!(refused.headers().contains_key("retry-after"), "{limit}");
        let text = refused.text().await.unwrap();
        assert!(text.contains(message), "{limit}: {text}");
        // The holder completes its body: it is accepted, and the budget is free again.
        holder.write_all(&good[100..]).await.unwrap();
        let answer = until_closed_or_answered(&mut holder).await;
        assert!(answer.starts_with("HTTP/1.1 204"), "{limit}: {answer}");
        assert_eq!(
            rig.post(good.clone(), V1).await.status().as_u16(),
            204,
            "{limit}"
        );
        let counted = rig
            .metric(&format!(
                "promlink_receive_rejected_total{{reason=\"{reason}\"}}"
            ))
            .await;
        assert_eq!(counted, 1.0, "{limit}");
        rig.stop().await;
    }
}

/// Reads until a complete status line and headers arrived (or the connection closed).
async fn until_closed_or_answered(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

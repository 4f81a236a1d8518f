//! The shutdown handshake (issue 12): after SIGTERM promlink keeps accepting writes while it
//! tells senders to move on (`/ready` 503, `Connection: close`, HTTP/2 GOAWAY), stops accepting
//! once writes go quiet for `shutdown_quiet_period` (or the grace period runs short), and
//! delivers everything it acknowledged. The cancellation token of the in-process promlink is
//! what SIGTERM cancels in the binary (`tests/e2e_shutdown.rs` sends the real signal).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Rig, RigOptions};
use promlink::config::Settings;
use promlink::loadgen::{self, Checksum};
use promlink::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Request `n`: one sample of its own series, so no two requests collide upstream.
fn request(n: i64) -> (Vec<u8>, Checksum) {
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "shutdown_test".into(),
                },
                Label {
                    name: "n".into(),
                    value: n.to_string(),
                },
            ],
            samples: vec![Sample {
                value: n as f64,
                timestamp: 1_700_000_000_000 + n,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    (loadgen::encode(&req), Checksum::of_request(&req))
}

/// An HTTP/1.1 write of request `n` on `s` (kept alive unless the server says otherwise):
/// the status and whether the answer carried `Connection: close`.
async fn raw_write(s: &mut TcpStream, n: i64) -> (u16, bool) {
    let (body, _) = request(n);
    let head = format!(
        "POST /api/v1/write HTTP/1.1\r\nHost: promlink\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: snappy\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    // The answers here have no body (204) or a short one: read the head.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("answer within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed before an answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head.contains("\r\nconnection: close\r\n"))
}

/// Whether the server closes `s` within `limit` (reads to EOF, discarding what comes).
async fn closes_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn rig_options(quiet: Duration, grace: Duration) -> RigOptions {
    RigOptions {
        extra: Settings {
            shutdown_quiet_period: Some(quiet),
            shutdown_grace: Some(grace),
            ..Settings::default()
        },
        ..RigOptions::default()
    }
}

/// After SIGTERM: writes keep being accepted (each answer says `Connection: close`, `/ready` is
/// 503, `/status` says shutting down) as long as they keep coming, well past the quiet period
/// counted from SIGTERM; the listener closes only once they have been quiet for the quiet
/// period; everything acknowledged arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_accepting_until_writes_go_quiet() {
    let quiet = Duration::from_secs(1);
    let rig = Rig::start(rig_options(quiet, Duration::from_secs(20))).await;
    let addr = rig.promlink.local_addr;
    let mut acked = Checksum::new();

    // A keep-alive connection from before SIGTERM.
    let mut old = TcpStream::connect(addr).await.unwrap();
    assert_eq!(raw_write(&mut old, 0).await, (204, false));
    acked.merge(&request(0).1);

    let sigterm = Instant::now();
    rig.promlink.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = rig.http.get(rig.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("shutting down"));
    let status: serde_json::Value = serde_json::from_str(
        &rig.http
            .get(rig.url("/status"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(status["shutting_down"], true, "{status}");

    // The old connection's next write is accepted, and it is told to close.
    assert_eq!(raw_write(&mut old, 1).await, (204, true));
    acked.merge(&request(1).1);
    assert!(
        closes_within(&mut old, Duration::from_secs(2)).await,
        "the keep-alive connection is closed after its answer"
    );

    // New connections, one write every 300 ms for 2.4 s: more than twice the quiet period
    // after SIGTERM, so only counting from the last write keeps them accepted.
    // A write is timed from before it is sent: promlink counts the quiet period from the
    // write's arrival, which is later than that and earlier than its answer, so timing it from
    // the answer would count the request's own handling against the quiet period.
    let mut last_write = Instant::now();
    for n in 2..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert_eq!(
            raw_write(&mut s, n).await,
            (204, true),
            "write {n}, {:?} after SIGTERM",
            sigterm.elapsed()
        );
        last_write = sent;
        acked.merge(&request(n).1);
    }
    assert!(sigterm.elapsed() > 2 * quiet);

    // Quiet from now on: the listener closes no sooner than the quiet period after the last
    // write (and not much later).
    let closed_after = loop {
        if TcpStream::connect(addr).await.is_err() {
            break last_write.elapsed();
        }
        assert!(
            last_write.elapsed() < Duration::from_secs(5),
            "still listening 5 s after the last write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        closed_after >= quiet,
        "stopped accepting {closed_after:?} after the last write, before the quiet period"
    );

    rig.wait_for(
        "everything acknowledged delivered",
        Duration::from_secs(10),
        |s| s.checksum == acked,
    )
    .await;
    rig.promlink.wait().await;
    rig.dce.shutdown().await;
    rig.entra.shutdown().await;
}

/// Writes that never stop cannot hold the shutdown: writes stop being accepted two thirds into
/// the grace period, and what was acknowledged is delivered before the grace period ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_writes_stop_being_accepted_at_the_drain_reserve() {
    let grace = Duration::from_secs(3);
    let rig = Rig::start(rig_options(Duration::from_secs(5), grace)).await;
    let sigterm = Instant::now();
    rig.promlink.shutdown.cancel();
    let mut acked = Checksum::new();
    let mut last_accepted = None;
    let mut refused_at = None;
    for n in 0..100 {
        let (body, sum) = request(n);
        match rig
            .http
            .post(rig.write_url())
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(body)
            .send()
            .await
        {
            Ok(r) if r.status() == 204 => {
                acked.merge(&sum);
                last_accepted = Some(sigterm.elapsed());
            }
            // 503 while in-flight requests finish, then connection refused.
            _ => {
                refused_at = Some(sigterm.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (last_accepted, refused_at) = (last_accepted.unwrap(), refused_at.unwrap());
    let until = grace - grace / 3;
    // Writes go every 100 ms; a second of slack covers a request stalled on a loaded machine
    // (that the reserve starts at `until` is shown by the refusal below).
    assert!(
        last_accepted >= until - Duration::from_secs(1),
        "accepted only until {last_accepted:?}"
    );
    assert!(
        refused_at >= until && refused_at < grace,
        "refused at {refused_at:?}"
    );
    rig.wait_for("acknowledged delivered", Duration::from_secs(10), |s| {
        s.checksum == acked
    })
    .await;
    rig.promlink.wait().await;
    assert!(sigterm.elapsed() < grace + Duration::from_secs(2));
    rig.dce.shutdown().await;
    rig.entra.shutdown().await;
}

/// An HTTP/2 client over TLS (ALPN h2) to `addr`, trusting `ca`: the request sender and the
/// connection task (which ends when the server closes the connection).
async fn h2_connect(
    ca: &promlink::emulator::tls::TestCa,
    addr: std::net::SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

async fn h2_write(
    send: &mut hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>,
    n: i64,
) -> u16 {
    let req = hyper::Request::post("https://127.0.0.1/api/v1/write")
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .body(http_body_util::Full::new(bytes::Bytes::from(request(n).0)))
        .unwrap();
    send.send_request(req).await.unwrap().status().as_u16()
}

/// HTTP/2: at SIGTERM an open connection gets GOAWAY and closes (while the listener still
/// accepts); a connection opened while draining is served, then closed after its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_get_goaway_while_writes_are_still_accepted() {
    let ca = promlink::emulator::tls::TestCa::new("receiver CA").unwrap();
    let leaf = ca.issue(&["127.0.0.1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    let mut opts = rig_options(Duration::from_secs(4), Duration::from_secs(20));
    opts.extra.tls_cert = Some(cert);
    opts.extra.tls_key = Some(key);
    let rig = Rig::start(opts).await;
    let addr = rig.promlink.local_addr;

    let (mut send, before) = h2_connect(&ca, addr).await;
    assert_eq!(h2_write(&mut send, 0).await, 204);
    let sigterm = Instant::now();
    rig.promlink.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), before)
        .await
        .expect("the connection open at SIGTERM is closed by GOAWAY within 2 s")
        .unwrap();

    // Still accepting: a new connection is served once, then closed.
    let (mut send, during) = h2_connect(&ca, addr).await;
    assert_eq!(h2_write(&mut send, 1).await, 204);
    tokio::time::timeout(Duration::from_secs(2), during)
        .await
        .expect("a connection opened while draining is closed after its answer")
        .unwrap();
    assert!(
        sigterm.elapsed() < Duration::from_secs(4),
        "all of that happened within the quiet period"
    );

    let mut acked = request(0).1;
    acked.merge(&request(1).1);
    rig.wait_for("both writes delivered", Duration::from_secs(10), |s| {
        s.checksum == acked
    })
    .await;
    rig.promlink.wait().await;
    rig.dce.shutdown().await;
    rig.entra.shutdown().await;
}

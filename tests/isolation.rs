//! Fault isolation (issue 14): one series the upstream keeps refusing must not hold back the
//! healthy ones. The scenario of the issue, against promlink at its default retry and batching
//! settings, with the memory queue and with the disk queue:
//!
//! - 20,000 healthy series: 4 senders, each sending its 5,000 series as 5 requests of 1,000
//!   series (one sample each), pausing 250 ms after each request (about 16,000 samples/s);
//! - one more sender writes `poison_metric{job="poison"}`, one sample per request, every 200 ms;
//! - for 30 s the DCE emulator refuses with 503 every request that holds `poison_metric` (a
//!   content filter, as a proxy or WAF in front of the DCE might be) and accepts all others.
//!
//! Expected: at least 80 % of the healthy samples acknowledged during the fault are delivered
//! within it; afterwards every acknowledged sample arrives, in order per series.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{one_sample_body as body, vm_hwm_mib, Rig, RigOptions};
use promlink::config::Settings;

const SERIES: usize = 20_000;
const SENDERS: usize = 4;
const PER_REQUEST: usize = 1_000;
const PAUSE: Duration = Duration::from_millis(250);
const POISON_EVERY: Duration = Duration::from_millis(200);
const WARM_UP: Duration = Duration::from_secs(3);
const FAULT: Duration = Duration::from_secs(30);
const POISON: &[u8] = b"poison_metric";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the senders had acknowledged: all of it, and the healthy samples acknowledged while
/// the fault was on.
#[derive(Default)]
struct Acked {
    healthy: AtomicU64,
    poison: AtomicU64,
    healthy_in_fault: AtomicU64,
}

/// Posts `body`, with Prometheus' headers; true when promlink acknowledged it (2xx).
async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> bool {
    http.post(url)
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn scenario(queue_dir: Option<&std::path::Path>) {
    let rig = Rig::start(RigOptions {
        keep_accepted: 0,
        // promlink's defaults: 2 s flush interval, 4 shards, retries from 500 ms to 30 s.
        flush_interval: Duration::from_secs(2),
        extra: Settings {
            retry_min_backoff: Some(Duration::from_millis(500)),
            retry_max_backoff: Some(Duration::from_secs(30)),
            queue_dir: queue_dir.map(|d| d.to_path_buf()),
            ..Settings::default()
        },
        ..RigOptions::default()
    })
    .await;
    let url = rig.write_url();
    let stop = Arc::new(AtomicBool::new(false));
    let in_fault = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Acked::default());
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (url, stop, in_fault, acked) =
            (url.clone(), stop.clone(), in_fault.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let per_sender = SERIES / SENDERS;
            let mut last_ts = 0;
            while !stop.load(Ordering::Relaxed) {
                for r in 0..per_sender / PER_REQUEST {
                    let first = s * per_sender + r * PER_REQUEST;
                    // Strictly increasing per series, as Prometheus' are.
                    let ts = now_ms().max(last_ts + 1);
                    last_ts = ts;
                    let during = in_fault.load(Ordering::Relaxed);
                    if post(
                        &http,
                        &url,
                        body("healthy_metric", "healthy", first..first + PER_REQUEST, ts),
                    )
                    .await
                    {
                        acked
                            .healthy
                            .fetch_add(PER_REQUEST as u64, Ordering::Relaxed);
                        if during && in_fault.load(Ordering::Relaxed) {
                            acked
                                .healthy_in_fault
                                .fetch_add(PER_REQUEST as u64, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(PAUSE).await;
                }
            }
        }));
    }
    {
        let (url, stop, acked) = (url.clone(), stop.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut last_ts = 0;
            while !stop.load(Ordering::Relaxed) {
                let ts = now_ms().max(last_ts + 1);
                last_ts = ts;
                if post(&http, &url, body("poison_metric", "poison", 0..1, ts)).await {
                    acked.poison.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(POISON_EVERY).await;
            }
        }));
    }

    tokio::time::sleep(WARM_UP).await;
    let peak_before = vm_hwm_mib();
    let before = rig.dce.stats().samples;
    in_fault.store(true, Ordering::Relaxed);
    rig.dce.refuse_containing(Some((POISON, 503)));
    tokio::time::sleep(FAULT).await;
    rig.dce.refuse_containing(None);
    in_fault.store(false, Ordering::Relaxed);
    let stats = rig.dce.stats();
    let delivered_in_fault = stats.samples - before;
    let offered = acked.healthy_in_fault.load(Ordering::Relaxed);
    let peak = vm_hwm_mib();
    let refused = stats.rejected.get(&503).copied().unwrap_or(0);

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let healthy = acked.healthy.load(Ordering::Relaxed);
    let poison = acked.poison.load(Ordering::Relaxed);
    // The poison part backs off up to retry_max_backoff (30 s) before the fault is over.
    rig.wait_for("every acknowledged sample", Duration::from_secs(90), |s| {
        s.samples >= healthy + poison
    })
    .await;
    let end = rig.dce.stats();
    let isolations = rig.metric("promlink_upstream_isolations_total").await;
    let ratio = delivered_in_fault as f64 / offered as f64;
    println!(
        "isolation ({}): healthy samples acknowledged during the {}s fault {offered}, delivered within it {delivered_in_fault} ({:.1} %); 503s {refused}; isolations {isolations}; \
         acknowledged in all {healthy} healthy + {poison} poison, delivered {}; out of order {}, repeated {}; \
         test process VmHWM {peak_before:.0} MiB before the fault, {peak:.0} MiB at its end (promlink, senders and emulators in one process)",
        if queue_dir.is_some() { "disk queue" } else { "memory queue" },
        FAULT.as_secs(),
        ratio * 100.0,
        end.samples,
        end.out_of_order_samples,
        end.repeated_timestamp_samples,
    );
    assert!(refused > 0, "the fault never hit: {end:?}");
    assert!(isolations >= 1.0, "no batch was isolated");
    assert!(
        ratio >= 0.8,
        "only {:.1} % of the healthy samples offered during the fault were delivered within it",
        ratio * 100.0
    );
    assert_eq!(end.samples, healthy + poison, "nothing lost, nothing twice");
    assert_eq!(end.out_of_order_samples, 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_series_does_not_hold_back_healthy_ones_memory_queue() {
    let started = Instant::now();
    scenario(None).await;
    println!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_series_does_not_hold_back_healthy_ones_disk_queue() {
    let dir = tempfile::tempdir().unwrap();
    scenario(Some(&dir.path().join("queue"))).await;
}

/// The failing part waits alone: healthy requests batched *after* the refused one (same batch)
/// are delivered while it is still refused, not after it. One batch [poison, h0, h1, h2] on
/// one worker; a second worker keeps delivering other series, which is what lets the batch be
/// isolated. Default retry backoff; the poison stays refused throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_requests_behind_the_failing_one_in_its_batch_go_first() {
    let rig = Rig::start(RigOptions {
        shards: 2,
        flush_interval: Duration::from_secs(1),
        extra: Settings {
            retry_min_backoff: Some(Duration::from_millis(500)),
            retry_max_backoff: Some(Duration::from_secs(30)),
            ..Settings::default()
        },
        ..RigOptions::default()
    })
    .await;
    rig.dce.refuse_containing(Some((POISON, 503)));
    let url = rig.write_url();
    let http = reqwest::Client::new();
    // Back to back, well within a tenth of the flush interval: one batch, poison first. The
    // bodies are made first, so that only the requests themselves stand between the posts.
    let ts = now_ms();
    let mut bodies = vec![body("poison_metric", "poison", 0..1, ts)];
    for h in 0..3 {
        let ids = h * 100..h * 100 + 100;
        bodies.push(body("behind_metric", "behind", ids, ts));
    }
    for b in bodies {
        assert!(post(&http, &url, b).await);
    }
    // Other series keep flowing through the other worker.
    let started = Instant::now();
    let mut other = 0;
    let delivered_behind = loop {
        let ids = 1000 + other * 10..1000 + other * 10 + 10;
        assert!(post(&http, &url, body("other_metric", "other", ids, now_ms())).await);
        other += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let behind: usize = rig
            .dce
            .accepted()
            .iter()
            .flat_map(|r| &r.timeseries)
            .filter(|t| t.labels.iter().any(|l| l.value == "behind_metric"))
            .count();
        if behind == 300 || started.elapsed() > Duration::from_secs(15) {
            break behind;
        }
    };
    let poison_delivered = rig
        .dce
        .accepted()
        .iter()
        .flat_map(|r| &r.timeseries)
        .any(|t| t.labels.iter().any(|l| l.value == "poison_metric"));
    let isolations = rig.metric("promlink_upstream_isolations_total").await;
    println!(
        "behind the refused request: {delivered_behind} of 300 series delivered after {:?}; isolations {isolations}",
        started.elapsed()
    );
    assert!(isolations >= 1.0, "no batch was isolated");
    assert!(!poison_delivered, "the refused series got through");
    assert_eq!(
        delivered_behind, 300,
        "the healthy requests behind the refused one in its batch waited for it"
    );
    // Their series are free again too: the next round of them goes while the poison waits.
    for h in 0..3 {
        let ids = h * 100..h * 100 + 100;
        assert!(post(&http, &url, body("behind_metric", "behind", ids, ts + 1)).await);
    }
    let again = Instant::now();
    let behind_samples = || {
        rig.dce
            .accepted()
            .iter()
            .flat_map(|r| &r.timeseries)
            .filter(|t| t.labels.iter().any(|l| l.value == "behind_metric"))
            .count()
    };
    while behind_samples() < 600 && again.elapsed() < Duration::from_secs(10) {
        let ids = 1000 + other * 10..1000 + other * 10 + 10;
        assert!(post(&http, &url, body("other_metric", "other", ids, now_ms())).await);
        other += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        behind_samples(),
        600,
        "the series behind the refused request stay blocked after their delivery"
    );
    // Once the upstream takes it, the refused request arrives too.
    rig.dce.refuse_containing(None);
    rig.wait_for("the refused request", Duration::from_secs(40), |s| {
        s.samples >= 301 + 10 * other as u64
    })
    .await;
    assert_eq!(rig.dce.stats().out_of_order_samples, 0);
    rig.stop().await;
}

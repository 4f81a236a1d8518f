//! Soak (issue 14, part 7; not part of CI): promlink with the disk queue under a paced sender
//! for `SOAK_SECONDS` (default 600), while the DCE emulator answers with random faults (503,
//! 429 with `Retry-After`, 413, 400, a delay past `request_timeout`, a reset) and promlink is
//! killed with `kill -9` and restarted every `SOAK_KILL_EVERY` seconds (default 120). The sender
//! offers `SOAK_SERIES` samples a second (default 10,000: that many series, one sample each). At the
//! end every sample the sender saw acknowledged must have arrived, and nothing but resends may
//! arrive out of order. Each second it records promlink's RSS, `promlink_queue_bytes` and the
//! samples delivered; it writes them as CSV and draws them as a PNG.
//!
//! Run: `bash scripts/soak.sh` (installs the font the plot needs), or
//! `cargo bench --bench soak -- --bench`. Without `--bench` (as `cargo test --all-targets` runs
//! it) it prints a line and exits. Knobs: `SOAK_SECONDS`, `SOAK_KILL_EVERY`, `SOAK_SERIES`, `SOAK_SEED`,
//! `SOAK_OUT` (directory for `soak.csv` and `soak.png`, default `target/soak`),
//! `SOAK_FONT` (a TTF file, default DejaVu Sans from Debian's `fonts-dejavu-core`).
//!
//! The 400 fault is the emulator's "accept, then answer 400": promlink meets the refusal (and
//! drops the batch, as it must) while the data did arrive, so the exact check stays possible.
//! Everything listens on 127.0.0.1; promlink is stopped by its pid.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use promlink::emulator::dce::{DceConfig, DceEmulator, DceHandle, DceTls, Fault};
use promlink::loadgen::checksum::{series_hash, Checksum};
use promlink::loadgen::{LoadgenConfig, Report};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_promlink");

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One second of the run.
struct Row {
    t: f64,
    rss_mib: f64,
    queue_kib: f64,
    delivered_per_s: f64,
}

/// A small deterministic generator (xorshift64*), so a run can be repeated with `SOAK_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

struct Promlink {
    child: Child,
}

impl Promlink {
    fn spawn(args: &[String], log: &Path) -> Promlink {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the log");
        let err = out.try_clone().expect("clone the log handle");
        let child = Command::new(BIN)
            .arg("serve")
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start promlink");
        Promlink { child }
    }

    fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(0.0, |kib| kib / 1024.0)
    }

    fn kill9(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Promlink {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill9();
        }
    }
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> Option<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// A fault for the next request, or `None` (most of the time).
fn random_fault(rng: &mut Rng) -> Option<(&'static str, Fault)> {
    Some(match rng.next() % 20 {
        0 => ("503", Fault::status(503)),
        1 => ("429", Fault::retry_after(429, 1)),
        2 => ("413", Fault::status(413)),
        3 => ("400 after accepting", Fault::AcceptThen(400)),
        4 => ("timeout", Fault::Delay(Duration::from_secs(3))),
        5 => ("reset", Fault::Reset),
        _ => return None,
    })
}

/// The distinct samples the emulator accepted, and how many arrived in all.
fn arrived(dce: &DceHandle) -> (Checksum, u64) {
    let mut seen = HashSet::new();
    let mut distinct = Checksum::new();
    let mut total = 0;
    for ts in dce.accepted().iter().flat_map(|r| r.timeseries.iter()) {
        let h = series_hash(&ts.labels);
        for s in &ts.samples {
            total += 1;
            if seen.insert((h, s.timestamp, s.value.to_bits())) {
                distinct.add(h, s.timestamp, s.value);
            }
        }
    }
    (distinct, total)
}

/// A plot panel: title, the value it shows, its colour.
type Panel = (&'static str, fn(&Row) -> f64, plotters::style::RGBColor);

fn plot(rows: &[Row], kills: &[f64], path: &Path, font: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let bytes = std::fs::read(font).map_err(|e| format!("font {}: {e}", font.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| "the font cannot be read".to_string())?;
    let root = BitMapBackend::new(path, (1200, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let panels = root.split_evenly((3, 1));
    let t_max = rows.last().map_or(1.0, |r| r.t);
    let series: [Panel; 3] = [
        ("promlink RSS (MiB)", |r| r.rss_mib, BLUE),
        ("promlink_queue_bytes (KiB)", |r| r.queue_kib, RED),
        ("delivered samples per second", |r| r.delivered_per_s, GREEN),
    ];
    for (area, (name, value, color)) in panels.iter().zip(series) {
        let y_max = rows.iter().map(value).fold(1.0f64, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(name, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("seconds (vertical lines: kill -9 and restart)")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(rows.iter().map(|r| (r.t, value(r))), color))
            .map_err(|e| e.to_string())?;
        for &k in kills {
            chart
                .draw_series(LineSeries::new([(k, 0.0), (k, y_max)], BLACK.mix(0.4)))
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: run with `cargo bench --bench soak -- --bench` or scripts/soak.sh");
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if rt.block_on(run()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run() -> bool {
    let seconds = env_u64("SOAK_SECONDS", 600);
    let kill_every = env_u64("SOAK_KILL_EVERY", 120);
    let series = env_u64("SOAK_SERIES", 10_000) as usize;
    let mut rng = Rng(env_u64("SOAK_SEED", 0x5eed) | 1);
    let out = PathBuf::from(std::env::var("SOAK_OUT").unwrap_or_else(|_| "target/soak".into()));
    let font = PathBuf::from(
        std::env::var("SOAK_FONT")
            .unwrap_or_else(|_| "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".into()),
    );
    std::fs::create_dir_all(&out).expect("create SOAK_OUT");
    let dir = tempfile::tempdir().expect("temp dir");
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        keep_accepted: 1_000_000,
        ..DceConfig::default()
    })
    .await
    .expect("DCE emulator");
    let token = dir.path().join("token");
    std::fs::write(&token, "opaque-soak-token\n").expect("token file");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--ingestion-url",
        dce.url(),
        "--allow-plain-http",
        "--identity",
        "token-file",
        "--token-file",
        token.to_str().unwrap(),
        "--queue-dir",
        dir.path().join("queue").to_str().unwrap(),
        "--fsync",
        "always",
        "--request-timeout",
        "2s",
        "--retry-min-backoff",
        "100ms",
        "--retry-max-backoff",
        "2s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let log = out.join("promlink.log");
    let _ = std::fs::remove_file(&log);
    let mut promlink = Promlink::spawn(&args, &log);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while metric(&http, &base, "promlink_queue_bytes").await.is_none() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The sender: `series` series every second (one sample each) in requests of 500, each
    // retried until acknowledged (across restarts), one slice after the other.
    let stop = CancellationToken::new();
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let load = {
        let (url, stop) = (format!("{base}/api/v1/write"), stop.clone());
        tokio::spawn(async move {
            let mut total = Report::default();
            let mut slice = 0i64;
            while !stop.is_cancelled() {
                let next = tokio::time::Instant::now() + Duration::from_secs(1);
                let cfg = LoadgenConfig {
                    url: url.clone(),
                    series,
                    rounds: 1,
                    shards: 4,
                    samples_per_request: 500,
                    start_ms: Some(start_ms + slice * 1000),
                    interval_ms: 1000,
                    max_attempts: 1_000_000,
                    min_backoff: Duration::from_millis(50),
                    max_backoff: Duration::from_secs(1),
                    request_timeout: Duration::from_secs(5),
                    deadline: Duration::from_secs(300),
                    ..LoadgenConfig::default()
                };
                let r = promlink::loadgen::run(cfg, CancellationToken::new())
                    .await
                    .expect("loadgen config");
                total.merge(r);
                slice += 1;
                tokio::time::sleep_until(next).await;
            }
            total
        })
    };

    let started = Instant::now();
    let mut rows = Vec::new();
    let mut kills = Vec::new();
    let mut faults: std::collections::BTreeMap<&str, u64> = Default::default();
    let mut last_delivered = 0;
    let mut next_kill = Duration::from_secs(kill_every);
    while started.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some((name, f)) = random_fault(&mut rng) {
            *faults.entry(name).or_default() += 1;
            dce.push_fault(f);
        }
        let t = started.elapsed();
        if t >= next_kill {
            promlink.kill9();
            kills.push(t.as_secs_f64());
            promlink = Promlink::spawn(&args, &log);
            next_kill += Duration::from_secs(kill_every);
        }
        let delivered = dce.stats().samples;
        rows.push(Row {
            t: t.as_secs_f64(),
            rss_mib: promlink.rss_mib(),
            queue_kib: metric(&http, &base, "promlink_queue_bytes")
                .await
                .unwrap_or(0.0)
                / 1024.0,
            delivered_per_s: (delivered - last_delivered) as f64,
        });
        last_delivered = delivered;
    }
    stop.cancel();
    let report = load.await.expect("the sender");
    // Drained: everything acknowledged arrived (the last resends may still be on their way).
    let drain_started = Instant::now();
    let (mut distinct, mut total) = arrived(&dce);
    while distinct != report.checksum_acked && drain_started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        (distinct, total) = arrived(&dce);
    }
    let s = dce.stats();
    let resent = total - report.samples_acked.min(total);
    let complete = distinct == report.checksum_acked && report.samples_acked == report.samples;
    let ordered = s.out_of_order_samples + s.repeated_timestamp_samples == resent;
    let peak_rss = rows.iter().map(|r| r.rss_mib).fold(0.0, f64::max);
    let peak_queue = rows.iter().map(|r| r.queue_kib).fold(0.0, f64::max);
    let mut csv = String::from("seconds,rss_mib,queue_kib,delivered_per_s\n");
    for r in &rows {
        csv.push_str(&format!(
            "{:.1},{:.2},{:.1},{:.0}\n",
            r.t, r.rss_mib, r.queue_kib, r.delivered_per_s
        ));
    }
    std::fs::write(out.join("soak.csv"), csv).expect("write soak.csv");
    let png = out.join("soak.png");
    let plotted = plot(&rows, &kills, &png, &font);
    println!(
        "soak: {seconds} s, {} kill -9 + restart, faults {faults:?} ({} in all: the emulator counted {}); \
         sender: {} samples, {} acknowledged, {} attempts, {} transport errors; \
         upstream: {total} samples arrived ({resent} resent), out of order {}, repeated {}; \
         every acknowledged sample arrived: {}; only resends out of order: {}; \
         promlink peak RSS {peak_rss:.1} MiB, peak promlink_queue_bytes {peak_queue:.0} KiB; \
         {} and {}",
        kills.len(),
        faults.values().sum::<u64>(),
        s.faults,
        report.samples,
        report.samples_acked,
        report.attempts,
        report.transport_errors,
        s.out_of_order_samples,
        s.repeated_timestamp_samples,
        if complete { "yes" } else { "NO" },
        if ordered { "yes" } else { "NO" },
        out.join("soak.csv").display(),
        match &plotted {
            Ok(()) => png.display().to_string(),
            Err(e) => format!("no plot ({e})"),
        },
    );
    complete && ordered && plotted.is_ok()
}

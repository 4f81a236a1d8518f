//! Relay benchmark: the same remote-write load through promlink and through vmagent, both
//! forwarding to one counting sink, measured from outside (issue 5).
//!
//! For each relay it starts a fresh sink (the in-process DCE emulator, plain HTTP, tokens not
//! checked, counting samples, per-series order and a checksum over (labels, timestamp, value
//! bits)), starts the relay as a child process on 127.0.0.1, waits for its `/health`, then sends
//! the load with [`promlink::loadgen`] (Kubernetes-shaped series, one sample per `TimeSeries`
//! like Prometheus, shards that each wait for their previous request, 5xx/429 retried) and waits
//! until the sink has counted every acknowledged sample. Measured:
//!
//! - relay CPU seconds: utime + stime of the relay process from `/proc/<pid>/stat`, after minus
//!   before the load (clock ticks from `getconf CLK_TCK`, 100 if that fails);
//! - peak RSS: `VmHWM` from `/proc/<pid>/status` at the end (the whole life of the process);
//! - wall time from the first request to the last sample counted by the sink, and throughput;
//! - the sink's checksum against the loadgen's acknowledged checksum, out-of-order and repeated
//!   samples (order must be kept end to end);
//! - the bench process's own CPU (loadgen + sink), and the load average, because the relay
//!   shares the machine with them (and with whatever else runs);
//! - latency (issue 17): receipt to 2xx of each acknowledged request as the sender timed it,
//!   and receipt to the sink's acceptance of each request's first forwarded sample
//!   ([`Arrivals`]), p50 and p99.
//!
//! Variants (issue 17): the sender paced to a fixed rate (`--paced`: 150,000 samples/s, or
//! `RELAY_BENCH_RATE`) so that every relay runs at the same input rate; `cluster` added by both
//! relays (`RELAY_BENCH_CLUSTER`); relabel rules in both (`RELAY_BENCH_RULES`, translated into
//! vmagent's spelling); vmagent at `-remoteWrite.queues=1` (`vmagent`) and at its defaults
//! (`vmagent-defaults`); the relay pinned with `taskset` (`RELAY_BENCH_CPUS`).
//!
//! Relays and their settings:
//! - promlink: `target/release/promlink serve` with the durable queue (`--queue-dir`, default
//!   `fsync: always`), `--allow-plain-http`, `--identity token-file` (the sink ignores the
//!   token), `--flush-interval 1s` (vmagent's default flush interval);
//! - vmagent (Debian `victoria-metrics` 1.79.5): `-remoteWrite.url`, `-remoteWrite.tmpDataPath`
//!   (its file-backed queue), `-remoteWrite.queues=1` (with its default of 2 x CPUs, blocks were
//!   seen reordered: `/work/shared/RIG.md`; `RELAY_BENCH_VMAGENT_QUEUES` changes it).
//!
//! Run: `cargo bench --bench relay` (2 million samples: 100k series x 20 rounds),
//! `cargo bench --bench relay -- --quick` (200k samples), `-- --paced` (150k samples/s), or
//! `bash scripts/bench.sh` (`bash scripts/bench-matrix.sh` for issue 17's table). Without
//! `--bench` in its arguments (as `cargo test --all-targets` runs it) it prints a line and
//! exits. Environment knobs (all optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `RELAY_BENCH_SERIES` | 100000 (quick: 10000) | distinct series |
//! | `RELAY_BENCH_ROUNDS` | 20 | samples per series |
//! | `RELAY_BENCH_SHARDS` | 8 | loadgen sender shards |
//! | `RELAY_BENCH_SAMPLES_PER_REQUEST` | 2000 | samples per request |
//! | `RELAY_BENCH_RELAYS` | `promlink,vmagent` | which relays, in order: `promlink`, `vmagent` (`-remoteWrite.queues` below), `vmagent-defaults` (its default queues; order reported, not required) |
//! | `RELAY_BENCH_RATE` | unpaced (`--paced`: 150000) | the sender's pace, samples per second over all shards |
//! | `RELAY_BENCH_CLUSTER` | | a value: the series are sent without `cluster` and both relays add `cluster=<value>` (promlink `--cluster`, vmagent `-remoteWrite.label`) |
//! | `RELAY_BENCH_CPUS` | | a CPU list: the relay runs under `taskset -c <list>` |
//! | `RELAY_BENCH_REPEAT` | 1 | runs per relay (interleaved); the summary takes medians |
//! | `RELAY_BENCH_TIMEOUT_SECS` | 600 | bound on one run (load plus drain) |
//! | `RELAY_BENCH_PROMLINK` | the release `promlink` cargo built | promlink binary |
//! | `RELAY_BENCH_PROMLINK_ARGS` | | extra `promlink serve` flags, split on whitespace |
//! | `RELAY_BENCH_RULES` | | a promlink YAML file with `write_relabel_configs` (`benches/relabel-rules.yaml`: every kept series changes; `benches/relabel-oracle-rules.yaml`: the oracle test's rules aimed at the load): promlink runs with `--config` on it, and the checksum expected at the sink is taken over the series as the rules forward them; vmagent gets the same rules in its spelling (`keep_if_equal` / `drop_if_equal`) with `-remoteWrite.urlRelabelConfig`, and since its `hashmod` keeps another subset, its output is not checked, only counted (it is done when nothing arrives for 3 s) |
//! | `RELAY_BENCH_VMAGENT` | `/usr/bin/vmagent` | vmagent binary |
//! | `RELAY_BENCH_VMAGENT_QUEUES` | 1 | `-remoteWrite.queues` |
//! | `RELAY_BENCH_VMAGENT_ARGS` | | extra vmagent flags |
//! | `RELAY_BENCH_PERF` | | a path: record promlink with `perf record -p` into it (CPU figures then include perf's cost) |
//! | `RELAY_BENCH_PERF_ARGS` | `-e cpu-clock -F 999 -g` | `perf record` options |
//! | `RELAY_BENCH_JSON` | | a path: append one JSON object per run |
//! | `RELAY_BENCH_KEEP` | | `1`: keep the temporary directories (logs, queues) |
//!
//! Exit code: 0 when every run delivered everything in order with equal checksums (order not
//! required of `vmagent-defaults`; for vmagent with rules, only that its output arrived), 1
//! otherwise.

use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use promlink::emulator::dce::{Arrivals, DceConfig, DceEmulator, DceHandle, DceStats, DceTls};
use promlink::loadgen::{self, LoadgenConfig, Report};
use tokio_util::sync::CancellationToken;

/// Issue 5's targets.
const TARGET_CPU_PER_MILLION: f64 = 0.40;
const TARGET_RSS_MIB: f64 = 64.0;
const TARGET_THROUGHPUT_RATIO: f64 = 1.3;
/// Issue 17's paced rate: near vmagent's cheapest, samples per second.
const DEFAULT_PACED_RATE: f64 = 150_000.0;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("relay: skipped (not run with --bench; use `cargo bench --bench relay`)");
        return ExitCode::SUCCESS;
    }
    let quick = args.iter().any(|a| a == "--quick") || env_str("RELAY_BENCH_QUICK").is_some();
    let paced = args.iter().any(|a| a == "--paced");
    let params = match Params::from_env(quick, paced) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("relay: {e}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("relay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_all(&params)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("relay: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relay {
    Promlink,
    /// vmagent with `-remoteWrite.queues=RELAY_BENCH_VMAGENT_QUEUES` (1 by default).
    Vmagent,
    /// vmagent at its defaults (`-remoteWrite.queues` of 2 x CPUs, which may reorder: its
    /// order is reported, not required).
    VmagentDefaults,
}

impl Relay {
    const ALL: [Relay; 3] = [Relay::Promlink, Relay::Vmagent, Relay::VmagentDefaults];

    fn name(self) -> &'static str {
        match self {
            Relay::Promlink => "promlink",
            Relay::Vmagent => "vmagent",
            Relay::VmagentDefaults => "vmagent-defaults",
        }
    }

    fn is_vmagent(self) -> bool {
        self != Relay::Promlink
    }
}

struct Params {
    /// The CPU's model as `/proc/cpuinfo` names it, printed and written with each run.
    cpu_model: String,
    series: usize,
    rounds: usize,
    shards: usize,
    samples_per_request: usize,
    relays: Vec<Relay>,
    repeat: usize,
    timeout: Duration,
    promlink: PathBuf,
    promlink_args: Vec<String>,
    /// `RELAY_BENCH_RULES`: the file and its rules.
    rules: Option<(PathBuf, std::sync::Arc<promlink_relabel::Rules>)>,
    /// The same rules in vmagent's spelling (`-remoteWrite.urlRelabelConfig`), as JSON.
    vmagent_rules: Option<String>,
    /// `RELAY_BENCH_CLUSTER`: the `cluster` label both relays add.
    cluster: Option<String>,
    /// `RELAY_BENCH_RATE` (or `--paced`): the sender's pace in samples per second.
    rate: Option<f64>,
    /// `RELAY_BENCH_CPUS`: the relay runs under `taskset -c` with this list.
    cpus: Option<String>,
    vmagent: PathBuf,
    vmagent_queues: usize,
    vmagent_args: Vec<String>,
    perf: Option<PathBuf>,
    perf_args: Vec<String>,
    json: Option<PathBuf>,
    keep: bool,
    clk_tck: f64,
}

fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_num(name: &str, default: usize) -> Result<usize, String> {
    match env_str(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{name}={v:?}: expected a positive integer")),
    }
}

fn env_words(name: &str) -> Vec<String> {
    env_str(name)
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl Params {
    fn from_env(quick: bool, paced: bool) -> Result<Self, String> {
        let relays = match env_str("RELAY_BENCH_RELAYS") {
            None => vec![Relay::Promlink, Relay::Vmagent],
            Some(v) => v
                .split(',')
                .map(|r| {
                    Relay::ALL
                        .into_iter()
                        .find(|x| x.name() == r.trim())
                        .ok_or_else(|| {
                            format!("RELAY_BENCH_RELAYS: unknown relay {r:?} (promlink, vmagent, vmagent-defaults)")
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        // One read of the rules file, for promlink and for vmagent.
        let (rules, vmagent_rules) = match env_str("RELAY_BENCH_RULES").map(PathBuf::from) {
            None => (None, None),
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("RELAY_BENCH_RULES: {}: {e}", path.display()))?;
                (
                    Some(read_rules(&path, &text)?),
                    Some(vmagent_rules(&path, &text)?),
                )
            }
        };
        let rate = match env_str("RELAY_BENCH_RATE") {
            Some(v) => Some(
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r > 0.0)
                    .ok_or_else(|| {
                        format!("RELAY_BENCH_RATE={v:?}: expected samples per second > 0")
                    })?,
            ),
            None => paced.then_some(DEFAULT_PACED_RATE),
        };
        Ok(Self {
            cpu_model: cpu_model(),
            series: env_num("RELAY_BENCH_SERIES", if quick { 10_000 } else { 100_000 })?,
            rounds: env_num("RELAY_BENCH_ROUNDS", 20)?,
            shards: env_num("RELAY_BENCH_SHARDS", 8)?,
            samples_per_request: env_num("RELAY_BENCH_SAMPLES_PER_REQUEST", 2000)?,
            relays,
            repeat: env_num("RELAY_BENCH_REPEAT", 1)?,
            timeout: Duration::from_secs(env_num("RELAY_BENCH_TIMEOUT_SECS", 600)? as u64),
            promlink: env_str("RELAY_BENCH_PROMLINK")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_promlink"))),
            promlink_args: env_words("RELAY_BENCH_PROMLINK_ARGS"),
            rules,
            vmagent_rules,
            cluster: env_str("RELAY_BENCH_CLUSTER"),
            rate,
            cpus: env_str("RELAY_BENCH_CPUS"),
            vmagent: PathBuf::from(
                env_str("RELAY_BENCH_VMAGENT").unwrap_or_else(|| "/usr/bin/vmagent".to_owned()),
            ),
            vmagent_queues: env_num("RELAY_BENCH_VMAGENT_QUEUES", 1)?,
            vmagent_args: env_words("RELAY_BENCH_VMAGENT_ARGS"),
            perf: env_str("RELAY_BENCH_PERF").map(PathBuf::from),
            perf_args: match env_words("RELAY_BENCH_PERF_ARGS") {
                w if w.is_empty() => ["-e", "cpu-clock", "-F", "999", "-g"]
                    .map(str::to_owned)
                    .to_vec(),
                w => w,
            },
            json: env_str("RELAY_BENCH_JSON").map(PathBuf::from),
            keep: env_str("RELAY_BENCH_KEEP").is_some_and(|v| v != "0"),
            clk_tck: clk_tck(),
        })
    }

    fn samples(&self) -> u64 {
        (self.series * self.rounds) as u64
    }
}

/// The `write_relabel_configs` of the promlink YAML file `path` (its content `text`), checked
/// as promlink checks them.
fn read_rules(
    path: &Path,
    text: &str,
) -> Result<(PathBuf, std::sync::Arc<promlink_relabel::Rules>), String> {
    #[derive(serde::Deserialize)]
    struct File {
        #[serde(default)]
        write_relabel_configs: Vec<promlink_relabel::RelabelConfig>,
    }
    let file: File = serde_saphyr::from_str(text)
        .map_err(|e| format!("RELAY_BENCH_RULES: {}: {e}", path.display()))?;
    let rules = promlink_relabel::Rules::compile(&file.write_relabel_configs)
        .map_err(|e| format!("RELAY_BENCH_RULES: {}: {e:?}", path.display()))?;
    let path = std::fs::canonicalize(path).map_err(|e| format!("RELAY_BENCH_RULES: {e}"))?;
    Ok((path, std::sync::Arc::new(rules)))
}

/// The `write_relabel_configs` of the promlink YAML file `path` (its content `text`) in vmagent
/// 1.79's spelling, as JSON (which its YAML reader takes): `keepequal` / `dropequal` (keep or
/// drop when the joined `source_labels` equal `target_label`'s value) become `keep_if_equal` /
/// `drop_if_equal` over `source_labels` plus `target_label` (keep or drop when all those values
/// are equal), which is the same test for one source label. vmagent's `hashmod` hashes
/// differently, so it keeps another subset of series: compare CPU per sample received, not
/// what arrives.
fn vmagent_rules(path: &Path, text: &str) -> Result<String, String> {
    let err = |e: String| format!("RELAY_BENCH_RULES: {} (for vmagent): {e}", path.display());
    let file: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut rules = file
        .get("write_relabel_configs")
        .and_then(serde_json::Value::as_array)
        .cloned()
        .unwrap_or_default();
    for rule in &mut rules {
        let Some(rule) = rule.as_object_mut() else {
            return Err(err("a rule is not a mapping".into()));
        };
        let action = rule
            .get("action")
            .and_then(|a| a.as_str())
            .map(str::to_owned);
        let spelled = match action.as_deref() {
            Some("keepequal") => "keep_if_equal",
            Some("dropequal") => "drop_if_equal",
            _ => continue,
        };
        let sources = rule
            .get("source_labels")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        if sources.len() != 1 {
            return Err(err(format!(
                "{spelled}: vmagent has no equivalent of {} with {} source labels",
                action.unwrap_or_default(),
                sources.len()
            )));
        }
        let Some(target) = rule.remove("target_label") else {
            return Err(err(format!("{spelled} needs target_label")));
        };
        rule.insert("action".into(), spelled.into());
        rule.insert(
            "source_labels".into(),
            vec![sources[0].clone(), target].into(),
        );
    }
    serde_json::to_string_pretty(&rules).map_err(|e| err(e.to_string()))
}

/// Clock ticks per second for `/proc/<pid>/stat`.
fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `/proc/<pid>/status` value in kB (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn free_port() -> std::io::Result<u16> {
    // Bound and released at once: a small race with other programs, acceptable for a bench.
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped, whatever happened.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Self, String> {
        let out = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("starting {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(Self {
            name,
            child,
            log: log.to_owned(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, sig: &str) {
        // std has no kill(2) with a signal; this pid is our own child, not yet reaped.
        let _ = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns whether it stopped by itself.
    fn stop(&mut self, grace: Duration) -> bool {
        self.stop_with("-TERM", grace)
    }

    /// `sig` (e.g. `-INT`), wait up to `grace`, then SIGKILL. Returns whether it stopped by itself.
    fn stop_with(&mut self, sig: &str, grace: Duration) -> bool {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return true;
        }
        self.signal(sig);
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one run measured.
struct Outcome {
    relay: Relay,
    run: usize,
    report: Report,
    stats: DceStats,
    wall: Duration,
    ack_wall: Duration,
    relay_cpu: f64,
    bench_cpu: f64,
    hwm_mib: f64,
    rss_end_mib: f64,
    load_before: String,
    load_after: String,
    drained: bool,
    /// promlink's own figures from its `/metrics` after the run (disk queue commits, fsyncs).
    relay_metrics: String,
    /// Whether the sink must hold exactly the acknowledged samples (not for vmagent with
    /// rules: its `hashmod` keeps another subset).
    expect_checksum: bool,
    /// Whether per-series order is required (not of vmagent at its defaults).
    expect_order: bool,
    /// Receipt to 2xx of each acknowledged request, as the sender timed it.
    ack_latency: Latency,
    /// Receipt to the sink's acceptance of each request's first forwarded sample.
    delivery_latency: Latency,
}

/// Percentiles of a set of durations, milliseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Latency {
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

impl Latency {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        let at = |q: f64| {
            v.get(((v.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
        };
        Self {
            n: v.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        }
    }
}

impl Outcome {
    /// Millions of samples the relay received (acknowledged to the sender): with relabel rules
    /// fewer may arrive, and CPU is compared per sample received.
    fn million(&self) -> f64 {
        self.report.samples_acked as f64 / 1e6
    }
    fn cpu_per_million(&self) -> f64 {
        self.relay_cpu / self.million().max(1e-9)
    }
    fn throughput(&self) -> f64 {
        self.stats.samples as f64 / self.wall.as_secs_f64().max(1e-9)
    }
    fn checksum_ok(&self) -> bool {
        self.stats.checksum == self.report.checksum_acked
    }
    fn order_ok(&self) -> bool {
        self.stats.out_of_order_samples == 0 && self.stats.repeated_timestamp_samples == 0
    }
    fn checksum_label(&self) -> &'static str {
        match (self.expect_checksum, self.checksum_ok()) {
            (false, _) => "n/a",
            (true, ok) => yes_no(ok),
        }
    }
    fn order_label(&self) -> &'static str {
        match (self.expect_order, self.order_ok()) {
            (false, true) => "ok (not required)",
            (false, false) => "reordered (not required)",
            (true, ok) => yes_no(ok),
        }
    }
    fn complete(&self) -> bool {
        self.drained
            && !self.report.incomplete
            && self.report.requests_failed == 0
            && self.report.samples_acked == self.report.samples
            // Unchecked output (vmagent with rules) must at least have arrived.
            && (self.expect_checksum || self.stats.samples > 0)
    }
    fn ok(&self) -> bool {
        (self.checksum_ok() || !self.expect_checksum)
            && (self.order_ok() || !self.expect_order)
            && self.complete()
    }
}

/// The CPU's model as `/proc/cpuinfo` names it: figures from different machines differ.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "?".to_owned())
}

async fn run_all(p: &Params) -> Result<bool, String> {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "relay bench: {} samples = {} series x {} rounds, {} samples/request, {} sender shards; {} CPUs ({}), CLK_TCK {}, load {}",
        p.samples(),
        p.series,
        p.rounds,
        p.samples_per_request,
        p.shards,
        cpus,
        p.cpu_model,
        p.clk_tck,
        loadavg()
    );
    if let Some((file, rules)) = &p.rules {
        println!(
            "relay bench: the relays relabel with {} rules from {} (CPU per sample received; promlink's output is checked against the series as the rules forward them; vmagent's hashmod keeps another subset, so its output is not)",
            rules.len(),
            file.display()
        );
    }
    if let Some(c) = &p.cluster {
        println!(
            "relay bench: the series are sent without `cluster`; both relays add cluster={c:?}"
        );
    }
    match p.rate {
        Some(r) => println!("relay bench: the sender is paced to {r:.0} samples/s"),
        None => println!("relay bench: the sender is not paced (as fast as acknowledged)"),
    }
    if let Some(cpus) = &p.cpus {
        println!("relay bench: the relay runs under `taskset -c {cpus}`");
    }
    if !p.promlink.to_string_lossy().contains("/release/") {
        println!(
            "relay bench: warning: {} is not a release build",
            p.promlink.display()
        );
    }
    let mut relays = p.relays.clone();
    if relays.iter().any(|r| r.is_vmagent()) && !p.vmagent.is_file() {
        println!(
            "relay bench: {} not found: install it with `apt-get install victoria-metrics` (Debian 1.79.5), or set RELAY_BENCH_VMAGENT; running promlink only",
            p.vmagent.display()
        );
        relays.retain(|r| !r.is_vmagent());
    }
    if relays.contains(&Relay::Promlink) && !p.promlink.is_file() {
        return Err(format!(
            "promlink binary {} not found (cargo build --release)",
            p.promlink.display()
        ));
    }
    // Every request is encoded before anything is measured: during a run the sender only
    // sends, so it competes as little as possible with the relay for the two cores.
    let started = Instant::now();
    let load =
        loadgen::prepare(&load_config(p, String::new())).map_err(|e| format!("loadgen: {e}"))?;
    println!(
        "relay bench: {} requests ({:.1} MiB compressed) encoded in {:.1} s",
        load.requests(),
        load.bytes() as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    let mut outcomes = Vec::new();
    for run in 1..=p.repeat {
        for &relay in &relays {
            let outcome = run_one(p, relay, run, load.clone()).await?;
            print_run(&outcome);
            if let Some(path) = &p.json {
                append_json(path, p, &outcome)?;
            }
            outcomes.push(outcome);
        }
    }
    print_summary(&outcomes);
    Ok(outcomes.iter().all(Outcome::ok))
}

/// The load: its timestamps end now, 15 s apart, like a Prometheus scraping every 15 s.
fn load_config(p: &Params, url: String) -> LoadgenConfig {
    let start_ms = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        now - 15_000 * p.rounds as i64
    };
    LoadgenConfig {
        url,
        series: p.series,
        rounds: p.rounds,
        shards: p.shards,
        samples_per_request: p.samples_per_request,
        start_ms: Some(start_ms),
        interval_ms: 15_000,
        // Backpressure (503/429) is retried until the deadline rather than counted as loss.
        max_attempts: 10_000,
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        request_timeout: Duration::from_secs(60),
        deadline: p.timeout,
        expect_relabel: p.rules.as_ref().map(|(_, r)| r.clone()),
        expect_cluster: p.cluster.clone(),
        rate: p.rate,
        ..LoadgenConfig::default()
    }
}

async fn run_one(
    p: &Params,
    relay: Relay,
    run: usize,
    load: loadgen::PreparedLoad,
) -> Result<Outcome, String> {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("relay-bench-{}-", relay.name()))
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let dir = tmp.path().to_owned();
    let arrivals = std::sync::Arc::new(Arrivals::new(&load.probes()));
    let sink = DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        auth: None,
        max_body_bytes: 64 << 20,
        arrivals: Some(arrivals.clone()),
        ..DceConfig::default()
    })
    .await
    .map_err(|e| format!("starting the sink: {e}"))?;
    let port = free_port().map_err(|e| format!("free port: {e}"))?;
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let log = dir.join(format!("{}.log", relay.name()));
    let mut proc = spawn_relay(p, relay, &dir, sink.url(), listen, &log)?;
    let pid = proc.pid();
    let pid_s = pid.to_string();
    wait_healthy(&mut proc, listen).await?;

    let mut perf = match (&p.perf, relay) {
        (Some(path), Relay::Promlink) => {
            let mut cmd = Command::new("perf");
            cmd.arg("record")
                .args(&p.perf_args)
                .arg("-p")
                .arg(&pid_s)
                .arg("-o")
                .arg(path);
            let perf = Proc::spawn("perf", &mut cmd, &dir.join("perf.log"))?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            Some(perf)
        }
        _ => None,
    };

    let cfg = load_config(p, format!("http://{listen}/api/v1/write"));
    let load_before = loadavg();
    let cpu0 = cpu_ticks(&pid_s).ok_or("cannot read the relay's /proc stat")?;
    let self0 = cpu_ticks("self").unwrap_or(0);
    let t0 = Instant::now();
    let report = loadgen::run_prepared(cfg, load, CancellationToken::new())
        .await
        .map_err(|e| format!("loadgen: {e}"))?;
    let ack_wall = t0.elapsed();
    // Delivered: the sink counted every acknowledged sample the relay forwards (all of them,
    // or those the relabel rules keep; more would be duplicates). vmagent's rules keep
    // another subset: it is done when nothing more arrives.
    let expect_checksum = !(relay.is_vmagent() && p.rules.is_some());
    let expected = expect_checksum.then_some(report.checksum_acked.samples);
    let (drained, wall) =
        wait_delivered(&sink, &mut proc, relay, expected, t0, t0 + p.timeout).await;
    let cpu1 = cpu_ticks(&pid_s).unwrap_or(cpu0);
    let relay_metrics = match relay {
        Relay::Promlink => promlink_figures(listen).await,
        Relay::Vmagent | Relay::VmagentDefaults => String::new(),
    };
    let self1 = cpu_ticks("self").unwrap_or(self0);
    let hwm = status_kib(pid, "VmHWM").unwrap_or(0);
    let rss = status_kib(pid, "VmRSS").unwrap_or(0);
    let load_after = loadavg();
    if let Some(perf) = perf.as_mut() {
        // SIGINT makes perf write its file and exit.
        perf.stop_with("-INT", Duration::from_secs(30));
    }
    // A moment for late duplicates to show before the counts are final.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = sink.stats();
    if !proc.stop(Duration::from_secs(20)) {
        println!(
            "relay bench: {} did not stop within 20 s of SIGTERM; killed",
            relay.name()
        );
    }
    sink.shutdown().await;
    let delivery = report
        .timings
        .iter()
        .filter_map(|t| Some(arrivals.get(t.probe?)?.saturating_duration_since(t.sent)))
        .collect();
    let ack_latency = Latency::of(report.timings.iter().map(|t| t.acked).collect());
    let outcome = Outcome {
        relay,
        run,
        report,
        stats,
        wall,
        ack_wall,
        relay_cpu: cpu1.saturating_sub(cpu0) as f64 / p.clk_tck,
        bench_cpu: self1.saturating_sub(self0) as f64 / p.clk_tck,
        hwm_mib: hwm as f64 / 1024.0,
        rss_end_mib: rss as f64 / 1024.0,
        load_before,
        load_after,
        drained,
        relay_metrics,
        expect_checksum,
        expect_order: relay != Relay::VmagentDefaults,
        ack_latency,
        delivery_latency: Latency::of(delivery),
    };
    if !outcome.ok() {
        println!(
            "relay bench: {} run {run} log tail:\n{}",
            relay.name(),
            proc.log_tail()
        );
    }
    if p.keep {
        let kept = tmp.keep();
        println!("relay bench: kept {}", kept.display());
    }
    Ok(outcome)
}

/// Starts `relay` listening on `listen`, forwarding to `sink_url`, its files under `dir` and
/// its output in `log`.
fn spawn_relay(
    p: &Params,
    relay: Relay,
    dir: &Path,
    sink_url: &str,
    listen: SocketAddr,
    log: &Path,
) -> Result<Proc, String> {
    let program = match relay {
        Relay::Promlink => &p.promlink,
        Relay::Vmagent | Relay::VmagentDefaults => &p.vmagent,
    };
    // taskset execs the relay: the pid stays the relay's.
    let mut cmd = match &p.cpus {
        Some(cpus) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(cpus).arg(program);
            cmd
        }
        None => Command::new(program),
    };
    match relay {
        Relay::Promlink => {
            let token = dir.join("token");
            std::fs::write(&token, "relay-bench-token-not-checked")
                .map_err(|e| format!("{}: {e}", token.display()))?;
            let queue = dir.join("queue");
            cmd.arg("serve")
                .arg("--listen")
                .arg(listen.to_string())
                .arg("--ingestion-url")
                .arg(sink_url)
                .arg("--allow-plain-http")
                .arg("--identity")
                .arg("token-file")
                .arg("--token-file")
                .arg(&token)
                .arg("--queue-dir")
                .arg(&queue)
                .arg("--flush-interval")
                .arg("1s")
                .arg("--log-level")
                .arg("warn")
                .args(&p.promlink_args);
            if let Some((file, _)) = &p.rules {
                cmd.arg("--config").arg(file);
            }
            if let Some(c) = &p.cluster {
                cmd.arg("--cluster").arg(c);
            }
            Proc::spawn("promlink", &mut cmd, log)
        }
        Relay::Vmagent | Relay::VmagentDefaults => {
            cmd.arg(format!("-remoteWrite.url={sink_url}"))
                .arg(format!("-httpListenAddr={listen}"))
                .arg(format!(
                    "-remoteWrite.tmpDataPath={}",
                    dir.join("vmagent-data").display()
                ))
                .arg("-loggerLevel=WARN");
            if relay == Relay::Vmagent {
                cmd.arg(format!("-remoteWrite.queues={}", p.vmagent_queues));
            }
            if let Some(rules) = &p.vmagent_rules {
                let file = dir.join("vmagent-relabel.json");
                std::fs::write(&file, rules).map_err(|e| format!("{}: {e}", file.display()))?;
                cmd.arg(format!("-remoteWrite.urlRelabelConfig={}", file.display()));
            }
            if let Some(c) = &p.cluster {
                cmd.arg(format!("-remoteWrite.label=cluster={c}"));
            }
            cmd.args(&p.vmagent_args);
            Proc::spawn("vmagent", &mut cmd, log)
        }
    }
}

/// How long nothing may arrive before a relay whose output count is not known is done.
const QUIET: Duration = Duration::from_secs(3);

/// Waits until the sink has counted `expected` samples (or, when that is not known, nothing
/// arrived for [`QUIET`]), the relay exits or `until` passes. Returns whether it was delivered
/// and the time from `t0` to the last sample counted.
async fn wait_delivered(
    sink: &DceHandle,
    proc: &mut Proc,
    relay: Relay,
    expected: Option<u64>,
    t0: Instant,
    until: Instant,
) -> (bool, Duration) {
    let (mut last, mut last_at) = (sink.stats().samples, Instant::now());
    while Instant::now() < until {
        let now = sink.stats().samples;
        if now != last {
            (last, last_at) = (now, Instant::now());
        }
        match expected {
            Some(n) if now >= n => return (true, t0.elapsed()),
            None if last_at.elapsed() >= QUIET => return (true, last_at - t0),
            _ => {}
        }
        if let Some(status) = proc.exited() {
            println!(
                "relay bench: {} exited early ({status}):\n{}",
                relay.name(),
                proc.log_tail()
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (false, t0.elapsed())
}

async fn wait_healthy(proc: &mut Proc, listen: SocketAddr) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let url = format!("http://{listen}/health");
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Some(status) = proc.exited() {
            return Err(format!(
                "{} exited at start ({status}):\n{}",
                proc.name,
                proc.log_tail()
            ));
        }
        if let Ok(r) = client.get(&url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{} not healthy at {url} within 30 s:\n{}",
        proc.name,
        proc.log_tail()
    ))
}

/// A few of promlink's own counters, read after the run: how much disk work the durable
/// queue did (group commits and fsyncs), to put the CPU figure in context.
async fn promlink_figures(listen: SocketAddr) -> String {
    let Ok(client) = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
    else {
        return String::new();
    };
    let Ok(text) = async {
        client
            .get(format!("http://{listen}/metrics"))
            .send()
            .await?
            .text()
            .await
    }
    .await
    else {
        return String::new();
    };
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .unwrap_or("?")
            .to_string()
    };
    format!(
        "; queue commits {}, fsyncs {}, fsync seconds {}",
        value("promlink_queue_commits_total"),
        value("promlink_queue_fsyncs_total"),
        value("promlink_queue_fsync_seconds_total"),
    )
}

fn yes_no(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAIL"
    }
}

fn print_run(o: &Outcome) {
    println!(
        "relay bench: {} run {}: sink {} samples ({} requests, {:?} rejected), acked {}/{} in {} requests ({} attempts, statuses {:?}); wall {:.2} s (acked after {:.2} s); relay CPU {:.2} s, peak RSS {:.1} MiB (end {:.1} MiB); loadgen+sink CPU {:.2} s; load {} -> {}; receipt to 2xx p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms; receipt to upstream p50 {:.1} ms, p99 {:.1} ms ({} of {} requests' first samples seen); checksum {}, order {} (out of order {}, repeated {}), complete {}{}",
        o.relay.name(),
        o.run,
        o.stats.samples,
        o.stats.accepted_requests,
        o.stats.rejected,
        o.report.samples_acked,
        o.report.samples,
        o.report.requests_acked,
        o.report.attempts,
        o.report.statuses,
        o.wall.as_secs_f64(),
        o.ack_wall.as_secs_f64(),
        o.relay_cpu,
        o.hwm_mib,
        o.rss_end_mib,
        o.bench_cpu,
        o.load_before,
        o.load_after,
        o.ack_latency.p50,
        o.ack_latency.p99,
        o.ack_latency.max,
        o.delivery_latency.p50,
        o.delivery_latency.p99,
        o.delivery_latency.n,
        o.ack_latency.n,
        o.checksum_label(),
        o.order_label(),
        o.stats.out_of_order_samples,
        o.stats.repeated_timestamp_samples,
        yes_no(o.complete()),
        o.relay_metrics,
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Medians over one relay's runs.
struct Summary {
    runs: usize,
    samples: u64,
    wall: f64,
    throughput: f64,
    cpu: f64,
    cpu_per_million: f64,
    hwm: f64,
    ack_p50: f64,
    ack_p99: f64,
    delivery_p50: f64,
    delivery_p99: f64,
    ok: bool,
}

fn summarize(outcomes: &[&Outcome]) -> Summary {
    let m = |f: &dyn Fn(&Outcome) -> f64| median(outcomes.iter().map(|o| f(o)).collect());
    Summary {
        runs: outcomes.len(),
        samples: outcomes.iter().map(|o| o.stats.samples).max().unwrap_or(0),
        wall: m(&|o| o.wall.as_secs_f64()),
        throughput: m(&Outcome::throughput),
        cpu: m(&|o| o.relay_cpu),
        cpu_per_million: m(&Outcome::cpu_per_million),
        hwm: m(&|o| o.hwm_mib),
        ack_p50: m(&|o| o.ack_latency.p50),
        ack_p99: m(&|o| o.ack_latency.p99),
        delivery_p50: m(&|o| o.delivery_latency.p50),
        delivery_p99: m(&|o| o.delivery_latency.p99),
        ok: outcomes.iter().all(|o| o.ok()),
    }
}

fn print_summary(outcomes: &[Outcome]) {
    let mut rows = Vec::new();
    for relay in Relay::ALL {
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.relay == relay).collect();
        if !mine.is_empty() {
            rows.push((relay, summarize(&mine)));
        }
    }
    println!();
    println!(
        "| relay | runs | samples | wall s | samples/s | relay CPU s | CPU s / M samples | peak RSS MiB | receipt to 2xx p50 / p99 ms | receipt to upstream p50 / p99 ms | checks |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (relay, s) in &rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.3} | {:.1} | {:.2} / {:.2} | {:.0} / {:.0} | {} |",
            relay.name(),
            s.runs,
            s.samples,
            s.wall,
            s.throughput,
            s.cpu,
            s.cpu_per_million,
            s.hwm,
            s.ack_p50,
            s.ack_p99,
            s.delivery_p50,
            s.delivery_p99,
            yes_no(s.ok)
        );
    }
    let find = |r: Relay| rows.iter().find(|(x, _)| *x == r).map(|(_, s)| s);
    for vm_relay in [Relay::Vmagent, Relay::VmagentDefaults] {
        if let (Some(pl), Some(vm)) = (find(Relay::Promlink), find(vm_relay)) {
            println!(
                "| promlink / {} | | | {:.2}x | {:.2}x | {:.2}x | {:.2}x ({:.2}x less) | {:.2}x | | | |",
                vm_relay.name(),
                pl.wall / vm.wall,
                pl.throughput / vm.throughput,
                pl.cpu / vm.cpu,
                pl.cpu_per_million / vm.cpu_per_million,
                vm.cpu_per_million / pl.cpu_per_million,
                pl.hwm / vm.hwm
            );
        }
    }
    println!();
    if let Some(pl) = find(Relay::Promlink) {
        let met = |ok: bool| if ok { "met" } else { "NOT met" };
        println!(
            "target: promlink CPU <= {TARGET_CPU_PER_MILLION} s per million samples: {:.3} ({})",
            pl.cpu_per_million,
            met(pl.cpu_per_million <= TARGET_CPU_PER_MILLION)
        );
        println!(
            "target: promlink peak RSS <= {TARGET_RSS_MIB} MiB: {:.1} ({})",
            pl.hwm,
            met(pl.hwm <= TARGET_RSS_MIB)
        );
        // Against the cheaper vmagent of the run (issue 17: "in any rig").
        let cheapest = [Relay::Vmagent, Relay::VmagentDefaults]
            .into_iter()
            .filter_map(|r| Some((r, find(r)?)))
            .min_by(|a, b| a.1.cpu_per_million.total_cmp(&b.1.cpu_per_million));
        if let Some((vm_relay, vm)) = cheapest {
            let ratio = vm.cpu_per_million / pl.cpu_per_million;
            println!(
                "target: promlink CPU >= 2.5x better than vmagent (the cheaper one here: {}): {ratio:.2}x ({})",
                vm_relay.name(),
                met(ratio >= 2.5)
            );
            let t = pl.throughput / vm.throughput;
            println!(
                "target: promlink throughput >= {TARGET_THROUGHPUT_RATIO}x vmagent: {t:.2}x ({})",
                met(t >= TARGET_THROUGHPUT_RATIO)
            );
        }
        println!(
            "target: zero loss, checksums equal, per-series order kept: {}",
            met(pl.ok)
        );
    }
}

fn append_json(path: &Path, p: &Params, o: &Outcome) -> Result<(), String> {
    let line = serde_json::json!({
        "relay": o.relay.name(),
        "rules": p.rules.as_ref().map(|(f, r)| format!("{} ({} rules)", f.display(), r.len())),
        "cluster": p.cluster,
        "rate": p.rate,
        "cpus": p.cpus,
        "ack_p50_ms": o.ack_latency.p50,
        "ack_p99_ms": o.ack_latency.p99,
        "delivery_p50_ms": o.delivery_latency.p50,
        "delivery_p99_ms": o.delivery_latency.p99,
        "run": o.run,
        "series": p.series,
        "rounds": p.rounds,
        "shards": p.shards,
        "samples_per_request": p.samples_per_request,
        "samples_sent": o.report.samples,
        "samples_acked": o.report.samples_acked,
        "samples_delivered": o.stats.samples,
        "wall_s": o.wall.as_secs_f64(),
        "ack_wall_s": o.ack_wall.as_secs_f64(),
        "samples_per_s": o.throughput(),
        "relay_cpu_s": o.relay_cpu,
        "cpu_s_per_million": o.cpu_per_million(),
        "peak_rss_mib": o.hwm_mib,
        "bench_cpu_s": o.bench_cpu,
        "load_before": o.load_before,
        "load_after": o.load_after,
        "checksum_ok": o.checksum_ok(),
        "checksum_required": o.expect_checksum,
        "order_ok": o.order_ok(),
        "order_required": o.expect_order,
        "complete": o.complete(),
        "cpu_model": p.cpu_model,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(f, "{line}").map_err(|e| format!("{}: {e}", path.display()))
}

//! Helpers for end-to-end tests that drive real peers (Prometheus and promlink itself) as child
//! processes: free loopback ports, a process guard that always stops its child by pid, log
//! tails for failure messages, a Prometheus text-format reader, the lookup of a peer binary
//! from a Debian package, and small file, clock and HTTP helpers. [`prom`] reads a real
//! Prometheus server back over its HTTP API.
//!
//! Each test crate compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod prom;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Ports [`free_port`] picks from: below Linux's ephemeral range (32768-60999 by default),
/// which the kernel hands out for `bind(0)` and for every outgoing connection.
const FREE_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free TCP port on 127.0.0.1 for a process the test starts: one that binds and is
/// released again. It comes from [`FREE_PORTS`], walked from a start that differs per test
/// process, so that between the check and the child's own bind neither the kernel (an
/// emulator's `bind(0)`, a client's outgoing connection) nor, most likely, another test
/// hands it out. A port from `bind(0)` was seen taken in that window under a full parallel
/// run ("Address already in use").
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(FREE_PORTS.end - FREE_PORTS.start);
    let start = std::process::id().wrapping_mul(2_654_435_761).wrapping_add(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos()),
    );
    for _ in 0..span {
        let n = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = FREE_PORTS.start + n as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {FREE_PORTS:?}");
}

/// `n` distinct free ports, ascending.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut ports = BTreeSet::new();
    while ports.len() < n {
        ports.insert(free_port());
    }
    ports.into_iter().collect()
}

/// Writes `text` to `path`, panicking with the path on failure.
pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The last `n` lines of `text`, for failure messages.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A peer binary from a Debian package: `$<env>` when set, else `default`. When the file is
/// missing the test `test` is skipped with a loud notice, or fails under `CI=true`
/// (`scripts/test.sh` installs the packages). `what` names the test in the notice, e.g. "the
/// durable end-to-end test"; `binary` is the file name shown in the `<env>=/path/to/<binary>`
/// hint.
pub fn debian_peer(
    env: &str,
    default: &str,
    package: &str,
    binary: &str,
    test: &str,
    what: &str,
) -> Option<PathBuf> {
    let path = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    if path.is_file() {
        return Some(path);
    }
    let msg = format!(
        "{} not found: {what} needs the Debian package `{package}` (run `bash scripts/test.sh`, \
         which installs it, or `apt-get install {package}`), or {env}=/path/to/{binary}",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and {msg}");
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests, and a skip
    // must be seen.
    let bar = "!".repeat(96);
    let _ = writeln!(
        std::io::stderr(),
        "\n{bar}\n!!! SKIPPED {test}: {msg}\n{bar}\n"
    );
    None
}

/// Starts promlink with `cmd` (a `serve` command listening on `127.0.0.1:<port>`), its log in
/// `d/promlink.log`, and waits until its `/health` answers.
pub async fn start_promlink(cmd: Command, d: &Path, port: u16, http: &reqwest::Client) -> Proc {
    let p = Proc::spawn("promlink", cmd, &d.join("promlink.log"));
    let health = format!("http://127.0.0.1:{port}/health");
    wait_for(
        "promlink to be healthy",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || get_text(http, &health),
    )
    .await;
    p
}

/// Where Debian installs Alertmanager.
pub const DEFAULT_ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// Starts a real Alertmanager (Debian `prometheus-alertmanager`, or
/// `PROMLINK_E2E_ALERTMANAGER`) on a free loopback port with a receiver that notifies nobody,
/// its files under `dir`, and waits until it is ready: the process and its base URL. `None`
/// (after a loud notice naming `test`) when it is missing outside CI; under `CI=true` a missing
/// Alertmanager fails the test.
pub async fn start_alertmanager(
    dir: &Path,
    test: &str,
    http: &reqwest::Client,
) -> Option<(Proc, String)> {
    let bin = debian_peer(
        "PROMLINK_E2E_ALERTMANAGER",
        DEFAULT_ALERTMANAGER,
        "prometheus-alertmanager",
        "alertmanager",
        test,
        "a test against a real Alertmanager",
    )?;
    let config = dir.join("alertmanager.yml");
    write(
        &config,
        "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
    );
    let storage = dir.join("alertmanager-data");
    std::fs::create_dir_all(&storage).unwrap();
    let port = free_port();
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // Off the gossip port (RIG.md).
        .arg("--cluster.listen-address=");
    let am = Proc::spawn("alertmanager", cmd, &dir.join("alertmanager.log"));
    let base = format!("http://127.0.0.1:{port}");
    let ready = format!("{base}/-/ready");
    wait_for(
        "alertmanager ready",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || get_text(http, &ready),
    )
    .await;
    Some((am, base))
}

/// GETs `url` and returns the body of a 2xx answer; anything else (transport error or another
/// status with its body) as text.
pub async fn get_text(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let resp = http.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

/// A child process that is stopped (SIGKILL, then reaped) when dropped, unless it already
/// exited. Only ever signals its own pid.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        last_lines(&self.log(), n)
    }

    /// Panics with the log tail if the process has already exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            self.status = Some(status);
            panic!(
                "{} exited early with {status}; log tail:\n{}",
                self.name,
                self.log_tail(40)
            );
        }
    }

    /// Sends SIGTERM to this pid and waits up to `timeout` for the exit; SIGKILL after that.
    /// Returns the exit status and whether it exited within `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> (ExitStatus, bool) {
        if let Some(status) = self.status {
            return (status, true);
        }
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        let deadline = Instant::now() + timeout;
        while sent && Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return (status, true);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait");
        self.status = Some(status);
        (status, false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One sample line of the Prometheus text format: series text (name plus labels, as written)
/// and value. Comments, `# EOF` and blank lines are skipped; timestamps are ignored.
pub fn parse_text(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            // Label values may hold spaces, so split after the closing brace when there is one.
            let (series, rest) = match l.rfind('}') {
                Some(i) => (&l[..=i], l[i + 1..].trim()),
                None => l.split_once(' ')?,
            };
            let value = rest.split_whitespace().next()?;
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().ok()?,
            };
            Some((series.trim().to_string(), value))
        })
        .collect()
}

/// The metric name of a series text (`name{...}` or `name`).
fn metric_name(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// Every series of metric `name` with its value (an empty map when the metric is absent).
pub fn series_of(text: &str, name: &str) -> BTreeMap<String, f64> {
    parse_text(text)
        .into_iter()
        .filter(|(s, _)| metric_name(s) == name)
        .collect()
}

/// The sum over every series of metric `name`; `None` when the metric has no series.
pub fn sum_of(text: &str, name: &str) -> Option<f64> {
    let series = series_of(text, name);
    (!series.is_empty()).then(|| series.values().sum())
}

/// The value of one exact series text, e.g. `x_total{protocol="v1"}`.
pub fn value_of(text: &str, series: &str) -> Option<f64> {
    parse_text(text)
        .into_iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| v)
}

/// Polls `check` every `every` until it returns `Some`, or panics with `what` and the last
/// `Err` text after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, every: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}; last: {last}");
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_format() {
        let text = "# HELP a x\n# TYPE a counter\na_total 3\nb{x=\"1 2\",y=\"z\"} 4.5 1700000000\nc +Inf\n# EOF\n";
        let parsed = parse_text(text);
        assert_eq!(
            parsed,
            vec![
                ("a_total".to_string(), 3.0),
                ("b{x=\"1 2\",y=\"z\"}".to_string(), 4.5),
                ("c".to_string(), f64::INFINITY),
            ]
        );
        assert_eq!(sum_of(text, "b"), Some(4.5));
        assert_eq!(sum_of(text, "nope"), None);
        assert_eq!(value_of(text, "a_total"), Some(3.0));
    }
}

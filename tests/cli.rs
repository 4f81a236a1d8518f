//! The `promlink` binary: configuration errors, the Azure sidecar's environment, SIGTERM, demo.

mod common;
mod e2e;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::fixture;
use e2e::free_port;
use promlink::emulator::dce::{DceConfig, DceEmulator, DceTls};
use promlink::emulator::entra::{EntraConfig, EntraEmulator, ManagedIdentity};
use promlink::emulator::tls::TestCa;

const BIN: &str = env!("CARGO_BIN_EXE_promlink");

/// A child process stopped (by pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn promlink(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

/// A DCE emulator over plain HTTP, and a directory holding a token file for `token-file`.
async fn plain_dce_with_token_file() -> (
    promlink::emulator::dce::DceHandle,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::Plain,
        ..DceConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "opaque-test-token\n").unwrap();
    (dce, dir, token_file)
}

/// `promlink serve` on 127.0.0.1:`port` to `dce` over plain HTTP with `token_file`, and `more`.
fn serve_plain(
    port: u16,
    dce: &promlink::emulator::dce::DceHandle,
    token_file: &std::path::Path,
    more: &[&str],
) -> Command {
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve",
        "--listen",
        &listen,
        "--ingestion-url",
        dce.url(),
        "--allow-plain-http",
        "--identity",
        "token-file",
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    args.extend(more);
    promlink(&args)
}

async fn wait_ready(url: &str) {
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered 200");
}

#[test]
fn invalid_configuration_lists_every_problem_and_exits_64() {
    let out = promlink(&[
        "serve",
        "--ingestion-url",
        "http://example.invalid/x",
        "--shards",
        "0",
        "--identity",
        "client-secret",
        "--listen",
        "127.0.0.1:1",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "ingestion_url = \"http://example.invalid/x\": plain http://",
        "shards = \"0\": must be greater than zero",
        "client_id",
        "tenant_id",
        "client_secret_file",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
    let out = promlink(&["check-config"])
        .env("IDENTITY_TYPE", "magic")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("IDENTITY_TYPE = \"magic\": expected userAssigned"),
        "{err}"
    );
    assert!(err.contains("ingestion_url"), "{err}");
}

/// `promlink drain` needs the queue directory and says so with the other problems.
#[test]
fn drain_without_a_queue_directory_exits_64() {
    let out = promlink(&["drain", "--shards", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "queue_dir = \"\": promlink drain needs the queue directory",
        "shards = \"0\"",
        "ingestion_url",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from:\n{err}");
    }
}

/// A start error names the failing part and its cause, each once (the cause used to be printed
/// twice: once in the error's own text, once as its source).
#[test]
fn start_error_prints_its_cause_once_and_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = promlink(&[
        "serve",
        "--listen",
        &addr,
        "--ingestion-url",
        "http://127.0.0.1:9/api/v1/write",
        "--allow-plain-http",
        "--identity",
        "none",
    ])
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("promlink: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains(&format!("cannot listen on {addr}: ")),
        "{line}"
    );
    assert_eq!(line.matches("in use").count(), 1, "{line}");
    assert_eq!(line.matches("os error").count(), 1, "{line}");
    drop(taken);
}

#[test]
fn version_and_help() {
    let out = promlink(&["--version"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("promlink {}", env!("CARGO_PKG_VERSION"))
    );
    let out = promlink(&["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--listen",
        "--ingestion-url",
        "--identity",
        "--token-file",
        "--ca-file",
        "--cluster",
        "--max-samples-per-request",
        "--flush-interval",
        "--allow-plain-http",
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
}

/// Someone swaps the image in an existing Azure sidecar manifest: only the sidecar's variables
/// (plus the test CA, which a real Azure endpoint does not need) give a working forwarder that
/// adds the cluster label, authenticated as the user-assigned managed identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_sidecar_environment_gives_a_working_forwarder() {
    let ca = TestCa::new("sidecar test CA").unwrap();
    let mi_client = "11112222-3333-4444-5555-666677778888";
    let entra = EntraEmulator::start_with_ca(
        EntraConfig {
            managed_identities: vec![ManagedIdentity::user_assigned("tenant", mi_client)],
            ..EntraConfig::default()
        },
        &ca,
    )
    .await
    .unwrap();
    let dce = DceEmulator::start(DceConfig {
        tls: DceTls::from_ca(&ca).unwrap(),
        auth: Some(entra.verifier()),
        granted: vec![mi_client.to_string()],
        keep_accepted: 100,
        ..DceConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let port = free_port();
    let _p = Proc(
        promlink(&["serve"])
            .env("INGESTION_URL", dce.url())
            .env("LISTENING_PORT", port.to_string())
            .env("IDENTITY_TYPE", "userAssigned")
            .env("AZURE_CLIENT_ID", mi_client)
            .env("CLUSTER", "aks-east-1")
            .env("IDENTITY_ENDPOINT", entra.identity_endpoint())
            .env("IDENTITY_HEADER", entra.identity_header())
            .env("PROMLINK_CA_FILE", &ca_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("http://127.0.0.1:{port}/ready")).await;
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(fixture("prom242_rw1_500samples_a.snappy"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    for _ in 0..200 {
        if dce.stats().samples == 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(dce.stats().samples, 500);
    let all_clustered = dce
        .accepted()
        .iter()
        .flat_map(|r| r.timeseries.iter())
        .all(|t| {
            t.labels
                .iter()
                .any(|l| l.name == "cluster" && l.value == "aks-east-1")
        });
    assert!(
        all_clustered,
        "CLUSTER adds cluster=\"aks-east-1\" to every series"
    );
    assert!(entra.issued(mi_client) >= 1);
}

/// SIGTERM: promlink stops accepting, delivers what it holds, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_what_is_queued_and_exits_zero() {
    let (dce, _dir, token_file) = plain_dce_with_token_file().await;
    let port = free_port();
    // A long flush interval: only shutdown makes this batch leave.
    let mut p = Proc(
        serve_plain(port, &dce, &token_file, &["--flush-interval", "1h"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("http://127.0.0.1:{port}/health")).await;
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .body(fixture("prom242_rw1_500samples_b.snappy"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dce.stats().samples, 0, "held by the flush interval");
    let pid = p.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || {
        let s = p.0.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(p.0.stderr.as_mut().unwrap(), &mut err).unwrap();
        (s, err)
    })
    .await
    .unwrap();
    assert_eq!(status.0.code(), Some(0), "{}", status.1);
    assert_eq!(
        dce.stats().samples,
        500,
        "queued data delivered at shutdown; log:\n{}",
        status.1
    );
}

/// SIGHUP reloads the configuration file: a valid file's rules apply from then on, an invalid
/// file is refused and counted while the running configuration stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_configuration_file() {
    let (dce, dir, token_file) = plain_dce_with_token_file().await;
    let config = dir.path().join("promlink.yaml");
    std::fs::write(&config, "flush_interval: 10ms\n").unwrap();
    let port = free_port();
    let p = Proc(
        serve_plain(
            port,
            &dce,
            &token_file,
            &["--config", config.to_str().unwrap()],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/health")).await;
    let http = reqwest::Client::new();
    let write = || {
        http.post(format!("{base}/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .body(fixture("prom242_rw1_500samples_b.snappy"))
            .send()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let reloads = |result: &'static str| {
        let http = http.clone();
        async move {
            let series = format!("promlink_config_reloads_total{{result=\"{result}\"}}");
            common::metric(&http, addr, &series).await
        }
    };
    let hup = |n: f64, result: &'static str| {
        let pid = p.0.id().to_string();
        async move {
            assert!(Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success());
            for _ in 0..100 {
                if reloads(result).await == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("no {result} reload counted after SIGHUP");
        }
    };
    assert_eq!(write().await.unwrap().status(), 204);
    // Every series of the fixture dropped from the reload on.
    std::fs::write(
        &config,
        "flush_interval: 10ms\nwrite_relabel_configs:\n  - {source_labels: [__name__], regex: '.+', action: drop}\n",
    )
    .unwrap();
    hup(1.0, "success").await;
    assert_eq!(write().await.unwrap().status(), 204);
    std::fs::write(&config, "flush_interval: [not a duration\n").unwrap();
    hup(1.0, "error").await;
    assert_eq!(write().await.unwrap().status(), 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        dce.stats().samples,
        500,
        "the first write only: the reloaded rules drop the others, and the invalid file changed nothing"
    );
    assert_eq!(reloads("success").await, 1.0);
    drop(p);
}

#[test]
fn demo_runs_end_to_end_and_reports_success() {
    // 22 s covers the upstream faults, the scripted DNS break (8 s to 12 s) and the silent loss
    // (15 s to 18 s, detected by the canary within its 3 s timeout).
    let out = promlink(&["demo", "--duration", "22s", "--series", "300"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Azure is EMULATED"), "{stdout}");
    assert!(
        stdout.contains("every acknowledged sample arrived once, in order, bit for bit, only through the private endpoint, except the"),
        "{stdout}"
    );
    assert!(stdout.contains("which the canary detected"), "{stdout}");
    assert!(stdout.contains("PromlinkIngestionNotVisible"), "{stdout}");
    assert!(
        stdout.contains("connections to the PUBLIC endpoint   0"),
        "{stdout}"
    );
}

/// The README's configuration table names every key `serve --help` offers.
#[test]
fn readme_documents_every_flag() {
    let out = promlink(&["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut flags: Vec<String> = help
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|f| {
            f.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_string()
        })
        .filter(|f| !f.is_empty() && f != "help")
        .collect();
    flags.sort();
    flags.dedup();
    assert!(flags.len() > 30, "{flags:?}");
    for f in flags {
        let key = format!("`{}`", f.replace('-', "_"));
        assert!(readme.contains(&key), "README does not document {key}");
    }
}

/// Every default named in `promlink::config::defaults::table()` is the one `serve --help` gives
/// (`[default: ...]`) and the one the README's configuration table gives: the three are one.
#[test]
fn help_and_readme_give_the_defaults_the_code_uses() {
    let out = promlink(&["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    // The help of each flag, on one line: wrapped lines joined.
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if let Some(flag) = t.strip_prefix("--") {
            let name: String = flag
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            blocks.push((name.replace('-', "_"), String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push(' ');
            text.push_str(t);
        }
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    // README rows: "| `a`, `b` | `x`, `y` | ..." -> (a, x), (b, y).
    let mut documented: Vec<(String, String)> = Vec::new();
    for row in readme.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let keys: Vec<&str> = cells[1].split(", ").collect();
        let values: Vec<&str> = cells[2].split(", ").collect();
        for (i, k) in keys.iter().enumerate() {
            let value = values.get(i).copied().unwrap_or_default();
            documented.push((k.trim_matches('`').to_string(), value.to_string()));
        }
    }
    let table = promlink::config::defaults::table();
    assert!(table.len() > 40, "{table:?}");
    for (key, default) in table {
        let (_, text) = blocks
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("no --{} in serve --help", key.replace('_', "-")));
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            text.contains(&format!("[default: {default}]"))
                || text.contains(&format!("[default: {default};")),
            "--help of {key} does not say [default: {default}]: {text}"
        );
        let (_, readme_default) = documented
            .iter()
            .find(|(k, _)| *k == key)
            .unwrap_or_else(|| panic!("README's table has no row for `{key}`"));
        assert_eq!(
            readme_default.trim_matches('`'),
            default,
            "README's default for `{key}`"
        );
    }
}

/// Secrets given to promlink (a client secret by file and by environment, sender tokens, a TLS
/// key) never appear in `check-config` output or its errors; a world-readable secret file is
/// named in a warning.
#[test]
fn check_config_never_prints_secrets() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("ca").unwrap();
    let leaf = ca.issue(&["127.0.0.1"]).unwrap();
    let file = |name: &str, content: &str, mode: u32| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    };
    let secret = file("secret", "s3cr3t-client-value", 0o644);
    let tokens = file("tokens", "s3cr3t-sender-token\n", 0o600);
    let cert = file("tls.crt", &leaf.cert_pem, 0o644);
    let key = file("tls.key", &leaf.key_pem, 0o600);
    let key_body: String = leaf.key_pem.lines().nth(1).unwrap().to_string();
    let common = [
        "check-config",
        "--ingestion-url",
        "https://example.com/api/v1/write",
        "--identity",
        "client-secret",
        "--tenant-id",
        "t",
        "--client-id",
        "c",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--bearer-token-file",
        &tokens,
    ];
    let ok = promlink(&common)
        .args(["--client-secret-file", &secret])
        .output()
        .unwrap();
    let bad = promlink(&common)
        .args(["--max-connections", "0"])
        .env("AZURE_CLIENT_SECRET", "s3cr3t-env-value")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(bad.status.code(), Some(64));
    let all = format!(
        "{}{}{}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr),
        String::from_utf8_lossy(&bad.stdout),
        String::from_utf8_lossy(&bad.stderr)
    );
    for s in [
        "s3cr3t-client-value",
        "s3cr3t-env-value",
        "s3cr3t-sender-token",
        &key_body,
    ] {
        assert!(!all.contains(s), "{s} leaked:\n{all}");
    }
    assert!(all.contains("<redacted>"), "{all}");
    assert!(
        all.contains("client_secret_file") && all.contains("mode 0644"),
        "{all}"
    );
    assert!(all.contains("max_connections = \"0\""), "{all}");
}

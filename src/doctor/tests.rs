//! Unit tests of doctor's grading and texts; end-to-end runs are in `tests/doctor.rs`.

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;

use super::canary::{canary_body, canary_meaning};
use super::token::token_fix;
use super::*;
use crate::identity::IdentityKind;
use crate::privatelink::Resolution;

const DCE: &str = "https://mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com/dataCollectionRules/dcr-0123456789abcdef0123456789abcdef/streams/Microsoft-PrometheusMetrics/api/v1/write?api-version=2023-04-24";

fn config(mode: Mode, token_file: &std::path::Path) -> Config {
    Settings {
        ingestion_url: Some(DCE.into()),
        identity: Some(IdentityKind::TokenFile),
        token_file: Some(token_file.to_owned()),
        private_link: Some(mode),
        ..Settings::default()
    }
    .resolve()
    .unwrap()
}

fn resolution(host: &str, verdict: Verdict) -> Resolution {
    Resolution {
        host: host.into(),
        chain: Vec::new(),
        addresses: Vec::new(),
        ttl: None,
        verdict,
        detail: "test".into(),
        resolver: "test".into(),
        at: SystemTime::now(),
    }
}

#[test]
fn dns_grading_follows_role_and_mode() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let args = DoctorArgs::new(Settings::default());
    let ingest = Target {
        host: "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com".into(),
        port: 443,
        role: Role::Ingestion,
    };
    let control = Target {
        host: "eastus.handler.control.monitor.azure.com".into(),
        port: 443,
        role: Role::Control,
    };
    let authority = Target {
        host: "login.microsoftonline.com".into(),
        port: 443,
        role: Role::Authority,
    };
    use Status::*;
    use Verdict::*;
    // (mode, target, verdict, expected status)
    let cases = [
        (Mode::Require, &ingest, Private, Ok),
        (Mode::Require, &ingest, Public, Fail),
        (Mode::Require, &ingest, Nxdomain, Fail),
        (Mode::Require, &ingest, UnexpectedAddress, Fail),
        (Mode::Require, &ingest, Mixed, Fail),
        (Mode::Require, &ingest, DnsError, Fail),
        (Mode::Prefer, &ingest, Public, Warn),
        (Mode::Prefer, &ingest, Nxdomain, Warn),
        (Mode::Off, &ingest, Public, Ok),
        (Mode::Off, &ingest, Nxdomain, Fail),
        (Mode::Require, &control, Public, Warn),
        (Mode::Require, &control, Private, Ok),
        (Mode::Off, &control, DnsError, Warn),
        (Mode::Require, &authority, Public, Ok),
        (Mode::Require, &authority, Private, Ok),
        // token-file does not use the authority: warn only.
        (Mode::Require, &authority, Nxdomain, Warn),
    ];
    for (mode, target, verdict, want) in cases {
        let cfg = config(mode, file.path());
        let d = Doctor::new(&cfg, &args);
        let c = d.dns_check(target, &resolution(&target.host, verdict));
        assert_eq!(
            c.status, want,
            "{mode:?} {:?} {verdict}: {c:?}",
            target.role
        );
        assert_eq!(c.verdict.as_deref(), Some(verdict.as_str()));
        if target.role != Role::Authority && verdict != Private {
            assert!(c.fix.contains(verdict.remediation()), "{c:?}");
            assert!(c.meaning.contains(verdict.meaning()), "{c:?}");
        }
        if mode == Mode::Prefer {
            assert!(c.fix.contains("*.ingest.monitor.azure.com"), "{c:?}");
        }
    }
}

#[test]
fn canary_body_is_one_remote_write_sample() {
    let body = canary_body(Some("aks-1"), 1_700_000_000.25);
    let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
    let req = crate::proto::v1::WriteRequest::decode(raw.as_slice()).unwrap();
    assert_eq!(req.timeseries.len(), 1);
    let ts = &req.timeseries[0];
    let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["__name__", "cluster", "job"], "sorted label names");
    assert_eq!(ts.labels[0].value, "promlink_doctor_canary");
    assert_eq!(ts.samples.len(), 1);
    assert_eq!(ts.samples[0].value, 1_700_000_000.25);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - ts.samples[0].timestamp).abs() < 60_000);
}

#[test]
fn canary_statuses() {
    let scope = "https://monitor.azure.com/.default";
    let cases = [
        (204, Status::Ok, ""),
        (401, Status::Fail, "audience"),
        (403, Status::Fail, "Monitoring Metrics Publisher"),
        (404, Status::Fail, "immutableId"),
        (429, Status::Warn, "retry"),
        (503, Status::Warn, "retry"),
        (400, Status::Fail, "api-version"),
    ];
    for (code, want, text) in cases {
        let (status, meaning, fix) = canary_meaning(code, scope);
        assert_eq!(status, want, "{code}");
        assert!(
            fix.contains(text) || meaning.contains(text),
            "{code}: {meaning} / {fix}"
        );
    }
    let (_, _, fix) = canary_meaning(403, scope);
    assert!(fix.contains("30 minutes"), "{fix}");
}

#[test]
fn token_fixes_follow_aadsts_codes() {
    let authority = "https://login.microsoftonline.com/";
    let scope = "https://monitor.azure.com/.default";
    let cases = [
        (
            "... AADSTS7000215: Invalid client secret provided.",
            IdentityKind::ClientSecret,
            "client secret",
        ),
        (
            "AADSTS700016: Application with identifier 'x' was not found",
            IdentityKind::ClientSecret,
            "--client-id",
        ),
        (
            "AADSTS70021: No matching federated identity record found",
            IdentityKind::Workload,
            "api://AzureADTokenExchange",
        ),
        (
            "AADSTS500011: The resource principal named x was not found",
            IdentityKind::ClientSecret,
            "monitor.azure.com/.default",
        ),
        (
            "AADSTS12345: something new",
            IdentityKind::ClientSecret,
            "AADSTS12345",
        ),
        (
            "error sending request: connection refused",
            IdentityKind::ClientSecret,
            "AzureActiveDirectory",
        ),
        (
            "no valid token within 5s",
            IdentityKind::SystemAssigned,
            "IMDS",
        ),
    ];
    for (err, kind, want) in cases {
        let (_, fix) = token_fix(err, kind, authority, scope);
        assert!(fix.contains(want), "{err}: {fix}");
    }
}

#[tokio::test]
async fn config_errors_exit_64_and_name_the_key() {
    let mut args = DoctorArgs::new(Settings {
        ingestion_url: Some("ftp://nowhere".into()),
        ..Settings::default()
    });
    let (text, code) = render(&args).await;
    assert_eq!(code, EXIT_CONFIG);
    assert!(text.contains("ingestion_url"), "{text}");
    args.output = OutputFormat::Json;
    let (text, code) = render(&args).await;
    assert_eq!(code, EXIT_CONFIG);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["config_errors"][0]
        .as_str()
        .unwrap()
        .contains("ingestion_url"));
}

#[tokio::test]
async fn bad_workspace_id_is_a_config_error() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut args = DoctorArgs::new(Settings {
        ingestion_url: Some(DCE.into()),
        identity: Some(IdentityKind::TokenFile),
        token_file: Some(file.path().to_owned()),
        ..Settings::default()
    });
    args.workspace_id = Some("not-a-guid".into());
    let err = diagnose(&args).await.unwrap_err();
    assert_eq!(err.0[0].key, "workspace_id");
}

#[test]
fn doctor_flags_parse_next_to_the_serve_settings() {
    use clap::{CommandFactory, Parser};
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        doctor: DoctorArgs,
    }
    Cli::command().debug_assert();
    let cli = Cli::try_parse_from([
        "doctor",
        "--ingestion-url",
        DCE,
        "--output",
        "json",
        "--write-canary",
        "--cluster-region",
        "eastus",
        "--workspace-id",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "--token-timeout",
        "5s",
        "--private-link",
        "prefer",
    ])
    .unwrap();
    let d = cli.doctor;
    assert_eq!(d.output, OutputFormat::Json);
    assert!(d.write_canary);
    assert_eq!(d.cluster_region.as_deref(), Some("eastus"));
    assert_eq!(d.token_timeout, Duration::from_secs(5));
    assert_eq!(d.settings.private_link, Some(Mode::Prefer));
    assert_eq!(d.settings.ingestion_url.as_deref(), Some(DCE));
}

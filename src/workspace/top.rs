//! `promlink top`: the cardinality view of a running promlink as tables, the way people use
//! `kubectl top` (it reads `GET /api/v1/status/cardinality`).

use std::fmt::Write as _;
use std::time::Duration;

use super::cardinality::{Entry, Report};

/// `promlink top` options.
#[derive(Clone, Debug, clap::Args)]
pub struct TopArgs {
    /// Base URL of the running promlink's listener, e.g. http://promlink.monitoring:8081
    /// (kubectl port-forward for a pod)
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub url: url::Url,
    /// Rows of each table.
    #[arg(long, default_value_t = crate::receive::cardinality::DEFAULT_LIMIT)]
    pub limit: usize,
    /// How long to wait for the answer.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Trust this CA (PEM) for an https:// URL, besides the system's.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why `promlink top` printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// The request failed.
    #[error("GET {url}: {why}")]
    Request {
        /// The URL asked.
        url: String,
        /// What went wrong.
        why: String,
    },
}

/// Fetches the report from `args.url` and renders it.
///
/// # Errors
/// When promlink cannot be reached or does not answer with a report.
pub async fn run(args: &TopArgs) -> Result<String, TopError> {
    let mut url = args.url.clone();
    url.set_path(&format!(
        "{}/api/v1/status/cardinality",
        url.path().trim_end_matches('/')
    ));
    url.set_query(Some(&format!("limit={}", args.limit)));
    let fail = |why: String| TopError::Request {
        url: url.to_string(),
        why,
    };
    let mut client = reqwest::Client::builder().timeout(args.timeout);
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).map_err(|e| fail(format!("{}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| fail(format!("{}: {e}", ca.display())))?;
        client = client.add_root_certificate(cert);
    }
    let client = client.build().map_err(|e| fail(e.to_string()))?;
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| fail(crate::outbound::error_chain(&e)))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| fail(e.to_string()))?;
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}: {}", text.trim())));
    }
    let body: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("not JSON: {e}")))?;
    let report: Report = serde_json::from_value(body["data"].clone())
        .map_err(|e| fail(format!("not a cardinality report: {e}")))?;
    Ok(render(&report))
}

/// The report as three tables.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} series sent within the active window (12 hours){}",
        r.total_series,
        if r.estimated {
            format!(
                "; ESTIMATED from 1 in {} series: {}",
                (1.0 / r.sample_rate).round(),
                r.error_bound
            )
        } else {
            "; exact counts".to_string()
        }
    );
    table(&mut out, "METRIC", "SERIES", &r.series_count_by_metric_name);
    table(
        &mut out,
        "LABEL",
        "VALUES",
        &r.label_value_count_by_label_name,
    );
    table(
        &mut out,
        "LABEL PAIR",
        "SERIES",
        &r.series_count_by_label_value_pair,
    );
    out
}

fn table(out: &mut String, what: &str, count: &str, rows: &[Entry]) {
    let width = rows
        .iter()
        .map(|e| e.name.chars().count())
        .chain([what.len()])
        .max()
        .unwrap_or(0)
        .min(100);
    let _ = writeln!(out, "\n{what:<width$}  {count:>10}");
    if rows.is_empty() {
        let _ = writeln!(out, "(none)");
    }
    for e in rows {
        let name: String = e.name.chars().take(100).collect();
        let _ = writeln!(out, "{name:<width$}  {:>10}", e.value);
    }
}

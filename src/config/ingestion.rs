//! The upstream URL: `ingestion_url`, or `dce_endpoint` + `dcr_id` (+ `stream`, `api_version`),
//! checked for the DCE shape when it is an Azure Monitor ingestion URL, and never printed with
//! credentials.

use url::Url;

use super::defaults::{API_VERSION as DEFAULT_API_VERSION, STREAM as DEFAULT_STREAM};
use super::problems::Problems;
use super::Settings;

/// The upstream URL of `s` and whether it is an Azure Monitor DCE URL; `None` after a problem.
pub(super) fn resolve(s: &Settings, p: &mut Problems) -> Option<(Url, bool)> {
    let url = match (&s.ingestion_url, &s.dce_endpoint) {
        (Some(_), Some(_)) => {
            p.bad(
                "dce_endpoint",
                s.dce_endpoint.clone().unwrap_or_default(),
                "give either ingestion_url or dce_endpoint + dcr_id, not both",
            );
            None
        }
        (Some(u), None) => Some(u.clone()),
        (None, Some(ep)) => match &s.dcr_id {
            None => {
                p.bad("dcr_id", "", "required with dce_endpoint");
                None
            }
            Some(id) => Some(format!(
                "{}/dataCollectionRules/{}/streams/{}/api/v1/write?api-version={}",
                ep.trim_end_matches('/'),
                id,
                s.stream.as_deref().unwrap_or(DEFAULT_STREAM),
                s.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION)
            )),
        },
        (None, None) => {
            p.bad(
                "ingestion_url",
                "",
                "required (or dce_endpoint + dcr_id; Azure sidecar: INGESTION_URL)",
            );
            None
        }
    }?;
    let key = if s.ingestion_url.is_some() {
        "ingestion_url"
    } else {
        "dce_endpoint"
    };
    match check_ingestion_url(&url, s.allow_plain_http.unwrap_or(false)) {
        Ok(checked) => Some(checked),
        Err(why) => {
            p.bad(key, redact_credentials(&url), why);
            None
        }
    }
}

/// Host suffixes of Azure Monitor metrics ingestion endpoints, per cloud.
const AZURE_INGEST_SUFFIXES: [&str; 3] = [
    ".ingest.monitor.azure.com",
    ".ingest.monitor.azure.us",
    ".ingest.monitor.azure.cn",
];

/// The URL text with any user name and password replaced, for messages.
pub(super) fn redact_credentials(raw: &str) -> String {
    match Url::parse(raw.trim()) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("<redacted>");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => raw.to_string(),
    }
}

/// Whether `host` is an Azure Monitor metrics ingestion host name (any cloud).
pub fn is_azure_ingest_host(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    AZURE_INGEST_SUFFIXES.iter().any(|s| h.ends_with(s))
}

/// Checks an ingestion URL. Returns the URL and whether it is an Azure Monitor DCE URL.
///
/// A URL whose host is an Azure ingestion host, or whose path starts with
/// `/dataCollectionRules/`, must have the full DCE shape: `https`,
/// `/dataCollectionRules/dcr-<32 hex>/streams/<stream>/api/v1/write` and an `api-version`.
/// Any other URL is a generic remote-write receiver (a Prometheus, Mimir, ...).
///
/// # Errors
/// The reason, as a sentence fragment.
pub fn check_ingestion_url(raw: &str, allow_plain_http: bool) -> Result<(Url, bool), String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        // Credentials in a URL end up in logs and error messages.
        return Err("credentials in the URL are not supported; use identity token-file (or an Entra identity) instead".into());
    }
    match url.scheme() {
        "https" => {}
        "http" if allow_plain_http => {}
        "http" => return Err("plain http:// sends tokens and metrics unencrypted; use https:// or pass --allow-plain-http (tests and benchmarks only)".into()),
        other => return Err(format!("scheme {other:?} is not supported; use https://")),
    }
    let host = url
        .host_str()
        .ok_or("the URL has no host")?
        .to_ascii_lowercase();
    let azure_host = AZURE_INGEST_SUFFIXES.iter().any(|s| host.ends_with(s));
    let segments: Vec<&str> = url.path().trim_matches('/').split('/').collect();
    let dce_path = segments
        .first()
        .is_some_and(|s| s.eq_ignore_ascii_case("dataCollectionRules"));
    if !azure_host && !dce_path {
        return Ok((url, false));
    }
    const SHAPE: &str = "/dataCollectionRules/<dcr-immutable-id>/streams/<stream>/api/v1/write";
    match segments.as_slice() {
        [dcr, id, streams, stream, api, v1, write]
            if dcr.eq_ignore_ascii_case("dataCollectionRules")
                && streams.eq_ignore_ascii_case("streams")
                && *api == "api"
                && *v1 == "v1"
                && *write == "write" =>
        {
            let hex = id.strip_prefix("dcr-").unwrap_or("");
            if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("DCR immutable id {id:?} must be \"dcr-\" followed by 32 hex digits (the DCR's immutableId, not its name or resource id)"));
            }
            if stream.is_empty() {
                return Err(format!("the stream is empty; expected {DEFAULT_STREAM}"));
            }
        }
        _ => return Err(format!("the path must be {SHAPE}")),
    }
    match url.query_pairs().find(|(k, _)| k == "api-version") {
        Some((_, v)) if !v.is_empty() => {}
        _ => {
            return Err(format!(
            "the api-version query parameter is missing (e.g. ?api-version={DEFAULT_API_VERSION})"
        ))
        }
    }
    Ok((url, true))
}

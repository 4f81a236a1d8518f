//! The identity stage's settings: which Entra ID credential (or token file), the keys each kind
//! needs, the client secret read once, the authority and scope by cloud, and the refresh timing.

use std::path::PathBuf;

use url::Url;

use super::defaults;
use super::problems::Problems;
use super::sources::env;
use super::Settings;
use crate::identity::{Cloud, IdentityConfig, IdentityKind};
use crate::secret::Secret;

/// The identity of `s`; `None` when the authority host is unusable (a problem says why).
/// `retry_max` is the upstream's `retry_max_backoff`, which caps token fetch retries too.
pub(super) fn resolve(
    s: &Settings,
    retry_max: std::time::Duration,
    proxy: &crate::proxy::ProxyConfig,
    p: &mut Problems,
) -> Option<IdentityConfig> {
    let cloud = s.cloud.unwrap_or(Cloud::Public);
    let kind = s.identity.unwrap_or(IdentityKind::SystemAssigned);
    let authority = s
        .authority_host
        .clone()
        .unwrap_or_else(|| cloud.authority_host().to_string());
    let authority_host = match Url::parse(&authority) {
        Ok(u) if u.scheme() == "https" => Some(u),
        Ok(_) => {
            p.bad("authority_host", &authority, "must be an https:// URL");
            None
        }
        Err(e) => {
            p.bad("authority_host", &authority, format!("not a URL: {e}"));
            None
        }
    };
    let required = format!("required with identity {}", kind_name(kind));
    let mut need = |field: &Option<String>, key: &str| {
        if field.is_none() {
            p.bad(key, "", required.clone());
        }
    };
    match kind {
        IdentityKind::UserAssigned => need(&s.client_id, "client_id"),
        IdentityKind::ClientSecret | IdentityKind::ClientCertificate | IdentityKind::Workload => {
            need(&s.client_id, "client_id");
            need(&s.tenant_id, "tenant_id");
        }
        _ => {}
    }
    let mut need_file = |field: &Option<PathBuf>, key: &str| match field {
        None => p.bad(key, "", required.clone()),
        Some(path) if !path.is_file() => p.bad(key, path.display(), "no such file"),
        Some(_) => {}
    };
    match kind {
        IdentityKind::ClientCertificate => {
            need_file(&s.client_certificate_path, "client_certificate_path")
        }
        IdentityKind::Workload => need_file(&s.federated_token_file, "federated_token_file"),
        IdentityKind::TokenFile => need_file(&s.token_file, "token_file"),
        _ => {}
    }
    let client_secret = if kind == IdentityKind::ClientSecret {
        client_secret(s, p)
    } else {
        None
    };
    let refresh_before = p.duration(
        "token_refresh_before_expiry",
        s.token_refresh_before_expiry,
        defaults::TOKEN_REFRESH_BEFORE_EXPIRY,
    );
    let scope = s
        .token_scope
        .clone()
        .unwrap_or_else(|| cloud.monitor_scope().to_string());
    Some(IdentityConfig {
        kind,
        cloud,
        tenant_id: s.tenant_id.clone(),
        client_id: s.client_id.clone(),
        client_secret,
        client_certificate_path: s.client_certificate_path.clone(),
        federated_token_file: s.federated_token_file.clone(),
        token_file: s.token_file.clone(),
        authority_host: authority_host?,
        scope,
        ca_file: s.ca_file.clone(),
        proxy: proxy.clone(),
        refresh_before_expiry: refresh_before,
        retry_min: defaults::TOKEN_RETRY_MIN.min(retry_max),
        retry_max,
    })
}

/// The client secret, from `client_secret_file` or `AZURE_CLIENT_SECRET`, read once now.
fn client_secret(s: &Settings, p: &mut Problems) -> Option<Secret> {
    match (&s.client_secret_file, env("AZURE_CLIENT_SECRET")) {
        (Some(path), _) => match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Some(Secret::new(text.trim())),
            Ok(_) => {
                p.bad("client_secret_file", path.display(), "the file is empty");
                None
            }
            Err(e) => {
                p.bad(
                    "client_secret_file",
                    path.display(),
                    format!("cannot read: {e}"),
                );
                None
            }
        },
        (None, Some(secret)) => Some(Secret::new(secret)),
        (None, None) => {
            p.bad(
                "client_secret_file",
                "",
                "required with identity client-secret (or set AZURE_CLIENT_SECRET)",
            );
            None
        }
    }
}

/// The name of `kind` as the flag spells it.
pub(super) fn kind_name(kind: IdentityKind) -> String {
    use clap::ValueEnum;
    kind.to_possible_value()
        .map_or_else(|| format!("{kind:?}"), |v| v.get_name().to_string())
}

/// Turns an audience (`https://monitor.azure.us`) into a scope (`https://monitor.azure.us/.default`).
pub fn audience_to_scope(audience: &str) -> String {
    let a = audience.trim();
    if a.ends_with("/.default") {
        a.to_string()
    } else {
        format!("{}/.default", a.trim_end_matches('/'))
    }
}

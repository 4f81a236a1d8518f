//! Where settings come from besides flags and `PROMLINK_*` variables: the YAML file named by
//! `config`, and the environment variables of Azure's remote-write sidecar (and the Azure SDKs),
//! and how the layers are merged ([`Settings::layered`]), including the defaults that follow
//! from running as the sidecar's drop-in.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{audience_to_scope, Problem, Settings};
use crate::identity::IdentityKind;

/// Memory budgets when promlink runs from the Azure sidecar's environment, whose documented
/// container limit is 200 Mi (request 150 Mi) for about 150,000 series: `(key, bytes)`. Their
/// sum (80 MiB) plus promlink's own footprint (~20 MiB) and the batches being sent leaves room
/// under the limit in a worst-case burst (`tests/durable.rs` measures it). 32 MiB of queue
/// holds about half an hour of 150,000 series scraped every 30 s (Prometheus' requests
/// compress to a few bytes per sample).
pub const SIDECAR_BUDGETS: [(&str, usize); 5] = [
    ("queue_max_bytes", 32 << 20),
    ("max_inflight_decode_bytes", 32 << 20),
    ("max_decoded_bytes", 16 << 20),
    ("max_inflight_body_bytes", 16 << 20),
    ("max_body_bytes", 4 << 20),
];

/// Reads an environment variable, treating empty as unset.
pub(super) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    /// Keys from the environment variables of Azure's remote-write sidecar and the Azure SDKs.
    /// Problems (an unknown IDENTITY_TYPE, a bad port) are added to `problems`.
    pub fn from_azure_env(problems: &mut Vec<Problem>) -> Settings {
        let mut s = Settings {
            ingestion_url: env("INGESTION_URL"),
            ..Settings::default()
        };
        if let Some(port) = env("LISTENING_PORT") {
            match port.trim().parse::<u16>() {
                Ok(p) => s.listen = Some(SocketAddr::from(([0, 0, 0, 0], p))),
                Err(_) => problems.push(Problem {
                    key: "LISTENING_PORT".into(),
                    value: port,
                    why: "not a port number".into(),
                }),
            }
        }
        if let Some(t) = env("IDENTITY_TYPE") {
            s.identity = match t.trim() {
                "userAssigned" => Some(IdentityKind::UserAssigned),
                "systemAssigned" => Some(IdentityKind::SystemAssigned),
                "aadApplication" => Some(IdentityKind::ClientCertificate),
                "workloadIdentity" => Some(IdentityKind::Workload),
                _ => {
                    problems.push(Problem {
                        key: "IDENTITY_TYPE".into(),
                        value: t,
                        why: "expected userAssigned, systemAssigned, aadApplication or workloadIdentity".into(),
                    });
                    None
                }
            };
        }
        s.client_id = env("AZURE_CLIENT_ID");
        s.tenant_id = env("AZURE_TENANT_ID");
        s.client_certificate_path = env("AZURE_CLIENT_CERTIFICATE_PATH").map(PathBuf::from);
        s.federated_token_file = env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from);
        s.authority_host = env("AZURE_AUTHORITY_HOST");
        s.cluster = env("CLUSTER");
        s.token_scope = env("INGESTION_AAD_AUDIENCE").map(|a| audience_to_scope(&a));
        s
    }

    /// Reads the YAML file named by `config`, if any.
    ///
    /// # Errors
    /// A problem naming the file and the YAML error (which names the key and line).
    pub fn from_file(path: &std::path::Path) -> Result<Settings, Problem> {
        let text = std::fs::read_to_string(path).map_err(|e| Problem {
            key: "config".into(),
            value: path.display().to_string(),
            why: format!("cannot read the file: {e}"),
        })?;
        Settings::from_yaml(&text).map_err(|why| Problem {
            key: "config".into(),
            value: path.display().to_string(),
            why,
        })
    }

    /// Parses the YAML text of a configuration file.
    ///
    /// # Errors
    /// Why the text is not a valid configuration (unknown key, wrong type, not YAML).
    pub fn from_yaml(text: &str) -> Result<Settings, String> {
        serde_saphyr::from_str::<Settings>(text)
            .map_err(|e| format!("invalid YAML configuration: {e}"))
    }

    /// Merges the layers: flags and `PROMLINK_*` (self) over the Azure sidecar's variables over
    /// the file. When the ingestion URL comes from the sidecar's `INGESTION_URL` and nothing
    /// sets `private_link`, verification is off, as in the sidecar being replaced: an image
    /// swap must give a working forwarder whether or not the DCE is behind Private Link. The
    /// memory budgets nothing sets are then [`SIDECAR_BUDGETS`], to fit the sidecar's memory
    /// limit. The returned notices say so (logged at start).
    pub fn layered(self, azure: Settings, file: Settings) -> (Settings, Vec<String>) {
        let url_from_sidecar = self.ingestion_url.is_none()
            && self.dce_endpoint.is_none()
            && azure.ingestion_url.is_some();
        let mut merged = self.or(azure).or(file);
        let mut notices = Vec::new();
        if url_from_sidecar && merged.private_link.is_none() {
            merged.private_link = Some(crate::privatelink::Mode::Off);
            notices.push(
                "INGESTION_URL comes from the Azure sidecar environment: Private Link verification is off, as in Azure's sidecar; set PROMLINK_PRIVATE_LINK=require (or prefer) to verify the private endpoint".to_string(),
            );
        }
        if url_from_sidecar {
            let mut sized = Vec::new();
            // In the order of SIDECAR_BUDGETS.
            let slots = [
                &mut merged.queue_max_bytes,
                &mut merged.max_inflight_decode_bytes,
                &mut merged.max_decoded_bytes,
                &mut merged.max_inflight_body_bytes,
                &mut merged.max_body_bytes,
            ];
            for ((key, bytes), slot) in SIDECAR_BUDGETS.into_iter().zip(slots) {
                if slot.is_none() {
                    *slot = Some(bytes);
                    sized.push(format!("{key}={bytes}"));
                }
            }
            if !sized.is_empty() {
                notices.push(format!(
                    "INGESTION_URL comes from the Azure sidecar environment: memory budgets sized for its 200 Mi limit ({}); set them to override",
                    sized.join(", ")
                ));
            }
        }
        (merged, notices)
    }
}

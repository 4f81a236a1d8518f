//! Azure host names doctor derives from the configuration: the DCE's region, the configuration
//! (`handler.control`) endpoints and the Log Analytics endpoints of Container insights, per cloud.

use crate::identity::{Cloud, IdentityKind};

/// What a host is to promlink, which decides how its failures are graded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The DCE metrics ingestion host (or a generic receiver): every sample goes here.
    Ingestion,
    /// A `handler.control` configuration endpoint: used by the Azure Monitor agent and the
    /// managed Prometheus add-on, not by promlink; same AMPLS and private DNS zone as ingestion.
    Control,
    /// A Log Analytics endpoint (`ods`/`oms`) of Container insights; not used by promlink.
    LogAnalytics,
    /// The Entra ID authority: never behind the AMPLS.
    Authority,
}

impl Role {
    /// Whether the host is expected to resolve through a privatelink zone.
    pub fn private_link(self) -> bool {
        !matches!(self, Role::Authority)
    }
}

/// One host to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host name (or IP literal).
    pub host: String,
    /// The TCP port probed.
    pub port: u16,
    /// What it is.
    pub role: Role,
}

/// The DNS suffix of a cloud (`azure.com`, `azure.us`, `azure.cn`).
pub fn cloud_suffix(cloud: Cloud) -> &'static str {
    match cloud {
        Cloud::Public => "azure.com",
        Cloud::UsGov => "azure.us",
        Cloud::China => "azure.cn",
    }
}

/// The region of a DCE metrics ingestion host:
/// `<name>.<region>-1.metrics.ingest.monitor.azure.com` (or `...metrics.canary.ingest...`, any
/// cloud) gives `<region>`.
pub fn dce_region(host: &str) -> Option<String> {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = h.split('.').collect();
    let rest = labels.get(2..)?.join(".");
    let shaped = ["com", "us", "cn"].iter().any(|tld| {
        rest == format!("metrics.ingest.monitor.azure.{tld}")
            || rest == format!("metrics.canary.ingest.monitor.azure.{tld}")
    });
    if !shaped {
        return None;
    }
    let ring = labels[1];
    let region = match ring.rsplit_once('-') {
        Some((r, n)) if !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()) => r,
        _ => ring,
    };
    (!region.is_empty() && region.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| region.to_string())
}

/// An Azure region as its programmatic name: `East US` and `east-us` give `eastus`.
pub fn normalize_region(region: &str) -> String {
    region
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The regional configuration endpoint, `<region>.handler.control.monitor.azure.com`.
pub fn control_host(region: &str, cloud: Cloud) -> String {
    format!("{region}.handler.control.monitor.{}", cloud_suffix(cloud))
}

/// The global configuration endpoint, `global.handler.control.monitor.azure.com`.
pub fn global_control_host(cloud: Cloud) -> String {
    control_host("global", cloud)
}

/// The Log Analytics ingestion and agent endpoints of a workspace:
/// `<id>.ods.opinsights.azure.com` and `<id>.oms.opinsights.azure.com`.
pub fn workspace_hosts(workspace_id: &str, cloud: Cloud) -> [String; 2] {
    let id = workspace_id.trim().to_ascii_lowercase();
    let sfx = cloud_suffix(cloud);
    [
        format!("{id}.ods.opinsights.{sfx}"),
        format!("{id}.oms.opinsights.{sfx}"),
    ]
}

/// Whether `s` looks like a workspace (customer) id: a GUID.
pub fn is_guid(s: &str) -> bool {
    let s = s.trim();
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Whether the identity kind talks to the Entra authority host itself. Managed identity asks
/// IMDS (or the App Service style endpoint), which reaches Entra ID on the pod's behalf.
pub fn uses_authority(kind: IdentityKind) -> bool {
    matches!(
        kind,
        IdentityKind::Workload | IdentityKind::ClientSecret | IdentityKind::ClientCertificate
    )
}

/// Whether the identity kind gets tokens from Entra ID at all (managed or application).
pub fn uses_entra(kind: IdentityKind) -> bool {
    !matches!(kind, IdentityKind::TokenFile | IdentityKind::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_from_dce_hosts() {
        let cases = [
            (
                "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com",
                Some("eastus"),
            ),
            (
                "MyDce-AB12.WestEurope-1.metrics.ingest.monitor.azure.com.",
                Some("westeurope"),
            ),
            (
                "d-x.eastus2euap-1.metrics.canary.ingest.monitor.azure.com",
                Some("eastus2euap"),
            ),
            (
                "d.usgovvirginia-1.metrics.ingest.monitor.azure.us",
                Some("usgovvirginia"),
            ),
            (
                "d.chinanorth3-1.metrics.ingest.monitor.azure.cn",
                Some("chinanorth3"),
            ),
            ("eastus-1.metrics.ingest.monitor.azure.com", None),
            ("d.eastus-1.ingest.monitor.azure.com", None),
            ("prometheus.example.com", None),
            ("127.0.0.1", None),
        ];
        for (host, want) in cases {
            assert_eq!(dce_region(host).as_deref(), want, "{host}");
        }
    }

    #[test]
    fn sovereign_names() {
        assert_eq!(
            control_host("eastus", Cloud::Public),
            "eastus.handler.control.monitor.azure.com"
        );
        assert_eq!(
            global_control_host(Cloud::UsGov),
            "global.handler.control.monitor.azure.us"
        );
        let id = "0F8FAD5B-D9CB-469F-A165-70867728950E";
        assert!(is_guid(id));
        assert_eq!(
            workspace_hosts(id, Cloud::China),
            [
                "0f8fad5b-d9cb-469f-a165-70867728950e.ods.opinsights.azure.cn".to_string(),
                "0f8fad5b-d9cb-469f-a165-70867728950e.oms.opinsights.azure.cn".to_string(),
            ]
        );
        assert!(!is_guid("myworkspace"));
        assert_eq!(normalize_region("East US 2"), "eastus2");
    }
}

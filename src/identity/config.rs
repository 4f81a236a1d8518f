//! What the identity stage needs to know, resolved from the CLI, environment and config file.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::secret::Secret;

/// How promlink obtains its Entra ID token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityKind {
    /// The VM's or node's system-assigned managed identity.
    SystemAssigned,
    /// A user-assigned managed identity, chosen by `client_id`.
    UserAssigned,
    /// Azure Workload Identity: a federated token file exchanged for an Entra token.
    Workload,
    /// An Entra application with a client secret.
    ClientSecret,
    /// An Entra application with a client certificate (PEM: certificate and private key).
    ClientCertificate,
    /// A bearer token read from a file, re-read when the file changes (non-Azure upstreams).
    TokenFile,
    /// No `Authorization` header (non-Azure upstreams, tests).
    None,
}

/// An Azure cloud: decides the default authority host and token scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// Azure public cloud.
    Public,
    /// Azure US Government.
    UsGov,
    /// Azure operated by 21Vianet (China).
    China,
}

impl Cloud {
    /// The Entra ID authority host of this cloud.
    pub fn authority_host(self) -> &'static str {
        match self {
            Cloud::Public => "https://login.microsoftonline.com",
            Cloud::UsGov => "https://login.microsoftonline.us",
            Cloud::China => "https://login.partner.microsoftonline.cn",
        }
    }

    /// The token scope of an Azure Monitor workspace's query endpoint in this cloud.
    pub fn query_scope(self) -> &'static str {
        match self {
            Cloud::Public => "https://prometheus.monitor.azure.com/.default",
            Cloud::UsGov => "https://prometheus.monitor.azure.us/.default",
            Cloud::China => "https://prometheus.monitor.azure.cn/.default",
        }
    }

    /// The token scope for Azure Monitor metrics ingestion in this cloud.
    pub fn monitor_scope(self) -> &'static str {
        match self {
            Cloud::Public => "https://monitor.azure.com/.default",
            Cloud::UsGov => "https://monitor.azure.us/.default",
            Cloud::China => "https://monitor.azure.cn/.default",
        }
    }
}

/// Everything the token provider needs; built and validated by `crate::config`.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Which credential to use.
    pub kind: IdentityKind,
    /// Which cloud (authority host and scope defaults).
    pub cloud: Cloud,
    /// Entra tenant id (client-secret, client-certificate, workload).
    pub tenant_id: Option<String>,
    /// Application (client) id, or the user-assigned identity's client id.
    pub client_id: Option<String>,
    /// Client secret (client-secret).
    pub client_secret: Option<Secret>,
    /// PEM file with the client certificate and its private key (client-certificate).
    pub client_certificate_path: Option<PathBuf>,
    /// Federated service-account token file (workload).
    pub federated_token_file: Option<PathBuf>,
    /// File holding a bearer token (token-file).
    pub token_file: Option<PathBuf>,
    /// Entra authority host, e.g. `https://login.microsoftonline.com`.
    pub authority_host: Url,
    /// Token scope, e.g. `https://monitor.azure.com/.default`.
    pub scope: String,
    /// Extra CA certificates (PEM) trusted for the authority and managed-identity endpoints.
    pub ca_file: Option<PathBuf>,
    /// Egress proxy settings for the authority (IMDS and other link-local or loopback
    /// endpoints are never proxied).
    pub proxy: crate::proxy::ProxyConfig,
    /// Refresh a token this long before it expires.
    pub refresh_before_expiry: Duration,
    /// First retry delay after a failed token fetch; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// Longest delay between token fetch retries.
    pub retry_max: Duration,
}

impl IdentityKind {
    /// The kind's name as written in configuration, e.g. `client-secret`; used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::SystemAssigned => "system-assigned",
            IdentityKind::UserAssigned => "user-assigned",
            IdentityKind::Workload => "workload",
            IdentityKind::ClientSecret => "client-secret",
            IdentityKind::ClientCertificate => "client-certificate",
            IdentityKind::TokenFile => "token-file",
            IdentityKind::None => "none",
        }
    }
}

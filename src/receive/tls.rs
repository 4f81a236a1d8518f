//! TLS on the receiver: the serving certificate and key, an optional client CA for mutual TLS,
//! and their reload when the files change (cert-manager and Kubernetes secret volumes replace
//! them in place).
//!
//! The files are re-read every `reload_interval` and compared by content (a secret volume swaps
//! a symlink, so timestamps are not reliable). A change that does not load (a key that does not
//! match, a half-written file) keeps the previous configuration serving and is logged and
//! counted; new connections use the new configuration, open ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// The receiver's TLS files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates; `None`: no client certificates asked for.
    pub client_ca: Option<PathBuf>,
}

/// Why the TLS files cannot be used. Names the configuration key and file; never prints key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum TlsLoadError {
    /// A file cannot be read.
    #[error("{key} = {path:?}: cannot read it: {source}")]
    Read {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM of the expected kind.
    #[error("{key} = {path:?}: {why}")]
    Content {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("tls_cert/tls_key: {0}")]
    Rustls(String),
}

/// The raw bytes a configuration was built from, to tell whether the files changed.
#[derive(PartialEq, Eq)]
struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Option<Vec<u8>>,
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsLoadError> {
    std::fs::read(path).map_err(|source| TlsLoadError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn snapshot(files: &TlsFiles) -> Result<Snapshot, TlsLoadError> {
    Ok(Snapshot {
        cert: read("tls_cert", &files.cert)?,
        key: read("tls_key", &files.key)?,
        ca: match &files.client_ca {
            Some(p) => Some(read("client_ca", p)?),
            None => None,
        },
    })
}

/// A loaded configuration and the facts promlink reports about it.
struct Loaded {
    config: Arc<rustls::ServerConfig>,
    not_after: i64,
}

fn build(files: &TlsFiles, snap: &Snapshot) -> Result<Loaded, TlsLoadError> {
    let content = |key: &'static str, path: &Path, why: String| TlsLoadError::Content {
        key,
        path: path.to_path_buf(),
        why,
    };
    let certs = CertificateDer::pem_slice_iter(&snap.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content("tls_cert", &files.cert, format!("not PEM: {e}")))?;
    let Some(leaf) = certs.first() else {
        return Err(content(
            "tls_cert",
            &files.cert,
            "holds no CERTIFICATE block".into(),
        ));
    };
    let not_after = x509_parser::parse_x509_certificate(leaf)
        .map(|(_, c)| c.validity().not_after.timestamp())
        .map_err(|e| {
            content(
                "tls_cert",
                &files.cert,
                format!("not an X.509 certificate: {e}"),
            )
        })?;
    // The error of a failed key parse says what was expected, never the bytes.
    let key = PrivateKeyDer::from_pem_slice(&snap.key).map_err(|_| {
        content(
            "tls_key",
            &files.key,
            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".into(),
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsLoadError::Rustls(e.to_string()))?;
    let builder = match (&files.client_ca, &snap.ca) {
        (Some(path), Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                let c = c.map_err(|e| content("client_ca", path, format!("not PEM: {e}")))?;
                roots.add(c).map_err(|e| {
                    content(
                        "client_ca",
                        path,
                        format!("not a usable CA certificate: {e}"),
                    )
                })?;
            }
            if roots.is_empty() {
                return Err(content(
                    "client_ca",
                    path,
                    "holds no CERTIFICATE block".into(),
                ));
            }
            // A client certificate is asked for, verified when presented, and required by the
            // write endpoint (not by the handshake), so probes of /health and /ready and the
            // /metrics scrape work without one and a write without one gets a counted 401.
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| content("client_ca", path, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsLoadError::Rustls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        not_after,
    })
}

/// Loads the files once, as a check (configuration time).
///
/// # Errors
/// When a file cannot be read or does not hold what it should.
pub fn check(files: &TlsFiles) -> Result<(), TlsLoadError> {
    build(files, &snapshot(files)?).map(|_| ())
}

/// Builds the configuration the reloader is about to serve and reports its certificate's
/// expiry: the one place `promlink_receive_tls_cert_not_after_seconds` is set.
fn install(
    files: &TlsFiles,
    snap: &Snapshot,
    metrics: &Metrics,
) -> Result<Arc<rustls::ServerConfig>, TlsLoadError> {
    let loaded = build(files, snap)?;
    metrics.tls_cert_not_after.set(loaded.not_after);
    Ok(loaded.config)
}

/// The current TLS configuration, replaced when the files change.
pub struct Reloader {
    files: TlsFiles,
    current: RwLock<(Arc<rustls::ServerConfig>, Snapshot)>,
    metrics: Metrics,
}

impl Reloader {
    /// Loads the files.
    ///
    /// # Errors
    /// When they cannot be loaded.
    pub fn new(files: TlsFiles, metrics: Metrics) -> Result<Self, TlsLoadError> {
        let snap = snapshot(&files)?;
        let config = install(&files, &snap, &metrics)?;
        Ok(Self {
            files,
            current: RwLock::new((config, snap)),
            metrics,
        })
    }

    /// The configuration for the next connection.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Re-reads the files; installs a new configuration when they changed and load.
    /// Returns whether a new configuration was installed.
    pub fn reload(&self) -> Result<bool, TlsLoadError> {
        let snap = snapshot(&self.files)?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).1 == snap {
            return Ok(false);
        }
        let config = install(&self.files, &snap, &self.metrics)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (config, snap);
        Ok(true)
    }

    /// Checks the files every `interval` until `stop`.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let metrics = self.metrics.clone();
        super::reload::every(interval, stop, metrics, "tls", move || self.reload()).await;
    }
}

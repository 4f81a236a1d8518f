//! Sender authentication on the write endpoint: bearer tokens from a file and client
//! certificates verified against `client_ca`, optionally limited to an allow-list of names.
//!
//! A write is let in when any configured method accepts it. Tokens are kept only as SHA-256
//! digests and compared in constant time against every accepted token, so neither the
//! comparison's timing nor an error message tells anything about them. `/health`, `/ready` and
//! `/metrics` are not authenticated: they carry no data and no secret, and kubelet probes and
//! Prometheus scrapes reach them without credentials.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// What the connection a request came on proved about its sender.
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    /// The verified client certificate's names (subject CN, SAN DNS names, URIs, e-mail
    /// addresses and IP addresses); `None` when none was presented.
    pub client_names: Option<Vec<String>>,
}

/// Authentication settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// File of accepted bearer tokens, one per line.
    pub bearer_token_file: Option<PathBuf>,
    /// Whether client certificates (verified against `client_ca`) authenticate.
    pub client_certificates: bool,
    /// When not empty, a client certificate must carry one of these names. `*.example.com`
    /// matches one DNS label in that position.
    pub client_allowed_names: Vec<String>,
}

impl AuthConfig {
    /// Whether any method is configured.
    pub fn enabled(&self) -> bool {
        self.bearer_token_file.is_some() || self.client_certificates
    }
}

/// Why a token file cannot be used. Never includes the file's content.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It cannot be read.
    #[error("bearer_token_file = {path:?}: cannot read it: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It holds no token.
    #[error("bearer_token_file = {path:?}: holds no token (one token per line; blank lines and lines starting with # are ignored)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Reads a token file: one token per line, blank lines and `#` comments ignored.
///
/// # Errors
/// When it cannot be read or holds no token.
pub fn read_tokens(path: &Path) -> Result<Vec<Digest>, TokenFileError> {
    let raw = std::fs::read(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let tokens: Vec<Digest> = raw
        .split(|b| *b == b'\n')
        .map(|l| l.trim_ascii())
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(digest)
        .collect();
    if tokens.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(tokens)
}

/// Why a write was not let in: the `reason` label of `promlink_receive_unauthorized_total`
/// and the text of the 401.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// Neither a bearer token nor a client certificate.
    MissingCredentials,
    /// A bearer token that is not one of the accepted ones.
    BadToken,
    /// Only client certificates are accepted and none was presented.
    NoClientCertificate,
    /// A verified client certificate whose names are not on the allow-list.
    NameNotAllowed,
}

impl Denied {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Denied::MissingCredentials => "missing_credentials",
            Denied::BadToken => "bad_token",
            Denied::NoClientCertificate => "no_client_certificate",
            Denied::NameNotAllowed => "name_not_allowed",
        }
    }

    /// What the sender is told: which kind of credential failed, nothing about the expected one.
    pub fn message(self) -> &'static str {
        match self {
            Denied::MissingCredentials => {
                "authentication required: send an Authorization: Bearer token or a client certificate"
            }
            Denied::BadToken => "authentication failed: the bearer token is not accepted",
            Denied::NoClientCertificate => {
                "authentication required: present a client certificate signed by the configured client CA"
            }
            Denied::NameNotAllowed => {
                "authentication failed: the client certificate's names are not on the allow-list"
            }
        }
    }
}

/// The authenticator of the write endpoint.
pub struct Auth {
    cfg: AuthConfig,
    tokens: RwLock<Vec<Digest>>,
    metrics: Metrics,
}

impl Auth {
    /// Loads the token file, if any.
    ///
    /// # Errors
    /// When the token file cannot be used.
    pub fn new(cfg: AuthConfig, metrics: Metrics) -> Result<Self, TokenFileError> {
        let tokens = match &cfg.bearer_token_file {
            Some(p) => read_tokens(p)?,
            None => Vec::new(),
        };
        Ok(Self {
            cfg,
            tokens: RwLock::new(tokens),
            metrics,
        })
    }

    /// Whether authentication is required at all.
    pub fn enabled(&self) -> bool {
        self.cfg.enabled()
    }

    /// Whether bearer tokens are accepted (for `WWW-Authenticate`).
    pub fn accepts_bearer(&self) -> bool {
        self.cfg.bearer_token_file.is_some()
    }

    /// Lets a write in, or says why not.
    pub fn check(&self, headers: &HeaderMap, conn: Option<&ConnInfo>) -> Result<(), Denied> {
        if !self.enabled() {
            return Ok(());
        }
        let mut denied = None;
        if self.cfg.client_certificates {
            match conn.and_then(|c| c.client_names.as_ref()) {
                Some(names) if self.name_allowed(names) => return Ok(()),
                Some(_) => denied = Some(Denied::NameNotAllowed),
                None => {}
            }
        }
        if self.cfg.bearer_token_file.is_some() {
            match bearer(headers) {
                Some(t) if self.token_accepted(t) => return Ok(()),
                Some(_) => return Err(denied.unwrap_or(Denied::BadToken)),
                None => {}
            }
        }
        Err(denied.unwrap_or(if self.cfg.bearer_token_file.is_some() {
            Denied::MissingCredentials
        } else {
            Denied::NoClientCertificate
        }))
    }

    /// Compares against every accepted token without stopping at a match.
    fn token_accepted(&self, presented: &[u8]) -> bool {
        let d = digest(presented);
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner());
        let mut ok = subtle::Choice::from(0u8);
        for t in tokens.iter() {
            ok |= t.ct_eq(&d);
        }
        ok.into()
    }

    fn name_allowed(&self, names: &[String]) -> bool {
        let allowed = &self.cfg.client_allowed_names;
        allowed.is_empty()
            || names
                .iter()
                .any(|n| allowed.iter().any(|a| name_matches(a, n)))
    }

    /// Re-reads the token file; returns whether the set of tokens changed.
    ///
    /// # Errors
    /// When the file cannot be used (the previous tokens stay in force).
    pub fn reload(&self) -> Result<bool, TokenFileError> {
        let Some(path) = &self.cfg.bearer_token_file else {
            return Ok(false);
        };
        let fresh = read_tokens(path)?;
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if *tokens == fresh {
            return Ok(false);
        }
        *tokens = fresh;
        Ok(true)
    }

    /// Re-reads the token file every `interval` until `stop`.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        if self.cfg.bearer_token_file.is_none() {
            return;
        }
        let metrics = self.metrics.clone();
        super::reload::every(interval, stop, metrics, "bearer_tokens", move || {
            self.reload()
        })
        .await;
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Exact match (ASCII case ignored), or `*.suffix` matching a DNS-shaped name with exactly
/// one label before `.suffix` (never an e-mail address or a URI that ends the same way).
fn name_matches(allowed: &str, name: &str) -> bool {
    let Some(suffix) = allowed.strip_prefix("*.") else {
        return allowed.eq_ignore_ascii_case(name);
    };
    let dns_shaped = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let n = name.len();
    dns_shaped
        && n > suffix.len() + 1
        && name[n - suffix.len()..].eq_ignore_ascii_case(suffix)
        && name.as_bytes()[n - suffix.len() - 1] == b'.'
        && !name[..n - suffix.len() - 1].contains('.')
}

/// The names of a (verified) client certificate: subject common names and every SAN of kind
/// DNS, URI, e-mail or IP address.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                    names.push(s.to_string())
                }
                GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                    ),
                    16 => names.push(
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())
                            .to_string(),
                    ),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tokens: &str, certs: bool, allowed: &[&str]) -> (Auth, tempfile::NamedTempFile) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), tokens).unwrap();
        let a = Auth::new(
            AuthConfig {
                bearer_token_file: (!tokens.is_empty()).then(|| f.path().to_path_buf()),
                client_certificates: certs,
                client_allowed_names: allowed.iter().map(|s| s.to_string()).collect(),
            },
            Metrics::default(),
        )
        .unwrap();
        (a, f)
    }

    fn with_token(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn any_of_several_tokens_is_accepted_and_others_are_not() {
        let (a, _f) = auth("# rotation\nold-token\n\n  new-token  \n", false, &[]);
        assert_eq!(a.check(&with_token("old-token"), None), Ok(()));
        assert_eq!(a.check(&with_token("new-token"), None), Ok(()));
        assert_eq!(
            a.check(&with_token("new-toke"), None),
            Err(Denied::BadToken)
        );
        assert_eq!(
            a.check(&with_token("# rotation"), None),
            Err(Denied::BadToken)
        );
        assert_eq!(
            a.check(&HeaderMap::new(), None),
            Err(Denied::MissingCredentials)
        );
        let mut basic = HeaderMap::new();
        basic.insert(header::AUTHORIZATION, "Basic b2xkLXRva2Vu".parse().unwrap());
        assert_eq!(a.check(&basic, None), Err(Denied::MissingCredentials));
    }

    #[test]
    fn reload_replaces_the_token_set() {
        let (a, f) = auth("first\n", false, &[]);
        assert!(!a.reload().unwrap());
        std::fs::write(f.path(), "second\n").unwrap();
        assert!(a.reload().unwrap());
        assert_eq!(a.check(&with_token("first"), None), Err(Denied::BadToken));
        assert_eq!(a.check(&with_token("second"), None), Ok(()));
        std::fs::write(f.path(), "\n# nothing\n").unwrap();
        let e = a.reload().unwrap_err().to_string();
        assert!(e.contains("holds no token"), "{e}");
        assert_eq!(a.check(&with_token("second"), None), Ok(()));
    }

    #[test]
    fn client_certificates_and_the_allow_list() {
        let (a, _f) = auth("", true, &["prometheus.monitoring.svc", "*.edge.example"]);
        let conn = |names: &[&str]| ConnInfo {
            client_names: Some(names.iter().map(|s| s.to_string()).collect()),
        };
        let none = HeaderMap::new();
        assert_eq!(
            a.check(&none, Some(&conn(&["prometheus.monitoring.svc"]))),
            Ok(())
        );
        assert_eq!(
            a.check(&none, Some(&conn(&["x", "p1.edge.example"]))),
            Ok(())
        );
        assert_eq!(
            a.check(&none, Some(&conn(&["a.b.edge.example"]))),
            Err(Denied::NameNotAllowed)
        );
        assert_eq!(
            a.check(&none, Some(&conn(&["edge.example"]))),
            Err(Denied::NameNotAllowed)
        );
        assert_eq!(a.check(&none, Some(&conn(&["P2.Edge.Example"]))), Ok(()));
        for not_dns in ["mallory@x.edge.example", "https://x.edge.example"] {
            assert_eq!(
                a.check(&none, Some(&conn(&[not_dns]))),
                Err(Denied::NameNotAllowed),
                "{not_dns}"
            );
        }
        assert_eq!(
            a.check(&none, Some(&ConnInfo::default())),
            Err(Denied::NoClientCertificate)
        );
        assert_eq!(a.check(&none, None), Err(Denied::NoClientCertificate));
    }

    #[test]
    fn either_method_lets_a_write_in() {
        let (a, _f) = auth("tok\n", true, &["good"]);
        let bad_cert = ConnInfo {
            client_names: Some(vec!["bad".into()]),
        };
        assert_eq!(a.check(&with_token("tok"), Some(&bad_cert)), Ok(()));
        assert_eq!(
            a.check(&HeaderMap::new(), Some(&bad_cert)),
            Err(Denied::NameNotAllowed)
        );
        assert_eq!(a.check(&with_token("nope"), None), Err(Denied::BadToken));
    }

    #[test]
    fn certificate_names_include_cn_and_sans() {
        let ca = crate::emulator::tls::TestCa::new("ca").unwrap();
        let leaf = ca.issue(&["sender.example", "127.0.0.9"]).unwrap();
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
        let names = certificate_names(&der);
        assert!(names.contains(&"sender.example".to_string()), "{names:?}");
        assert!(names.contains(&"127.0.0.9".to_string()), "{names:?}");
    }

    use rustls::pki_types::pem::PemObject;
}

//! Errors of the identity stage.
//!
//! No variant carries a secret, a token or a client assertion: messages name files, kinds and
//! the upstream's own error description (an `AADSTS` code and sentence), never values sent to it.

use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong building credentials or getting a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work for its identity kind; every problem found is listed.
    #[error("invalid identity configuration: {}", .problems.join("; "))]
    InvalidConfig {
        /// One sentence per problem, naming the setting.
        problems: Vec<String>,
    },

    /// The extra CA file could not be read.
    #[error("reading the CA file {path}")]
    CaFile {
        /// The configured `ca_file`.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },

    /// The extra CA file holds no usable PEM certificate.
    #[error("the CA file {path} holds no usable PEM certificate")]
    CaPem {
        /// The configured `ca_file`.
        path: PathBuf,
        /// Why parsing failed, when it did.
        #[source]
        source: Option<reqwest::Error>,
    },

    /// The HTTP client for the token endpoints could not be built.
    #[error("building the HTTP client for the token endpoint")]
    HttpClient(#[source] reqwest::Error),

    /// azure_identity refused to build the credential (e.g. a malformed tenant id).
    #[error("building the {kind} credential")]
    Credential {
        /// The identity kind, as configured.
        kind: &'static str,
        /// azure_identity's reason.
        #[source]
        source: azure_core::Error,
    },

    /// The token request failed: transport error or an error answer from Entra ID / the
    /// managed identity endpoint. The source carries Entra's error description.
    #[error("{kind} token request failed")]
    Request {
        /// The identity kind, as configured.
        kind: &'static str,
        /// azure_identity's error, including Entra's `AADSTS` description.
        #[source]
        source: azure_core::Error,
    },

    /// A file the credential needs (token file, federated token file, certificate) could not be read.
    #[error("reading {what} {path}")]
    ReadFile {
        /// Which file, e.g. `the token file`.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },

    /// A file the credential needs holds no token.
    #[error("{what} {path} is empty")]
    EmptyFile {
        /// Which file, e.g. `the token file`.
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },

    /// The client certificate file cannot be used to sign a client assertion.
    #[error("client certificate {path}: {reason}")]
    Certificate {
        /// The configured `client_certificate_path`.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Signing the client assertion failed.
    #[error("signing the client assertion with the key from {path}")]
    Sign {
        /// The configured `client_certificate_path`.
        path: PathBuf,
    },

    /// The token read from the token file is a JWT that has expired.
    #[error("the token in {path} expired")]
    FileTokenExpired {
        /// The configured `token_file`.
        path: PathBuf,
    },

    /// No valid token: the last attempt to get one failed (the message is that failure).
    #[error("no valid token: {last_error}")]
    Unavailable {
        /// The last fetch failure, as also shown by [`super::TokenState::last_error`].
        last_error: String,
    },

    /// No valid token arrived within the wait the caller allowed.
    #[error("no valid token within {waited:?}")]
    Timeout {
        /// How long the caller waited.
        waited: Duration,
    },
}

/// Renders an error and its causes on one line, `outer: cause: cause`, for logs and
/// [`super::TokenState::last_error`].
///
/// azure_identity repeats a cause's text inside its own message and appends a troubleshooting
/// link on a new line; both are trimmed so the `AADSTS` description appears once.
pub(crate) fn report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        let text = text.split("\nTo troubleshoot").next().unwrap_or_default();
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let text = text.trim_end_matches('.').to_string();
        let repeated = parts.iter().any(|p| p.contains(&text));
        if !text.is_empty() && !repeated {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

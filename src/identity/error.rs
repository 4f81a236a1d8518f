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

    /// The HTTP client for the token endpoints could not be built (e.g. an unusable CA file).
    #[error("building the HTTP client for the token endpoint")]
    HttpClient(#[source] crate::outbound::ClientError),

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

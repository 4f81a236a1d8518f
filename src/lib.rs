//! promlink: a Prometheus remote-write forwarder to Azure Monitor managed Prometheus.
//!
//! # Layout
//!
//! The data flows receive -> queue -> upstream; the other modules serve that path or stand
//! beside it. The README's module table says the same.
//!
//! ```text
//! Prometheus --RW 1.0/2.0--> receive --> queue --> upstream --RW 1.0--> DCE
//!                               |          |         |  ^ identity (Entra ID token)
//!                             codec     (memory      |  ^ privatelink (verified, pinned path)
//!                                        or disk)    outbound (every HTTP client) + proxy
//! ```
//!
//! - [`receive`]: the HTTP server: `POST /api/v1/write`, `/health`, `/ready`, `/status`,
//!   `/metrics`, `/api/v1/status/cardinality`; TLS, sender authentication, limits; status codes
//!   chosen in one place.
//! - [`codec`] (the `promlink-codec` crate, `crates/promlink-codec/`): remote write 1.0 and 2.0
//!   decoding, validation, translation, chunks, batch limits, split, de-duplication, pruning.
//! - [`queue`]: the bounded hand-off (memory or durable disk log) and the dispatcher that keeps
//!   each series in order.
//! - [`upstream`]: sending batches to the DCE and classifying its answers.
//! - [`identity`]: Entra ID token sources, caching and refresh.
//! - [`privatelink`]: DNS verification, verdicts, probes, the path policy, the pinned resolver.
//! - [`outbound`]: builds every outbound HTTP client (roots, CA file, user agent, timeouts,
//!   proxy or pinned resolver), error chains and the one backoff; [`proxy`]: the egress proxy
//!   decision (`HTTPS_PROXY`, `NO_PROXY`).
//! - [`alert`]: alert rules over promlink's state and the Alertmanager client; [`health`]: the
//!   checks behind `/ready` and `/status`; [`canary`]: a sample written through each route
//!   and read back through the workspace's query endpoint; [`workspace`]: what was delivered,
//!   against the workspace's and DCRs' limits, and the cardinality view (`promlink top`).
//! - [`config`]: flags, environment, YAML file and defaults, resolved into one config type per
//!   stage.
//! - [`serve`] wires the stages together and runs them; [`shutdown`]: SIGTERM and the quiet
//!   period; [`drain`]: `promlink drain` of a queue directory left behind; [`doctor`]: the
//!   one-shot preflight; [`telemetry`]: logging and the shared `{reason}` label; [`secret`]:
//!   values never printed; [`supervise`]: what a panic in a task leads to, and the test-only
//!   failpoints.
//! - Test and demo support, labeled as such: [`emulator`] (the DCE, Entra ID, DNS and proxy
//!   **emulators**, and all of them assembled as an emulated Azure), [`loadgen`] (a synthetic
//!   sender and the checksum that proves no loss), [`demo`] (`promlink demo`).
#![forbid(unsafe_code)]

pub mod emulator;
pub mod identity;
pub mod secret;

pub use promlink_codec::proto;
pub mod alert;
pub mod canary;
/// Remote-write decoding, validation, chunking and batching: the `promlink-codec` crate
/// (`crates/promlink-codec/`).
pub use promlink_codec as codec;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod drain;
pub mod health;
pub mod loadgen;
pub mod outbound;
pub mod privatelink;
pub mod proxy;
pub mod queue;
pub mod receive;
pub mod serve;
pub mod shutdown;
pub mod supervise;
pub mod telemetry;
pub mod upstream;
pub mod workspace;

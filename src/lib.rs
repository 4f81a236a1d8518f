//! promlink: a Prometheus remote-write forwarder to Azure Monitor managed Prometheus.
#![forbid(unsafe_code)]

pub mod emulator;
pub mod identity;
pub mod secret;

pub use promlink_codec::proto;
pub mod alert;
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
pub mod telemetry;
pub mod upstream;

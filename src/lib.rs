//! promlink: a Prometheus remote-write forwarder to Azure Monitor managed Prometheus.
#![forbid(unsafe_code)]

pub mod emulator;
pub mod identity;
pub mod secret;

/// Generated remote-write messages (see `proto/`).
pub mod proto {
    /// Remote write 1.0: `prometheus.WriteRequest`.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
    }
    /// Remote write 2.0: `io.prometheus.write.v2.Request`.
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/io.prometheus.write.v2.rs"));
    }
}
pub mod alert;
pub mod codec;
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

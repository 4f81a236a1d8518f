//! Local stand-ins for Azure, labeled as emulators everywhere they appear.
//!
//! Azure is not reachable from tests or the demo, so these emulate the two services promlink
//! talks to, as strictly as the real ones are documented to be:
//! - [`dce`]: a Data Collection Endpoint's metrics ingestion API (path, api-version, bearer
//!   token, headers, snappy + protobuf body), counting and recording what it accepts;
//! - [`entra`]: an Entra ID style token issuer (client credentials, client assertions,
//!   federated tokens, App Service style managed identity);
//! - [`tls`]: a throw-away CA so both speak verified TLS;
//! - [`dns`]: a small real DNS server (UDP and TCP on loopback) answering names the way Azure
//!   Private DNS and public DNS do (CNAME chains into `privatelink` zones, NXDOMAIN);
//! - [`azure`]: all of it assembled (CA, Entra ID, DCE on a "private" and a "public" endpoint,
//!   DNS), with promlink's settings against it, for the demo and the tests;
//! - [`proxy`]: an on-premises egress proxy (CONNECT and plain-HTTP forwarding) that serves
//!   loopback destinations only and records what went through it.

pub mod azure;
pub mod dce;
pub mod dns;
pub mod entra;
pub mod proxy;
mod serve;
pub mod tls;

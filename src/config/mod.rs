//! Configuration: one flat set of keys, from flags, environment, a YAML file and defaults,
//! resolved into one config type per stage.
//!
//! Every key can be given as a flag (`--flush-interval`), a `PROMLINK_*` environment variable
//! (`PROMLINK_FLUSH_INTERVAL`), or a key in the YAML file named by `--config`
//! (`flush_interval: 5s`), in that order of precedence. The environment variables of Azure's
//! remote-write sidecar (`INGESTION_URL`, `LISTENING_PORT`, `IDENTITY_TYPE`, `AZURE_CLIENT_ID`,
//! `AZURE_TENANT_ID`, `AZURE_CLIENT_CERTIFICATE_PATH`, `CLUSTER`, `INGESTION_AAD_AUDIENCE`) are
//! honoured too, ranking just below promlink's own, so swapping the image in an existing sidecar
//! manifest gives a working forwarder.
//!
//! - [`settings`]: the keys ([`Settings`]) and the merge of layers;
//! - [`sources`]: the YAML file, the sidecar's variables, how the layers stack;
//! - [`defaults`]: every default, named once;
//! - one resolver per stage, each returning that stage's config type and collecting its
//!   problems: `receive` (listener, TLS, authentication, write limits), `destination` (the
//!   upstream URL and client, `identity`, Private Link, the queue), and the service-wide
//!   settings below (readiness, shutdown, alerts, logs), and `canary` (the read-back through
//!   the workspace's query endpoint).
//!
//! [`Settings::resolve`] checks everything before any port is bound and reports every problem
//! at once (key, value, why); `main` exits with 64 (`EX_USAGE`) on any.

mod canary;
pub mod defaults;
mod destination;
mod identity;
mod ingestion;
mod problems;
mod receive;
mod routes;
pub mod settings;
pub mod sources;
mod workspace;

use std::net::SocketAddr;
use std::time::Duration;

pub use canary::CanarySettings;
pub use destination::Destination;
pub use identity::audience_to_scope;
pub use ingestion::{check_ingestion_url, is_azure_ingest_host};
pub use routes::{valid_route_name, Budget, Route, RouteSettings, DEFAULT_ROUTE};
pub use settings::{LabelLimitAction, LogFormat, Settings};
pub use sources::SIDECAR_BUDGETS;
pub use workspace::WorkspaceLimits;

use problems::Problems;

/// The stream Azure Monitor managed Prometheus ingests into.
pub const DEFAULT_STREAM: &str = defaults::STREAM;
/// The ingestion API version in Azure's documentation.
pub const DEFAULT_API_VERSION: &str = defaults::API_VERSION;

/// One configuration problem.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value:?}: {why}")]
pub struct Problem {
    /// The key, as spelled in the YAML file (flags use dashes).
    pub key: String,
    /// The offending value (redacted for secrets).
    pub value: String,
    /// Why it is wrong.
    pub why: String,
}

impl From<crate::proxy::ProxyError> for Problem {
    fn from(e: crate::proxy::ProxyError) -> Self {
        Problem {
            key: e.var.into(),
            value: e.value,
            why: e.why,
        }
    }
}

/// Every problem found; printed one per line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError(pub Vec<Problem>);

/// The resolved, checked configuration of `promlink serve`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// TLS, authentication and connection limits of the receiver.
    pub inbound: crate::receive::InboundConfig,
    /// Receiver settings.
    pub receive: crate::receive::ReceiveConfig,
    /// Where data goes: upstream, identity, Private Link, queue. With `routes`, the first
    /// route's destination (what `doctor` checks); `serve` and `drain` use [`Config::routes`].
    pub destination: Destination,
    /// Every route, in order; without `routes`, one named `default` with `destination`.
    pub routes: Vec<Route>,
    /// Whether the configuration has `routes` (metrics then carry a `route` label).
    pub routed: bool,
    /// What `/ready` and `/status` require.
    pub readiness: Readiness,
    /// How promlink stops.
    pub shutdown: Shutdown,
    /// Alertmanager targets.
    pub alert: AlertSettings,
    /// Egress proxy settings (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), for the clients that
    /// cross the network; credentials never printed.
    pub proxy: crate::proxy::ProxyConfig,
    /// Things to tell the operator at start (e.g. defaults chosen for Azure sidecar
    /// compatibility).
    pub notices: Vec<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: String,
    /// How the configuration is reloaded.
    pub reload: Reload,
    /// The canary read-back of the top level (`query_url` and its keys); `None` without
    /// `query_url`. Each route has its own in [`Route::canary`] (inherited, or its own
    /// `query_url`).
    pub canary: Option<CanarySettings>,
}

/// Configuration reloads (`SIGHUP`, `POST /-/reload`).
#[derive(Clone, Debug, Default)]
pub struct Reload {
    /// Whether `POST /-/reload` is served (`enable_reload_endpoint`).
    pub endpoint: bool,
    /// The flags and `PROMLINK_*` variables the configuration was loaded with (naming the
    /// file): a reload loads them again, with the file as it is then. `None` when the
    /// configuration did not come from [`Settings::load`] with a file (nothing to reload).
    pub source: Option<Settings>,
}

/// What `/ready` and `/status` require of the upstream.
#[derive(Clone, Copy, Debug)]
pub struct Readiness {
    /// Without an HTTP answer for this long, the upstream counts as unavailable
    /// (`ready_window`).
    pub window: Duration,
    /// Whether `/ready` also needs a token, a Private Link path and an upstream answer
    /// (`ready_requires_upstream`).
    pub requires_upstream: bool,
}

/// How promlink stops after SIGTERM.
#[derive(Clone, Copy, Debug)]
pub struct Shutdown {
    /// From SIGTERM until exit (`shutdown_grace`).
    pub grace: Duration,
    /// Writes are accepted until none arrived for this long (`shutdown_quiet_period`).
    pub quiet_period: Duration,
}

/// Where alerts go.
#[derive(Clone, Debug, Default)]
pub struct AlertSettings {
    /// Alertmanager base URLs (alerts are POSTed to `<url>/api/v2/alerts`).
    pub alertmanager_urls: Vec<url::Url>,
    /// How often firing alerts are re-sent.
    pub resend_interval: Duration,
}

impl Settings {
    /// Merges flags/`PROMLINK_*` (self), the Azure sidecar environment and the config file, then
    /// checks and resolves everything.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found.
    pub fn load(self) -> Result<Config, ConfigError> {
        let source = self.config.is_some().then(|| self.clone());
        let mut problems = Vec::new();
        let (proxy, proxy_notices) = match crate::proxy::ProxyConfig::from_env() {
            Ok(found) => found,
            Err(errors) => {
                problems.extend(errors.into_iter().map(Problem::from));
                Default::default()
            }
        };
        let azure = Settings::from_azure_env(&mut problems);
        let file = match &self.config {
            Some(p) => Settings::from_file(p).unwrap_or_else(|e| {
                problems.push(e);
                Settings::default()
            }),
            None => Settings::default(),
        };
        let (merged, mut notices) = self.layered(azure, file);
        notices.extend(proxy_notices);
        match merged.resolve_with(proxy) {
            Ok(mut cfg) if problems.is_empty() => {
                cfg.notices.splice(0..0, notices);
                cfg.reload.source = source;
                Ok(cfg)
            }
            Ok(_) => Err(ConfigError(problems)),
            Err(ConfigError(more)) => {
                problems.extend(more);
                Err(ConfigError(problems))
            }
        }
    }

    /// Applies defaults and checks every key and cross-key rule, without an egress proxy.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        self.resolve_with(crate::proxy::ProxyConfig::default())
    }

    /// Like [`Self::resolve`], with the egress proxy settings read from the environment by
    /// [`Self::load`] (or given by a test). `private_link: require` with a proxy that applies to
    /// the upstream host is a problem: the proxy would resolve the name, so the private endpoint
    /// could be neither verified nor pinned.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found.
    pub fn resolve_with(self, proxy: crate::proxy::ProxyConfig) -> Result<Config, ConfigError> {
        let mut p = Problems::default();
        let mut notices = self.secret_file_warnings();
        let batch = destination::batch(&self, &mut p);
        let canary = canary::resolve(&self, &mut p);
        let workspace = workspace::resolve(&self, &mut p);
        let routed = routes::resolve(&self, &proxy, &mut p, &mut notices);
        // Without routes, the top-level budget is the default route's (with routes, each
        // route resolves its own, inheriting these keys).
        let budget = match routed {
            None => routes::budget(&self, &mut p),
            Some(_) => None,
        };
        let destination = match &routed {
            Some(routes) => routes.first().map(|r| r.destination().clone()),
            None => destination::resolve(&self, batch, &proxy, &mut p, &mut notices),
        };
        let routes = routed.clone().unwrap_or_else(|| {
            destination
                .iter()
                .map(|d| Route {
                    name: DEFAULT_ROUTE.into(),
                    selector: None,
                    continue_: false,
                    relabel: None,
                    budget,
                    destinations: vec![d.clone()],
                    canary: canary.clone(),
                    workspace,
                })
                .collect()
        });
        let (listen, inbound, receive) = receive::resolve(&self, &mut p);
        let readiness = Readiness {
            window: p.duration("ready_window", self.ready_window, defaults::READY_WINDOW),
            requires_upstream: self.ready_requires_upstream.unwrap_or(false),
        };
        let shutdown = Shutdown {
            grace: p.duration(
                "shutdown_grace",
                self.shutdown_grace,
                defaults::SHUTDOWN_GRACE,
            ),
            quiet_period: self
                .shutdown_quiet_period
                .unwrap_or(defaults::SHUTDOWN_QUIET_PERIOD),
        };
        let alert = self.alert(&mut p);
        let log_level = self
            .log_level
            .clone()
            .unwrap_or_else(|| defaults::LOG_LEVEL.into());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
            p.bad("log_level", &log_level, format!("not a log filter: {e}"));
        }
        let (Some(destination), true) = (destination, p.is_empty()) else {
            return Err(ConfigError(p.0));
        };
        Ok(Config {
            listen,
            inbound,
            receive,
            destination,
            routes,
            routed: routed.is_some(),
            readiness,
            shutdown,
            alert,
            proxy,
            notices,
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            log_level,
            reload: Reload {
                endpoint: self.enable_reload_endpoint.unwrap_or(false),
                source: None,
            },
            canary,
        })
    }

    /// Where alerts go, checked.
    fn alert(&self, p: &mut Problems) -> AlertSettings {
        for u in self.alertmanager_url.iter().flatten() {
            if !matches!(u.scheme(), "http" | "https") {
                p.bad("alertmanager_url", u, "must be an http:// or https:// URL");
            }
        }
        AlertSettings {
            alertmanager_urls: self.alertmanager_url.clone().unwrap_or_default(),
            resend_interval: p.duration(
                "alert_resend_interval",
                self.alert_resend_interval,
                defaults::ALERT_RESEND_INTERVAL,
            ),
        }
    }

    /// Warnings about files holding secrets that others may read.
    fn secret_file_warnings(&self) -> Vec<String> {
        [
            ("tls_key", &self.tls_key),
            ("bearer_token_file", &self.bearer_token_file),
            ("client_secret_file", &self.client_secret_file),
            ("client_certificate_path", &self.client_certificate_path),
        ]
        .into_iter()
        .filter_map(|(key, path)| {
            path.as_deref()
                .and_then(|f| crate::secret::loose_permissions(key, f))
        })
        .collect()
    }
}

#[cfg(test)]
mod tests;

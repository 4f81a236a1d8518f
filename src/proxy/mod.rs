//! Egress proxies: which outbound connections go through an explicit HTTP proxy.
//!
//! On-premises networks often let HTTPS out only through a proxy. promlink reads the usual
//! variables once, when the configuration is loaded ([`ProxyConfig::from_env`], called by
//! `crate::config`), and hands the result to every client that may cross the network: the
//! upstream (DCE), Entra ID (azure_identity's transport) and Alertmanager. Each of them is built
//! by [`crate::outbound::Builder::proxy`], which installs [`ProxyConfig::route`] as reqwest's
//! proxy rule: the same function decides for the clients, for the configuration checks and for
//! `promlink doctor`, so they cannot disagree. reqwest's own reading of the environment is
//! switched off (it would apply `ALL_PROXY` and proxy loopback).
//!
//! # Variables
//! - `HTTPS_PROXY` (else `https_proxy`): the proxy for `https://` destinations.
//! - `HTTP_PROXY` (else `http_proxy`): the proxy for `http://` destinations only (a plain-http
//!   Alertmanager, an `allow_plain_http` upstream); never used for `https://` ones.
//! - `NO_PROXY` (else `no_proxy`): destinations reached directly ([`NoProxy`]).
//! - The uppercase name wins when both are set (a notice says so when they differ); an empty
//!   value counts as unset. `ALL_PROXY` is not read (a notice says so when it is set).
//! - A proxy URL is `http://[user:password@]host[:port]` (or `https://` for TLS to the proxy);
//!   without a scheme `http://` is assumed, without a port the scheme's (80, 443). Credentials
//!   are sent as `Proxy-Authorization: Basic` and never shown: [`ProxyUrl`]'s `Display` and
//!   `Debug` print `http://<redacted>@host:port`.
//!
//! # Always direct
//! Loopback destinations (`localhost`, `*.localhost`, 127.0.0.0/8, `::1`) and link-local ones
//! (169.254.0.0/16, where IMDS answers managed identity at 169.254.169.254, and fe80::/10) never
//! go through a proxy, whatever the variables say: a proxy elsewhere cannot reach them.
//!
//! # Private Link
//! A proxy resolves the destination's name itself, so promlink can neither verify nor pin the
//! private endpoint behind one: `crate::config` refuses `private_link: require` when a proxy
//! applies to the DCE host, `prefer` sends only its public fallback through the proxy
//! (`crate::privatelink::path`), and the Private Link probes never use a proxy.

mod no_proxy;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::IpAddr;

use url::Url;

pub use no_proxy::NoProxy;

/// What `--help` says about the proxy variables.
pub const ENV_HELP: &str = "Egress proxy (environment): HTTPS_PROXY for https:// destinations (the DCE, Entra ID, Alertmanager), HTTP_PROXY for http:// ones, NO_PROXY for those reached directly (names with their subdomains, IPs, CIDRs, *); lowercase names work too. Loopback and link-local (IMDS) are never proxied. private_link require needs the DCE host in NO_PROXY; prefer uses the proxy only for its public fallback.";

/// A proxy URL. `Display` and `Debug` never show its credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(Url);

impl ProxyUrl {
    /// Parses `http://[user:password@]host[:port]`, `https://...`, or `host[:port]` (http).
    ///
    /// # Errors
    /// Why the text is not a usable proxy URL (the message never repeats credentials).
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let text = if raw.contains("://") {
            raw.to_string()
        } else {
            format!("http://{raw}")
        };
        let url = Url::parse(&text).map_err(|e| format!("not a URL: {e}"))?;
        match url.scheme() {
            "http" | "https" => {}
            s if s.starts_with("socks") => {
                return Err(format!(
                    "{s} proxies are not supported; give an HTTP proxy (http://host:port)"
                ))
            }
            s => {
                return Err(format!(
                    "scheme {s:?} is not supported; give an HTTP proxy (http://host:port)"
                ))
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        Ok(Self(url))
    }

    /// Whether the URL carries a user name or password.
    pub fn has_credentials(&self) -> bool {
        !self.0.username().is_empty() || self.0.password().is_some()
    }

    /// The proxy's host and port, e.g. `proxy.corp:3128`.
    pub fn host_port(&self) -> String {
        format!(
            "{}:{}",
            self.0.host_str().unwrap_or_default(),
            self.0.port_or_known_default().unwrap_or(80)
        )
    }

    /// The full URL, credentials included: for the client ([`crate::outbound`]) only, never for
    /// messages.
    pub(crate) fn expose(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = if self.has_credentials() {
            "<redacted>@"
        } else {
            ""
        };
        write!(f, "{}://{user}{}", self.0.scheme(), self.host_port())
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// A proxy and the variable it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Setting {
    var: &'static str,
    url: ProxyUrl,
}

/// The egress proxy settings: which proxy serves `https://` and `http://` destinations, and
/// which destinations are reached directly. The default is no proxy at all.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    https: Option<Setting>,
    http: Option<Setting>,
    no_proxy: NoProxy,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |s: &Option<Setting>| s.as_ref().map(|s| format!("{} ({})", s.url, s.var));
        f.debug_struct("ProxyConfig")
            .field("https", &show(&self.https))
            .field("http", &show(&self.http))
            .field("no_proxy", &self.no_proxy.to_string())
            .finish()
    }
}

/// A variable that does not hold a usable value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{var} = {value:?}: {why}")]
pub struct ProxyError {
    /// The variable, e.g. `HTTPS_PROXY`.
    pub var: &'static str,
    /// Its value, credentials redacted.
    pub value: String,
    /// Why it is not usable.
    pub why: String,
}

/// How a connection to a destination is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Straight to the destination (promlink resolves its name).
    Direct(Direct),
    /// Through a proxy (CONNECT for `https://`, forwarded for `http://`); the proxy resolves
    /// the destination's name.
    Proxy {
        /// The variable the proxy came from, e.g. `HTTPS_PROXY`.
        var: &'static str,
        /// The proxy.
        url: &'a ProxyUrl,
    },
}

/// Why a destination is reached directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Direct {
    /// No proxy is set for the destination's scheme (the variable named).
    NotSet(&'static str),
    /// A loopback destination: never proxied.
    Loopback,
    /// A link-local destination (IMDS): never proxied.
    LinkLocal,
    /// Excluded by this `NO_PROXY` entry.
    Excluded(String),
}

impl Route<'_> {
    /// Whether the connection goes through a proxy.
    pub fn is_proxy(&self) -> bool {
        matches!(self, Route::Proxy { .. })
    }
}

impl fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Route::Proxy { var, url } => write!(f, "through {var} {url}"),
            Route::Direct(Direct::NotSet(var)) => write!(f, "direct (no {var} set)"),
            Route::Direct(Direct::Loopback) => f.write_str("direct (loopback is never proxied)"),
            Route::Direct(Direct::LinkLocal) => {
                f.write_str("direct (link-local, e.g. IMDS, is never proxied)")
            }
            Route::Direct(Direct::Excluded(entry)) => {
                write!(f, "direct (NO_PROXY entry {entry})")
            }
        }
    }
}

/// The value of the first of `names` that is set and not empty, and which one it was.
fn first_set(
    lookup: &impl Fn(&str) -> Option<String>,
    names: [&'static str; 2],
    notices: &mut Vec<String>,
) -> Option<(&'static str, String)> {
    let values = names.map(|n| lookup(n).filter(|v| !v.trim().is_empty()));
    if let [Some(upper), Some(lower)] = &values {
        if upper.trim() != lower.trim() {
            notices.push(format!(
                "{} and {} are both set and differ; using {}",
                names[0], names[1], names[0]
            ));
        }
    }
    names
        .into_iter()
        .zip(values)
        .find_map(|(n, v)| v.map(|v| (n, v)))
}

/// The text of a proxy variable for a message: credentials replaced.
fn redact(raw: &str) -> String {
    match raw.rsplit_once('@') {
        Some((head, tail)) => {
            let scheme = head.split_once("://").map_or("", |(s, _)| s);
            if scheme.is_empty() {
                format!("<redacted>@{tail}")
            } else {
                format!("{scheme}://<redacted>@{tail}")
            }
        }
        None => raw.to_string(),
    }
}

impl ProxyConfig {
    /// Reads `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (or their lowercase forms) from the
    /// process environment: the one place promlink reads them. Returns the settings and notices
    /// for the operator (differing upper- and lowercase values, an ignored `ALL_PROXY`).
    ///
    /// # Errors
    /// Every variable whose value is not a usable proxy URL.
    pub fn from_env() -> Result<(Self, Vec<String>), Vec<ProxyError>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`Self::from_env`], reading variables through `lookup` (tests).
    ///
    /// # Errors
    /// Every variable whose value is not a usable proxy URL.
    pub fn from_vars(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(Self, Vec<String>), Vec<ProxyError>> {
        let mut notices = Vec::new();
        let mut errors = Vec::new();
        let mut proxy = |names| {
            let (var, raw) = first_set(&lookup, names, &mut notices)?;
            match ProxyUrl::parse(&raw) {
                Ok(url) => Some(Setting { var, url }),
                Err(why) => {
                    errors.push(ProxyError {
                        var,
                        value: redact(&raw),
                        why,
                    });
                    None
                }
            }
        };
        let https = proxy(["HTTPS_PROXY", "https_proxy"]);
        let http = proxy(["HTTP_PROXY", "http_proxy"]);
        let no_proxy = first_set(&lookup, ["NO_PROXY", "no_proxy"], &mut notices)
            .map(|(_, v)| NoProxy::parse(&v))
            .unwrap_or_default();
        if https.is_none()
            && errors.is_empty()
            && first_set(&lookup, ["ALL_PROXY", "all_proxy"], &mut Vec::new()).is_some()
        {
            notices.push(
                "ALL_PROXY is set but promlink does not read it; set HTTPS_PROXY for the upstream, Entra ID and https:// Alertmanagers".into(),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok((
            Self {
                https,
                http,
                no_proxy,
            },
            notices,
        ))
    }

    /// Settings given directly, as if from `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` (tests,
    /// embedding).
    ///
    /// # Errors
    /// A proxy URL that is not usable.
    pub fn new(
        https: Option<&str>,
        http: Option<&str>,
        no_proxy: &str,
    ) -> Result<Self, ProxyError> {
        let setting = |var: &'static str, raw: Option<&str>| {
            raw.map(|raw| {
                ProxyUrl::parse(raw)
                    .map(|url| Setting { var, url })
                    .map_err(|why| ProxyError {
                        var,
                        value: redact(raw),
                        why,
                    })
            })
            .transpose()
        };
        Ok(Self {
            https: setting("HTTPS_PROXY", https)?,
            http: setting("HTTP_PROXY", http)?,
            no_proxy: NoProxy::parse(no_proxy),
        })
    }

    /// Whether any proxy is set.
    pub fn is_set(&self) -> bool {
        self.https.is_some() || self.http.is_some()
    }

    /// How promlink connects to `url`: directly, or through which proxy.
    pub fn route(&self, url: &Url) -> Route<'_> {
        let setting = match url.scheme() {
            "https" => (&self.https, "HTTPS_PROXY"),
            "http" => (&self.http, "HTTP_PROXY"),
            _ => (&None, "HTTPS_PROXY"),
        };
        let Some(host) = url.host() else {
            return Route::Direct(Direct::NotSet(setting.1));
        };
        if let Some(d) = always_direct(&host) {
            return Route::Direct(d);
        }
        let Some(s) = setting.0 else {
            return Route::Direct(Direct::NotSet(setting.1));
        };
        match self.no_proxy.matching(&host, url.port_or_known_default()) {
            Some(entry) => Route::Direct(Direct::Excluded(entry.to_string())),
            None => Route::Proxy {
                var: s.var,
                url: &s.url,
            },
        }
    }
}

/// Loopback and link-local destinations, which no proxy can reach for us.
fn always_direct(host: &url::Host<&str>) -> Option<Direct> {
    let ip = match host {
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            return (d == "localhost" || d.ends_with(".localhost")).then_some(Direct::Loopback);
        }
        url::Host::Ipv4(v4) => IpAddr::V4(*v4),
        url::Host::Ipv6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(*v6), IpAddr::V4),
    };
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some(Direct::Loopback),
        IpAddr::V4(v4) if v4.is_link_local() => Some(Direct::LinkLocal),
        IpAddr::V6(v6) if v6.is_loopback() => Some(Direct::Loopback),
        // fe80::/10 (Ipv6Addr::is_unicast_link_local is stable since 1.84).
        IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(Direct::LinkLocal),
        _ => None,
    }
}

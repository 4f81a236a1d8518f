//! The `proxy` check: with an egress proxy set (`HTTPS_PROXY`, `HTTP_PROXY`), how promlink
//! reaches each host doctor checks, and, for a host behind the proxy, whether the proxy lets
//! promlink through.
//!
//! A host reached directly gets an `ok` line saying why (`NO_PROXY` entry, loopback, no proxy
//! for its scheme); its `connect` check is the real path. A host behind the proxy is probed the
//! way promlink's clients reach it ([`crate::upstream::client::build_proxied`]): CONNECT through
//! the proxy, verified TLS to the host, one unauthenticated `GET /`. Any HTTP answer proves the
//! path; a refusal is explained (407: credentials, other statuses: the proxy's allow-list, a
//! certificate error: TLS inspection). The proxy resolves the name, so the local DNS answer is
//! not on this path, and no direct `connect` probe is made.

use std::time::{Duration, Instant};

use url::Url;

use super::azure::{Role, Target};
use super::report::{Check, Status};
use crate::config::Config;
use crate::privatelink::Verdict;
use crate::proxy::Route;

/// The URL promlink would use for `host:port` (its scheme and the root path).
pub(super) fn target_url(scheme: &str, host: &str, port: u16) -> Option<Url> {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    Url::parse(&format!("{scheme}://{host}:{port}/")).ok()
}

/// A host promlink reaches through the egress proxy needs no local DNS answer: the proxy
/// resolves the name. An unresolved answer for the DCE or the authority is then no problem.
pub(super) fn resolves(c: &mut Check, t: &Target, v: Verdict) {
    if matches!(t.role, Role::Ingestion | Role::Authority)
        && matches!(v, Verdict::Nxdomain | Verdict::DnsError)
    {
        c.status = Status::Ok;
        c.meaning = format!(
            "{} does not resolve here, which is fine: promlink reaches it through the egress proxy, which resolves the name itself",
            t.host
        );
        c.fix = String::new();
    }
}

/// The line for a host reached directly.
pub(super) fn direct(host: &str, route: &Route<'_>) -> Check {
    Check::new(
        "proxy",
        host,
        Status::Ok,
        route.to_string(),
        format!("promlink connects to {host} itself: the connect check is its path"),
        "",
    )
}

/// Probes `url` through the proxy `route` names; `failed` is the status a failure gets (what
/// losing this host costs). Returns the check and whether the proxy let promlink through.
pub(super) async fn through(
    cfg: &Config,
    url: &Url,
    route: &Route<'_>,
    failed: Status,
    timeout: Duration,
) -> (Check, bool) {
    let host = url.host_str().unwrap_or_default().to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let Route::Proxy { var, url: proxy } = route else {
        return (direct(&host, route), false);
    };
    let client = match crate::upstream::client::build_proxied(
        cfg.destination.upstream.ca_file.as_deref(),
        timeout,
        &cfg.proxy,
    ) {
        Ok(c) => c,
        Err(e) => {
            return (
                Check::new(
                    "proxy",
                    &host,
                    Status::Fail,
                    crate::outbound::error_chain(&e),
                    "the client cannot be built",
                    "check --ca-file",
                ),
                false,
            )
        }
    };
    let started = Instant::now();
    match client.get(url.clone()).send().await {
        Ok(resp) => (
            Check::new(
                "proxy",
                &host,
                Status::Ok,
                format!(
                    "{route}: tunnel to {host}:{port}, verified TLS, HTTP {} to GET / in {:.1}ms",
                    resp.status().as_u16(),
                    started.elapsed().as_secs_f64() * 1000.0
                ),
                format!("promlink reaches {host} through the egress proxy, which resolves the name itself"),
                "",
            ),
            true,
        ),
        Err(e) => {
            let err = crate::outbound::error_chain(&e);
            let (meaning, fix) = failure(&e, &err, &host, port, var, &proxy.host_port());
            (
                Check::new(
                    "proxy",
                    &host,
                    failed,
                    format!("{route}: {err}"),
                    meaning,
                    fix,
                ),
                false,
            )
        }
    }
}

/// What a failure through the proxy means and how to fix it.
fn failure(
    e: &reqwest::Error,
    err: &str,
    host: &str,
    port: u16,
    var: &str,
    proxy: &str,
) -> (String, String) {
    if err.contains("proxy authorization required") {
        (
            format!("the proxy {proxy} wants credentials (407) and {var} has none, or wrong ones"),
            format!("put the proxy's user and password in {var}: http://user:password@{proxy} (percent-encode special characters)"),
        )
    } else if err.contains("tunnel error: unsuccessful") {
        (
            format!("the proxy {proxy} refused to open a tunnel to {host}:{port}: its allow-list lacks the host, or it cannot reach it"),
            format!("allow CONNECT to {host}:{port} on the proxy (Azure Monitor: *.ingest.monitor.azure.com and *.handler.control.monitor.azure.com; Entra ID: the authority host), or add {host} to NO_PROXY if promlink may reach it directly"),
        )
    } else if err.contains("tunnel error") {
        (
            format!(
                "the proxy {proxy} closed the connection while opening the tunnel to {host}:{port}"
            ),
            "check the proxy's logs for the refused CONNECT".to_string(),
        )
    } else if err.contains("certificate") {
        (
            format!("the tunnel opened but {host}'s certificate does not verify: the proxy inspects TLS and presents its own certificate"),
            format!("trust the inspecting proxy's CA with --ca-file, or exempt {host} from TLS inspection"),
        )
    } else if e.is_timeout() {
        (
            format!("no answer through the proxy {proxy} in time"),
            format!("check that the proxy answers and can reach {host}:{port}"),
        )
    } else {
        (
            format!("promlink cannot reach the proxy {proxy}"),
            format!("check the host and port in {var}, and that network policies and firewalls let the pod reach the proxy"),
        )
    }
}

//! The read-back checks (`--read-back`): the workspace's query endpoint (`query_url`) as
//! promlink's canary uses it. `query-dns` resolves its host with the same verifier and verdicts
//! as the DCE, graded by `query_private_link`; `query-connect` probes TCP and TLS;
//! `query-token` asks the identity for a token for `query_token_scope`; `read-back` queries
//! `promlink_doctor_canary` until the value the `canary` check wrote shows, or
//! `canary_timeout` passes.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio_util::sync::CancellationToken;

use super::report::{Check, Status};
use super::Doctor;
use crate::config::CanarySettings;
use crate::privatelink::probe::probe;
use crate::privatelink::{Mode, Verdict, Verifier, VerifierConfig};

/// Between two queries of the read-back.
const POLL: Duration = Duration::from_secs(2);

impl Doctor<'_> {
    /// The read-back checks; `written` is the canary's value when the DCE accepted it.
    pub(super) async fn read_back_checks(
        &self,
        written: Option<f64>,
        stop: &CancellationToken,
    ) -> Vec<Check> {
        if !self.args.read_back {
            return vec![Check::new(
                "read-back",
                "query_url",
                Status::Skipped,
                "not asked",
                "pass --read-back to write a canary and read it back through the workspace's query endpoint",
                "",
            )];
        }
        let Some(c) = self.cfg.routes.iter().find_map(|r| r.canary.as_ref()) else {
            return vec![Check::new(
                "read-back",
                "query_url",
                Status::Fail,
                "query_url is not set",
                "the read-back needs the Azure Monitor workspace's query endpoint",
                "set query_url: https://<workspace>.<region>.prometheus.monitor.azure.com (the workspace's Overview page, Query endpoint)",
            )];
        };
        let host = c.query_url.host_str().unwrap_or_default().to_string();
        let port = c.query_url.port_or_known_default().unwrap_or(443);
        let mut checks = Vec::new();
        let addresses = self.query_dns(c, &host, &mut checks).await;
        let usable = match addresses {
            Some(addrs) => self.query_connect(&host, port, &addrs, &mut checks).await,
            None => {
                checks.push(Check::new(
                    "query-connect",
                    &host,
                    Status::Skipped,
                    "not probed: the DNS answer is not verified private",
                    "under query_private_link require the read-back queries only a verified private endpoint",
                    "",
                ));
                None
            }
        };
        let token = self.query_token(c, stop, &mut checks).await;
        checks.push(match (written, usable, token) {
            (None, _, _) => Check::new(
                "read-back",
                &host,
                Status::Skipped,
                "nothing to read back",
                "the DCE did not accept the canary: see the canary check",
                "",
            ),
            (Some(_), None, _) => Check::new(
                "read-back",
                &host,
                Status::Skipped,
                "not queried",
                "no address of the query endpoint passed the checks above",
                "fix the query checks above",
            ),
            (Some(_), _, None) => Check::new(
                "read-back",
                &host,
                Status::Skipped,
                "not queried",
                "there is no token for the query endpoint",
                "fix the query-token check above",
            ),
            (Some(value), Some(addr), Some(token)) => {
                self.read_back(c, &host, addr, token, value).await
            }
        });
        checks
    }

    /// `query-dns`; the addresses the policy lets the read-back use (`None`: none).
    async fn query_dns(
        &self,
        c: &CanarySettings,
        host: &str,
        checks: &mut Vec<Check>,
    ) -> Option<Vec<IpAddr>> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            checks.push(Check::new(
                "query-dns",
                host,
                Status::Skipped,
                "an IP address: nothing to resolve",
                "Private Link cannot be verified without a DNS name",
                "",
            ));
            return Some(vec![ip]);
        }
        let verifier = Verifier::new(VerifierConfig {
            servers: c.dns_servers.clone(),
            rules: c.rules.clone(),
            timeout: c.dns_timeout,
        });
        let r = match verifier {
            Ok(v) => v.resolve(host).await,
            Err(e) => {
                checks.push(Check::new(
                    "query-dns",
                    host,
                    Status::Fail,
                    format!(
                        "cannot set up the resolver: {}",
                        crate::outbound::error_chain(&e)
                    ),
                    Verdict::DnsError.meaning(),
                    Verdict::DnsError.remediation(),
                ));
                return None;
            }
        };
        let v = r.verdict;
        let seen = format!("{} ({})", v.as_str(), r.detail);
        let unresolved = matches!(v, Verdict::Nxdomain | Verdict::DnsError);
        let fix = "create a private endpoint on the Azure Monitor workspace (sub-resource prometheusMetrics) and link the privatelink.<region>.prometheus.monitor.azure.com zone to the resolver promlink uses (dns_server), or use query_private_link: prefer where the firewall allows the public query endpoint";
        let mut check = Check::new("query-dns", host, Status::Ok, seen, v.meaning(), "");
        check.verdict = Some(v.as_str().to_string());
        let allowed = match (v, c.private_link) {
            (Verdict::Private, _) => true,
            _ if unresolved => {
                check.status = Status::Fail;
                check.fix = format!(
                    "the name must resolve for the read-back: {}",
                    v.remediation()
                );
                false
            }
            (_, Mode::Require) => {
                check.status = Status::Fail;
                check.meaning = format!(
                    "{}; under query_private_link require the canary queries only a verified private endpoint",
                    v.meaning()
                );
                check.fix = fix.to_string();
                false
            }
            (_, Mode::Prefer) => {
                check.status = Status::Warn;
                check.meaning = format!(
                    "{}; under query_private_link prefer the canary queries the public endpoint",
                    v.meaning()
                );
                check.fix = fix.to_string();
                true
            }
            (_, Mode::Off) => {
                check.meaning =
                    format!("{}; query_private_link is off: informational", v.meaning());
                true
            }
        };
        checks.push(check);
        allowed.then_some(r.addresses)
    }

    /// `query-connect`: TCP and verified TLS to up to four addresses; the first that passed.
    async fn query_connect(
        &self,
        host: &str,
        port: u16,
        addresses: &[IpAddr],
        checks: &mut Vec<Check>,
    ) -> Option<SocketAddr> {
        let sockets: Vec<SocketAddr> = addresses
            .iter()
            .take(4)
            .map(|ip| SocketAddr::new(*ip, port))
            .collect();
        let ca = self.cfg.destination.upstream.ca_file.as_deref();
        let probes = join_all(sockets.iter().map(|a| probe(host, *a, ca, self.timeout))).await;
        let usable = sockets
            .iter()
            .zip(&probes)
            .find(|(_, p)| p.ok())
            .map(|(a, _)| *a);
        let seen = sockets
            .iter()
            .zip(&probes)
            .map(|(a, p)| match p.failure() {
                None => format!("{a} ok"),
                Some(f) => format!("{a}: {}", f.detail),
            })
            .collect::<Vec<_>>()
            .join("; ");
        checks.push(match usable {
            Some(_) => Check::new(
                "query-connect",
                host,
                Status::Ok,
                seen,
                "TCP and a verified TLS handshake work",
                "",
            ),
            None => Check::new(
                "query-connect",
                host,
                Status::Fail,
                seen,
                "the query endpoint cannot be reached",
                format!("allow TCP {port} to {host} in the firewall (and the private endpoint's NSG); with a TLS-inspecting proxy, trust its CA with ca_file"),
            ),
        });
        usable
    }

    /// `query-token`: a token for `query_token_scope` on the identity (`Some(None)`: none is
    /// sent, identity `none`).
    async fn query_token(
        &self,
        c: &CanarySettings,
        stop: &CancellationToken,
        checks: &mut Vec<Check>,
    ) -> Option<Option<crate::secret::Secret>> {
        let mut id = self.cfg.destination.identity.clone();
        id.scope.clone_from(&c.token_scope);
        let target = format!("identity {} for {}", id.kind.as_str(), c.token_scope);
        let (check, token) = self.token_check_of("query-token", target, &id, stop).await;
        checks.push(check);
        token
    }

    /// `read-back`: queries `promlink_doctor_canary` through `addr` until `value` shows.
    async fn read_back(
        &self,
        c: &CanarySettings,
        host: &str,
        addr: SocketAddr,
        token: Option<crate::secret::Secret>,
        value: f64,
    ) -> Check {
        let client = match crate::privatelink::probe::pinned_client(
            host,
            addr,
            self.cfg.destination.upstream.ca_file.as_deref(),
            Duration::from_secs(30),
        ) {
            Ok(client) => client,
            Err(e) => {
                return Check::new(
                    "read-back",
                    host,
                    Status::Fail,
                    crate::outbound::error_chain(&e),
                    "the query client cannot be built",
                    "check ca_file",
                )
            }
        };
        let mut selector = String::from("promlink_doctor_canary{job=\"promlink-doctor\"");
        if let Some(cluster) = &self.cfg.receive.codec.cluster {
            selector.push_str(&format!(",cluster=\"{}\"", cluster.replace('"', "\\\"")));
        }
        selector.push('}');
        let query: String = url::form_urlencoded::byte_serialize(selector.as_bytes()).collect();
        let url = format!(
            "{}/api/v1/query?query={query}",
            c.query_url.as_str().trim_end_matches('/')
        );
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        while started.elapsed() < c.timeout {
            let mut request = client.get(&url);
            if let Some(t) = &token {
                if let Ok(v) = crate::upstream::client::bearer(t) {
                    request = request.header(crate::upstream::client::AUTHORIZATION_HEADER, v);
                }
            }
            match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body = r.bytes().await.unwrap_or_default();
                    if matches!(status, 401 | 403) {
                        let e = crate::canary::QueryError::Status {
                            status,
                            body: String::from_utf8_lossy(&body[..body.len().min(400)])
                                .into_owned(),
                        };
                        return Check::new(
                            "read-back",
                            host,
                            Status::Fail,
                            format!("HTTP {status} through {addr}: {e}"),
                            "the query endpoint refused the query",
                            e.fix(c, &self.cfg.destination.identity),
                        );
                    }
                    match crate::canary::read_answer(&body) {
                        Ok(Some(v)) if v >= value => {
                            return Check::new(
                                "read-back",
                                host,
                                Status::Ok,
                                format!(
                                    "promlink_doctor_canary visible after {:.1}s through {addr}",
                                    started.elapsed().as_secs_f64()
                                ),
                                "what the DCE accepted can be queried in the workspace",
                                "",
                            )
                        }
                        Ok(_) => last = format!("HTTP {status}: not visible yet"),
                        Err(e) => last = format!("HTTP {status}: {e}"),
                    }
                }
                Err(e) => last = crate::outbound::error_chain(&e),
            }
            tokio::time::sleep(POLL).await;
        }
        Check::new(
            "read-back",
            host,
            Status::Fail,
            format!(
                "not visible within canary_timeout {} (last: {last})",
                humantime::format_duration(c.timeout)
            ),
            "the DCE accepted the canary but the workspace does not return it",
            crate::alert::rules::REMEDIATION_INGESTION_NOT_VISIBLE,
        )
    }
}

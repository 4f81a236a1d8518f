//! The `canary` check (`--write-canary`, or `--read-back`): one remote-write 1.0 request with
//! one sample (`promlink_doctor_canary`, its value the write time in Unix seconds), sent
//! exactly as promlink sends, through an address that passed the checks or the egress proxy;
//! 401, 403 and 404 are explained.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use super::report::{Check, Status};
use super::Doctor;
use crate::secret::Secret;

impl Doctor<'_> {
    /// The check, and the value written when the DCE accepted it.
    pub(super) async fn canary_check(
        &self,
        usable: &[SocketAddr],
        through_proxy: bool,
        token: Option<Option<Secret>>,
    ) -> (Check, Option<f64>) {
        let value = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64 / 1000.0);
        let check = self.send_canary(usable, through_proxy, token, value).await;
        let accepted = (check.status == Status::Ok).then_some(value);
        (check, accepted)
    }

    async fn send_canary(
        &self,
        usable: &[SocketAddr],
        through_proxy: bool,
        token: Option<Option<Secret>>,
        value: f64,
    ) -> Check {
        let target = self.host.clone();
        if !self.args.write_canary && !self.args.read_back {
            return Check::new(
                "canary",
                target,
                Status::Skipped,
                "not sent",
                "pass --write-canary to send one sample (promlink_doctor_canary, the write time) and prove the role assignment and the DCR",
                "",
            );
        }
        let Some(token) = token else {
            return Check::new(
                "canary",
                target,
                Status::Skipped,
                "not sent: no token",
                "the canary needs a token; fix the token check",
                "",
            );
        };
        // A verified address directly, else the egress proxy that passed its check.
        let (client, via) = match (usable.first().copied(), through_proxy) {
            (Some(addr), _) => (
                crate::privatelink::probe::pinned_client(
                    &self.host,
                    addr,
                    self.cfg.destination.upstream.ca_file.as_deref(),
                    self.cfg.destination.upstream.request_timeout,
                )
                .map_err(|e| crate::outbound::error_chain(&e)),
                addr.to_string(),
            ),
            (None, true) => (
                crate::upstream::client::build_proxied(
                    self.cfg.destination.upstream.ca_file.as_deref(),
                    self.cfg.destination.upstream.request_timeout,
                    &self.cfg.proxy,
                )
                .map_err(|e| crate::outbound::error_chain(&e)),
                "the egress proxy".to_string(),
            ),
            (None, false) => {
                return Check::new(
                    "canary",
                    target,
                    Status::Skipped,
                    format!("not sent: no address of {} passed the checks under private_link {}", self.host, self.mode.as_str()),
                    "the canary only goes through an address (or egress proxy) that passed the checks; fix the checks above",
                    "",
                )
            }
        };
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                return Check::new(
                    "canary",
                    target,
                    Status::Fail,
                    e,
                    "the upstream client cannot be built",
                    "check --ca-file",
                )
            }
        };
        let mut req = client
            .post(self.cfg.destination.upstream.url.clone())
            .headers(crate::upstream::client::write_headers())
            .body(canary_body(
                self.cfg.receive.codec.cluster.as_deref(),
                value,
            ));
        if let Some(t) = &token {
            match crate::upstream::client::bearer(t) {
                Ok(v) => req = req.header(crate::upstream::client::AUTHORIZATION_HEADER, v),
                Err(e) => {
                    return Check::new(
                        "canary",
                        target,
                        Status::Fail,
                        crate::outbound::error_chain(&e),
                        "the token cannot be sent",
                        "check the identity",
                    )
                }
            }
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                return Check::new(
                    "canary",
                    target,
                    Status::Fail,
                    format!("through {via}: {}", crate::outbound::error_chain(&e)),
                    "the request failed although the connect check passed: the connection broke mid-request or timed out",
                    "retry; if it persists, look for a proxy or firewall that inspects or limits HTTPS to the DCE",
                )
            }
        };
        let status = resp.status().as_u16();
        let message = body_text(resp).await;
        let seen = if message.is_empty() {
            format!("HTTP {status} through {via}")
        } else {
            format!("HTTP {status} through {via}: {message}")
        };
        let (status_of, meaning, fix) =
            canary_meaning(status, &self.cfg.destination.identity.scope);
        Check::new("canary", target, status_of, seen, meaning, fix)
    }
}

/// Status, meaning and fix of the canary's answer.
pub(super) fn canary_meaning(status: u16, scope: &str) -> (Status, String, String) {
    let s = |st: Status, m: &str, f: &str| (st, m.to_string(), f.to_string());
    match status {
        200..=299 => s(
            Status::Ok,
            "the DCE accepted the sample: identity, role assignment, DCR and path work, so data flows",
            "",
        ),
        401 => (
            Status::Fail,
            "the DCE rejected the token: wrong audience or scope, wrong tenant, or expired".into(),
            format!("request the token for the Azure Monitor audience (now {scope}; public https://monitor.azure.com/.default, US Government https://monitor.azure.us/.default, China https://monitor.azure.cn/.default): check --token-scope / INGESTION_AAD_AUDIENCE and --cloud"),
        ),
        403 => s(
            Status::Fail,
            "the identity does not hold the Monitoring Metrics Publisher role on the DCR, or the assignment has not applied yet",
            "assign Monitoring Metrics Publisher on the data collection rule (DCR) to the identity promlink uses (az role assignment create --assignee <client-id> --role \"Monitoring Metrics Publisher\" --scope <DCR resource id>); a new assignment takes about 30 minutes to apply and answers 403 meanwhile; a network-isolated DCE also refuses requests from public networks",
        ),
        404 => s(
            Status::Fail,
            "the DCE does not know this DCR or stream: wrong DCR immutable id, stream, or DCE",
            "use the DCR's immutableId (dcr- and 32 hex digits, from the DCR's JSON view, not its name), the stream Microsoft-PrometheusMetrics, and the metrics ingestion endpoint of the DCE the DCR is associated with",
        ),
        422 => s(
            Status::Warn,
            "the DCE refused the sample as a duplicate series; the path and authorization work",
            "",
        ),
        408 | 429 | 500..=599 => s(
            Status::Warn,
            "the DCE is reachable but busy or failing; promlink retries these answers",
            "retry later; if it persists, check Azure Monitor service health and the DCR's limits",
        ),
        _ => s(
            Status::Fail,
            "the DCE refused the request",
            "see the DCE's message; check the api-version in the ingestion URL",
        ),
    }
}

/// One remote-write 1.0 request (snappy block) with `promlink_doctor_canary{job="promlink-doctor"}
/// = value` at the current time.
pub(super) fn canary_body(cluster: Option<&str>, value: f64) -> Vec<u8> {
    use crate::proto::v1::{Label, Sample, TimeSeries, WriteRequest};
    let label = |n: &str, v: &str| Label {
        name: n.to_string(),
        value: v.to_string(),
    };
    let mut labels = vec![label("__name__", "promlink_doctor_canary")];
    if let Some(c) = cluster {
        labels.push(label("cluster", c));
    }
    labels.push(label("job", "promlink-doctor"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let req = WriteRequest {
        timeseries: vec![TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: now,
            }],
            ..TimeSeries::default()
        }],
        ..WriteRequest::default()
    };
    let raw = req.encode_to_vec();
    // Compressing an in-memory buffer cannot fail.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .unwrap_or_default()
}

/// The start of a response body, one line.
async fn body_text(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() > 400 {
        format!("{}...", text.chars().take(400).collect::<String>())
    } else {
        text
    }
}

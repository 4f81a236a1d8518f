//! The rules about delivery and storage, beside the Private Link and upstream-answer rules of
//! [`super::rules`]: an upstream that gives no HTTP answer, samples dropped, damaged queue
//! records, a delivery that has stalled, the receiver's certificate running out, the queue's
//! filesystem filling up, the disk queue's failed state, and a canary that the workspace does
//! not return. Names, thresholds and remediation texts are in [`super::rules`], where
//! the rule file's test holds them against `deploy/prometheus-rule.yaml`.

use std::time::{Duration, SystemTime};

use super::rules::{
    alert, base_labels, clip, drop_remediation, host, Alert, CERTIFICATE_EXPIRY_WARNING, CRITICAL,
    DELIVERY_STALLED, DELIVERY_STALLED_AFTER, INGESTION_NOT_VISIBLE, LOSS_ALERT_WINDOW,
    QUEUE_CORRUPT_RECORDS, QUEUE_DISK_FILLING, QUEUE_DISK_FILLING_USED, QUEUE_FAILED,
    QUEUE_STRANDED, RECEIVER_CERTIFICATE_EXPIRING, REMEDIATION_CERTIFICATE,
    REMEDIATION_DELIVERY_STALLED, REMEDIATION_INGESTION_NOT_VISIBLE, REMEDIATION_QUEUE_CORRUPT,
    REMEDIATION_QUEUE_DISK, REMEDIATION_QUEUE_FAILED, REMEDIATION_QUEUE_STRANDED,
    REMEDIATION_UPSTREAM_UNAVAILABLE, SAMPLES_DROPPED, UPSTREAM_UNAVAILABLE, WARNING,
};
use super::signals::Signals;

/// Every delivery and storage alert that fires for `s` at `now`.
pub(super) fn evaluate_at(s: &Signals, now: SystemTime) -> Vec<Alert> {
    let mut out = Vec::new();
    out.extend(upstream_unavailable(s));
    out.extend(samples_dropped(s, now));
    out.extend(queue_corrupt_records(s, now));
    out.extend(delivery_stalled(s, now));
    out.extend(receiver_certificate_expiring(s, now));
    out.extend(queue_disk_filling(s));
    out.extend(queue_failed(s));
    out.extend(queue_stranded(s));
    out.extend(ingestion_not_visible(s));
    out
}

fn ingestion_not_visible(s: &Signals) -> Option<Alert> {
    let why = s.ingestion_not_visible.as_ref()?;
    Some(alert(
        INGESTION_NOT_VISIBLE,
        CRITICAL,
        base_labels(s),
        "data promlink delivered is not visible in the workspace".to_string(),
        format!(
            "{}: the DCE answered 2xx, but the workspace does not return the data",
            clip(why)
        ),
        REMEDIATION_INGESTION_NOT_VISIBLE.to_string(),
    ))
}

/// `d` in whole seconds, for people.
fn human(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
}

/// How long ago `t` was (0 for a time in the future: a clock step).
fn ago(now: SystemTime, t: SystemTime) -> Duration {
    now.duration_since(t).unwrap_or_default()
}

fn upstream_unavailable(s: &Signals) -> Option<Alert> {
    let (silent, window, why) = s.upstream_unavailable.as_ref()?;
    Some(alert(
        UPSTREAM_UNAVAILABLE,
        CRITICAL,
        base_labels(s),
        format!("{} has given no HTTP answer for {}", host(s), human(*silent)),
        format!(
            "no HTTP answer from {} for {} (ready_window {}): {}; nothing is delivered, the queue keeps the data until it is full",
            host(s),
            human(*silent),
            human(*window),
            clip(why)
        ),
        REMEDIATION_UPSTREAM_UNAVAILABLE.to_string(),
    ))
}

fn samples_dropped(s: &Signals, now: SystemTime) -> Vec<Alert> {
    s.drops
        .iter()
        // The upstream's refusals are PromlinkUpstreamRejecting's.
        .filter(|(reason, _)| !reason.starts_with("rejected_"))
        .filter(|(_, at)| ago(now, *at) < LOSS_ALERT_WINDOW)
        .map(|(reason, at)| {
            let mut labels = base_labels(s);
            labels.insert("reason".into(), (*reason).into());
            let severity = match *reason {
                "too_old" | "expired" => WARNING,
                _ => CRITICAL,
            };
            alert(
                SAMPLES_DROPPED,
                severity,
                labels,
                format!("promlink dropped samples ({reason})"),
                format!(
                    "promlink dropped samples for reason {reason}, last {} ago (promlink_samples_dropped_total{{reason=\"{reason}\"}}); they are lost; this alert clears {} after the last drop",
                    human(ago(now, *at)),
                    human(LOSS_ALERT_WINDOW)
                ),
                drop_remediation(reason).to_string(),
            )
        })
        .collect()
}

fn queue_corrupt_records(s: &Signals, now: SystemTime) -> Option<Alert> {
    let at = s.corrupt_records_at?;
    if ago(now, at) >= LOSS_ALERT_WINDOW {
        return None;
    }
    Some(alert(
        QUEUE_CORRUPT_RECORDS,
        WARNING,
        base_labels(s),
        "promlink's disk queue skipped damaged records".to_string(),
        format!(
            "the disk queue skipped damaged records {} ago (promlink_queue_corrupt_records_total; the log names segment and offset); their data is lost; this alert clears {} after the last one",
            human(ago(now, at)),
            human(LOSS_ALERT_WINDOW)
        ),
        REMEDIATION_QUEUE_CORRUPT.to_string(),
    ))
}

fn delivery_stalled(s: &Signals, now: SystemTime) -> Option<Alert> {
    let holding = ago(now, s.queue_holding_since?);
    let quiet = ago(now, s.last_forward?);
    if holding < DELIVERY_STALLED_AFTER || quiet < DELIVERY_STALLED_AFTER {
        return None;
    }
    Some(alert(
        DELIVERY_STALLED,
        CRITICAL,
        base_labels(s),
        format!(
            "promlink has delivered nothing to {} for {}",
            host(s),
            human(quiet)
        ),
        format!(
            "the queue has held data for {} and {} has accepted nothing for {}",
            human(holding),
            host(s),
            human(quiet)
        ),
        REMEDIATION_DELIVERY_STALLED.to_string(),
    ))
}

fn receiver_certificate_expiring(s: &Signals, now: SystemTime) -> Option<Alert> {
    let not_after = s.receiver_cert_not_after?;
    let (severity, when) = match not_after.duration_since(now) {
        Ok(left) if left >= CERTIFICATE_EXPIRY_WARNING => return None,
        Ok(left) => (WARNING, format!("expires in {}", human(left))),
        Err(e) => (CRITICAL, format!("expired {} ago", human(e.duration()))),
    };
    Some(alert(
        RECEIVER_CERTIFICATE_EXPIRING,
        severity,
        base_labels(s),
        format!("promlink's receiver certificate {when}"),
        format!(
            "the serving certificate of promlink's receiver (tls_cert) {when} (at {}); senders that verify it fail once it has expired",
            httpdate::fmt_http_date(not_after)
        ),
        REMEDIATION_CERTIFICATE.to_string(),
    ))
}

fn queue_disk_filling(s: &Signals) -> Option<Alert> {
    let used = s.queue_disk_used.filter(|u| *u > QUEUE_DISK_FILLING_USED)?;
    let pct = (used.min(1.0) * 100.0).round();
    Some(alert(
        QUEUE_DISK_FILLING,
        WARNING,
        base_labels(s),
        format!("the disk queue's filesystem is {pct}% full"),
        format!(
            "the filesystem holding queue_dir is {pct}% used (alert above {}%); when it is full, queue writes fail and senders get 503",
            QUEUE_DISK_FILLING_USED * 100.0
        ),
        REMEDIATION_QUEUE_DISK.to_string(),
    ))
}

fn queue_failed(s: &Signals) -> Option<Alert> {
    let why = s.queue_failed.as_ref()?;
    Some(alert(
        QUEUE_FAILED,
        CRITICAL,
        base_labels(s),
        "promlink's disk queue takes no writes until a restart".to_string(),
        format!(
            "the disk queue is in its failed state: {}; senders get 503 and /ready fails",
            clip(why)
        ),
        REMEDIATION_QUEUE_FAILED.to_string(),
    ))
}

/// One alert per queue directory no configured route uses.
fn queue_stranded(s: &Signals) -> Vec<Alert> {
    s.queue_stranded
        .iter()
        .map(|(directory, bytes)| {
            let mut labels = base_labels(s);
            labels.insert("directory".to_string(), directory.clone());
            alert(
                QUEUE_STRANDED,
                WARNING,
                labels,
                format!("a queue of a removed route is not delivered: {directory}"),
                format!(
                    "{directory} holds {bytes} bytes of queue that no configured route uses; nothing delivers it"
                ),
                REMEDIATION_QUEUE_STRANDED.to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    fn names(alerts: &[Alert]) -> Vec<(&'static str, &'static str)> {
        alerts.iter().map(|a| (a.name, a.severity)).collect()
    }

    #[test]
    fn a_stranded_queue_warns_once_per_directory() {
        let s = Signals {
            upstream_host: "dce.example".into(),
            queue_stranded: vec![("/q/gone".into(), 4096), ("/q/gone.1".into(), 7)],
            ..Signals::default()
        };
        let a = queue_stranded(&s);
        assert_eq!(
            names(&a),
            [(QUEUE_STRANDED, WARNING), (QUEUE_STRANDED, WARNING)]
        );
        assert_eq!(a[0].labels["directory"], "/q/gone");
        assert!(a[1].description.contains("7 bytes"), "{}", a[1].description);
        assert!(queue_stranded(&Signals::default()).is_empty());
    }

    #[test]
    fn nothing_fires_when_nothing_is_wrong() {
        let s = Signals {
            last_forward: Some(at(0)),
            queue_disk_used: Some(0.5),
            receiver_cert_not_after: Some(at(90 * 86400)),
            ..Signals::default()
        };
        assert!(evaluate_at(&s, at(3600)).is_empty());
    }

    #[test]
    fn upstream_unavailable_names_the_error() {
        let s = Signals {
            upstream_host: "dce.example".into(),
            upstream_unavailable: Some((
                Duration::from_secs(130),
                Duration::from_secs(120),
                "connection refused".into(),
            )),
            ..Signals::default()
        };
        let a = evaluate_at(&s, at(0));
        assert_eq!(names(&a), [(UPSTREAM_UNAVAILABLE, CRITICAL)]);
        assert!(a[0].description.contains("connection refused"), "{a:?}");
        assert!(a[0].summary.contains("2m 10s"), "{a:?}");
    }

    #[test]
    fn drops_fire_per_reason_for_the_window_and_not_for_refusals() {
        let s = Signals {
            drops: vec![
                ("too_old", at(0)),
                ("shutdown", at(100)),
                ("rejected_400", at(100)),
            ],
            ..Signals::default()
        };
        let a = evaluate_at(&s, at(120));
        assert_eq!(
            names(&a),
            [(SAMPLES_DROPPED, WARNING), (SAMPLES_DROPPED, CRITICAL)]
        );
        assert_eq!(a[0].labels["reason"], "too_old");
        assert_eq!(a[0].remediation, drop_remediation("too_old"));
        assert_eq!(a[1].labels["reason"], "shutdown");
        // Ten minutes after the last drop, each clears.
        let a = evaluate_at(&s, at(LOSS_ALERT_WINDOW.as_secs() + 50));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].labels["reason"], "shutdown");
        assert!(evaluate_at(&s, at(LOSS_ALERT_WINDOW.as_secs() + 100)).is_empty());
    }

    #[test]
    fn corrupt_records_fire_for_the_window() {
        let s = Signals {
            corrupt_records_at: Some(at(0)),
            ..Signals::default()
        };
        assert_eq!(
            names(&evaluate_at(&s, at(1))),
            [(QUEUE_CORRUPT_RECORDS, WARNING)]
        );
        assert!(evaluate_at(&s, at(LOSS_ALERT_WINDOW.as_secs())).is_empty());
    }

    #[test]
    fn delivery_stalls_only_when_holding_and_quiet_for_ten_minutes() {
        let ten = DELIVERY_STALLED_AFTER.as_secs();
        let s = |holding: Option<u64>, forward: u64| Signals {
            queue_holding_since: holding.map(at),
            last_forward: Some(at(forward)),
            ..Signals::default()
        };
        let now = at(ten + 100);
        assert_eq!(
            names(&evaluate_at(&s(Some(0), 50), now)),
            [(DELIVERY_STALLED, CRITICAL)]
        );
        assert!(
            evaluate_at(&s(None, 0), now).is_empty(),
            "an empty queue is not stalled"
        );
        assert!(
            evaluate_at(&s(Some(200), 0), now).is_empty(),
            "data held for less than ten minutes"
        );
        assert!(
            evaluate_at(&s(Some(0), 200), now).is_empty(),
            "something was forwarded within ten minutes"
        );
    }

    #[test]
    fn certificate_warns_within_14_days_and_is_critical_once_expired() {
        let day = 86400;
        let s = |not_after: u64| Signals {
            receiver_cert_not_after: Some(at(not_after)),
            ..Signals::default()
        };
        let now = at(100 * day);
        assert!(evaluate_at(&s(115 * day), now).is_empty());
        let a = evaluate_at(&s(110 * day), now);
        assert_eq!(names(&a), [(RECEIVER_CERTIFICATE_EXPIRING, WARNING)]);
        assert!(a[0].summary.contains("expires in 10days"), "{a:?}");
        let a = evaluate_at(&s(99 * day), now);
        assert_eq!(names(&a), [(RECEIVER_CERTIFICATE_EXPIRING, CRITICAL)]);
        assert!(a[0].summary.contains("expired 1day ago"), "{a:?}");
        assert!(
            evaluate_at(&Signals::default(), now).is_empty(),
            "no TLS, no alert"
        );
    }

    #[test]
    fn disk_fills_above_80_percent() {
        let s = |used: f64| Signals {
            queue_disk_used: Some(used),
            ..Signals::default()
        };
        assert!(evaluate_at(&s(0.8), at(0)).is_empty());
        assert_eq!(
            names(&evaluate_at(&s(0.85), at(0))),
            [(QUEUE_DISK_FILLING, WARNING)]
        );
    }
}

//! Relabel rules are accepted and refused exactly as Prometheus 2.42 accepts and refuses them:
//! each rule below goes through `promtool check config` (Debian package `prometheus`, 2.42)
//! inside a `remote_write`'s `write_relabel_configs`, and through promlink's check, and both
//! must give the same answer. Without promtool the test is skipped loudly, except under
//! `CI=true`, where it fails: `scripts/test.sh` installs it.

mod e2e;

use std::process::Command;

use promlink_relabel::{RelabelConfig, Rules};

/// One rule per line, in YAML flow style, covering every action and every check.
const CASES: &[&str] = &[
    // Accepted.
    "{source_labels: [a], target_label: x}",
    "{source_labels: [a, b], separator: '|', regex: '(.*)\\|(.*)', target_label: 'y_${1}', replacement: '$2'}",
    "{source_labels: [a], target_label: x, action: Replace}",
    "{source_labels: [a], regex: 'x.*', action: keep}",
    "{source_labels: [a], regex: 'x.*', action: drop}",
    "{source_labels: [a], target_label: b, action: keepequal}",
    "{source_labels: [a], target_label: b, action: dropequal}",
    "{source_labels: [a], target_label: h, modulus: 8, action: hashmod}",
    "{regex: '__meta_(.+)', action: labelmap}",
    "{regex: '(.+)_total', replacement: 'c_$1', action: labelmap}",
    "{regex: 'tmp_.*', action: labeldrop}",
    "{regex: 'tmp_.*', separator: ';', action: labeldrop}",
    "{regex: '__name__|job|instance', action: labelkeep}",
    "{source_labels: [a], target_label: l, action: lowercase}",
    "{source_labels: [a], target_label: '$1', action: lowercase}",
    "{source_labels: [a], target_label: u, action: uppercase}",
    "{source_labels: [a], target_label: '${1}', replacement: v}",
    "{regex: '[[]', target_label: x}",
    "{regex: '\\Qa.b\\E', target_label: x}",
    "{regex: '(?i)abc\\d\\w\\s\\b', target_label: x}",
    "{regex: 'a{1000}', target_label: x}",
    "{regex: '', target_label: x, replacement: ''}",
    // Refused.
    "{action: nope}",
    "{action: ''}",
    "{source_labels: [a, 'b-c'], target_label: x}",
    "{regex: '(', target_label: x}",
    "{regex: '(?<n>a)', target_label: x}",
    "{regex: 'a{1001}', target_label: x}",
    "{regex: 'x\\', target_label: x}",
    "{source_labels: [a]}",
    "{source_labels: [a], target_label: 'a-b'}",
    "{source_labels: [a], target_label: x, action: hashmod}",
    "{source_labels: [a], modulus: 2, action: hashmod}",
    "{source_labels: [a], modulus: 2, target_label: '$1', action: hashmod}",
    "{source_labels: [a], target_label: x, replacement: y, action: lowercase}",
    "{source_labels: [a], target_label: x, replacement: y, action: uppercase}",
    "{source_labels: [a], target_label: 'a-b', action: uppercase}",
    "{regex: 'a', replacement: 'b-c', action: labelmap}",
    "{source_labels: [a], target_label: x, regex: '(.*)', action: keepequal}",
    "{source_labels: [a], target_label: x, separator: ',', action: dropequal}",
    "{source_labels: [a], action: keepequal}",
    "{source_labels: [a], regex: x, action: labeldrop}",
    "{source_labels: [], regex: x, action: labeldrop}",
    "{target_label: x, regex: x, action: labelkeep}",
    "{replacement: x, regex: x, action: labelkeep}",
    "{sourcelabels: [a]}",
];

#[test]
fn promlink_accepts_and_refuses_relabel_rules_as_prometheus_does() {
    let Some(promtool) = e2e::debian_peer(
        "PROMLINK_E2E_PROMTOOL",
        "/usr/bin/promtool",
        "prometheus",
        "promtool",
        "promlink_accepts_and_refuses_relabel_rules_as_prometheus_does",
        "the relabel parity test",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prometheus.yml");
    let mut disagree = Vec::new();
    let (mut accepted, mut refused) = (0, 0);
    for rule in CASES {
        e2e::write(
            &file,
            &format!(
                "remote_write:\n  - url: http://127.0.0.1:9/api/v1/write\n    write_relabel_configs:\n      - {rule}\n"
            ),
        );
        let out = Command::new(&promtool)
            .args(["check", "config", "--syntax-only"])
            .arg(&file)
            .output()
            .expect("run promtool");
        let prometheus_ok = out.status.success();
        let ours = serde_saphyr::from_str::<Vec<RelabelConfig>>(&format!("- {rule}"))
            .map_err(|e| e.to_string())
            .and_then(|c| Rules::compile(&c).map_err(|e| format!("{e:?}")));
        if prometheus_ok != ours.is_ok() {
            disagree.push(format!(
                "{rule}: promtool {}, promlink {:?}",
                if prometheus_ok { "accepts" } else { "refuses" },
                ours.err()
            ));
        }
        if prometheus_ok {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    assert!(
        disagree.is_empty(),
        "disagreements:\n{}",
        disagree.join("\n")
    );
    eprintln!("relabel parity: {accepted} rules accepted and {refused} refused by both");
    assert!(accepted >= 20 && refused >= 20);
}

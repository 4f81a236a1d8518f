use super::*;

/// A receiver on loopback address `ip` (nothing listens: nothing is sent).
fn url(ip: &str) -> String {
    format!("http://{ip}:9201/api/v1/write")
}

/// Each route's destination verifies, pins and names its own DCE host (issue 15: each DCE host
/// gets its own Private Link verification), not the first route's.
#[tokio::test]
async fn each_destination_verifies_its_own_host() {
    let settings = crate::config::Settings::from_yaml(&format!(
        "identity: none\nallow_plain_http: true\nroutes:\n  - name: a\n    match: '{{job=\"a\"}}'\n    ingestion_url: {a}\n  - name: b\n    ingestion_urls: [{b}, {c}]\n",
        a = url("127.0.0.2"),
        b = url("127.0.0.3"),
        c = url("127.0.0.4"),
    ))
    .unwrap();
    let cfg = settings.resolve().unwrap();
    let mut hosts = Vec::new();
    for route in &cfg.routes {
        for d in &route.destinations {
            let sending = Sending::new(d, &mut Registry::default()).unwrap();
            assert_eq!(sending.private_link.snapshot().host, sending.host);
            hosts.push(sending.host);
        }
    }
    assert_eq!(hosts, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
}

//! The verifier against the real loopback [`TestDns`] server: one test per verdict, the chain,
//! TTLs, no caching, sovereign zones, TCP fallback, bounded failures. Only 127.0.0.0/8 traffic.

use std::time::Instant;

use super::*;
use crate::emulator::dns::{privatelink_name, TestDns};

const HOST: &str = "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com";
const PL: &str = "mydce-ab12.eastus-1.metrics.ingest.privatelink.monitor.azure.com";
const PRIVATE: &str = "127.0.0.2";
const PUBLIC: &str = "127.0.0.3";
/// Generous, for a loaded machine: only the failure tests wait for it.
const TIMEOUT: Duration = Duration::from_secs(2);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn rules() -> AddressRules {
    AddressRules {
        private_cidrs: vec!["127.0.0.2/32".parse().unwrap()],
        ..AddressRules::default()
    }
}

fn verifier(dns: &TestDns, rules: AddressRules, timeout: Duration) -> Verifier {
    Verifier::new(VerifierConfig {
        servers: vec![dns.addr()],
        rules,
        timeout,
    })
    .unwrap()
}

async fn setup() -> (TestDns, Verifier) {
    let dns = TestDns::start().await.unwrap();
    let v = verifier(&dns, rules(), TIMEOUT);
    (dns, v)
}

#[tokio::test]
async fn private_link_answer_is_private() {
    let (dns, v) = setup().await;
    dns.set_private_link(HOST, ip(PRIVATE), 300);
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Private, "{}", r.detail);
    assert_eq!(
        r.chain,
        vec![CnameHop {
            name: HOST.into(),
            target: PL.into(),
            ttl: 300
        }]
    );
    assert_eq!(r.addresses, vec![ip(PRIVATE)]);
    assert_eq!(r.ttl, Some(Duration::from_secs(300)));
    assert_eq!(r.privatelink_zone(), Some("privatelink.monitor.azure.com"));
    assert_eq!(r.resolver, dns.addr().to_string());
    assert_eq!(r.host, HOST);
    assert!(
        r.detail.contains("privatelink.monitor.azure.com"),
        "{}",
        r.detail
    );
    assert!(!r.detail.contains('\n'));
    dns.shutdown().await;
}

#[tokio::test]
async fn chain_and_smallest_ttl_are_recorded() {
    let (dns, v) = setup().await;
    dns.set_cname(HOST, PL, 3600);
    dns.set_cname(PL, "pe-nic.internal.example", 120);
    dns.set_a("pe-nic.internal.example", &[ip(PRIVATE)], 45);
    // Upper case and a trailing dot: the same name (the owner names are kept as answered).
    let upper = v.resolve(&format!("{}.", HOST.to_uppercase())).await;
    assert_eq!(upper.verdict, Verdict::Private, "{}", upper.detail);
    assert!(upper.chain[0].name.eq_ignore_ascii_case(HOST));
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Private, "{}", r.detail);
    let hops: Vec<(&str, &str, u32)> = r
        .chain
        .iter()
        .map(|h| (h.name.as_str(), h.target.as_str(), h.ttl))
        .collect();
    assert_eq!(
        hops,
        vec![(HOST, PL, 3600), (PL, "pe-nic.internal.example", 120)]
    );
    assert_eq!(r.ttl, Some(Duration::from_secs(45)));
    dns.set_a("pe-nic.internal.example", &[ip(PRIVATE)], 7200);
    assert_eq!(v.resolve(HOST).await.ttl, Some(Duration::from_secs(120)));
    dns.shutdown().await;
}

#[tokio::test]
async fn public_dns_shape_is_public() {
    let (dns, v) = setup().await;
    dns.set_public(HOST, ip(PUBLIC), 60);
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Public, "{}", r.detail);
    let targets: Vec<&str> = r.chain.iter().map(|h| h.target.as_str()).collect();
    assert_eq!(targets, vec![PL, "eastus-1.ingest.cloudapp.example"]);
    assert_eq!(r.addresses, vec![ip(PUBLIC)]);
    // The chain passes through the privatelink zone, but public DNS answered it.
    assert_eq!(r.privatelink_zone(), Some("privatelink.monitor.azure.com"));
    dns.shutdown().await;
}

#[tokio::test]
async fn missing_record_in_private_zone_is_nxdomain() {
    let (dns, v) = setup().await;
    dns.set_nxdomain_zone("privatelink.monitor.azure.com");
    dns.set_cname(HOST, PL, 300);
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Nxdomain, "{}", r.detail);
    assert!(
        r.detail.contains(PL),
        "names the missing name: {}",
        r.detail
    );
    assert!(r.detail.contains("NXDOMAIN"), "{}", r.detail);
    assert_eq!(r.chain.len(), 1, "the chain up to the missing name is kept");
    assert!(r.addresses.is_empty());
    assert_eq!(r.ttl, None);

    // The host itself unknown.
    let other = "other-cd34.westeurope-1.metrics.ingest.monitor.azure.com";
    let r = v.resolve(other).await;
    assert_eq!(r.verdict, Verdict::Nxdomain, "{}", r.detail);
    assert!(r.detail.starts_with(other), "{}", r.detail);
    assert!(r.chain.is_empty());
    dns.shutdown().await;
}

#[tokio::test]
async fn noerror_without_address_is_nxdomain() {
    let (dns, v) = setup().await;
    dns.set_cname(HOST, PL, 300);
    dns.set_a(PL, &[], 300);
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Nxdomain, "{}", r.detail);
    assert!(r.detail.contains(PL), "{}", r.detail);
    assert!(r.detail.contains("no A or AAAA"), "{}", r.detail);
    dns.shutdown().await;
}

#[tokio::test]
async fn other_private_address_is_unexpected() {
    let dns = TestDns::start().await.unwrap();
    let rules = AddressRules {
        expected_endpoints: vec!["127.0.0.4/32".parse().unwrap()],
        ..rules()
    };
    let v = verifier(&dns, rules, TIMEOUT);
    dns.set_private_link(HOST, ip(PRIVATE), 300);
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::UnexpectedAddress, "{}", r.detail);
    assert!(r.detail.contains(PRIVATE), "{}", r.detail);

    dns.set_private_link(HOST, ip("127.0.0.4"), 300);
    let rules = AddressRules {
        private_cidrs: vec!["127.0.0.0/24".parse().unwrap()],
        expected_endpoints: vec!["127.0.0.4/32".parse().unwrap()],
    };
    let r = verifier(&dns, rules, TIMEOUT).resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Private, "{}", r.detail);
    dns.shutdown().await;
}

#[tokio::test]
async fn private_and_public_together_is_mixed() {
    let (dns, v) = setup().await;
    dns.set_cname(HOST, PL, 300);
    dns.set_a(PL, &[ip(PUBLIC), ip(PRIVATE)], 300);
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Mixed, "{}", r.detail);
    assert_eq!(r.addresses, vec![ip(PRIVATE), ip(PUBLIC)], "sorted");
    dns.shutdown().await;
}

#[tokio::test]
async fn servfail_is_dns_error() {
    let (dns, v) = setup().await;
    dns.set_private_link(HOST, ip(PRIVATE), 300);
    dns.set_servfail(PL, true);
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::DnsError, "{}", r.detail);
    assert!(r.detail.contains("SERVFAIL"), "{}", r.detail);
    assert_eq!(r.ttl, None);
    dns.set_servfail(PL, false);
    assert_eq!(v.resolve(HOST).await.verdict, Verdict::Private);
    dns.shutdown().await;
}

#[tokio::test]
async fn silent_server_is_a_bounded_dns_error() {
    let dns = TestDns::start().await.unwrap();
    let v = verifier(&dns, rules(), Duration::from_millis(500));
    dns.set_private_link(HOST, ip(PRIVATE), 300);
    dns.set_silent(HOST, true);
    let started = Instant::now();
    let r = v.resolve(HOST).await;
    let took = started.elapsed();
    assert_eq!(r.verdict, Verdict::DnsError, "{}", r.detail);
    assert!(r.detail.contains("timed out"), "{}", r.detail);
    // 2 tries x 500 ms, bounded by the outer deadline of 1.5 s per query; 3 s is a
    // bound, not a benchmark.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(dns.queries() >= 2, "A and AAAA were sent");
    dns.shutdown().await;
}

#[tokio::test]
async fn unreachable_server_is_dns_error() {
    // A loopback port nobody listens on (UDP and TCP both refused).
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let v = Verifier::new(VerifierConfig {
        servers: vec![port],
        rules: rules(),
        timeout: Duration::from_millis(500),
    })
    .unwrap();
    let started = Instant::now();
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::DnsError, "{}", r.detail);
    assert!(!r.detail.is_empty());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn answer_flip_is_seen_at_once_without_caching() {
    let (dns, v) = setup().await;
    dns.set_private_link(HOST, ip(PRIVATE), 3600);
    let first = v.resolve(HOST).await;
    assert_eq!(first.verdict, Verdict::Private);
    let again = v.resolve(HOST).await;
    assert!(first.same_answer(&again));

    // TTLs alone do not make a different answer.
    dns.set_private_link(HOST, ip(PRIVATE), 5);
    let shorter = v.resolve(HOST).await;
    assert_eq!(shorter.ttl, Some(Duration::from_secs(5)));
    assert!(first.same_answer(&shorter));

    // Flip to public long before the 3600 s TTL: seen by the next call.
    let before = dns.queries();
    dns.set_public(HOST, ip(PUBLIC), 3600);
    let flipped = v.resolve(HOST).await;
    assert!(dns.queries() > before, "real queries were sent");
    assert_eq!(flipped.verdict, Verdict::Public, "{}", flipped.detail);
    assert!(!first.same_answer(&flipped));
    assert!(!flipped.same_answer(&first));

    // And back; a clone of the verifier shares nothing cached either.
    dns.set_private_link(HOST, ip(PRIVATE), 3600);
    let back = v.clone().resolve(HOST).await;
    assert_eq!(back.verdict, Verdict::Private, "{}", back.detail);
    assert!(back.same_answer(&first));

    // Same chain, other address.
    dns.set_private_link(HOST, ip("10.1.2.3"), 3600);
    assert!(!v.resolve(HOST).await.same_answer(&first));
    dns.shutdown().await;
}

#[tokio::test]
async fn sovereign_cloud_zone() {
    let (dns, v) = setup().await;
    let host = "x.usgovvirginia-1.metrics.ingest.monitor.azure.us";
    assert_eq!(
        privatelink_name(host),
        "x.usgovvirginia-1.metrics.ingest.privatelink.monitor.azure.us"
    );
    dns.set_private_link(host, ip(PRIVATE), 60);
    let r = v.resolve(host).await;
    assert_eq!(r.verdict, Verdict::Private, "{}", r.detail);
    assert_eq!(r.privatelink_zone(), Some("privatelink.monitor.azure.us"));
    dns.shutdown().await;
}

#[tokio::test]
async fn ipv6_only_name_is_fine() {
    let (dns, v) = setup().await;
    dns.set_private_link(HOST, ip("fd00::5"), 60);
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Private, "{}", r.detail);
    assert_eq!(r.addresses, vec![ip("fd00::5")]);
    assert_eq!(r.chain.len(), 1);
    dns.shutdown().await;
}

#[tokio::test]
async fn truncated_answer_falls_back_to_tcp() {
    let (dns, v) = setup().await;
    // 150 A records (~2.4 kB) cannot fit a 1232-byte UDP answer: only TCP can carry them.
    let ips: Vec<IpAddr> = (1..=150u8)
        .map(|i| IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i)))
        .collect();
    dns.set_cname(HOST, PL, 300);
    dns.set_a(PL, &ips, 300);
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Private, "{}", r.detail);
    assert_eq!(r.addresses, ips);
    assert_eq!(r.chain.len(), 1);
    dns.shutdown().await;
}

#[tokio::test]
async fn bad_input_never_panics() {
    let (dns, v) = setup().await;
    let r = v.resolve("").await;
    assert_eq!(r.verdict, Verdict::DnsError);
    let long = "a".repeat(300);
    let r = v.resolve(&long).await;
    assert_eq!(r.verdict, Verdict::DnsError, "{}", r.detail);
    let r = v.resolve("bad name with spaces..").await;
    assert!(matches!(r.verdict, Verdict::DnsError | Verdict::Nxdomain));
    // An address literal needs no DNS.
    let before = dns.queries();
    let r = v.resolve("10.0.0.5").await;
    assert_eq!(r.addresses, vec![ip("10.0.0.5")]);
    assert_eq!(r.verdict, Verdict::UnexpectedAddress, "{}", r.detail);
    assert_eq!(dns.queries(), before);
    dns.shutdown().await;
}

#[test]
fn resolver_codes_are_named_like_dig() {
    let name = Name::from_ascii("x.example.").unwrap();
    let t = Duration::from_secs(1);
    for (code, want) in [
        (ResponseCode::Refused, "REFUSED"),
        (ResponseCode::ServFail, "SERVFAIL"),
    ] {
        let End::Error(e) = from_error(
            NetError::Dns(DnsError::ResponseCode(code)),
            &name,
            RecordType::A,
            t,
        ) else {
            panic!("not an error");
        };
        assert!(e.contains(want) && e.contains("x.example"), "{e}");
    }
    let End::Error(e) = from_error(NetError::Timeout, &name, RecordType::AAAA, t) else {
        panic!("not an error");
    };
    assert!(e.contains("timed out"), "{e}");
}

#[test]
fn system_config_is_read_without_querying() {
    // Builds only: no query goes to the system resolver, which may not be on loopback.
    match Verifier::new(VerifierConfig {
        servers: vec![],
        rules: rules(),
        timeout: TIMEOUT,
    }) {
        Ok(v) => assert!(
            v.resolver().starts_with("system (/etc/resolv.conf"),
            "{v:?}"
        ),
        Err(e) => assert!(matches!(
            e,
            VerifyError::SystemConfig(_) | VerifyError::NoSystemServers
        )),
    }
}

#[test]
fn zero_timeout_is_rejected() {
    let err = Verifier::new(VerifierConfig {
        servers: vec!["127.0.0.1:53".parse().unwrap()],
        rules: rules(),
        timeout: Duration::ZERO,
    })
    .unwrap_err();
    assert!(matches!(err, VerifyError::ZeroTimeout));
}

/// A forwarder that answers one CNAME hop per query (no A with it): the verifier asks for the
/// target itself and still records the whole chain.
#[tokio::test]
async fn partial_chains_are_followed() {
    use hickory_resolver::proto::op::Message;
    use hickory_resolver::proto::rr::rdata::{A, CNAME};
    use hickory_resolver::proto::rr::Record;

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::response(q.id, q.op_code);
            resp.metadata.recursion_available = true;
            resp.add_queries(q.queries.clone());
            let query = &q.queries[0];
            let name = query.name().to_ascii().to_ascii_lowercase();
            if name == format!("{HOST}.") {
                let target = Name::from_ascii(format!("{PL}.")).unwrap();
                resp.add_answer(Record::from_rdata(
                    query.name().clone(),
                    100,
                    RData::CNAME(CNAME(target)),
                ));
            } else if name == format!("{PL}.") && query.query_type() == RecordType::A {
                resp.add_answer(Record::from_rdata(
                    query.name().clone(),
                    30,
                    RData::A(A::new(127, 0, 0, 2)),
                ));
            }
            let _ = sock.send_to(&resp.to_vec().unwrap(), peer).await;
        }
    });
    let v = Verifier::new(VerifierConfig {
        servers: vec![addr],
        rules: rules(),
        timeout: TIMEOUT,
    })
    .unwrap();
    let r = v.resolve(HOST).await;
    assert_eq!(r.verdict, Verdict::Private, "{}", r.detail);
    assert_eq!(r.chain.len(), 1);
    assert_eq!(r.chain[0].target, PL);
    assert_eq!(r.addresses, vec![ip(PRIVATE)]);
    assert_eq!(r.ttl, Some(Duration::from_secs(30)));
    server.abort();
}

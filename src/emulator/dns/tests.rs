//! Wire-level tests of the test DNS server itself (loopback only).

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::Query;

use super::*;

const HOST: &str = "mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com";
const PL: &str = "mydce-ab12.eastus-1.metrics.ingest.privatelink.monitor.azure.com";
/// Generous: only reached when something is broken.
const WAIT: Duration = Duration::from_secs(10);

fn query(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    m
}

async fn udp(addr: SocketAddr, msg: &Message) -> Option<Message> {
    udp_raw(addr, &msg.to_vec().unwrap(), WAIT).await
}

async fn udp_raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some(Message::from_vec(&buf[..n]).unwrap())
}

async fn tcp(addr: SocketAddr, msg: &Message) -> Message {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let bytes = msg.to_vec().unwrap();
    s.write_u16(bytes.len() as u16).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let len = tokio::time::timeout(WAIT, s.read_u16())
        .await
        .unwrap()
        .unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

fn names(m: &Message) -> Vec<(String, RecordType)> {
    m.answers
        .iter()
        .map(|r| (key(&r.name.to_ascii()), r.record_type()))
        .collect()
}

#[test]
fn privatelink_names() {
    for (host, want) in [
        (HOST, PL),
        (
            "x.usgovvirginia-1.metrics.ingest.monitor.azure.us.",
            "x.usgovvirginia-1.metrics.ingest.privatelink.monitor.azure.us",
        ),
        (
            "x.chinanorth3-1.metrics.ingest.monitor.azure.cn",
            "x.chinanorth3-1.metrics.ingest.privatelink.monitor.azure.cn",
        ),
        (
            "ws-id.ods.opinsights.azure.com",
            "ws-id.privatelink.ods.opinsights.azure.com",
        ),
        (
            "ws-id.oms.opinsights.azure.us",
            "ws-id.privatelink.oms.opinsights.azure.us",
        ),
        (PL, PL),
        ("example.com", "example.com"),
        ("notmonitor.azure.com", "notmonitor.azure.com"),
    ] {
        assert_eq!(privatelink_name(host), want, "{host}");
    }
}

#[tokio::test]
async fn answers_the_whole_chain_with_ttls() {
    let dns = TestDns::start().await.unwrap();
    dns.set_cname(HOST, PL, 300);
    dns.set_a(
        PL,
        &["10.0.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
        10,
    );
    let r = udp(dns.addr(), &query(HOST, RecordType::A, true))
        .await
        .unwrap();
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.recursion_available);
    assert_eq!(
        names(&r),
        vec![(key(HOST), RecordType::CNAME), (key(PL), RecordType::A)]
    );
    assert_eq!(r.answers[0].ttl, 300);
    assert_eq!(r.answers[1].ttl, 10);
    assert_eq!(r.answers[1].data, RData::A(A(Ipv4Addr::new(10, 0, 0, 5))));

    let r = udp(dns.addr(), &query(HOST, RecordType::AAAA, false))
        .await
        .unwrap();
    assert_eq!(
        names(&r),
        vec![(key(HOST), RecordType::CNAME), (key(PL), RecordType::AAAA)]
    );
    assert_eq!(dns.queries(), 2);
    dns.shutdown().await;
}

#[tokio::test]
async fn nxdomain_inside_and_outside_zones() {
    let dns = TestDns::start().await.unwrap();
    dns.set_nxdomain_zone("privatelink.monitor.azure.com.");
    dns.set_cname(HOST, PL, 300);

    // Chain into the zone, no record there: the CNAME plus an authoritative NXDOMAIN.
    let r = udp(dns.addr(), &query(HOST, RecordType::A, true))
        .await
        .unwrap();
    assert_eq!(r.response_code, ResponseCode::NXDomain);
    assert!(r.authoritative);
    assert_eq!(names(&r), vec![(key(HOST), RecordType::CNAME)]);
    assert!(matches!(r.authorities[0].data, RData::SOA(_)));

    // Unknown and outside every zone: NXDOMAIN, never forwarded.
    let r = udp(dns.addr(), &query("www.example.org.", RecordType::A, true))
        .await
        .unwrap();
    assert_eq!(r.response_code, ResponseCode::NXDomain);
    assert!(!r.authoritative);
    assert!(r.answers.is_empty());

    // An existing name without addresses of the type asked: NOERROR, no data.
    dns.set_a("v6only.example", &["fd00::1".parse().unwrap()], 60);
    let r = udp(dns.addr(), &query("v6only.example", RecordType::A, true))
        .await
        .unwrap();
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());

    dns.remove(HOST);
    let r = udp(dns.addr(), &query(HOST, RecordType::A, true))
        .await
        .unwrap();
    assert_eq!(r.response_code, ResponseCode::NXDomain);
    assert!(r.answers.is_empty());
    dns.shutdown().await;
}

#[tokio::test]
async fn servfail_silent_and_loops() {
    let dns = TestDns::start().await.unwrap();
    dns.set_private_link(HOST, "10.0.0.5".parse().unwrap(), 60);
    dns.set_servfail(PL, true);
    let r = udp(dns.addr(), &query(HOST, RecordType::A, true))
        .await
        .unwrap();
    assert_eq!(r.response_code, ResponseCode::ServFail);
    dns.set_servfail(PL, false);

    dns.set_silent(HOST, true);
    let bytes = query(HOST, RecordType::A, true).to_vec().unwrap();
    // Silence is deterministic; the wait only bounds the test.
    assert!(udp_raw(dns.addr(), &bytes, Duration::from_millis(300))
        .await
        .is_none());
    dns.set_silent(HOST, false);
    let r = udp(dns.addr(), &query(HOST, RecordType::A, true))
        .await
        .unwrap();
    assert_eq!(r.response_code, ResponseCode::NoError);

    dns.set_cname("a.loop.example", "b.loop.example", 60);
    dns.set_cname("b.loop.example", "a.loop.example", 60);
    let r = udp(dns.addr(), &query("a.loop.example", RecordType::A, true))
        .await
        .unwrap();
    assert_eq!(r.response_code, ResponseCode::ServFail);
    dns.shutdown().await;
}

#[tokio::test]
async fn large_answers_are_truncated_on_udp_and_whole_on_tcp() {
    let dns = TestDns::start().await.unwrap();
    let ips: Vec<IpAddr> = (1..=200u8)
        .map(|i| IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)))
        .collect();
    dns.set_a("big.example", &ips, 60);

    for edns in [false, true] {
        let r = udp(dns.addr(), &query("big.example", RecordType::A, edns))
            .await
            .unwrap();
        assert!(r.truncation, "edns {edns}");
        assert!(r.answers.is_empty());
    }
    let r = tcp(dns.addr(), &query("big.example", RecordType::A, true)).await;
    assert!(!r.truncation);
    assert_eq!(r.answers.len(), 200);

    // Small answers fit in UDP, also over TCP on the same port.
    dns.set_a("small.example", &ips[..3], 60);
    let r = udp(dns.addr(), &query("small.example", RecordType::A, false))
        .await
        .unwrap();
    assert!(!r.truncation);
    assert_eq!(r.answers.len(), 3);
    let r = tcp(dns.addr(), &query("small.example", RecordType::A, false)).await;
    assert_eq!(r.answers.len(), 3);
    dns.shutdown().await;
}

#[tokio::test]
async fn survives_garbage() {
    let dns = TestDns::start().await.unwrap();
    dns.set_private_link(HOST, "10.0.0.5".parse().unwrap(), 60);
    let addr = dns.addr();

    let mut response = query(HOST, RecordType::A, false);
    response.metadata.message_type = MessageType::Response;
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        vec![0; 11],
        vec![
            0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3,
        ],
        (0..=255u8).cycle().take(4000).collect(),
        // A response is never answered (no reflection loops).
        response.to_vec().unwrap(),
    ];
    for g in &garbage {
        assert!(udp_raw(addr, g, Duration::from_millis(200)).await.is_none());
    }
    // A query truncated mid-question.
    let q = query(HOST, RecordType::A, false).to_vec().unwrap();
    assert!(udp_raw(addr, &q[..q.len() - 3], Duration::from_millis(200))
        .await
        .is_none());

    // TCP: a bad message closes that connection only; a short frame then EOF too.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0, 4, 1, 2, 3, 4]).await.unwrap();
    let mut buf = [0u8; 2];
    let closed = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap();
    assert!(matches!(closed, Ok(0) | Err(_)));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&[0xff, 0xff, 1]).await.unwrap();
    drop(s);

    // Still serving, on both transports.
    let r = udp(addr, &query(HOST, RecordType::A, false)).await.unwrap();
    assert_eq!(r.answers.len(), 2);
    let r = tcp(addr, &query(HOST, RecordType::A, false)).await;
    assert_eq!(r.answers.len(), 2);
    // Only the well-formed queries count.
    assert_eq!(dns.queries(), 2);
    dns.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let dns = TestDns::start().await.unwrap();
    let addr = dns.addr();
    dns.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

//! A small real DNS server for tests, the demo and `promlink doctor` tests. **Test utility**: it
//! ships in the library only so that integration tests, the demo and doctor tests can use it;
//! production code never starts it.
//!
//! [`TestDns`] listens on `127.0.0.1` (UDP and TCP on the same port) and speaks the real wire
//! format (RFC 1035, decoded and encoded with hickory-proto). It answers like a recursive
//! resolver would for the names it knows: it follows its own CNAMEs and returns the whole chain
//! (CNAME records, then A or AAAA) in the answer section, with TTLs, and NXDOMAIN at the end of a
//! chain that leads nowhere. It never forwards anything anywhere: a name it does not know is
//! NXDOMAIN (authoritative, with an SOA, inside a zone set with [`TestDns::set_nxdomain_zone`]).
//!
//! Everything can change while it runs, which is how tests flip a DCE from the private to the
//! public answer. [`TestDns::set_servfail`] and [`TestDns::set_silent`] simulate broken
//! resolvers. UDP answers larger than the client's EDNS payload size (512 bytes without EDNS)
//! are truncated (TC bit), so clients retry over TCP as real resolvers make them. Garbage
//! datagrams and streams are ignored without harm.
//!
//! [`TestDns::set_private_link`] and [`TestDns::set_public`] build the two shapes Azure's DNS
//! gives for a DCE host
//! (<https://learn.microsoft.com/azure/azure-monitor/logs/private-link-configure>).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

use crate::privatelink::verdict::PRIVATELINK_ZONES;

/// Largest UDP answer sent whatever the client's EDNS says (the DNS flag day 2020 value).
const MAX_UDP: usize = 1232;

/// Longest CNAME chain the server follows before answering SERVFAIL (a loop).
const MAX_CHAIN: usize = 16;

/// An in-process DNS server on `127.0.0.1` (UDP and TCP on one port), for tests.
///
/// All setters take `&self`, are thread-safe and take effect for the next query. Names are
/// case-insensitive and may be given with or without the trailing dot. Dropping the server
/// stops it as well as [`TestDns::shutdown`] does.
#[derive(Debug)]
pub struct TestDns {
    addr: SocketAddr,
    state: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    zone: Mutex<Zone>,
    queries: AtomicU64,
}

impl Shared {
    fn zone(&self) -> MutexGuard<'_, Zone> {
        self.zone.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
struct Zone {
    cnames: HashMap<String, (String, u32)>,
    addrs: HashMap<String, (Vec<IpAddr>, u32)>,
    nx_zones: Vec<String>,
    servfail: HashSet<String>,
    silent: HashSet<String>,
}

fn key(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn under(name: &str, zone: &str) -> bool {
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// The privatelink name Azure's public DNS points a host to: `privatelink.` inserted before the
/// service zone (`monitor.azure.com`, `.us`, `.cn`, the `ods`/`oms` opinsights zones and
/// `agentsvc.azure-automation`). A name in no such zone, or already in a privatelink zone, is
/// returned unchanged (without a trailing dot).
///
/// `mydce-ab12.eastus-1.metrics.ingest.monitor.azure.com` ->
/// `mydce-ab12.eastus-1.metrics.ingest.privatelink.monitor.azure.com`; a workspace's query
/// endpoint `ws-1.eastus.prometheus.monitor.azure.com` -> `ws-1.privatelink.eastus.prometheus.monitor.azure.com`.
pub fn privatelink_name(host: &str) -> String {
    let host = host.trim().trim_end_matches('.');
    let lower = host.to_ascii_lowercase();
    if crate::privatelink::verdict::privatelink_zone(&lower).is_some() {
        return host.to_string();
    }
    // A workspace's query endpoint, `<ws>.<region>.prometheus.monitor.azure.com`: the zone is
    // per region, `privatelink.<region>.prometheus.monitor.azure.com`.
    for suffix in crate::privatelink::verdict::QUERY_ZONE_SUFFIXES {
        if let Some((ws, _region)) = lower
            .strip_suffix(suffix)
            .and_then(|r| r.strip_suffix('.'))
            .and_then(|r| r.rsplit_once('.'))
        {
            return format!(
                "{}.privatelink.{}",
                &host[..ws.len()],
                &host[ws.len() + 1..]
            );
        }
    }
    for zone in PRIVATELINK_ZONES {
        let public = zone.trim_start_matches("privatelink.");
        if lower.ends_with(&format!(".{public}")) {
            let cut = host.len() - public.len();
            return format!("{}privatelink.{}", &host[..cut], &host[cut..]);
        }
    }
    host.to_string()
}

impl TestDns {
    /// Starts the server on `127.0.0.1` with a free port, UDP and TCP.
    ///
    /// # Errors
    /// When no port is free for both protocols.
    pub async fn start() -> std::io::Result<TestDns> {
        let mut last = None;
        for _ in 0..16 {
            let udp = UdpSocket::bind("127.0.0.1:0").await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => {
                    let state = Arc::new(Shared::default());
                    let tasks = vec![
                        tokio::spawn(serve_udp(udp, state.clone())),
                        tokio::spawn(serve_tcp(tcp, state.clone())),
                    ];
                    return Ok(TestDns { addr, state, tasks });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
    }

    /// The server's address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets `name` to be a CNAME to `target` (replacing any address records of `name`).
    pub fn set_cname(&self, name: &str, target: &str, ttl: u32) {
        let mut z = self.state.zone();
        z.addrs.remove(&key(name));
        z.cnames.insert(key(name), (key(target), ttl));
    }

    /// Sets the addresses of `name`: A records for IPv4, AAAA for IPv6 (replacing a CNAME of
    /// `name`). An empty list leaves the name existing without addresses (NOERROR, no data).
    pub fn set_a(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        let mut z = self.state.zone();
        z.cnames.remove(&key(name));
        z.addrs.insert(key(name), (ips.to_vec(), ttl));
    }

    /// Removes every record of `name` (and its SERVFAIL and silent flags).
    pub fn remove(&self, name: &str) {
        let mut z = self.state.zone();
        let k = key(name);
        z.cnames.remove(&k);
        z.addrs.remove(&k);
        z.servfail.remove(&k);
        z.silent.remove(&k);
    }

    /// Makes the server authoritative for `zone`: names under it without records get an
    /// authoritative NXDOMAIN with the zone's SOA, like a linked Azure private DNS zone.
    pub fn set_nxdomain_zone(&self, zone: &str) {
        let mut z = self.state.zone();
        let k = key(zone);
        if !z.nx_zones.contains(&k) {
            z.nx_zones.push(k);
        }
    }

    /// Answers SERVFAIL for `name` (also when reached through a CNAME) while `on`.
    pub fn set_servfail(&self, name: &str, on: bool) {
        let mut z = self.state.zone();
        if on {
            z.servfail.insert(key(name));
        } else {
            z.servfail.remove(&key(name));
        }
    }

    /// Never answers queries for `name` (also when reached through a CNAME) while `on`: the
    /// client times out.
    pub fn set_silent(&self, name: &str, on: bool) {
        let mut z = self.state.zone();
        if on {
            z.silent.insert(key(name));
        } else {
            z.silent.remove(&key(name));
        }
    }

    /// How many well-formed queries arrived (UDP and TCP), answered or not.
    pub fn queries(&self) -> u64 {
        self.state.queries.load(Ordering::Relaxed)
    }

    /// Stops serving and waits until the sockets are closed.
    pub async fn shutdown(mut self) {
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
            let _ = t.await;
        }
    }

    /// The Azure Private Link shape, as a resolver with the private DNS zone linked answers:
    /// `host` CNAME [`privatelink_name`]`(host)`, which has the A (or AAAA) record `ip`.
    pub fn set_private_link(&self, host: &str, ip: IpAddr, ttl: u32) {
        let pl = privatelink_name(host);
        if key(&pl) != key(host) {
            self.set_cname(host, &pl, ttl);
        }
        self.set_a(&pl, &[ip], ttl);
    }

    /// The shape public DNS gives for a private-linked DCE: `host` CNAME its privatelink name,
    /// which is a CNAME to a public-looking `<region>.ingest.cloudapp.example` (the region is
    /// the host's second label), which has the address `ip`.
    pub fn set_public(&self, host: &str, ip: IpAddr, ttl: u32) {
        let pl = privatelink_name(host);
        let region = key(host)
            .split('.')
            .nth(1)
            .filter(|l| !l.is_empty())
            .unwrap_or("public")
            .to_string();
        let public = format!("{region}.ingest.cloudapp.example");
        if key(&pl) != key(host) {
            self.set_cname(host, &pl, ttl);
        }
        self.set_cname(&pl, &public, ttl);
        self.set_a(&public, &[ip], ttl);
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve_udp(sock: UdpSocket, state: Arc<Shared>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
            // E.g. ICMP port unreachable reported for an earlier answer: keep serving.
            Err(_) => continue,
        };
        if let Some(out) = answer_bytes(&buf[..n], &state, true) {
            let _ = sock.send_to(&out, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    conns.spawn(serve_conn(stream, state.clone()));
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_conn(mut stream: TcpStream, state: Arc<Shared>) {
    loop {
        let len = match stream.read_u16().await {
            Ok(l) => usize::from(l),
            Err(_) => return,
        };
        let mut buf = vec![0u8; len];
        // Garbage closes this connection (a real server would too); silence keeps it open.
        if stream.read_exact(&mut buf).await.is_err() || Message::from_vec(&buf).is_err() {
            return;
        }
        if let Some(out) = answer_bytes(&buf, &state, false) {
            let Ok(len) = u16::try_from(out.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(out.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&out);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

/// The encoded answer to one datagram or TCP message; `None` for no answer (garbage, a
/// response, or a silent name).
fn answer_bytes(packet: &[u8], state: &Shared, udp: bool) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    if request.message_type != MessageType::Query {
        return None;
    }
    state.queries.fetch_add(1, Ordering::Relaxed);
    let response = answer(&request, &state.zone())?;
    let bytes = response.to_vec().ok()?;
    if udp && bytes.len() > usize::from(request.max_payload()).min(MAX_UDP) {
        return response.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// Answers `request` from `zone`; `None` means stay silent.
fn answer(request: &Message, zone: &Zone) -> Option<Message> {
    let mut resp = Message::response(request.id, request.op_code);
    resp.metadata.recursion_desired = request.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP as u16);
        resp.set_edns(edns);
    }
    if request.op_code != OpCode::Query {
        resp.metadata.response_code = ResponseCode::NotImp;
        return Some(resp);
    }
    let [query] = request.queries.as_slice() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return Some(resp);
    };
    let qtype = query.query_type();
    let mut cur = query.name().clone();
    let mut seen = HashSet::new();
    loop {
        let k = key(&cur.to_ascii());
        if zone.silent.contains(&k) {
            return None;
        }
        if zone.servfail.contains(&k) || !seen.insert(k.clone()) || seen.len() > MAX_CHAIN {
            resp.answers.clear();
            resp.metadata.response_code = ResponseCode::ServFail;
            return Some(resp);
        }
        if let Some((target, ttl)) = zone.cnames.get(&k) {
            let Ok(mut target) = Name::from_ascii(target) else {
                resp.metadata.response_code = ResponseCode::ServFail;
                return Some(resp);
            };
            target.set_fqdn(true);
            resp.add_answer(Record::from_rdata(
                cur.clone(),
                *ttl,
                RData::CNAME(CNAME(target.clone())),
            ));
            if qtype == RecordType::CNAME {
                return Some(resp);
            }
            cur = target;
            continue;
        }
        if let Some((ips, ttl)) = zone.addrs.get(&k) {
            for ip in ips {
                let data = match (ip, qtype) {
                    (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                resp.add_answer(Record::from_rdata(cur.clone(), *ttl, data));
            }
            return Some(resp);
        }
        let apex = zone.nx_zones.iter().find(|z| under(&k, z));
        // A name with records below it exists (an empty non-terminal): NOERROR, no data.
        let non_terminal = zone
            .cnames
            .keys()
            .chain(zone.addrs.keys())
            .any(|n| n.ends_with(&format!(".{k}")))
            || zone.nx_zones.contains(&k);
        if let Some(apex) = apex {
            resp.metadata.authoritative = true;
            if let Some(soa) = soa(apex) {
                resp.add_authority(soa);
            }
        }
        if !non_terminal {
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        return Some(resp);
    }
}

fn soa(zone: &str) -> Option<Record> {
    let mut apex = Name::from_ascii(zone).ok()?;
    apex.set_fqdn(true);
    let mname = Name::from_ascii("azureprivatedns.net.").ok()?;
    let rname = Name::from_ascii("azureprivatedns-host.microsoft.com.").ok()?;
    let soa = SOA::new(mname, rname, 1, 3600, 300, 2_419_200, 10);
    Some(Record::from_rdata(apex, 10, RData::SOA(soa)))
}

#[cfg(test)]
mod tests;

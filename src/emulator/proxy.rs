//! An HTTP proxy EMULATOR for tests: CONNECT tunnels and plain-HTTP forwarding, on loopback only.
//!
//! It stands in for an on-premises egress proxy (squid and the like). It never resolves a name
//! and never connects anywhere but loopback: each destination name it will serve is mapped to a
//! loopback address with [`ProxyEmulatorConfig::routes`], keeping the requested port; anything
//! else is answered `502 Bad Gateway`. Because the proxy, not the client, turns a name into an
//! address, a test can give a client a name that only the proxy knows (`dce.proxy.test`): the
//! request succeeds only if it really went through the proxy.
//!
//! - `CONNECT host:port` opens a tunnel (`200`), then bytes are copied both ways.
//! - A request in absolute form (`POST http://host:port/path`, what a client sends for an
//!   `http://` URL through `HTTP_PROXY`) is forwarded as is, without `Proxy-Authorization`,
//!   and the connection is then spliced to that destination.
//! - With [`ProxyEmulatorConfig::credentials`], requests without the right
//!   `Proxy-Authorization: Basic` get `407`; [`ProxyHandle::set_refuse`] answers `403` to
//!   everything (a proxy whose allow-list lacks the destination).
//!
//! Every destination asked for is recorded as `host:port` ([`ProxyHandle::targets`]), whatever
//! the answer, so tests can assert what did and did not go through the proxy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Longest request head read, bytes.
const MAX_HEAD: usize = 16 * 1024;

/// What the proxy emulator serves.
#[derive(Clone, Debug)]
pub struct ProxyEmulatorConfig {
    /// Listen address. Default `127.0.0.1:0`; must be loopback.
    pub listen: SocketAddr,
    /// Destination names (ASCII case ignored) and the loopback address each is served from;
    /// the requested port is kept. Loopback IP literals are served as they are.
    pub routes: Vec<(String, IpAddr)>,
    /// `(user, password)` the proxy requires; `None`: no authentication.
    pub credentials: Option<(String, String)>,
}

impl Default for ProxyEmulatorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            routes: Vec::new(),
            credentials: None,
        }
    }
}

/// Errors starting the proxy emulator.
#[derive(Debug, thiserror::Error)]
pub enum ProxyEmulatorError {
    /// The listen address or a route is not loopback.
    #[error("the proxy emulator serves loopback only: {0} is not a loopback address")]
    NotLoopback(IpAddr),
    /// The address could not be bound.
    #[error("binding the proxy emulator")]
    Bind(#[source] std::io::Error),
}

#[derive(Default)]
struct Shared {
    routes: HashMap<String, IpAddr>,
    /// The expected `Proxy-Authorization` value.
    auth: Option<String>,
    refuse: AtomicBool,
    targets: Mutex<Vec<String>>,
    tunnels: AtomicU64,
    refused: AtomicU64,
    auth_failures: AtomicU64,
}

/// The proxy emulator.
pub struct ProxyEmulator;

impl ProxyEmulator {
    /// Starts the proxy.
    ///
    /// # Errors
    /// A non-loopback listen address or route, or an address that cannot be bound.
    pub async fn start(config: ProxyEmulatorConfig) -> Result<ProxyHandle, ProxyEmulatorError> {
        for ip in std::iter::once(config.listen.ip()).chain(config.routes.iter().map(|r| r.1)) {
            if !ip.is_loopback() {
                return Err(ProxyEmulatorError::NotLoopback(ip));
            }
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(ProxyEmulatorError::Bind)?;
        let addr = listener.local_addr().map_err(ProxyEmulatorError::Bind)?;
        let shared = Arc::new(Shared {
            routes: config
                .routes
                .into_iter()
                .map(|(n, ip)| (n.to_ascii_lowercase(), ip))
                .collect(),
            auth: config.credentials.map(|(u, p)| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                )
            }),
            ..Shared::default()
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(accept_loop(listener, shared.clone(), stop.clone()));
        tracing::info!(%addr, "EMULATOR: HTTP proxy listening (loopback destinations only)");
        Ok(ProxyHandle {
            addr,
            shared,
            stop,
            task: Some(task),
        })
    }
}

/// A running proxy emulator; dropping it stops it.
pub struct ProxyHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProxyHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The proxy URL with credentials, `http://user:password@127.0.0.1:<port>`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    /// Every destination asked for so far (`host:port`, lowercase), in order, whatever the
    /// answer.
    pub fn targets(&self) -> Vec<String> {
        self.shared
            .targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many times `host` (any port) was asked for.
    pub fn count_host(&self, host: &str) -> usize {
        let host = host.to_ascii_lowercase();
        self.targets()
            .iter()
            .filter(|t| t.rsplit_once(':').is_some_and(|(h, _)| h == host))
            .count()
    }

    /// Tunnels opened and requests forwarded (answered `200` or passed on).
    pub fn tunnels(&self) -> u64 {
        self.shared.tunnels.load(Ordering::Relaxed)
    }

    /// Requests refused: `403` while refusing, `502` for unknown destinations.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Requests answered `407` (missing or wrong credentials).
    pub fn auth_failures(&self) -> u64 {
        self.shared.auth_failures.load(Ordering::Relaxed)
    }

    /// Refuses (`403`) every request from now on, or serves again.
    pub fn set_refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::Relaxed);
    }

    /// Stops accepting and drops every open tunnel.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((conn, _)) => {
                    let shared = shared.clone();
                    conns.spawn(async move {
                        if let Err(e) = handle(conn, &shared).await {
                            tracing::debug!(error = %e, "proxy emulator connection ended");
                        }
                    });
                }
                Err(e) => tracing::debug!(error = %e, "proxy emulator accept failed"),
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.shutdown().await;
}

/// A parsed request head.
struct Head {
    method: String,
    /// `host:port` asked for.
    target: String,
    host: String,
    port: u16,
    /// Header lines, as sent.
    lines: Vec<String>,
}

async fn handle(mut client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return answer(&mut client, "431 Request Header Fields Too Large", "").await;
        }
        if client.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    };
    let Some(head) = parse_head(&buf[..end]) else {
        return answer(&mut client, "400 Bad Request", "").await;
    };
    shared
        .targets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(head.target.clone());
    if let Some(want) = &shared.auth {
        let given = head.lines.iter().find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case("proxy-authorization"))
                .map(|(_, v)| v.trim().to_string())
        });
        if given.as_deref() != Some(want.as_str()) {
            shared.auth_failures.fetch_add(1, Ordering::Relaxed);
            return answer(
                &mut client,
                "407 Proxy Authentication Required",
                "Proxy-Authenticate: Basic realm=\"promlink-proxy-emulator\"\r\n",
            )
            .await;
        }
    }
    if shared.refuse.load(Ordering::Relaxed) {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return answer(&mut client, "403 Forbidden", "").await;
    }
    let ip = match head.host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Some(ip),
        Ok(_) => None,
        Err(_) => shared.routes.get(&head.host).copied(),
    };
    let Some(ip) = ip else {
        shared.refused.fetch_add(1, Ordering::Relaxed);
        return answer(&mut client, "502 Bad Gateway", "").await;
    };
    let mut upstream = match TcpStream::connect(SocketAddr::new(ip, head.port)).await {
        Ok(s) => s,
        Err(_) => {
            shared.refused.fetch_add(1, Ordering::Relaxed);
            return answer(&mut client, "502 Bad Gateway", "").await;
        }
    };
    shared.tunnels.fetch_add(1, Ordering::Relaxed);
    if head.method.eq_ignore_ascii_case("CONNECT") {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
    } else {
        // Forward the request as sent (absolute form is valid for servers), minus the proxy's
        // own headers.
        let mut out = String::new();
        for l in &head.lines {
            let name = l.split_once(':').map_or("", |(n, _)| n.trim());
            if !name.eq_ignore_ascii_case("proxy-authorization")
                && !name.eq_ignore_ascii_case("proxy-connection")
            {
                out.push_str(l);
                out.push_str("\r\n");
            }
        }
        out.push_str("\r\n");
        upstream.write_all(out.as_bytes()).await?;
    }
    upstream.write_all(&buf[end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

async fn answer(client: &mut TcpStream, status: &str, headers: &str) -> std::io::Result<()> {
    let text =
        format!("HTTP/1.1 {status}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n");
    client.write_all(text.as_bytes()).await?;
    client.shutdown().await
}

/// The request line and headers; `None` when they cannot be read.
fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let request = lines.next()?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_string();
    let uri = parts.next()?;
    let authority = if method.eq_ignore_ascii_case("CONNECT") {
        uri
    } else {
        let rest = uri.strip_prefix("http://")?;
        rest.split('/').next()?
    };
    let (host, port) = match authority.rsplit_once(':') {
        _ if authority.ends_with(']') => (authority, 80),
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None => (authority, 80),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Some(Head {
        method,
        target: format!("{host}:{port}"),
        host,
        port,
        lines: std::iter::once(request)
            .chain(lines)
            .map(str::to_string)
            .collect(),
    })
}

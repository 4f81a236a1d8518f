//! The receiver's accept loop: plain HTTP/1.1, or TLS with HTTP/2 or HTTP/1.1 by ALPN, with a
//! bound on open connections and on the time a sender may take to finish the TLS handshake and
//! send a request's headers (slow senders cannot hold connections forever).
//!
//! A connection over `max_connections` is closed at once (over plain HTTP with a one-line 503
//! first) and counted; well-behaved senders retry it like any connection error.
//!
//! Shutdown comes in two steps. On `drain` (SIGTERM) the loop keeps accepting, but HTTP/2
//! connections open at that moment get GOAWAY (their in-flight streams finish), and any
//! connection can be asked to close after its current answer ([`ConnControl`]; the receiver
//! does that for every answer while draining). On `stop` the loop stops accepting, closes the
//! listening socket, and every connection finishes its in-flight request and closes; dropping
//! the returned future aborts whatever is still open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::auth::{certificate_names, ConnInfo};
use super::metrics::{Metrics, ReasonLabel};
use super::tls::Reloader;

/// Connection-level settings.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Most open connections.
    pub max_connections: usize,
    /// Time to finish the TLS handshake, and to send each request's headers (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// Most concurrent HTTP/2 streams on one connection.
    pub max_h2_streams: u32,
}

/// Lets a request's handler ask for its connection to close once the answer is out (HTTP/2:
/// GOAWAY after the current streams); found in every request's extensions.
#[derive(Debug, Default)]
pub struct ConnControl {
    close: tokio::sync::Notify,
}

impl ConnControl {
    /// Closes the connection gracefully after the answers in flight.
    pub fn close_after_response(&self) {
        self.close.notify_one();
    }
}

/// Accepts connections until `stop`, then lets open ones finish their requests. `drain` (which
/// comes first) sends GOAWAY on the HTTP/2 connections open at that moment.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<Reloader>>,
    cfg: ListenerConfig,
    metrics: Metrics,
    drain: CancellationToken,
    stop: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(
        cfg.max_connections.min(tokio::sync::Semaphore::MAX_PERMITS),
    ));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    refuse(&tcp, tls.is_some());
                    metrics.connections_closed.get_or_create(&ReasonLabel { reason: "max_connections" }).inc();
                    tracing::debug!(%peer, "connection refused: max_connections reached");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (app, tls, cfg, metrics) = (app.clone(), tls.clone(), cfg.clone(), metrics.clone());
                let ends = Ends { drain: drain.clone(), stop: stop.clone() };
                conns.spawn(async move {
                    let _open = Open::new(&metrics, slot);
                    connection(tcp, peer, app, tls, &cfg, &metrics, ends).await;
                });
            }
        }
    }
    // New senders get a refused connection at once (and try another replica) instead of
    // waiting on a backlog nobody accepts while open connections finish.
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// An open connection: counted in the gauge and holding its slot until it ends, however it
/// ends (finished, aborted at the shutdown deadline, or panicked).
struct Open {
    gauge: prometheus_client::metrics::gauge::Gauge,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Open {
    fn new(metrics: &Metrics, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        metrics.connections.inc();
        Self {
            gauge: metrics.connections.clone(),
            _slot: slot,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Tells a plain-HTTP client why its connection closes, without waiting on it.
fn refuse(tcp: &TcpStream, tls: bool) {
    if !tls {
        let _ = tcp.try_write(
            b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 52\r\n\r\ntoo many connections (max_connections); retry later\n",
        );
    }
}

/// The shutdown signals a connection watches.
struct Ends {
    drain: CancellationToken,
    stop: CancellationToken,
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    tls: Option<Arc<Reloader>>,
    cfg: &ListenerConfig,
    metrics: &Metrics,
    ends: Ends,
) {
    let closed = |reason: &'static str| {
        metrics
            .connections_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    };
    let ended = |result: Result<(), hyper::Error>| {
        if let Err(e) = result {
            if e.is_timeout() {
                closed("header_timeout");
            }
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    };
    let Some(tls) = tls else {
        let info = ConnInfo::default();
        ended(http(TokioIo::new(tcp), false, app, info, cfg, ends).await);
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    let stream = match tokio::time::timeout(cfg.header_read_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            closed("tls_handshake");
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            closed("handshake_timeout");
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let (_, session) = stream.get_ref();
    let info = ConnInfo {
        client_names: session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|leaf| certificate_names(leaf)),
    };
    let h2 = session.alpn_protocol() == Some(b"h2");
    ended(http(TokioIo::new(stream), h2, app, info, cfg, ends).await);
}

/// The router as a hyper service, with what the connection proved, and its control, in each
/// request.
#[derive(Clone)]
struct ConnService {
    app: Router,
    info: Arc<ConnInfo>,
    control: Arc<ConnControl>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        req.extensions_mut().insert(self.info.clone());
        req.extensions_mut().insert(self.control.clone());
        // A Router is always ready; `call` on a clone is how axum's own server drives it.
        tower_service::Service::call(&mut self.app.clone(), req)
    }
}

fn service(app: Router, info: ConnInfo, control: Arc<ConnControl>) -> ConnService {
    ConnService {
        app,
        info: Arc::new(info),
        control,
    }
}

/// Serves one connection over HTTP/2 (`h2`, as ALPN negotiated it) or HTTP/1.1.
async fn http<I>(
    io: TokioIo<I>,
    h2: bool,
    app: Router,
    info: ConnInfo,
    cfg: &ListenerConfig,
    ends: Ends,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let control = Arc::new(ConnControl::default());
    if !h2 {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            .serve_connection(io, service(app, info, control.clone()));
        // An idle keep-alive connection stays open while draining: its next answer carries
        // `Connection: close`, which ends it.
        return until_done(conn, control, None, ends.stop).await;
    }
    // A connection opened while draining is served (its sender may have nowhere else to go
    // yet) and gets GOAWAY after its first answer, through `control`.
    let drain = (!ends.drain.is_cancelled()).then_some(ends.drain);
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_h2_streams)
        .max_header_list_size(64 << 10)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(cfg.header_read_timeout)
        .serve_connection(io, service(app, info, control.clone()));
    until_done(conn, control, drain, ends.stop).await
}

/// Serves a connection until it ends. On `stop`, on `drain` (when given) or when a handler
/// asks through `control`, shuts it down gracefully: in-flight requests finish first.
async fn until_done<C>(
    conn: C,
    control: Arc<ConnControl>,
    drain: Option<CancellationToken>,
    stop: CancellationToken,
) -> Result<(), hyper::Error>
where
    C: hyper_util::server::graceful::GracefulConnection<Error = hyper::Error>,
{
    tokio::pin!(conn);
    let draining = async {
        match &drain {
            Some(d) => d.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = draining => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        _ = control.close.notified() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

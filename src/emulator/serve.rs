//! The accept loop shared by the emulators: plain HTTP or TLS, HTTP/1.1 and HTTP/2.
//!
//! The emulators do not use `axum::serve` or `axum-server` because a fault script must be able
//! to drop one connection without answering (what a crashed load balancer or a reset looks like
//! to a client). Each connection gets a [`ConnKill`] in its request extensions; a handler that
//! notifies it makes the connection task drop the connection at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests get to finish once shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);

/// A handle on one connection: notify it to drop the connection without a response.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnKill(pub(crate) Arc<Notify>);

/// A running server: its address and a way to stop it.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    cancel: CancellationToken,
    /// TCP connections accepted so far.
    pub(crate) connections: Arc<std::sync::atomic::AtomicU64>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Stops accepting, lets in-flight requests finish (bounded), and waits for the loop to end.
    pub(crate) async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), task).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Binds `addr` and serves `router` on it, over TLS when `tls` is given.
///
/// # Errors
/// When the address cannot be bound.
pub(crate) async fn spawn(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
) -> std::io::Result<Server> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let task = tokio::spawn(accept_loop(
        listener,
        tls,
        router,
        cancel.clone(),
        connections.clone(),
    ));
    Ok(Server {
        addr,
        cancel,
        connections,
        task: Some(task),
    })
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    cancel: CancellationToken,
    connections: Arc<std::sync::atomic::AtomicU64>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, _peer) = tokio::select! {
            () = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "emulator: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let cancel = cancel.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls_stream)) => serve_conn(tls_stream, router, cancel).await,
                        Ok(Err(error)) => tracing::debug!(%error, "emulator: tls handshake failed"),
                        Err(_) => tracing::debug!("emulator: tls handshake timed out"),
                    }
                }
                None => serve_conn(stream, router, cancel).await,
            }
        });
    }
}

async fn serve_conn<S>(stream: S, router: Router, cancel: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let kill = ConnKill::default();
    let notify = kill.0.clone();
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(kill.clone());
            let mut router = router.clone();
            async move {
                use tower_service::Service as _;
                router.call(req).await
            }
        });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "emulator: connection ended with an error");
            }
        }
        () = notify.notified() => {
            // Dropping the connection closes the socket without writing a response.
        }
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
        }
    }
}

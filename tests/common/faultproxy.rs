//! A TCP proxy for the test rig that misbehaves on command, between promlink and the DCE
//! emulator: it passes bytes through, cuts each connection after a number of bytes from the
//! client (mid-request, TLS and all), or holds new connections without forwarding anything
//! (a TLS handshake that stalls). Changing the mode closes the connections open so far, so
//! pooled connections meet the new mode too. Loopback only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the proxy does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward, but close both sides once the client has sent this many bytes.
    CutAfter(usize),
    /// Accept and read nothing, forward nothing, until the mode changes.
    Stall,
}

struct State {
    mode: Mode,
    target: Option<SocketAddr>,
    /// Cancelled when the mode changes: ends the connections of the old mode.
    generation: CancellationToken,
}

/// A running proxy; stops with the test's runtime or [`FaultProxy::stop`].
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Connections cut after their byte budget.
    pub cuts: Arc<AtomicU64>,
    /// Connections held without forwarding.
    pub stalls: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl FaultProxy {
    pub async fn start() -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            mode: Mode::Pass,
            target: None,
            generation: CancellationToken::new(),
        }));
        let (cuts, stalls) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stop = CancellationToken::new();
        let (st, c, s, stopped) = (state.clone(), cuts.clone(), stalls.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = tokio::select! {
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                    _ = stopped.cancelled() => return,
                };
                let (mode, target, generation) = {
                    let st = st.lock().unwrap();
                    (st.mode, st.target, st.generation.clone())
                };
                let (c, s) = (c.clone(), s.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = handle(client, mode, target, &c, &s) => {}
                        _ = generation.cancelled() => {}
                    }
                });
            }
        });
        FaultProxy {
            addr,
            state,
            cuts,
            stalls,
            stop,
        }
    }

    /// Where connections go.
    pub fn set_target(&self, target: SocketAddr) {
        self.state.lock().unwrap().target = Some(target);
    }

    /// Switches the mode and closes every connection made so far.
    pub fn set_mode(&self, mode: Mode) {
        let mut st = self.state.lock().unwrap();
        st.mode = mode;
        st.generation.cancel();
        st.generation = CancellationToken::new();
    }

    pub fn stop(&self) {
        self.stop.cancel();
        self.state.lock().unwrap().generation.cancel();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn handle(
    mut client: TcpStream,
    mode: Mode,
    target: Option<SocketAddr>,
    cuts: &AtomicU64,
    stalls: &AtomicU64,
) {
    let budget = match mode {
        Mode::Stall => {
            stalls.fetch_add(1, Ordering::Relaxed);
            // Until the mode changes (the generation ends this task) or the peer gives up.
            let mut byte = [0u8; 1];
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                match tokio::time::timeout(Duration::from_millis(1), client.peek(&mut byte)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    _ => {}
                }
            }
        }
        Mode::CutAfter(n) => Some(n),
        Mode::Pass => None,
    };
    let Some(target) = target else { return };
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    let Some(budget) = budget else {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let mut left = budget;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let take = n.min(left);
            if sw.write_all(&buf[..take]).await.is_err() {
                return;
            }
            left -= take;
            if left == 0 {
                cuts.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut sr, &mut cw);
    // Whichever ends first ends the connection: the cut closes both sides.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

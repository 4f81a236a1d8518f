//! Where the receiver puts what each route takes: [`ReceiveRoute`], the [`Routing`] a write goes
//! through (swapped whole by a configuration reload), and handing a decoded write's route
//! outputs to their queues.

use std::sync::Arc;

use super::{ReceiveError, Receiver};
use crate::codec;
use crate::queue::{PushError, Queue};

/// Where the receiver puts what a route takes.
pub struct ReceiveRoute {
    /// The route's name (the `route` label).
    pub name: String,
    /// Which series it takes, its own rules, its batch limits and its spread.
    pub rule: codec::RouteRule,
    /// Its destinations' queues: one, or `rule.spread`.
    pub queues: Vec<Arc<Queue>>,
}

/// What a write goes through: the global rules (in the decoding options) and the routes. A
/// configuration reload swaps it whole; a write in progress finishes with the one it began
/// with.
pub struct Routing {
    /// Decoding options, the global `write_relabel_configs` among them.
    pub codec: codec::Options,
    /// The routes, in order.
    pub routes: Vec<ReceiveRoute>,
    /// The routes' rules, in order (what the decoder needs of `routes`).
    pub(super) rules: Vec<codec::RouteRule>,
}

impl Routing {
    /// The routing of `routes` with the decoding options `codec`.
    pub fn new(codec: codec::Options, routes: Vec<ReceiveRoute>) -> Self {
        Self {
            codec,
            rules: routes.iter().map(|r| r.rule.clone()).collect(),
            routes,
        }
    }
}

impl Receiver {
    /// Hands each route's chunks to its queue. A route whose queue refuses (full, or failed)
    /// must not hold back the others: when another route took its part of the request, the
    /// refused part is dropped and counted for that route (`queue_full`, `queue_io`), as
    /// Prometheus drops for one `remote_write` that falls too far behind. When no route could
    /// take anything, the request is refused as without routes (retryable, nothing taken).
    pub(super) async fn push_routed(
        &self,
        routing: &Routing,
        outputs: Vec<codec::RouteOutput>,
    ) -> Result<(), ReceiveError> {
        let mut done = Vec::with_capacity(outputs.len());
        let mut taken = false;
        let mut destinations: Vec<(&ReceiveRoute, &Arc<Queue>)> = Vec::with_capacity(outputs.len());
        for r in &routing.routes {
            destinations.extend(r.queues.iter().map(|q| (r, q)));
        }
        for (mut out, (route, queue)) in outputs.into_iter().zip(destinations) {
            let chunks = std::mem::take(&mut out.chunks);
            let result = if chunks.is_empty() {
                Ok(())
            } else {
                queue.push(chunks).await
            };
            taken |= result.is_ok() && !out.counts.is_empty();
            done.push((route, out, result));
        }
        // Nothing was taken but something was refused: refuse the request (the sender retries).
        if !taken {
            if let Some(i) = done.iter().position(|(_, _, r)| r.is_err()) {
                if let (_, _, Err(e)) = done.swap_remove(i) {
                    return Err(e.into());
                }
            }
        }
        for (route, out, result) in done {
            let refused = result.err().map(|e| {
                tracing::warn!(route = %route.name, error = %e, samples = out.counts.samples + out.counts.histograms, "this route's queue refused its part of a write that other routes took: dropped for this route");
                match e {
                    PushError::Full { .. } => "queue_full",
                    PushError::Io(_) => "queue_io",
                }
            });
            self.metrics.routes.count_in(&route.name, &out, refused);
        }
        Ok(())
    }
}

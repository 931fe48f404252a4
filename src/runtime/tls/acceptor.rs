//! The one TLS accept loop, used by the scaler's gRPC port and the webhook's HTTPS port.
//!
//! TCP connections are accepted under the listener's [`ConnLimits`] (a cap on open connections,
//! an idle timeout, back-off after a failed `accept`: see [`crate::runtime::conn`]); each
//! handshake runs in its own task bounded by a timeout, so a slow client cannot hold up others,
//! and only completed handshakes are yielded. Failed handshakes are logged at debug level,
//! counted in `refused` and dropped: a client without a valid certificate never reaches a
//! service.

use std::time::Duration;

use futures::Stream;
use prometheus_client::metrics::counter::Counter;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::runtime::conn::{self, ConnLimits, Limited};

/// A TLS connection under its listener's limits.
pub type TlsConn = Limited<TlsStream<TcpStream>>;

/// Accepts connections on `listener` until `shutdown` (or until the stream is dropped) and
/// yields those whose TLS handshake completes within `handshake_timeout`, with the peer's
/// address. `refused` counts the handshakes that failed or timed out.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    limits: ConnLimits,
    refused: Counter,
    shutdown: CancellationToken,
) -> impl Stream<Item = (TlsConn, std::net::SocketAddr)> + use<> {
    let (tx, rx) = mpsc::channel(64);
    let handshakes = TaskTracker::new();
    let cap = std::sync::Arc::new(Semaphore::new(
        limits.effective_max_connections(conn::open_files_limit(), 1),
    ));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => break,
                a = conn::accept(&listener, &cap, &limits, &shutdown) => a,
            };
            let Some((tcp, peer)) = accepted else { break };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let refused = refused.clone();
            handshakes.spawn(async move {
                let idle = limits.idle_timeout;
                let (tcp, permit) = tcp.into_parts();
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((Limited::new(stream, idle, permit), peer)).await;
                    }
                    Ok(Err(e)) => {
                        refused.inc();
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        refused.inc();
                        tracing::debug!(%peer, "TLS handshake timed out");
                    }
                }
            });
        }
        // Handshakes in flight finish (or time out) before the stream ends.
        handshakes.close();
        handshakes.wait().await;
    });
    ReceiverStream::new(rx)
}

//! The one TLS accept loop, used by the scaler's gRPC port and the webhook's HTTPS port.
//!
//! TCP connections are accepted (with `TCP_NODELAY`: without it, Nagle's algorithm meets the
//! client's delayed ACK and adds ~40 ms stalls), each handshake runs in its own task bounded by
//! a timeout, so a slow client cannot hold up others, and only completed handshakes are
//! yielded. Failed handshakes are logged at debug level and dropped: a client without a valid
//! certificate never reaches a service. A failed `accept` (e.g. out of file descriptors) is
//! logged and retried after a short pause instead of spinning.

use std::time::Duration;

use futures::Stream;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Pause after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until `shutdown` (or until the stream is dropped) and
/// yields those whose TLS handshake completes within `handshake_timeout`, with the peer's
/// address.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    shutdown: CancellationToken,
) -> impl Stream<Item = (TlsStream<TcpStream>, std::net::SocketAddr)> + use<> {
    let (tx, rx) = mpsc::channel(64);
    let handshakes = TaskTracker::new();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                () = tx.closed() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            handshakes.spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
        // Handshakes in flight finish (or time out) before the stream ends.
        handshakes.close();
        handshakes.wait().await;
    });
    ReceiverStream::new(rx)
}

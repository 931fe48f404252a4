//! Connection limits shared by every listener that serves the outside world: a cap on open
//! connections (so the process never runs out of file descriptors for its probe and admin
//! ports), an idle timeout (a peer that sends nothing for that long is dropped: with HTTP/2
//! keepalive pings on, every live peer sends something), and a back-off after a failed
//! `accept` (e.g. `EMFILE`), instead of a busy loop.
//!
//! [`accept`] hands out [`Limited`] streams, each holding one connection permit until it is
//! dropped.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tokio_util::sync::CancellationToken;

/// First pause after a failed `accept`; doubled on every further failure up to
/// [`ACCEPT_BACKOFF_MAX`].
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause after failed `accept`s.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// File descriptors left for everything but the capped listeners (probe and admin ports,
/// database connections, TLS files, logs).
pub const FD_RESERVE: u64 = 64;

/// Limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A connection from which nothing was read for this long is closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 PING interval (servers that speak HTTP/2).
    pub keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 1000,
            idle_timeout: Some(Duration::from_secs(120)),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 2048,
        }
    }
}

/// The process's soft limit of open files (Linux: `/proc/self/limits`), if known.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.split_whitespace().nth(3)?;
    if soft == "unlimited" {
        return None;
    }
    soft.parse().ok()
}

impl ConnLimits {
    /// `max_connections`, lowered so that `FD_RESERVE` descriptors stay free under a soft
    /// open-files limit of `fd_limit` shared by `listeners` capped listeners.
    pub fn effective_max_connections(&self, fd_limit: Option<u64>, listeners: u64) -> usize {
        let Some(limit) = fd_limit else {
            return self.max_connections.max(1);
        };
        let room = limit.saturating_sub(FD_RESERVE) / listeners.max(1);
        let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
        self.max_connections.clamp(1, room)
    }
}

/// A connection holding one permit of its listener's cap, closed when idle too long.
#[derive(Debug)]
pub struct Limited<T> {
    io: T,
    idle_timeout: Option<Duration>,
    idle: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl<T> Limited<T> {
    /// Wraps `io` (holding `permit`).
    pub fn new(io: T, idle_timeout: Option<Duration>, permit: OwnedSemaphorePermit) -> Self {
        let deadline = Instant::now() + idle_timeout.unwrap_or(Duration::from_secs(86_400));
        Self {
            io,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep_until(deadline)),
            _permit: permit,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Splits into the connection and its permit (to wrap the connection in another stream,
    /// e.g. its TLS session, and [`Limited::new`] that with the same permit).
    pub fn into_parts(self) -> (T, OwnedSemaphorePermit) {
        (self.io, self._permit)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Limited<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before
                    && let Some(t) = self.idle_timeout
                {
                    self.idle.as_mut().reset(Instant::now() + t);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.idle_timeout.is_some() && self.idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for longer than the idle timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Limited<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for Limited<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Accepts one connection on `listener` once a permit of `cap` is free, backing off after
/// failed `accept`s (doubling from [`ACCEPT_BACKOFF`] to [`ACCEPT_BACKOFF_MAX`]). `None` once
/// `shutdown` fires.
pub async fn accept(
    listener: &TcpListener,
    cap: &Arc<Semaphore>,
    limits: &ConnLimits,
    shutdown: &CancellationToken,
) -> Option<(Limited<TcpStream>, std::net::SocketAddr)> {
    let mut backoff = ACCEPT_BACKOFF;
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => return None,
            p = Arc::clone(cap).acquire_owned() => p.ok()?,
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return None,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Without TCP_NODELAY, Nagle's algorithm meets the client's delayed ACK: ~40 ms
                // stalls.
                let _ = tcp.set_nodelay(true);
                return Some((Limited::new(tcp, limits.idle_timeout, permit), peer));
            }
            Err(e) => {
                drop(permit);
                tracing::warn!(error = %e, backoff = ?backoff, "accept failed; retrying after a pause");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

/// A stream of plaintext connections of `listener` under `limits` (see [`accept`]), ending on
/// `shutdown`. `fd_share`: how many capped listeners share the open-files limit.
pub fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
    fd_share: u64,
    shutdown: CancellationToken,
) -> impl futures::Stream<Item = io::Result<Limited<TcpStream>>> + Send + use<> {
    let cap = Arc::new(Semaphore::new(
        limits.effective_max_connections(open_files_limit(), fd_share),
    ));
    futures::stream::unfold(
        (listener, cap, limits, shutdown),
        |(listener, cap, limits, shutdown)| async move {
            let (conn, _) = accept(&listener, &cap, &limits, &shutdown).await?;
            Some((Ok(conn), (listener, cap, limits, shutdown)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_descriptors_for_the_probe_and_admin_ports() {
        let limits = ConnLimits::default();
        assert_eq!(limits.effective_max_connections(None, 1), 1000);
        assert_eq!(limits.effective_max_connections(Some(1_048_576), 1), 1000);
        assert_eq!(limits.effective_max_connections(Some(128), 1), 64);
        assert_eq!(limits.effective_max_connections(Some(128), 2), 32);
        assert_eq!(limits.effective_max_connections(Some(10), 1), 1);
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_idle_timeout() {
        use tokio::io::AsyncReadExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnLimits {
            idle_timeout: Some(Duration::from_millis(100)),
            ..ConnLimits::default()
        };
        let cap = Arc::new(Semaphore::new(1));
        let _client = TcpStream::connect(addr).await.unwrap();
        let token = CancellationToken::new();
        let (mut conn, _) = accept(&listener, &cap, &limits, &token).await.unwrap();
        assert_eq!(
            cap.available_permits(),
            0,
            "the connection holds the permit"
        );
        let mut buf = [0u8; 8];
        let err = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("the idle timeout fires")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(conn);
        assert_eq!(
            cap.available_permits(),
            1,
            "dropping the connection frees the permit"
        );
    }
}

//! Three-stage shutdown, shared by both roles.
//!
//! 1. The first SIGTERM/SIGINT cancels the *draining* token: readiness turns NOT_SERVING at
//!    once (gRPC health, `/readyz`) while every listener keeps accepting and serving for the
//!    drain delay, so the endpoints controller and kube-proxy (or KEDA's connection, or the API
//!    server's webhook client) move away before anything is refused.
//! 2. After the drain delay the *stop* token is cancelled: listeners stop accepting, in-flight
//!    calls finish, server streams end with status OK, bounded by the grace period.
//! 3. A second signal at any point exits at once.
//!
//! A critical task that stops (see [`super::tasks`]) cancels *stop* directly: no drain delay.
//! The draining token is a child of the stop token, so stopping also turns readiness off.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Everything stopped within the grace period.
    Clean,
    /// The grace period ran out.
    GraceExpired,
    /// A second signal arrived.
    Forced,
}

/// How long each stage of the shutdown lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainTimes {
    /// Readiness off, still serving (stage 1).
    pub delay: Duration,
    /// In-flight calls finishing, no new connections (stage 2).
    pub grace: Duration,
}

/// The readiness token of a process whose listeners stop on `stop`: cancelled on the first
/// signal (by [`run_until_signal`]) and whenever `stop` is.
pub fn draining_token(stop: &CancellationToken) -> CancellationToken {
    stop.child_token()
}

/// Waits for the first signal (or for `stop`, or for everything to end by itself), cancels
/// `draining`, keeps serving for `times.delay`, cancels `stop`, then waits for `drained` at
/// most `times.grace`. A second signal ends either wait at once.
pub async fn run_until_signal<F>(
    stop: CancellationToken,
    draining: CancellationToken,
    times: DrainTimes,
    drained: F,
) -> Drain
where
    F: std::future::Future<Output = ()>,
{
    tokio::pin!(drained);
    let signalled = tokio::select! {
        () = signal() => true,
        () = stop.cancelled() => false,
        () = &mut drained => return Drain::Clean,
    };
    draining.cancel();
    if signalled && !times.delay.is_zero() {
        tracing::info!(
            drain_delay = ?times.delay,
            "draining: readiness NOT_SERVING, still serving until the drain delay ends (signal again to exit now)"
        );
        tokio::select! {
            () = tokio::time::sleep(times.delay) => {}
            () = stop.cancelled() => {}
            () = signal() => return Drain::Forced,
        }
    }
    tracing::info!(grace = ?times.grace, "shutting down: no new connections, finishing calls (signal again to exit now)");
    stop.cancel();
    tokio::select! {
        () = &mut drained => Drain::Clean,
        () = tokio::time::sleep(times.grace) => Drain::GraceExpired,
        () = signal() => Drain::Forced,
    }
}

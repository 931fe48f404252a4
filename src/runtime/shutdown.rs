//! Two-stage shutdown: the first SIGTERM/SIGINT starts a graceful drain bounded by a grace
//! period; a second one exits at once.

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

/// Waits for the first signal, cancels `token`, then waits for `drained` at most `grace` or
/// until a second signal.
pub async fn run_until_signal<F>(token: CancellationToken, grace: Duration, drained: F) -> Drain
where
    F: std::future::Future<Output = ()>,
{
    tokio::pin!(drained);
    tokio::select! {
        () = signal() => {}
        () = token.cancelled() => {}
        () = &mut drained => return Drain::Clean,
    }
    tracing::info!(grace = ?grace, "shutting down: readiness NOT_SERVING, draining calls (signal again to exit now)");
    token.cancel();
    tokio::select! {
        () = &mut drained => Drain::Clean,
        () = tokio::time::sleep(grace) => Drain::GraceExpired,
        () = signal() => Drain::Forced,
    }
}

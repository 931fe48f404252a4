//! gRPC health (`grpc.health.v1`) kept in step with the snapshot's freshness.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::scaler::snapshot::SnapshotStore;

/// Health service name: the process is up.
pub const LIVENESS: &str = "liveness";
/// Health service name: a fresh snapshot exists (also drives `""`).
pub const READINESS: &str = "readiness";

pub(super) async fn set_ready(reporter: &HealthReporter, ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status(READINESS, status).await;
    reporter.set_service_status("", status).await;
}

/// Keeps `readiness` and `""` SERVING exactly while a fresh snapshot exists; NOT_SERVING at
/// once on shutdown.
pub(super) async fn track_readiness(
    reporter: HealthReporter,
    store: SnapshotStore,
    max_staleness: Duration,
    shutdown: CancellationToken,
) {
    let mut rx = store.subscribe();
    loop {
        let published = rx.borrow_and_update().clone();
        let fresh = published.fresh(max_staleness);
        set_ready(&reporter, fresh.is_ok()).await;
        let recheck = match &fresh {
            Ok(s) => max_staleness.saturating_sub(s.age()) + Duration::from_millis(10),
            Err(_) => Duration::from_secs(3600),
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(recheck) => {}
        }
    }
    set_ready(&reporter, false).await;
}

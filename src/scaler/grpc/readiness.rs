//! gRPC health (`grpc.health.v1`) kept in step with the snapshot's freshness and the drain.
//!
//! - `liveness` is SERVING while the process runs; `readiness` and `""` are SERVING exactly
//!   while a fresh snapshot exists and the process is not draining.
//! - A status is set only when it changes, and [`StoppingHealth`] sends a `Watch` client only
//!   changes (tonic-health's `Watch` repeats a status every time it is set), and ends every
//!   `Watch` stream with OK when the listeners stop, so an open `Watch` never holds up a drain.

use std::{pin::Pin, time::Duration};

use futures::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::{
    ServingStatus,
    pb::{HealthCheckRequest, HealthCheckResponse, health_server::Health},
    server::{HealthReporter, HealthService},
};

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
/// once when `draining` fires (first signal, or any stop). Sets the status only on change.
pub(super) async fn track_readiness(
    reporter: HealthReporter,
    store: SnapshotStore,
    max_staleness: Duration,
    draining: CancellationToken,
) {
    let mut rx = store.subscribe();
    let mut last = None;
    loop {
        // Fault injection for the proofs (feature `failpoints`; nothing in other builds).
        fail::fail_point!("readiness-tracker");
        let published = rx.borrow_and_update().clone();
        let fresh = published.fresh(max_staleness);
        if last != Some(fresh.is_ok()) {
            set_ready(&reporter, fresh.is_ok()).await;
            last = Some(fresh.is_ok());
        }
        let recheck = match &fresh {
            Ok(s) => max_staleness.saturating_sub(s.age()) + Duration::from_millis(10),
            Err(_) => Duration::from_secs(3600),
        };
        tokio::select! {
            () = draining.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(recheck) => {}
        }
    }
    set_ready(&reporter, false).await;
}

/// tonic-health's service, with `Watch` streams that send only changes and end with OK when
/// `stop` fires.
#[derive(Debug)]
pub struct StoppingHealth {
    inner: HealthService,
    stop: CancellationToken,
}

impl StoppingHealth {
    /// Serves the statuses of `reporter` until `stop`.
    pub fn new(reporter: HealthReporter, stop: CancellationToken) -> Self {
        Self {
            inner: HealthService::from_health_reporter(reporter),
            stop,
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for StoppingHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(request).await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let inner = self.inner.watch(request).await?.into_inner();
        let mut last: Option<i32> = None;
        let changes = inner
            .filter(move |item| {
                let keep = match item {
                    Ok(r) if last == Some(r.status) => false,
                    Ok(r) => {
                        last = Some(r.status);
                        true
                    }
                    Err(_) => true,
                };
                std::future::ready(keep)
            })
            .take_until(self.stop.clone().cancelled_owned());
        Ok(Response::new(Box::pin(changes)))
    }
}

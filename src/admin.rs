//! The scaler's plain-HTTP admin port: `/livez`, `/readyz`, `/metrics`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{metrics::Metrics, snapshot::SnapshotStore, worker_queue::WorkerQueues};

#[derive(Debug, Clone)]
struct AdminState {
    store: SnapshotStore,
    declared: Arc<WorkerQueues>,
    metrics: Metrics,
    max_staleness: Duration,
    shutdown: CancellationToken,
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        );
    }
    match s.store.current().fresh(s.max_staleness) {
        Ok(_) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(&s.store, &s.declared, s.max_staleness),
    )
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address and the task.
pub async fn start(
    addr: SocketAddr,
    store: SnapshotStore,
    declared: Arc<WorkerQueues>,
    metrics: Metrics,
    max_staleness: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = AdminState {
        store,
        declared,
        metrics,
        max_staleness,
        shutdown: shutdown.clone(),
    };
    let app = Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
    Ok((bound, task))
}

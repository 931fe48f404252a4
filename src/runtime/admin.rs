//! The one plain-HTTP admin server of both roles: `/livez`, `/readyz`, `/metrics`.
//!
//! What "ready" means and which metrics exist belong to the role; it describes them through
//! [`AdminView`]. `/livez` answers `ok` as long as the process serves HTTP.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use super::tasks::Supervisor;

/// Content type of `/metrics` (OpenMetrics text, as `prometheus-client` encodes it).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin server shows of a role.
pub trait AdminView: Send + Sync + 'static {
    /// `Ok(body)`: ready (200); `Err(body)`: not ready (503). Bodies end with a newline.
    fn readiness(&self) -> Result<String, String>;
    /// The metrics, OpenMetrics text.
    fn metrics(&self) -> String;
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(view): State<Arc<dyn AdminView>>) -> impl IntoResponse {
    match view.readiness() {
        Ok(body) => (StatusCode::OK, body),
        Err(body) => (StatusCode::SERVICE_UNAVAILABLE, body),
    }
}

async fn metrics(State(view): State<Arc<dyn AdminView>>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, OPENMETRICS)],
        view.metrics(),
    )
}

/// The admin routes over `view`.
pub fn router(view: Arc<dyn AdminView>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(view)
}

/// Binds `addr`, then serves `view` until shutdown as a critical task of `tasks`. Returns the
/// bound address.
pub async fn start(
    addr: SocketAddr,
    view: Arc<dyn AdminView>,
    tasks: &Supervisor,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    serve(listener, view, tasks);
    Ok(bound)
}

/// Serves `view` on an already bound listener until shutdown, as a critical task of `tasks`.
pub fn serve(listener: TcpListener, view: Arc<dyn AdminView>, tasks: &Supervisor) {
    let shutdown = tasks.shutdown().clone();
    tasks.critical("admin server", async move {
        axum::serve(listener, router(view))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    });
}

//! The one plain-HTTP admin server of both roles: `/livez`, `/readyz`, `/metrics`.
//!
//! What "ready" means and which metrics exist belong to the role; it describes them through
//! [`AdminView`]. `/livez` answers `ok` as long as the process serves HTTP.
//!
//! `/metrics` is OpenMetrics text unless the scraper's `Accept` header asks for the Prometheus
//! text format 0.0.4 (`text/plain`) and not for OpenMetrics; then it is converted
//! ([`to_prometheus_text`]).

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use super::tasks::Supervisor;

/// Content type of `/metrics` (OpenMetrics text, as `prometheus-client` encodes it).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of `/metrics` in the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for the Prometheus text format rather than OpenMetrics:
/// it names `text/plain` and does not name OpenMetrics with a higher (or equal) preference.
pub fn wants_prometheus_text(accept: &str) -> bool {
    let quality = |wanted: &str| {
        accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';').map(str::trim);
                let media = parts.next()?;
                if !media.eq_ignore_ascii_case(wanted) {
                    return None;
                }
                let q = parts
                    .filter_map(|p| p.strip_prefix("q="))
                    .find_map(|q| q.parse::<f32>().ok())
                    .unwrap_or(1.0);
                Some(q)
            })
            .fold(None, |best: Option<f32>, q| {
                Some(best.map_or(q, |b| b.max(q)))
            })
    };
    match (
        quality("text/plain"),
        quality("application/openmetrics-text"),
    ) {
        (Some(text), Some(open)) => text > open,
        (Some(text), None) => text > 0.0,
        _ => false,
    }
}

/// Converts OpenMetrics text (as `prometheus-client` writes it) to the Prometheus text format
/// 0.0.4: no `# EOF` nor `# UNIT` lines, and counters described under their `_total` sample
/// name.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let described = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(described.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

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

async fn metrics(
    State(view): State<Arc<dyn AdminView>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if wants_prometheus_text(accept) {
        (
            [(axum::http::header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&view.metrics()),
        )
    } else {
        (
            [(axum::http::header::CONTENT_TYPE, OPENMETRICS)],
            view.metrics(),
        )
    }
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
) -> Result<SocketAddr, super::ListenError> {
    let (listener, bound) = super::listen(addr).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_decides_the_format() {
        assert!(!wants_prometheus_text(""));
        assert!(!wants_prometheus_text("*/*"));
        assert!(wants_prometheus_text("text/plain;version=0.0.4"));
        assert!(wants_prometheus_text(
            "text/plain; version=0.0.4; q=0.9, */*; q=0.1"
        ));
        // Prometheus' default: OpenMetrics preferred.
        assert!(!wants_prometheus_text(
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1"
        ));
        assert!(wants_prometheus_text(
            "application/openmetrics-text;version=1.0.0;q=0.2,text/plain;version=0.0.4;q=0.4"
        ));
    }

    #[test]
    fn openmetrics_converts_to_text_0_0_4() {
        let om = "# HELP x_rpcs gRPC calls.\n# TYPE x_rpcs counter\nx_rpcs_total{code=\"ok\"} 3\n\
                  # HELP x_ready Ready.\n# TYPE x_ready gauge\nx_ready 1\n# UNIT x_d seconds\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP x_rpcs_total gRPC calls.\n# TYPE x_rpcs_total counter\nx_rpcs_total{code=\"ok\"} 3\n\
             # HELP x_ready Ready.\n# TYPE x_ready gauge\nx_ready 1\n"
        );
    }
}

//! `POST /mutate`: the router and its layers (timeout, early 413 on a declared
//! `Content-Length`, the in-flight bound, the body limit) and the handler, a thin adapter over
//! [`review::handle`] that logs one line per review and counts it.

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use tower_http::timeout::TimeoutLayer;

use super::{AppState, WebhookConfig};
use crate::webhook::review::{self, Outcome, ReviewError};

pub(super) fn mutate_router(state: Arc<AppState>, config: &WebhookConfig) -> Router {
    let max_body = config.max_body_bytes;
    let counted = Arc::clone(&state);
    // Outermost first: the timeout covers the wait for a slot; the Content-Length check
    // answers before waiting; the slot is held while the body is read and the review decoded.
    Router::new()
        .route("/mutate", post(mutate_handler))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.max_in_flight.max(1),
        ))
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let state = Arc::clone(&counted);
                async move {
                    match declared_length(&request) {
                        Some(len) if len > max_body => {
                            state.metrics.review(Outcome::Invalid, 0.0);
                            tracing::warn!(
                                content_length = len,
                                limit = max_body,
                                "admission review rejected: body over --max-body-bytes"
                            );
                            (
                                StatusCode::PAYLOAD_TOO_LARGE,
                                format!(
                                    "request body of {len} bytes is over the limit of {max_body}\n"
                                ),
                            )
                                .into_response()
                        }
                        _ => next.run(request).await,
                    }
                }
            },
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        .with_state(state)
}

/// Bytes a connection reads ahead of the handler (HTTP/1 buffer, HTTP/2 flow-control windows).
pub(super) const READ_AHEAD: u32 = 64 * 1024;
/// Concurrent HTTP/2 streams per connection (the API server sends one review per stream).
pub(super) const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// The request's declared `Content-Length`, if any.
fn declared_length(request: &axum::extract::Request) -> Option<usize> {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn mutate_handler(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let (outcome, response) = answer(&state, body);
    state
        .metrics
        .review(outcome, started.elapsed().as_secs_f64());
    response
}

fn answer(state: &AppState, body: Result<Bytes, BytesRejection>) -> (Outcome, Response) {
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            tracing::warn!(status = status.as_u16(), error = %rejection.body_text(), "admission review rejected");
            return (
                Outcome::Invalid,
                (status, rejection.body_text()).into_response(),
            );
        }
    };
    let Some(policy) = state.policy.get() else {
        tracing::warn!("admission review refused: no policy loaded yet");
        return (
            Outcome::Unavailable,
            (StatusCode::SERVICE_UNAVAILABLE, "no policy loaded yet\n").into_response(),
        );
    };
    match review::handle(&policy, &state.metrics, &body) {
        Ok(h) => {
            let s = &h.summary;
            tracing::info!(
                uid = %s.uid,
                namespace = %s.namespace,
                pod = %s.pod,
                task = s.task.as_deref().unwrap_or("-"),
                outcome = %h.outcome,
                patch_ops = s.patch_ops,
                warnings = ?s.warnings,
                "admission review: {}",
                s.detail
            );
            (h.outcome, Json(h.response).into_response())
        }
        Err(e @ (ReviewError::BadReview(_) | ReviewError::BadPod { .. })) => {
            tracing::warn!(error = %e, "admission review rejected");
            (
                Outcome::Invalid,
                (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "admission review failed");
            (
                Outcome::Error,
                (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
            )
        }
    }
}

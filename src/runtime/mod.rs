//! Process plumbing shared by the scaler and the webhook, with no knowledge of either:
//!
//! - [`shutdown`]: the two-stage SIGTERM drain.
//! - [`telemetry`]: logging setup.
//! - [`admin`]: the one plain-HTTP admin server (`/livez`, `/readyz`, `/metrics`).
//! - [`reload`]: files re-read when their content changes.
//! - [`tls`]: certificate store, client CA, the one TLS acceptor.
//! - [`tasks`]: task supervision (a critical task that ends stops the process).

pub mod admin;
pub mod reload;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;
pub mod tls;

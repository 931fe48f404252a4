//! The scaler's configuration types, independent of the command line (`cli` fills them).

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

pub use super::cluster::WorkersConfig;
use crate::runtime::{conn::ConnLimits, tls::reloading::TlsFiles};

/// Where the Airflow metadata database is and how to talk to it. `Debug` never shows the URL
/// (it may hold a password).
#[derive(Clone, PartialEq, Eq)]
pub struct DbConfig {
    /// Database URL (sqlx or SQLAlchemy form); `None`: `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`.
    pub database_url: Option<String>,
    /// File holding the password; replaces any password in the URL.
    pub database_password_file: Option<PathBuf>,
    /// PostgreSQL schema holding Airflow's tables.
    pub database_schema: Option<String>,
    /// Disable sqlx's statement cache (PgBouncer in transaction pooling mode).
    pub pgbouncer: bool,
    /// Timeout for connecting and for one refresh query.
    pub database_timeout: Duration,
}

impl DbConfig {
    /// A configuration for this URL with default settings (5 s timeout).
    pub fn url(url: impl Into<String>) -> Self {
        Self {
            database_url: Some(url.into()),
            database_password_file: None,
            database_schema: None,
            pgbouncer: false,
            database_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "<redacted>"),
            )
            .field("database_password_file", &self.database_password_file)
            .field("database_schema", &self.database_schema)
            .field("pgbouncer", &self.pgbouncer)
            .field("database_timeout", &self.database_timeout)
            .finish()
    }
}

/// What `serve` runs: the listeners, the worker-queue file, the refresh and the drain.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// gRPC address (ExternalScaler, health, reflection).
    pub grpc_addr: SocketAddr,
    /// Plaintext health-only listener for Kubernetes' native gRPC probes.
    pub probe_addr: SocketAddr,
    /// Plain-HTTP admin listener.
    pub admin_addr: SocketAddr,
    /// Worker-queue file (optional).
    pub worker_queues: Option<PathBuf>,
    /// How often the refresh query runs.
    pub refresh_interval: Duration,
    /// Upper bound of the refresh's duty cycle, in (0, 1].
    pub refresh_max_duty_cycle: f64,
    /// How old the last good snapshot may be.
    pub max_staleness: Duration,
    /// TLS of the gRPC port.
    pub tls: Option<TlsFiles>,
    /// Connection limits of the gRPC port.
    pub limits: ConnLimits,
    /// How long the listeners keep serving, readiness off, after SIGTERM.
    pub drain_delay: Duration,
    /// How long in-flight calls get once the listeners stop.
    pub shutdown_grace: Duration,
    /// The database.
    pub db: DbConfig,
    /// The workers as Kubernetes runs them, and Airflow's parallelism.
    pub workers: WorkersConfig,
}

/// How `explain` prints its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Aligned text table.
    Table,
    /// One JSON document.
    Json,
}

/// What `explain` reads.
#[derive(Debug, Clone)]
pub struct ExplainConfig {
    /// Worker-queue file (optional).
    pub worker_queues: Option<PathBuf>,
    /// Output format.
    pub output: OutputFormat,
    /// The database.
    pub db: DbConfig,
    /// The workers as Kubernetes runs them, and Airflow's parallelism.
    pub workers: WorkersConfig,
}

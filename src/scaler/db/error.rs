//! [`DbError`]: what can go wrong with the metadata database, without secrets.

use std::time::Duration;

/// Everything that can go wrong in this layer. Messages are meant for humans and never hold a
/// secret: URLs are redacted and driver messages are scrubbed of the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// The URL or another setting is wrong; retrying will not help.
    #[error("database configuration: {0}")]
    Config(String),
    /// A file the configuration names cannot be read (`--database-password-file`).
    #[error("cannot read {what} {path}: {reason}")]
    Unreadable {
        /// Which setting names the file.
        what: &'static str,
        /// The file.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// No connection could be opened, or the open one broke.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// What the driver said (scrubbed).
        reason: String,
    },
    /// The database answered with an error (or an answer this crate cannot read).
    #[error("query on {url} failed: {reason}")]
    Query {
        /// Redacted URL.
        url: String,
        /// What the database said (scrubbed).
        reason: String,
    },
    /// No answer within `--database-timeout`.
    #[error("{url} did not answer within {} ({what})", humantime::format_duration(*.timeout))]
    Timeout {
        /// Redacted URL.
        url: String,
        /// What was being waited for.
        what: &'static str,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The database has no `task_instance` table.
    #[error("{url}{where_} has no task_instance table — not an Airflow metadata database?")]
    NotAirflow {
        /// Redacted URL.
        url: String,
        /// Where the table was looked for (e.g. ` (search_path airflow)`), or empty.
        where_: String,
    },
}

impl DbError {
    /// A short, stable label for metrics: `config`, `connect`, `query`, `timeout` or
    /// `not_airflow`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) | Self::Unreadable { .. } => "config",
            Self::Connect { .. } => "connect",
            Self::Query { .. } => "query",
            Self::Timeout { .. } => "timeout",
            Self::NotAirflow { .. } => "not_airflow",
        }
    }

    /// A connection-level failure, scrubbed of `secrets`.
    pub(crate) fn connect(url: &str, e: &sqlx::Error, secrets: &[String]) -> Self {
        Self::Connect {
            url: url.to_string(),
            reason: scrub(&driver_message(e), secrets),
        }
    }

    /// A failed statement, scrubbed of `secrets`.
    pub(crate) fn query(url: &str, e: &sqlx::Error, secrets: &[String]) -> Self {
        Self::Query {
            url: url.to_string(),
            reason: scrub(&driver_message(e), secrets),
        }
    }
}

/// Errors after which the connection must not be used again.
pub(super) fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

/// The useful part of a driver error, without sqlx's generic prefixes.
fn driver_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (code {code})", db.message()),
            None => db.message().to_string(),
        },
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Tls(tls) => format!("TLS: {tls}"),
        sqlx::Error::PoolClosed => "the connection pool is closed".into(),
        other => other.to_string(),
    }
}

/// Replaces every secret in `message` with `***`.
pub(super) fn scrub(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

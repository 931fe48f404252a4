//! The Airflow metadata database, read-only: schema detection and the one refresh query.
//!
//! [`MetadataDb`] owns a small sqlx pool (one connection, not kept open by force) for
//! PostgreSQL, MySQL or SQLite. The SQL of each dialect lives in [`dialect`]; the code that runs
//! it and maps the rows is written once, generic over the sqlx driver.
//!
//! Secrets: the password never appears in an error ([`DbError`]) or a log line. Errors carry
//! the redacted URL ([`MetadataDb::redacted_url`]) and a driver message scrubbed of the password.

pub mod dialect;
mod error;
mod options;
pub mod url;

use std::{fmt, sync::Arc, time::Duration};

use sqlx::{
    ColumnIndex, ConnectOptions as _, Database, Decode, Executor, IntoArguments, Pool, Row, Type,
    mysql::MySqlPoolOptions,
    pool::{PoolConnection, PoolOptions},
    postgres::PgPoolOptions,
    sqlite::SqlitePoolOptions,
};

pub use self::dialect::Dialect;
pub use self::error::DbError;
use self::error::is_connection_error;
pub use self::url::{ParsedUrl, UrlSource, resolve_url};
use self::{
    options::{ConnectOptions, Settings},
    url::read_password_file,
};
use crate::scaler::{
    config::DbConfig,
    snapshot::{AirflowSchema, QueueCount, TaskState},
};

/// Longest wait for the diagnostic connection attempt made after a pool timeout.
const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections older than this are replaced (bounds the life of a half-dead connection).
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Idle connections are closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What to check when a SQLite file cannot be opened. The scaler opens it read-only and never
/// creates it. SQLAlchemy's `sqlite:///relative.db` (three slashes) names a path relative to
/// the working directory, which is rarely what a service wants.
fn sqlite_hint(path: &std::path::Path) -> String {
    if path.is_relative() {
        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "?".into());
        format!(
            " ({} is a relative path, resolved from the working directory {cwd}; an absolute \
             path takes four slashes: sqlite:////path/to/airflow.db)",
            path.display()
        )
    } else {
        format!(
            " (the file {} must exist: the scaler opens SQLite read-only and never creates it)",
            path.display()
        )
    }
}

/// The pool of one dialect. Code that runs SQL matches on this only to pick the pool.
#[derive(Clone)]
enum Pools {
    Postgres(Pool<sqlx::Postgres>),
    MySql(Pool<sqlx::MySql>),
    Sqlite(Pool<sqlx::Sqlite>),
}

struct Inner {
    pools: Pools,
    dialect: Dialect,
    redacted: String,
    /// Added to connection errors: what to check for this URL (SQLite: the file's path).
    connect_hint: Option<String>,
    schema: Option<String>,
    secrets: Vec<String>,
    timeout: Duration,
    persistent: bool,
    /// What the handle was built from (to rebuild it when the password file changes).
    config: DbConfig,
    /// The password read from `--database-password-file`, if one is configured.
    file_password: Option<String>,
}

/// A read-only handle on the Airflow metadata database. Cheap to clone.
#[derive(Clone)]
pub struct MetadataDb {
    inner: Arc<Inner>,
}

impl fmt::Debug for MetadataDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataDb")
            .field("url", &self.inner.redacted)
            .field("schema", &self.inner.schema)
            .field("timeout", &self.inner.timeout)
            .field("pgbouncer", &!self.inner.persistent)
            .finish()
    }
}

impl MetadataDb {
    /// Resolves the URL (see [`resolve_url`]), reads the password file and prepares the pool.
    ///
    /// Does not touch the network: only configuration errors are reported here, so a scaler
    /// can start (and report itself not ready) while the database is down. The first query
    /// connects; [`MetadataDb::ping`] checks reachability explicitly. Needs a Tokio runtime.
    pub async fn connect(args: &DbConfig) -> Result<Self, DbError> {
        Self::build(args)
    }

    fn build(args: &DbConfig) -> Result<Self, DbError> {
        let (raw, source) = resolve_url(args)?;
        let mut url = ParsedUrl::parse(&raw)?;
        let mut secrets = url.secrets();
        let mut file_password = None;
        if let Some(file) = &args.database_password_file {
            let password = read_password_file(file)?;
            secrets.push(password.clone());
            url.password = Some(password.clone());
            file_password = Some(password);
        }
        let settings = Settings {
            schema: args.database_schema.clone().filter(|s| !s.is_empty()),
            pgbouncer: args.pgbouncer,
        };
        let options = url.connect_options(&settings)?;
        let timeout = args.database_timeout.max(Duration::from_millis(1));
        let pools = match options {
            ConnectOptions::Postgres(o) => {
                Pools::Postgres(pool_options(PgPoolOptions::new(), timeout).connect_lazy_with(o))
            }
            ConnectOptions::MySql(o) => {
                Pools::MySql(pool_options(MySqlPoolOptions::new(), timeout).connect_lazy_with(o))
            }
            ConnectOptions::Sqlite(o) => {
                Pools::Sqlite(pool_options(SqlitePoolOptions::new(), timeout).connect_lazy_with(o))
            }
        };
        let redacted = url.redacted();
        let connect_hint = url.path.as_deref().map(sqlite_hint);
        tracing::debug!(
            url = %redacted,
            ?source,
            dropped_params = ?url.dropped_params,
            "Airflow metadata database configured"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                pools,
                dialect: url.dialect,
                redacted,
                connect_hint,
                schema: settings.schema,
                secrets,
                timeout,
                persistent: !settings.pgbouncer,
                config: args.clone(),
                file_password,
            }),
        })
    }

    /// Whether `--database-password-file` now holds another password than the one in use
    /// (a rotated Secret). An unreadable file counts as unchanged (the error shows at the
    /// next rebuild, not on every tick).
    pub fn password_file_changed(&self) -> bool {
        let Some(file) = &self.inner.config.database_password_file else {
            return false;
        };
        match read_password_file(file) {
            Ok(now) => Some(&now) != self.inner.file_password.as_ref(),
            Err(_) => false,
        }
    }

    /// A new handle (new pool) built from the same configuration, reading the password file
    /// again. The old handle's connections close when it is dropped.
    pub fn rebuild(&self) -> Result<Self, DbError> {
        Self::build(&self.inner.config)
    }

    /// The URL without password or parameters, e.g. `postgres://airflow@db:5432/airflow`.
    pub fn redacted_url(&self) -> &str {
        &self.inner.redacted
    }

    /// Which SQL dialect the database speaks.
    pub fn dialect(&self) -> Dialect {
        self.inner.dialect
    }

    /// `--database-timeout`: the limit for getting a connection and for one query.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Checks that a connection can be had (opening one if none is idle).
    pub async fn ping(&self) -> Result<(), DbError> {
        match &self.inner.pools {
            Pools::Postgres(p) => self.acquire(p).await.map(drop),
            Pools::MySql(p) => self.acquire(p).await.map(drop),
            Pools::Sqlite(p) => self.acquire(p).await.map(drop),
        }
    }

    /// Detects which Airflow generation the `task_instance` table belongs to.
    pub async fn detect_schema(&self) -> Result<AirflowSchema, DbError> {
        let sql = self.inner.dialect.sql().detect_columns;
        let columns = match &self.inner.pools {
            Pools::Postgres(p) => self.fetch(p, sql, map_strings).await?,
            Pools::MySql(p) => self.fetch(p, sql, map_strings).await?,
            Pools::Sqlite(p) => self.fetch(p, sql, map_strings).await?,
        };
        schema_from_columns(&columns).ok_or_else(|| DbError::NotAirflow {
            url: self.inner.redacted.clone(),
            where_: self
                .inner
                .schema
                .as_ref()
                .map(|s| format!(" (search_path {s})"))
                .unwrap_or_default(),
        })
    }

    /// Runs the one refresh query: scheduled, queued and running task instances grouped by
    /// queue, state, (when `schema` has the column) executor and, for running rows, the
    /// worker's hostname. A NULL queue is read as `""`.
    pub async fn read_counts(&self, schema: AirflowSchema) -> Result<Vec<QueueCount>, DbError> {
        let with_executor = schema.has_executor_column();
        let sql = self.inner.dialect.counts_sql(with_executor);
        match &self.inner.pools {
            Pools::Postgres(p) => {
                self.fetch(p, sql, |rows| map_counts(rows, with_executor))
                    .await
            }
            Pools::MySql(p) => {
                self.fetch(p, sql, |rows| map_counts(rows, with_executor))
                    .await
            }
            Pools::Sqlite(p) => {
                self.fetch(p, sql, |rows| map_counts(rows, with_executor))
                    .await
            }
        }
    }

    /// Closes every connection (further calls fail).
    pub async fn close(&self) {
        match &self.inner.pools {
            Pools::Postgres(p) => p.close().await,
            Pools::MySql(p) => p.close().await,
            Pools::Sqlite(p) => p.close().await,
        }
    }

    /// Gets a connection; on a pool timeout, finds out why with one direct connection attempt
    /// (sqlx retries "connection refused" until the deadline and then only says "timed out").
    async fn acquire<DB: Database>(&self, pool: &Pool<DB>) -> Result<PoolConnection<DB>, DbError> {
        match pool.acquire().await {
            Ok(conn) => Ok(conn),
            Err(sqlx::Error::PoolTimedOut) => {
                let options = pool.connect_options();
                let limit = self.inner.timeout.min(DIAGNOSE_TIMEOUT);
                match tokio::time::timeout(limit, options.connect()).await {
                    Ok(Err(e)) => Err(self.connect_error(&e)),
                    Ok(Ok(conn)) => {
                        let _ = tokio::time::timeout(limit, sqlx::Connection::close(conn)).await;
                        Err(self.timeout_error("waiting for a connection"))
                    }
                    Err(_) => Err(self.timeout_error("opening a connection")),
                }
            }
            Err(e) => Err(self.connect_error(&e)),
        }
    }

    /// Runs `sql` under the query timeout and maps its rows. The mapping is generic over the
    /// driver; each dialect's pool only picks the instance.
    async fn fetch<DB, T>(
        &self,
        pool: &Pool<DB>,
        sql: &'static str,
        map: impl FnOnce(&[DB::Row]) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbError>
    where
        DB: Database,
        DB::Arguments: IntoArguments<DB>,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        let mut conn = self.acquire(pool).await?;
        // The simple query protocol: the constant SQL goes out as one message, answered in one
        // round trip, with no prepared statement at all. Behind PgBouncer in transaction (or
        // statement) pooling the extended protocol's Parse … Sync / Bind … Sync pairs can land
        // on different server connections and mix up answers between clients (seen in
        // tests/pgbouncer.rs as rows of another client's statement); this cannot.
        let query = sqlx::raw_sql(sql).fetch_all(&mut *conn);
        let result = tokio::time::timeout(self.inner.timeout, query).await;
        match result {
            Ok(Ok(rows)) => map(&rows).map_err(|e| self.query_error(&e)),
            Ok(Err(e)) => {
                if is_connection_error(&e) {
                    // Never hand a broken connection out again.
                    conn.close_on_drop();
                    Err(self.connect_error(&e))
                } else {
                    Err(self.query_error(&e))
                }
            }
            Err(_) => {
                // The connection is mid-query: close it rather than reuse it.
                conn.close_on_drop();
                Err(self.timeout_error("running the refresh query"))
            }
        }
    }

    fn connect_error(&self, e: &sqlx::Error) -> DbError {
        let mut error = DbError::connect(&self.inner.redacted, e, &self.inner.secrets);
        if let (DbError::Connect { reason, .. }, Some(hint)) =
            (&mut error, &self.inner.connect_hint)
        {
            reason.push_str(hint);
        }
        error
    }

    fn query_error(&self, e: &sqlx::Error) -> DbError {
        DbError::query(&self.inner.redacted, e, &self.inner.secrets)
    }

    fn timeout_error(&self, what: &'static str) -> DbError {
        DbError::Timeout {
            url: self.inner.redacted.clone(),
            what,
            timeout: self.inner.timeout,
        }
    }
}

fn pool_options<DB: Database>(o: PoolOptions<DB>, timeout: Duration) -> PoolOptions<DB> {
    // One refresh at a time needs one connection. No ping before use: it would add a round
    // trip to every refresh (and a second connection at start-up); a connection that died
    // while idle fails one refresh, is closed, and the next refresh reconnects — well within
    // --max-staleness. (Measured: 3 → 2 round trips per refresh; start → SERVING 190 → 96 ms.)
    o.max_connections(1)
        .min_connections(0)
        .acquire_timeout(timeout)
        .test_before_acquire(false)
        .max_lifetime(MAX_LIFETIME)
        .idle_timeout(IDLE_TIMEOUT)
}

/// Which schema the columns of `task_instance` describe; `None` when there is no table.
fn schema_from_columns(columns: &[String]) -> Option<AirflowSchema> {
    if columns.is_empty() {
        return None;
    }
    let has = |name: &str| columns.iter().any(|c| c.eq_ignore_ascii_case(name));
    Some(match (has("executor"), has("id")) {
        (false, _) => AirflowSchema::Airflow2,
        (true, false) => AirflowSchema::Airflow2WithExecutor,
        (true, true) => AirflowSchema::Airflow3,
    })
}

fn map_strings<R>(rows: &[R]) -> Result<Vec<String>, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
{
    rows.iter().map(|r| r.try_get::<String, _>(0)).collect()
}

fn map_counts<R>(rows: &[R], with_executor: bool) -> Result<Vec<QueueCount>, sqlx::Error>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let queue: String = row.try_get(0)?;
        let state: String = row.try_get(1)?;
        let (executor, host, count): (Option<String>, Option<String>, i64) = if with_executor {
            (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?)
        } else {
            (None, row.try_get(2)?, row.try_get(3)?)
        };
        // The query only selects these states; anything else would be a server quirk.
        let Some(state) = TaskState::from_db(&state) else {
            continue;
        };
        out.push(QueueCount {
            queue,
            state,
            executor,
            hostname: host.filter(|h| !h.is_empty() && state == TaskState::Running),
            count: u64::try_from(count).unwrap_or(0),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

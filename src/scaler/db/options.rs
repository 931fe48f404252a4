//! From a parsed URL (and the database settings) to sqlx's connect options.

use sqlx::{mysql::MySqlConnectOptions, postgres::PgConnectOptions, sqlite::SqliteConnectOptions};

use super::{
    DbError, Dialect,
    url::{APPLICATION_NAME, ParsedUrl, SslMode},
};

/// Connection settings beyond the URL.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// PostgreSQL `search_path`.
    pub schema: Option<String>,
    /// No named prepared statements (PgBouncer transaction pooling).
    pub pgbouncer: bool,
}

/// sqlx connect options of one dialect.
#[derive(Clone)]
pub(crate) enum ConnectOptions {
    Postgres(PgConnectOptions),
    MySql(MySqlConnectOptions),
    Sqlite(SqliteConnectOptions),
}

impl ParsedUrl {
    /// Builds the driver's connect options.
    pub(crate) fn connect_options(&self, settings: &Settings) -> Result<ConnectOptions, DbError> {
        if settings.schema.is_some() && self.dialect != Dialect::Postgres {
            return Err(DbError::Config(format!(
                "--database-schema applies to PostgreSQL only, not {}",
                self.dialect
            )));
        }
        let statement_cache = if settings.pgbouncer { 0 } else { 100 };
        Ok(match self.dialect {
            Dialect::Postgres => {
                // Not `new()`: that would read ~/.pgpass for the default host before ours is set.
                let mut o = PgConnectOptions::new_without_pgpass()
                    .statement_cache_capacity(statement_cache);
                if let Some(host) = &self.host {
                    o = o.host(host);
                }
                if let Some(socket) = &self.socket {
                    o = o.socket(socket);
                }
                if let Some(port) = self.port {
                    o = o.port(port);
                }
                if let Some(user) = &self.username {
                    o = o.username(user);
                }
                if let Some(pw) = &self.password {
                    o = o.password(pw);
                }
                if let Some(db) = &self.database {
                    o = o.database(db);
                }
                if let Some(SslMode::Postgres(mode)) = self.ssl_mode {
                    o = o.ssl_mode(mode);
                }
                if let Some(p) = self.param("sslrootcert") {
                    o = o.ssl_root_cert(p);
                }
                if let Some(p) = self.param("sslcert") {
                    o = o.ssl_client_cert(p);
                }
                if let Some(p) = self.param("sslkey") {
                    o = o.ssl_client_key(p);
                }
                o = o.application_name(self.param("application_name").unwrap_or(APPLICATION_NAME));
                if let Some(opts) = self.param("options") {
                    // libpq's `options` is a list of `-c key=value`; sqlx takes key/value pairs.
                    for kv in opts.split_whitespace().filter(|s| *s != "-c") {
                        let kv = kv.strip_prefix("-c").unwrap_or(kv);
                        if let Some((k, v)) = kv.split_once('=') {
                            o = o.options([(k, v)]);
                        }
                    }
                }
                if let Some(schema) = &settings.schema {
                    o = o.options([("search_path", schema)]);
                }
                ConnectOptions::Postgres(o)
            }
            Dialect::MySql => {
                let mut o = MySqlConnectOptions::new().statement_cache_capacity(statement_cache);
                if let Some(host) = &self.host {
                    o = o.host(host);
                }
                if let Some(socket) = &self.socket {
                    o = o.socket(socket);
                }
                if let Some(port) = self.port {
                    o = o.port(port);
                }
                if let Some(user) = &self.username {
                    o = o.username(user);
                }
                if let Some(pw) = &self.password {
                    o = o.password(pw);
                }
                if let Some(db) = &self.database {
                    o = o.database(db);
                }
                if let Some(SslMode::MySql(mode)) = self.ssl_mode {
                    o = o.ssl_mode(mode);
                }
                if let Some(p) = self.param("ssl-ca") {
                    o = o.ssl_ca(p);
                }
                if let Some(p) = self.param("ssl-cert") {
                    o = o.ssl_client_cert(p);
                }
                if let Some(p) = self.param("ssl-key") {
                    o = o.ssl_client_key(p);
                }
                ConnectOptions::MySql(o)
            }
            Dialect::Sqlite => {
                let path = self.path.as_deref().ok_or_else(|| {
                    DbError::Config("the SQLite URL names no database file".into())
                })?;
                let o = SqliteConnectOptions::new()
                    .filename(path)
                    .statement_cache_capacity(statement_cache)
                    // The scaler only reads: never create or write the file.
                    .read_only(true)
                    .create_if_missing(false);
                ConnectOptions::Sqlite(o)
            }
        })
    }
}

//! Database URLs: where they come from, the forms accepted, and the redacted form for logs.
//!
//! Accepted: `postgres://`, `postgresql://`, `mysql://`, `mariadb://`, `sqlite://` and Airflow's
//! SQLAlchemy forms (`postgresql+psycopg2://`, `mysql+mysqldb://`, `sqlite:////abs/path`, ...).
//! SQLAlchemy query parameters that sqlx does not understand are dropped (logged by name at
//! debug level, never by value). Nothing here ever puts a password into an error message.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use sqlx::{
    mysql::{MySqlConnectOptions, MySqlSslMode},
    postgres::{PgConnectOptions, PgSslMode},
    sqlite::SqliteConnectOptions,
};

use super::{DbError, Dialect};
use crate::scaler::config::DbConfig;

/// Environment variable Airflow itself reads its connection string from.
pub const AIRFLOW_CONN_ENV: &str = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN";
/// Environment variable of `--database-url`.
pub const DATABASE_URL_ENV: &str = "AIRFLOW_KEDA_SCALER_DATABASE_URL";

/// `application_name` sent to PostgreSQL unless the URL sets one.
const APPLICATION_NAME: &str = "airflow-keda-scaler";

/// Characters escaped in the user and database parts of a redacted URL.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'@')
    .add(b':')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b'%');

/// Where the URL in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlSource {
    /// `--database-url` or `AIRFLOW_KEDA_SCALER_DATABASE_URL`.
    Flag,
    /// `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`.
    AirflowEnv,
}

/// Picks the database URL: `--database-url` (or its env var), else Airflow's own
/// `AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`. Empty values count as unset.
pub fn resolve_url(args: &DbConfig) -> Result<(String, UrlSource), DbError> {
    resolve_url_from(
        args.database_url.as_deref(),
        std::env::var(AIRFLOW_CONN_ENV).ok(),
    )
}

fn resolve_url_from(
    flag: Option<&str>,
    airflow_env: Option<String>,
) -> Result<(String, UrlSource), DbError> {
    if let Some(url) = flag.map(str::trim).filter(|u| !u.is_empty()) {
        return Ok((url.to_string(), UrlSource::Flag));
    }
    if let Some(url) = airflow_env
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        return Ok((url.to_string(), UrlSource::AirflowEnv));
    }
    Err(DbError::Config(format!(
        "no database URL: set --database-url ({DATABASE_URL_ENV}) or {AIRFLOW_CONN_ENV}"
    )))
}

/// A parsed database URL. `Debug` and [`ParsedUrl::redacted`] never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ParsedUrl {
    /// Which server (or file) this is.
    pub dialect: Dialect,
    /// Host name or IP address (servers only; `None` = the driver's default).
    pub host: Option<String>,
    /// Port (servers only; `None` = the dialect's default).
    pub port: Option<u16>,
    /// Unix socket: the directory (PostgreSQL) or the socket file (MySQL).
    pub socket: Option<PathBuf>,
    /// User name, percent-decoded.
    pub username: Option<String>,
    /// Password, percent-decoded.
    pub password: Option<String>,
    /// Database name (servers only), percent-decoded.
    pub database: Option<String>,
    /// Database file (SQLite only).
    pub path: Option<PathBuf>,
    /// Query parameters kept, under the name sqlx uses (e.g. `sslmode`, `ssl-mode`).
    pub params: Vec<(String, String)>,
    /// Names of the query parameters dropped because sqlx has no use for them.
    pub dropped_params: Vec<String>,
    /// Every password as written in the URL (still percent-encoded), for scrubbing.
    raw_passwords: Vec<String>,
}

impl fmt::Debug for ParsedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedUrl")
            .field("url", &self.redacted())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("params", &self.params)
            .field("dropped_params", &self.dropped_params)
            .finish()
    }
}

impl ParsedUrl {
    /// Parses any accepted URL form. Errors never contain the URL itself.
    pub fn parse(raw: &str) -> Result<Self, DbError> {
        let raw = raw.trim();
        let Some((scheme, rest)) = raw.split_once(':') else {
            return Err(DbError::Config(
                "the database URL has no scheme: expected postgres://, mysql:// or sqlite://"
                    .into(),
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        let (base, driver) = match scheme.split_once('+') {
            Some((base, driver)) => (base, Some(driver)),
            None => (scheme.as_str(), None),
        };
        let dialect = match base {
            "postgres" | "postgresql" | "pgsql" => Dialect::Postgres,
            "mysql" | "mariadb" => Dialect::MySql,
            "sqlite" | "sqlite3" => Dialect::Sqlite,
            _ => {
                // The scheme is shown only when it looks like one (no secret can hide there).
                let shown = if scheme.len() <= 40
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                {
                    format!("`{scheme}`")
                } else {
                    "this scheme".to_string()
                };
                return Err(DbError::Config(format!(
                    "unsupported database URL scheme {shown}: expected postgres://, \
                     postgresql+psycopg2://, mysql://, mysql+mysqldb:// or sqlite:////path"
                )));
            }
        };
        if let Some(driver) = driver {
            tracing::debug!(
                driver,
                "ignoring the SQLAlchemy driver named in the database URL"
            );
        }
        match dialect {
            Dialect::Sqlite => Self::parse_sqlite(rest),
            _ => Self::parse_server(dialect, rest),
        }
    }

    fn empty(dialect: Dialect) -> Self {
        Self {
            dialect,
            host: None,
            port: None,
            socket: None,
            username: None,
            password: None,
            database: None,
            path: None,
            params: Vec::new(),
            dropped_params: Vec::new(),
            raw_passwords: Vec::new(),
        }
    }

    fn parse_sqlite(rest: &str) -> Result<Self, DbError> {
        let (location, query) = match rest.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (rest, None),
        };
        // SQLAlchemy: sqlite:///relative, sqlite:////absolute. sqlx: sqlite://relative,
        // sqlite:relative, sqlite:/absolute.
        let path = match location.strip_prefix("//") {
            Some(p) => p.strip_prefix('/').unwrap_or(p),
            None => location,
        };
        // `sqlite://user:password@host/db` is not a file: refuse it without repeating it (it
        // may hold a password, which would otherwise end up in the "path").
        let authority = location
            .strip_prefix("//")
            .map(|p| p.split('/').next().unwrap_or_default())
            .unwrap_or_default();
        if authority.contains('@') {
            return Err(DbError::Config(
                "a SQLite URL names a file, not a user or host: \
                 use sqlite:////absolute/path/airflow.db"
                    .into(),
            ));
        }
        if path.is_empty() || path == ":memory:" || path.starts_with("file::memory:") {
            return Err(DbError::Config(
                "an in-memory SQLite database cannot hold Airflow's metadata: \
                 give a file, e.g. sqlite:////opt/airflow/airflow.db"
                    .into(),
            ));
        }
        let mut parsed = Self::empty(Dialect::Sqlite);
        parsed.path = Some(PathBuf::from(path));
        if let Some(query) = query {
            for (key, _) in url::form_urlencoded::parse(query.as_bytes()) {
                tracing::debug!(%key, "ignoring a SQLite URL parameter");
                parsed.dropped_params.push(key.into_owned());
            }
        }
        Ok(parsed)
    }

    fn parse_server(dialect: Dialect, rest: &str) -> Result<Self, DbError> {
        if !rest.starts_with("//") {
            return Err(DbError::Config(format!(
                "a {dialect} URL needs `//` after the scheme, e.g. {dialect}://user@host:port/db"
            )));
        }
        // `user@/db?host=/socket/dir` (libpq) has an empty host, which `url` rejects after a
        // user name: parse with a placeholder host and forget it afterwards.
        let authority_end = rest[2..]
            .find(['/', '?', '#'])
            .map_or(rest.len(), |i| i + 2);
        let host_start = rest[2..authority_end].rfind('@').map_or(2, |i| i + 3);
        let host_port = &rest[host_start..authority_end];
        let placeholder = host_port.is_empty() || host_port.starts_with(':');
        let rest = if placeholder {
            format!("{}localhost{}", &rest[..host_start], &rest[host_start..])
        } else {
            rest.to_string()
        };
        let url = url::Url::parse(&format!("{}:{rest}", dialect.name())).map_err(|e| {
            // url's messages name the problem ("invalid port number"), never the input.
            DbError::Config(format!("the database URL is not a valid URL: {e}"))
        })?;
        let mut parsed = Self::empty(dialect);
        parsed.host = url
            .host_str()
            .filter(|h| !h.is_empty() && !placeholder)
            .map(|h| decode(h, "host"))
            .transpose()?;
        parsed.port = url.port();
        if !url.username().is_empty() {
            parsed.username = Some(decode(url.username(), "user name")?);
        }
        if let Some(pw) = url.password() {
            parsed.raw_passwords.push(pw.to_string());
            parsed.password = Some(decode(pw, "password")?);
        }
        let path = url.path().trim_start_matches('/');
        if !path.is_empty() {
            parsed.database = Some(decode(path, "database name")?);
        }
        for (key, value) in url.query_pairs() {
            parsed.apply_param(&key, &value)?;
        }
        if let Some(host) = parsed.host.clone().filter(|h| h.starts_with('/')) {
            // libpq: a host that is a path is the socket directory.
            parsed.socket = Some(PathBuf::from(host));
            parsed.host = None;
        }
        Ok(parsed)
    }

    fn apply_param(&mut self, key: &str, value: &str) -> Result<(), DbError> {
        let pg = self.dialect == Dialect::Postgres;
        let kept = match key {
            "sslmode" | "ssl-mode" | "ssl_mode" => {
                let value = value.to_string();
                let bad = |v: &str| {
                    DbError::Config(format!(
                        "unknown SSL mode `{v}` in the database URL (parameter {key})"
                    ))
                };
                if pg {
                    value.parse::<PgSslMode>().map_err(|_| bad(&value))?;
                    Some("sslmode")
                } else {
                    value.parse::<MySqlSslMode>().map_err(|_| bad(&value))?;
                    Some("ssl-mode")
                }
            }
            "sslrootcert" | "ssl-root-cert" | "sslca" | "ssl-ca" | "ssl_ca" => {
                Some(if pg { "sslrootcert" } else { "ssl-ca" })
            }
            "sslcert" | "ssl-cert" | "ssl_cert" => Some(if pg { "sslcert" } else { "ssl-cert" }),
            "sslkey" | "ssl-key" | "ssl_key" => Some(if pg { "sslkey" } else { "ssl-key" }),
            "application_name" if pg => Some("application_name"),
            "options" if pg => Some("options"),
            "host" if pg => {
                self.host = Some(value.to_string());
                None
            }
            "unix_socket" | "socket" if !pg => {
                self.socket = Some(PathBuf::from(value));
                None
            }
            "port" => {
                self.port = Some(value.parse().map_err(|_| {
                    DbError::Config("the `port` parameter of the database URL is not a port".into())
                })?);
                None
            }
            "user" => {
                self.username = Some(value.to_string());
                None
            }
            "password" => {
                self.raw_passwords.push(value.to_string());
                self.password = Some(value.to_string());
                None
            }
            "dbname" if pg => {
                self.database = Some(value.to_string());
                None
            }
            _ => {
                tracing::debug!(
                    key,
                    dialect = %self.dialect,
                    "ignoring a database URL parameter the driver does not use"
                );
                self.dropped_params.push(key.to_string());
                None
            }
        };
        if let Some(name) = kept {
            self.params.retain(|(k, _)| k != name);
            self.params.push((name.to_string(), value.to_string()));
        }
        Ok(())
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The URL without password or parameters, for logs and messages, e.g.
    /// `postgres://airflow@db:5432/airflow` or `sqlite:////opt/airflow/airflow.db`.
    pub fn redacted(&self) -> String {
        if self.dialect == Dialect::Sqlite {
            let path = self.path.as_deref().unwrap_or(Path::new(""));
            // SQLAlchemy's convention: three slashes, then the path (absolute = 4 slashes).
            return format!("sqlite:///{}", path.display());
        }
        let mut out = format!("{}://", self.dialect.name());
        if let Some(user) = &self.username {
            out.push_str(&utf8_percent_encode(user, USERINFO).to_string());
            out.push('@');
        }
        match &self.host {
            Some(host) if host.contains(':') && !host.starts_with('[') => {
                out.push('[');
                out.push_str(host);
                out.push(']');
            }
            Some(host) => out.push_str(host),
            None if self.socket.is_none() => out.push_str("localhost"),
            None => {}
        }
        if self.socket.is_none() {
            let port = self.port.unwrap_or(match self.dialect {
                Dialect::MySql => 3306,
                _ => 5432,
            });
            out.push_str(&format!(":{port}"));
        }
        out.push('/');
        if let Some(db) = &self.database {
            out.push_str(&utf8_percent_encode(db, USERINFO).to_string());
        }
        if let Some(socket) = &self.socket {
            out.push_str(&format!(" (socket {})", socket.display()));
        }
        out
    }

    /// Strings that must never appear in a message: the password, decoded and as written.
    pub(crate) fn secrets(&self) -> Vec<String> {
        self.password
            .iter()
            .chain(self.raw_passwords.iter())
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    }
}

fn decode(s: &str, what: &str) -> Result<String, DbError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            DbError::Config(format!(
                "the {what} in the database URL is not valid UTF-8 after percent-decoding"
            ))
        })
}

/// Reads `--database-password-file`, dropping trailing newlines.
pub fn read_password_file(path: &Path) -> Result<String, DbError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        DbError::Config(format!(
            "cannot read --database-password-file {}: {}",
            path.display(),
            e.kind()
        ))
    })?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(DbError::Config(format!(
            "--database-password-file {} is empty",
            path.display()
        )));
    }
    Ok(password.to_string())
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// PostgreSQL `search_path`.
    pub schema: Option<String>,
    /// No named prepared statements (PgBouncer transaction pooling).
    pub pgbouncer: bool,
    /// Open SQLite read-only (the scaler) or read-write, creating the file (fixtures).
    pub sqlite_writer: bool,
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
                if let Some(mode) = self.param("sslmode") {
                    o = o.ssl_mode(mode.parse().map_err(|_| {
                        DbError::Config(format!("unknown SSL mode `{mode}` in the database URL"))
                    })?);
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
                if let Some(mode) = self.param("ssl-mode") {
                    o = o.ssl_mode(mode.parse().map_err(|_| {
                        DbError::Config(format!("unknown SSL mode `{mode}` in the database URL"))
                    })?);
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
                    .read_only(!settings.sqlite_writer)
                    .create_if_missing(settings.sqlite_writer);
                ConnectOptions::Sqlite(o)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::ConnectOptions as _;

    struct Case {
        url: &'static str,
        dialect: Dialect,
        host: Option<&'static str>,
        port: Option<u16>,
        user: Option<&'static str>,
        password: Option<&'static str>,
        database: Option<&'static str>,
        path: Option<&'static str>,
        redacted: &'static str,
    }

    #[allow(clippy::too_many_arguments)]
    const fn server(
        url: &'static str,
        dialect: Dialect,
        host: &'static str,
        port: Option<u16>,
        user: Option<&'static str>,
        password: Option<&'static str>,
        database: Option<&'static str>,
        redacted: &'static str,
    ) -> Case {
        Case {
            url,
            dialect,
            host: Some(host),
            port,
            user,
            password,
            database,
            path: None,
            redacted,
        }
    }

    const fn file(url: &'static str, path: &'static str, redacted: &'static str) -> Case {
        Case {
            url,
            dialect: Dialect::Sqlite,
            host: None,
            port: None,
            user: None,
            password: None,
            database: None,
            path: Some(path),
            redacted,
        }
    }

    #[test]
    fn accepted_forms() {
        use Dialect::*;
        let cases = [
            server(
                "postgres://airflow:secret@db:5432/airflow",
                Postgres,
                "db",
                Some(5432),
                Some("airflow"),
                Some("secret"),
                Some("airflow"),
                "postgres://airflow@db:5432/airflow",
            ),
            server(
                "postgresql://airflow@db/airflow",
                Postgres,
                "db",
                None,
                Some("airflow"),
                None,
                Some("airflow"),
                "postgres://airflow@db:5432/airflow",
            ),
            server(
                "postgresql+psycopg2://airflow:pa%40ss%3Aw%2Frd@pg.example:6432/af",
                Postgres,
                "pg.example",
                Some(6432),
                Some("airflow"),
                Some("pa@ss:w/rd"),
                Some("af"),
                "postgres://airflow@pg.example:6432/af",
            ),
            server(
                "postgresql+psycopg://u:p@10.0.0.1/airflow?sslmode=require&connect_timeout=10",
                Postgres,
                "10.0.0.1",
                None,
                Some("u"),
                Some("p"),
                Some("airflow"),
                "postgres://u@10.0.0.1:5432/airflow",
            ),
            // An unencoded `@` in the password: everything before the last `@` is userinfo.
            server(
                "POSTGRESQL+PSYCOPG2://u:p@ss@db/airflow",
                Postgres,
                "db",
                None,
                Some("u"),
                Some("p@ss"),
                Some("airflow"),
                "postgres://u@db:5432/airflow",
            ),
            server(
                "postgres://u@[::1]:5433/airflow",
                Postgres,
                "[::1]",
                Some(5433),
                Some("u"),
                None,
                Some("airflow"),
                "postgres://u@[::1]:5433/airflow",
            ),
            server(
                "mysql://root:pw@127.0.0.1:3306/airflow",
                MySql,
                "127.0.0.1",
                Some(3306),
                Some("root"),
                Some("pw"),
                Some("airflow"),
                "mysql://root@127.0.0.1:3306/airflow",
            ),
            server(
                "mysql+mysqldb://airflow:airflow@mysql/airflow?charset=utf8mb4",
                MySql,
                "mysql",
                None,
                Some("airflow"),
                Some("airflow"),
                Some("airflow"),
                "mysql://airflow@mysql:3306/airflow",
            ),
            server(
                "mysql+pymysql://a%20b:c%25d@my.db:3307/air%20flow?ssl_mode=REQUIRED",
                MySql,
                "my.db",
                Some(3307),
                Some("a b"),
                Some("c%d"),
                Some("air flow"),
                "mysql://a%20b@my.db:3307/air%20flow",
            ),
            server(
                "mariadb+mariadbconnector://u@h/db",
                MySql,
                "h",
                None,
                Some("u"),
                None,
                Some("db"),
                "mysql://u@h:3306/db",
            ),
            file(
                "sqlite:////opt/airflow/airflow.db",
                "/opt/airflow/airflow.db",
                "sqlite:////opt/airflow/airflow.db",
            ),
            file(
                "sqlite:///rel/airflow.db",
                "rel/airflow.db",
                "sqlite:///rel/airflow.db",
            ),
            file("sqlite://airflow.db", "airflow.db", "sqlite:///airflow.db"),
            file("sqlite:airflow.db", "airflow.db", "sqlite:///airflow.db"),
            file(
                "sqlite:////tmp/a.db?check_same_thread=false",
                "/tmp/a.db",
                "sqlite:////tmp/a.db",
            ),
        ];
        for c in cases {
            let p = ParsedUrl::parse(c.url).unwrap_or_else(|e| panic!("{}: {e}", c.url));
            assert_eq!(p.dialect, c.dialect, "{}", c.url);
            assert_eq!(p.host.as_deref(), c.host, "{}", c.url);
            assert_eq!(p.port, c.port, "{}", c.url);
            assert_eq!(p.username.as_deref(), c.user, "{}", c.url);
            assert_eq!(p.password.as_deref(), c.password, "{}", c.url);
            assert_eq!(p.database.as_deref(), c.database, "{}", c.url);
            assert_eq!(p.path.as_deref(), c.path.map(Path::new), "{}", c.url);
            assert_eq!(p.redacted(), c.redacted, "{}", c.url);
            // The redacted form parses back to the same place.
            let again = ParsedUrl::parse(&p.redacted()).unwrap();
            assert_eq!(again.redacted(), c.redacted);
            // Connect options build for every accepted form.
            p.connect_options(&Settings::default())
                .unwrap_or_else(|e| panic!("{}: {e}", c.url));
        }
    }

    #[test]
    fn parameters_kept_dropped_and_renamed() {
        let p = ParsedUrl::parse(
            "postgresql+psycopg2://u:p@h/db?sslmode=disable&ssl_ca=/ca.pem&charset=utf8\
             &keepalives=1&application_name=me&options=-c%20statement_timeout%3D5000",
        )
        .unwrap();
        assert_eq!(
            p.params,
            vec![
                ("sslmode".into(), "disable".into()),
                ("sslrootcert".into(), "/ca.pem".into()),
                ("application_name".into(), "me".into()),
                ("options".into(), "-c statement_timeout=5000".into()),
            ]
        );
        assert_eq!(p.dropped_params, vec!["charset", "keepalives"]);
        let ConnectOptions::Postgres(o) = p.connect_options(&Settings::default()).unwrap() else {
            panic!("not postgres")
        };
        assert!(matches!(o.get_ssl_mode(), PgSslMode::Disable));
        assert_eq!(o.get_application_name(), Some("me"));
        assert_eq!(o.get_options(), Some("-c statement_timeout=5000"));

        let m = ParsedUrl::parse(
            "mysql+mysqldb://u@h/db?charset=utf8mb4&ssl_mode=DISABLED&binary_prefix=true",
        )
        .unwrap();
        assert_eq!(m.params, vec![("ssl-mode".into(), "DISABLED".into())]);
        assert_eq!(m.dropped_params, vec!["charset", "binary_prefix"]);
        let ConnectOptions::MySql(o) = m.connect_options(&Settings::default()).unwrap() else {
            panic!("not mysql")
        };
        assert!(matches!(o.get_ssl_mode(), MySqlSslMode::Disabled));
        assert_eq!(o.get_database(), Some("db"));
    }

    #[test]
    fn settings_reach_the_options() {
        let p = ParsedUrl::parse("postgres://u@h/db").unwrap();
        let settings = Settings {
            schema: Some("airflow".into()),
            pgbouncer: true,
            sqlite_writer: false,
        };
        let ConnectOptions::Postgres(o) = p.connect_options(&settings).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(o.get_options(), Some("-c search_path=airflow"));
        assert_eq!(o.get_application_name(), Some(APPLICATION_NAME));
        assert_eq!(o.get_username(), "u");
        assert_eq!(o.get_database(), Some("db"));
        // PgBouncer mode: the URL sqlx would print carries a statement cache of 0.
        let url = o.to_url_lossy().to_string();
        assert!(url.contains("statement-cache-capacity=0"), "{url}");

        // Unix socket (libpq `host=` parameter).
        let s = ParsedUrl::parse("postgresql://u@/airflow?host=/var/run/postgresql").unwrap();
        assert_eq!(s.socket.as_deref(), Some(Path::new("/var/run/postgresql")));
        assert_eq!(
            s.redacted(),
            "postgres://u@/airflow (socket /var/run/postgresql)"
        );

        for url in ["mysql://u@h/db", "sqlite:////tmp/x.db"] {
            let err = ParsedUrl::parse(url)
                .unwrap()
                .connect_options(&settings)
                .err()
                .unwrap();
            assert!(err.to_string().contains("PostgreSQL only"), "{err}");
        }
    }

    #[test]
    fn rejected_forms_never_echo_the_password() {
        let secret = "hunter2-s3cret";
        let cases = [
            (
                format!("mongodb://u:{secret}@h/db"),
                "unsupported database URL scheme",
            ),
            (
                format!("mssql+pyodbc://u:{secret}@h/db"),
                "unsupported database URL scheme",
            ),
            (
                format!("u:{secret}@h/db"),
                "unsupported database URL scheme",
            ),
            (secret.to_string(), "has no scheme"),
            (format!("postgres:u:{secret}@h/db"), "needs `//`"),
            (
                format!("postgres://u:{secret}@h:99999/db"),
                "not a valid URL",
            ),
            (format!("mysql://u:{secret}@h:port/db"), "not a valid URL"),
            (
                format!("postgres://u:{secret}@h/db?sslmode=sometimes"),
                "unknown SSL mode",
            ),
            (
                format!("mysql://u:{secret}@h/db?ssl-mode=maybe"),
                "unknown SSL mode",
            ),
            (format!("postgres://u:{secret}%FF@h/db"), "not valid UTF-8"),
            ("sqlite://".to_string(), "in-memory"),
            ("sqlite:///:memory:".to_string(), "in-memory"),
            (
                format!("sqlite://airflow:{secret}@h/db"),
                "not a user or host",
            ),
        ];
        for (url, expected) in cases {
            let err = ParsedUrl::parse(&url)
                .err()
                .unwrap_or_else(|| panic!("accepted {url}"));
            let msg = err.to_string();
            assert!(msg.contains(expected), "{url}: {msg}");
            assert!(!msg.contains(secret), "{url}: {msg}");
            assert!(!format!("{err:?}").contains(secret), "{url}: {err:?}");
            assert_eq!(err.kind(), "config");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let p = ParsedUrl::parse("postgres://u:top%2Dsecret@h/db?password=alsosecret").unwrap();
        assert_eq!(p.password.as_deref(), Some("alsosecret"));
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("secret"), "{dbg}");
        for s in ["alsosecret", "top%2Dsecret"] {
            assert!(p.secrets().contains(&s.to_string()), "{s}");
        }
    }

    #[test]
    fn url_sources() {
        let env = Some("postgresql+psycopg2://a@b/c".to_string());
        assert_eq!(
            resolve_url_from(Some("mysql://x@y/z"), env.clone()).unwrap(),
            ("mysql://x@y/z".to_string(), UrlSource::Flag)
        );
        assert_eq!(
            resolve_url_from(Some("  "), env.clone()).unwrap(),
            (
                "postgresql+psycopg2://a@b/c".to_string(),
                UrlSource::AirflowEnv
            )
        );
        assert_eq!(
            resolve_url_from(None, env).unwrap().1,
            UrlSource::AirflowEnv
        );
        let err = resolve_url_from(None, Some(String::new()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--database-url"), "{err}");
        assert!(err.contains(DATABASE_URL_ENV), "{err}");
        assert!(err.contains(AIRFLOW_CONN_ENV), "{err}");
    }

    #[test]
    fn password_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3 cret \r\n\n").unwrap();
        assert_eq!(read_password_file(&path).unwrap(), "s3 cret ");
        std::fs::write(&path, "\n").unwrap();
        assert!(
            read_password_file(&path)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let missing = read_password_file(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.kind(), "config");
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}

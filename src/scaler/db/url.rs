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
use sqlx::{mysql::MySqlSslMode, postgres::PgSslMode};

use super::{DbError, Dialect};
use crate::scaler::config::DbConfig;

/// Environment variable Airflow itself reads its connection string from.
pub const AIRFLOW_CONN_ENV: &str = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN";
/// Environment variable of `--database-url`.
pub const DATABASE_URL_ENV: &str = "AIRFLOW_KEDA_SCALER_DATABASE_URL";

/// `application_name` sent to PostgreSQL unless the URL sets one.
pub(crate) const APPLICATION_NAME: &str = "airflow-keda-scaler";

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
    /// The SSL mode (`sslmode`, `ssl-mode`, `ssl_mode`), parsed once, by sqlx's own parser.
    pub ssl_mode: Option<SslMode>,
    /// Other query parameters kept, under the name sqlx uses (e.g. `sslrootcert`, `ssl-ca`).
    pub params: Vec<(String, String)>,
    /// Names of the query parameters dropped because sqlx has no use for them.
    pub dropped_params: Vec<String>,
    /// Every password as written in the URL (still percent-encoded), for scrubbing.
    raw_passwords: Vec<String>,
}

/// An SSL mode as sqlx's parser read it, for the URL's dialect.
#[derive(Clone, Copy, Debug)]
pub enum SslMode {
    /// PostgreSQL's `sslmode`.
    Postgres(PgSslMode),
    /// MySQL's `ssl-mode`.
    MySql(MySqlSslMode),
}

/// sqlx's mode types have no `PartialEq`; their variants have no data, so equal names are
/// equal modes.
impl PartialEq for SslMode {
    fn eq(&self, other: &Self) -> bool {
        format!("{self:?}") == format!("{other:?}")
    }
}

impl Eq for SslMode {}

impl fmt::Debug for ParsedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedUrl")
            .field("url", &self.redacted())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ssl_mode", &self.ssl_mode)
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
            ssl_mode: None,
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
                let bad = || {
                    DbError::Config(format!(
                        "unknown SSL mode `{value}` in the database URL (parameter {key})"
                    ))
                };
                self.ssl_mode = Some(if pg {
                    SslMode::Postgres(value.parse().map_err(|_| bad())?)
                } else {
                    SslMode::MySql(value.parse().map_err(|_| bad())?)
                });
                None
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

    pub(crate) fn param(&self, name: &str) -> Option<&str> {
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
    let text = std::fs::read_to_string(path).map_err(|e| DbError::Unreadable {
        what: "--database-password-file",
        path: path.display().to_string(),
        reason: e.to_string(),
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

#[cfg(test)]
mod tests;

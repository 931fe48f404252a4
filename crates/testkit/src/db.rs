//! Throw-away databases on the real test servers.
//!
//! [`TestDb::postgres`] and [`TestDb::mysql`] create a uniquely named database (`aks_<random>`)
//! through an admin URL and drop it again when the `TestDb` is dropped (best effort);
//! [`TestDb::sqlite`] uses a file in a temporary directory. A server that cannot be reached
//! makes the test fail, never skip.
//!
//! Admin URLs: `AKS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! and `AKS_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/test`).

use std::net::{SocketAddr, ToSocketAddrs};

use crate::airflow;
use airflow_keda_scaler::scaler::db::Dialect;

/// Admin URL of the PostgreSQL test server (a superuser or a role with CREATEDB).
pub const POSTGRES_ENV: &str = "AKS_TEST_POSTGRES_URL";
/// Admin URL of the MySQL / MariaDB test server (a user that may create databases and users).
pub const MYSQL_ENV: &str = "AKS_TEST_MYSQL_URL";
const POSTGRES_DEFAULT: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const MYSQL_DEFAULT: &str = "mysql://root@127.0.0.1:3306/test";

/// The admin URL of `dialect`'s test server.
pub fn admin_url(dialect: Dialect) -> String {
    let (env, default) = match dialect {
        Dialect::Postgres => (POSTGRES_ENV, POSTGRES_DEFAULT),
        Dialect::MySql => (MYSQL_ENV, MYSQL_DEFAULT),
        Dialect::Sqlite => panic!("SQLite has no server"),
    };
    std::env::var(env)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// A fresh, empty database. Dropped (best effort) with the value.
pub struct TestDb {
    dialect: Dialect,
    url: String,
    /// Database name (server dialects).
    name: String,
    admin: Option<String>,
    /// MySQL users created by [`TestDb::create_user`], dropped with the database.
    users: Vec<String>,
    _dir: Option<tempfile::TempDir>,
}

/// `aks_` and 16 random hex digits: a valid unquoted identifier on every server.
fn unique_name(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

impl TestDb {
    /// A new database on the PostgreSQL test server.
    pub async fn postgres() -> Self {
        Self::on_server(Dialect::Postgres).await
    }

    /// A new database on the MySQL / MariaDB test server (utf8mb4, case-insensitive collation
    /// as Airflow's documentation recommends).
    pub async fn mysql() -> Self {
        Self::on_server(Dialect::MySql).await
    }

    /// A new, empty SQLite file in a temporary directory (the file exists).
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("airflow.db");
        // SQLAlchemy's absolute form: sqlite:////abs/path.
        let url = format!("sqlite:///{}", path.display());
        airflow::execute(&url, &[])
            .await
            .unwrap_or_else(|e| panic!("cannot create {url}: {e}"));
        Self {
            dialect: Dialect::Sqlite,
            url,
            name: String::new(),
            admin: None,
            users: Vec::new(),
            _dir: Some(dir),
        }
    }

    /// A new database of `dialect`.
    pub async fn new(dialect: Dialect) -> Self {
        match dialect {
            Dialect::Sqlite => Self::sqlite().await,
            _ => Self::on_server(dialect).await,
        }
    }

    async fn on_server(dialect: Dialect) -> Self {
        let admin = admin_url(dialect);
        let name = unique_name("aks_");
        let create = match dialect {
            Dialect::MySql => {
                format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
            }
            _ => format!("CREATE DATABASE {name}"),
        };
        airflow::execute(&admin, &[create])
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "the {dialect} test server is needed (set {} to its admin URL): {e}",
                    match dialect {
                        Dialect::Postgres => POSTGRES_ENV,
                        _ => MYSQL_ENV,
                    }
                )
            });
        let url = with_path(&admin, &name);
        Self {
            dialect,
            url,
            name,
            admin: Some(admin),
            users: Vec::new(),
            _dir: None,
        }
    }

    /// Which dialect this database speaks.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL of this database (plain form: `postgres://`, `mysql://`, `sqlite:////path`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (empty for SQLite).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's address (PostgreSQL and MySQL only).
    pub fn addr(&self) -> SocketAddr {
        let url = url::Url::parse(&self.url).expect("test URL");
        let host = url.host_str().expect("a server URL has a host");
        let port = url.port().unwrap_or(match self.dialect {
            Dialect::MySql => 3306,
            _ => 5432,
        });
        (host.trim_matches(['[', ']']), port)
            .to_socket_addrs()
            .expect("resolve the test server")
            .next()
            .expect("the test server has an address")
    }

    /// This database's URL with host and port replaced by `addr` (e.g. a [`super::relay::Relay`]).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let mut url = url::Url::parse(&self.url).expect("test URL");
        url.set_host(Some(&addr.ip().to_string()))
            .expect("a server URL takes a host");
        url.set_port(Some(addr.port()))
            .expect("a server URL takes a port");
        url.to_string()
    }

    /// This database's URL with `user` and `password` (raw; every non-alphanumeric character
    /// is percent-encoded here).
    pub fn url_as(&self, user: &str, password: Option<&str>) -> String {
        use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
        let url = url::Url::parse(&self.url).expect("test URL");
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let userinfo = match password {
            Some(pw) => format!("{}:{}", enc(user), enc(pw)),
            None => enc(user),
        };
        format!(
            "{}://{userinfo}@{}:{}{}",
            url.scheme(),
            url.host_str().expect("a server URL has a host"),
            url.port().unwrap_or(self.addr().port()),
            url.path()
        )
    }

    /// MySQL only: creates a user with `password` and every privilege on this database
    /// (PostgreSQL's test server trusts every local login, so passwords prove nothing there).
    pub async fn create_user(&mut self, password: &str) -> String {
        assert_eq!(self.dialect, Dialect::MySql, "password users need MySQL");
        let user = unique_name("aks_u_");
        let quoted = airflow::literal(Dialect::MySql, password);
        let admin = self.admin.clone().expect("server database");
        airflow::execute(
            &admin,
            &[
                format!("CREATE USER '{user}'@'%' IDENTIFIED BY {quoted}"),
                format!("GRANT ALL PRIVILEGES ON {}.* TO '{user}'@'%'", self.name),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("create a MySQL user: {e}"));
        self.users.push(user.clone());
        user
    }
}

/// `base` with its path (the database) replaced by `/name`.
fn with_path(base: &str, name: &str) -> String {
    let mut url = url::Url::parse(base).expect("admin URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(admin) = self.admin.clone() else {
            return;
        };
        let mut statements: Vec<String> = self
            .users
            .iter()
            .map(|u| format!("DROP USER IF EXISTS '{u}'@'%'"))
            .collect();
        statements.push(match self.dialect {
            Dialect::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE IF EXISTS {}", self.name),
        });
        // Drop may run inside a runtime: do the async work on a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let _ = rt.block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    airflow::execute(&admin, &statements),
                )
                .await
            });
        })
        .join();
    }
}

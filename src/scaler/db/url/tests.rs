//! Tests of URL parsing, redaction and the options built from it.

use super::*;
use crate::scaler::db::options::{ConnectOptions, Settings};
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
            ("sslrootcert".into(), "/ca.pem".into()),
            ("application_name".into(), "me".into()),
            ("options".into(), "-c statement_timeout=5000".into()),
        ]
    );
    assert!(matches!(
        p.ssl_mode,
        Some(SslMode::Postgres(PgSslMode::Disable))
    ));
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
    assert!(m.params.is_empty(), "{:?}", m.params);
    assert!(matches!(
        m.ssl_mode,
        Some(SslMode::MySql(MySqlSslMode::Disabled))
    ));
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

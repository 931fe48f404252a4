//! Tests of schema detection, error kinds and scrubbing (no secret in an error or a log line).

use super::error::scrub;
use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use super::*;

fn args(url: &str, timeout: Duration) -> DbConfig {
    DbConfig {
        database_url: Some(url.to_string()),
        database_password_file: None,
        database_schema: None,
        pgbouncer: false,
        database_timeout: timeout,
    }
}

#[test]
fn schema_detection_rules() {
    let cols = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(schema_from_columns(&[]), None);
    assert_eq!(
        schema_from_columns(&cols(&["dag_id", "state", "queue"])),
        Some(AirflowSchema::Airflow2)
    );
    assert_eq!(
        schema_from_columns(&cols(&["dag_id", "state", "EXECUTOR"])),
        Some(AirflowSchema::Airflow2WithExecutor)
    );
    assert_eq!(
        schema_from_columns(&cols(&["id", "state", "executor"])),
        Some(AirflowSchema::Airflow3)
    );
}

#[test]
fn scrubbing() {
    let secrets = vec!["pa ss".to_string(), "pa%20ss".to_string()];
    assert_eq!(
        scrub("auth failed for pa ss and pa%20ss", &secrets),
        "auth failed for *** and ***"
    );
    assert_eq!(scrub("nothing", &[String::new()]), "nothing");
}

#[test]
fn kinds() {
    let url = "postgres://u@h:5432/db".to_string();
    let cases = [
        (DbError::Config("x".into()), "config"),
        (
            DbError::Connect {
                url: url.clone(),
                reason: "refused".into(),
            },
            "connect",
        ),
        (
            DbError::Query {
                url: url.clone(),
                reason: "syntax".into(),
            },
            "query",
        ),
        (
            DbError::Timeout {
                url: url.clone(),
                what: "x",
                timeout: Duration::from_millis(1500),
            },
            "timeout",
        ),
        (
            DbError::NotAirflow {
                url,
                where_: String::new(),
            },
            "not_airflow",
        ),
    ];
    for (err, kind) in cases {
        assert_eq!(err.kind(), kind, "{err}");
    }
}

/// Collects everything tracing writes, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every error path reachable without a server, with a password in the URL: neither the
/// error (Display and Debug) nor any log line may contain it.
#[test]
fn no_password_in_errors_or_logs() {
    let secret = "Zx9-hunter2-topsecret";
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let timeout = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let missing_file = format!("sqlite:///{}/missing/airflow.db", dir.path().display());
    let cases: Vec<(String, &str)> = vec![
        (
            format!("mongodb://airflow:{secret}@127.0.0.1/airflow"),
            "config",
        ),
        (
            format!("postgresql+psycopg2://airflow:{secret}@127.0.0.1:1/airflow?charset=utf8"),
            "connect",
        ),
        (
            format!("mysql+mysqldb://airflow:{secret}@127.0.0.1:1/airflow"),
            "connect",
        ),
        (
            format!("postgres://airflow:{secret}@127.0.0.1:1/airflow?sslmode=bogus"),
            "config",
        ),
        (missing_file, "connect"),
    ];
    for (url, kind) in cases {
        let err = rt.block_on(async {
            match MetadataDb::connect(&args(&url, timeout)).await {
                Ok(db) => {
                    let ping = db.ping().await.unwrap_err();
                    let detect = db.detect_schema().await.unwrap_err();
                    assert_eq!(ping.kind(), detect.kind());
                    detect
                }
                Err(e) => e,
            }
        });
        assert_eq!(err.kind(), kind, "{err}");
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(secret), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        if kind == "connect" {
            assert!(err.to_string().starts_with("cannot connect to "), "{err}");
        }
    }
    // The handle's Debug is secret-free too.
    let _enter = rt.enter();
    let db = MetadataDb::build(&args(
        &format!("postgres://u:{secret}@127.0.0.1:1/db"),
        timeout,
    ))
    .unwrap();
    assert!(!format!("{db:?}").contains(secret));
    assert_eq!(db.redacted_url(), "postgres://u@127.0.0.1:1/db");
    drop(db);
    drop(_enter);
    drop(rt);

    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    assert!(!logs.contains(secret), "{logs}");
    assert!(!logs.contains("hunter2"), "{logs}");
}

#[tokio::test]
async fn password_file_replaces_url_password_and_is_scrubbed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "fromFileSecret\n").unwrap();
    let mut a = args(
        "postgres://u:url-secret@127.0.0.1:1/db",
        Duration::from_secs(1),
    );
    a.database_password_file = Some(file);
    let db = MetadataDb::connect(&a).await.unwrap();
    assert!(db.inner.secrets.contains(&"fromFileSecret".to_string()));
    assert!(db.inner.secrets.contains(&"url-secret".to_string()));
    let Pools::Postgres(pool) = &db.inner.pools else {
        panic!("not postgres")
    };
    let url = pool.connect_options().to_url_lossy().to_string();
    assert!(
        url.contains("fromFileSecret"),
        "the file's password is used"
    );
}

//! The metadata-database layer against real PostgreSQL, MariaDB and SQLite: schema detection,
//! the refresh query, URL forms, secrets, and the refresher through connection loss.
//!
//! The servers must be running (see `crates/testkit/src/db.rs`); a missing server fails.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use airflow_keda_scaler::{
    scaler::config::DbConfig,
    scaler::db::{DbError, Dialect, MetadataDb},
    scaler::refresher::{self, RefreshStats},
    scaler::snapshot::{AirflowSchema, Selector, Snapshot, SnapshotStore, TaskState},
};
use testkit::airflow::{self, ALL_STATES, AirflowVersion, FixtureRow};
use testkit::{db::TestDb, relay::Relay};
use tokio_util::sync::CancellationToken;

const CELERY_PATH: &str = "airflow.providers.celery.executors.celery_executor.CeleryExecutor";
const EXECUTORS: [Option<&str>; 4] = [
    None,
    Some("CeleryExecutor"),
    Some("KubernetesExecutor"),
    Some(CELERY_PATH),
];
/// Queue names; `nullq` rows get a NULL queue after insertion. `ml` and `ML` differ only in
/// case (MySQL's default collations would merge them).
const QUEUES: [&str; 6] = [
    "default",
    "ml",
    "ML",
    r"it's; DROP TABLE task_instance; -- \o/",
    "kø-ü-🚀",
    "nullq",
];
const QI_DEFAULT: usize = 0;
const QI_UPPER_ML: usize = 2;
const QI_HOSTILE: usize = 3;
const QI_UNICODE: usize = 4;
const QI_NULL: usize = 5;

fn args(url: &str) -> DbConfig {
    DbConfig {
        database_url: Some(url.to_string()),
        database_password_file: None,
        database_schema: None,
        pgbouncer: false,
        database_timeout: Duration::from_secs(5),
    }
}

fn schema_of(version: AirflowVersion) -> AirflowSchema {
    match version {
        AirflowVersion::V2_9 => AirflowSchema::Airflow2,
        AirflowVersion::V2_10 => AirflowSchema::Airflow2WithExecutor,
        AirflowVersion::V3 => AirflowSchema::Airflow3,
    }
}

/// Rows in every state × queue × executor; `1 + qi + 2·ei (+1 if running)` copies each, so
/// every combination has its own count.
fn dataset() -> Vec<FixtureRow> {
    let mut rows = Vec::new();
    for (si, state) in ALL_STATES.iter().enumerate() {
        for (qi, queue) in QUEUES.iter().enumerate() {
            for (ei, executor) in EXECUTORS.iter().enumerate() {
                let copies = 1 + qi + 2 * ei + usize::from(*state == Some("running"));
                for c in 0..copies {
                    let mut row = FixtureRow::new(
                        &format!("dag_{qi}"),
                        &format!("task_{ei}_{c}"),
                        &format!("run_{si}"),
                        *state,
                        queue,
                    )
                    .with_executor(*executor);
                    row.hostname = format!("worker-{c}");
                    rows.push(row);
                }
            }
        }
    }
    rows
}

/// (queue, state, executor, hostname of running rows); the state by name so that the map
/// sorts.
type Key = (String, &'static str, Option<String>, Option<String>);

fn state_name(s: TaskState) -> &'static str {
    match s {
        TaskState::Scheduled => "scheduled",
        TaskState::Queued => "queued",
        TaskState::Running => "running",
    }
}

/// What the refresh query must return, computed from the rows (NULL queue read as "").
fn expected(rows: &[FixtureRow], version: AirflowVersion) -> BTreeMap<Key, u64> {
    let mut out = BTreeMap::new();
    for row in rows {
        let Some(state) = row.state.as_deref().and_then(TaskState::from_db) else {
            continue;
        };
        let queue = if row.queue == "nullq" {
            String::new()
        } else {
            row.queue.clone()
        };
        let executor = row.executor.clone().filter(|_| version.has_executor());
        let host =
            Some(row.hostname.clone()).filter(|h| state == TaskState::Running && !h.is_empty());
        *out.entry((queue, state_name(state), executor, host))
            .or_default() += 1;
    }
    out
}

fn as_map(snapshot: &Snapshot) -> BTreeMap<Key, u64> {
    let mut out = BTreeMap::new();
    for c in &snapshot.counts {
        *out.entry((
            c.queue.clone(),
            state_name(c.state),
            c.executor.clone(),
            c.hostname.clone(),
        ))
        .or_default() += c.count;
    }
    out
}

fn celery(queues: &[&str], celery_is_default: bool) -> Selector {
    Selector {
        queues: queues.iter().map(|q| q.to_string()).collect(),
        executor_names: vec!["CeleryExecutor".into(), CELERY_PATH.into()],
        celery_is_default,
    }
}

/// Creates `task_instance` of `version` with `rows` (queue `nullq` becomes NULL).
async fn create(db: &TestDb, version: AirflowVersion, rows: &[FixtureRow]) {
    let d = db.dialect();
    let mut statements = airflow::drop_table_sql(d);
    statements.extend(airflow::create_table_sql(d, version));
    statements.extend(airflow::insert_sql_chunked(d, version, rows));
    statements.push("UPDATE task_instance SET queue = NULL WHERE queue = 'nullq'".into());
    airflow::execute(db.url(), &statements)
        .await
        .unwrap_or_else(|e| panic!("{d} {version:?}: {e}"));
}

async fn check_counts(db: TestDb, version: AirflowVersion) {
    let ctx = format!("{} {version:?}", db.dialect());
    let rows = dataset();
    create(&db, version, &rows).await;
    let mdb = MetadataDb::connect(&args(db.url())).await.unwrap();
    assert_eq!(mdb.dialect(), db.dialect());

    let schema = mdb.detect_schema().await.unwrap();
    assert_eq!(schema, schema_of(version), "{ctx}");
    let snapshot = refresher::refresh_once(&mdb).await.unwrap();
    assert_eq!(snapshot.schema, schema, "{ctx}");
    assert_eq!(as_map(&snapshot), expected(&rows, version), "{ctx}");
    // One row per group: the database grouped, not us.
    assert_eq!(
        snapshot.counts.len(),
        as_map(&snapshot).len(),
        "{ctx}: duplicate groups"
    );

    let q = |i: usize| if i == QI_NULL { "" } else { QUEUES[i] };
    // (selector, (queued, running) with the executor column, the same without it); the
    // numbers follow from `dataset`.
    type QueuedRunning = (u64, u64);
    let cases: Vec<(Selector, QueuedRunning, QueuedRunning)> = vec![
        (celery(&[q(QI_DEFAULT)], true), (11, 14), (16, 20)),
        (celery(&[q(QI_DEFAULT)], false), (10, 12), (16, 20)),
        (celery(&[q(QI_UPPER_ML)], true), (17, 20), (24, 28)),
        (
            celery(&[q(QI_DEFAULT), q(QI_HOSTILE)], true),
            (31, 37),
            (44, 52),
        ),
        (celery(&[q(QI_UNICODE)], false), (18, 20), (32, 36)),
        (celery(&[q(QI_NULL)], true), (26, 29), (36, 40)),
        (celery(&["nullq", "nope"], true), (0, 0), (0, 0)),
        (
            Selector {
                queues: vec![q(QI_DEFAULT).into()],
                executor_names: vec!["KubernetesExecutor".into()],
                celery_is_default: false,
            },
            (5, 6),
            (16, 20),
        ),
    ];
    for (selector, with_exec, without_exec) in cases {
        let want = if version.has_executor() {
            with_exec
        } else {
            without_exec
        };
        let d = snapshot.demand(&selector);
        assert_eq!((d.queued, d.running), want, "{ctx}: {selector:?}");
        let by_host = snapshot.running_by_host(&selector);
        assert_eq!(
            by_host.values().sum::<u64>(),
            d.running,
            "{ctx}: {selector:?} running by host"
        );
    }
    // Scheduled rows: the same copies as queued ones (`dataset`).
    let totals = snapshot.totals();
    assert_eq!(totals.scheduled, totals.queued, "{ctx}");
    assert!(totals.scheduled > 0, "{ctx}");
    // Running rows are split by hostname, the others are not.
    let hosts: std::collections::BTreeSet<_> = snapshot
        .counts
        .iter()
        .filter_map(|c| c.hostname.as_deref())
        .collect();
    assert!(
        hosts.contains("worker-0") && hosts.len() > 1,
        "{ctx}: {hosts:?}"
    );
    assert!(
        snapshot
            .counts
            .iter()
            .all(|c| (c.state == TaskState::Running) == c.hostname.is_some()),
        "{ctx}"
    );
    mdb.close().await;
}

/// Celery routes `gpu` and `gpu ` (trailing space) as two queues, and Airflow stores them as
/// two values. MySQL's and MariaDB's `utf8mb4_bin` is a PAD SPACE collation under which
/// `GROUP BY` merges them (issue 14 point 6); the refresh groups on the raw bytes. The same
/// holds for hostnames, which split the running rows.
async fn check_trailing_spaces_stay_apart(db: TestDb) {
    let ctx = db.dialect().to_string();
    let mut rows = Vec::new();
    for (i, (queue, state, host)) in [
        ("gpu", "queued", ""),
        ("gpu ", "queued", ""),
        ("gpu ", "queued", ""),
        ("gpu", "running", "w1"),
        ("gpu ", "running", "w1 "),
        ("gpu ", "running", "w1 "),
        ("gpu ", "scheduled", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let mut row = FixtureRow::new("dag", &format!("t{i}"), "run", Some(state), queue);
        row.hostname = host.into();
        rows.push(row);
    }
    create(&db, AirflowVersion::V3, &rows).await;
    let mdb = MetadataDb::connect(&args(db.url())).await.unwrap();
    let snapshot = refresher::refresh_once(&mdb).await.unwrap();
    let got = snapshot.demand(&celery(&["gpu"], true));
    assert_eq!((got.queued, got.running, got.scheduled), (1, 1, 0), "{ctx}");
    let got = snapshot.demand(&celery(&["gpu "], true));
    assert_eq!((got.queued, got.running, got.scheduled), (2, 2, 1), "{ctx}");
    let hosts: Vec<_> = snapshot
        .running_by_host(&celery(&["gpu", "gpu "], true))
        .into_iter()
        .collect();
    assert_eq!(hosts, vec![("w1", 1), ("w1 ", 2)], "{ctx}");
    mdb.close().await;
}

#[tokio::test]
async fn mariadb_keeps_trailing_space_queues_apart() {
    check_trailing_spaces_stay_apart(TestDb::mysql().await).await;
}

#[tokio::test]
async fn postgres_keeps_trailing_space_queues_apart() {
    check_trailing_spaces_stay_apart(TestDb::postgres().await).await;
}

#[tokio::test]
async fn sqlite_keeps_trailing_space_queues_apart() {
    check_trailing_spaces_stay_apart(TestDb::sqlite().await).await;
}

macro_rules! matrix {
    ($($name:ident: $db:ident, $version:ident;)*) => {$(
        #[tokio::test]
        async fn $name() {
            check_counts(TestDb::$db().await, AirflowVersion::$version).await;
        }
    )*};
}

matrix! {
    postgres_airflow_2_9: postgres, V2_9;
    postgres_airflow_2_10: postgres, V2_10;
    postgres_airflow_3: postgres, V3;
    mariadb_airflow_2_9: mysql, V2_9;
    mariadb_airflow_2_10: mysql, V2_10;
    mariadb_airflow_3: mysql, V3;
    sqlite_airflow_2_9: sqlite, V2_9;
    sqlite_airflow_2_10: sqlite, V2_10;
    sqlite_airflow_3: sqlite, V3;
}

#[tokio::test]
async fn empty_databases_are_not_airflow() {
    for dialect in [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite] {
        let db = TestDb::new(dialect).await;
        let mdb = MetadataDb::connect(&args(db.url())).await.unwrap();
        for err in [
            mdb.detect_schema().await.unwrap_err(),
            refresher::refresh_once(&mdb).await.unwrap_err(),
        ] {
            assert!(
                matches!(err, DbError::NotAirflow { .. }),
                "{dialect}: {err}"
            );
            assert_eq!(err.kind(), "not_airflow");
            let msg = err.to_string();
            assert!(
                msg.ends_with("has no task_instance table — not an Airflow metadata database?"),
                "{msg}"
            );
            assert!(msg.starts_with(mdb.redacted_url()), "{msg}");
        }
        // An empty table is Airflow: zero demand, not an error.
        create(&db, AirflowVersion::V3, &[]).await;
        let snapshot = refresher::refresh_once(&mdb).await.unwrap();
        assert!(snapshot.counts.is_empty(), "{dialect}");
        mdb.close().await;
    }
}

#[tokio::test]
async fn postgres_schema_via_search_path() {
    let db = TestDb::postgres().await;
    let rows = vec![
        FixtureRow::new("d", "a", "r", Some("queued"), "default"),
        FixtureRow::new("d", "b", "r", Some("running"), "default"),
    ];
    let mut statements = vec![
        "CREATE SCHEMA airflow_meta".to_string(),
        "SET search_path TO airflow_meta".to_string(),
    ];
    statements.extend(airflow::create_table_sql(
        Dialect::Postgres,
        AirflowVersion::V3,
    ));
    statements.push(airflow::insert_sql(
        Dialect::Postgres,
        AirflowVersion::V3,
        &rows,
    ));
    airflow::execute(db.url(), &statements).await.unwrap();

    // Not in `public`.
    let plain = MetadataDb::connect(&args(db.url())).await.unwrap();
    let err = plain.detect_schema().await.unwrap_err();
    assert_eq!(err.kind(), "not_airflow", "{err}");

    let mut a = args(db.url());
    a.database_schema = Some("airflow_meta".into());
    let mdb = MetadataDb::connect(&a).await.unwrap();
    let snapshot = refresher::refresh_once(&mdb).await.unwrap();
    assert_eq!(snapshot.schema, AirflowSchema::Airflow3);
    assert_eq!(snapshot.demand(&celery(&["default"], true)).total(), 2);

    a.database_schema = Some("elsewhere".into());
    let wrong = MetadataDb::connect(&a).await.unwrap();
    let msg = wrong.detect_schema().await.unwrap_err().to_string();
    assert!(msg.contains("(search_path elsewhere)"), "{msg}");
}

/// PgBouncer mode (no named prepared statements, no statement cache) reads the same. Each
/// refresh is repeated so a statement is reused on the same connection.
#[tokio::test]
async fn pgbouncer_mode_reads_the_same() {
    for dialect in [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite] {
        let db = TestDb::new(dialect).await;
        let rows = dataset();
        create(&db, AirflowVersion::V3, &rows).await;
        let mut a = args(db.url());
        a.pgbouncer = true;
        let mdb = MetadataDb::connect(&a).await.unwrap();
        for _ in 0..3 {
            let snapshot = refresher::refresh_once(&mdb).await.unwrap();
            assert_eq!(
                as_map(&snapshot),
                expected(&rows, AirflowVersion::V3),
                "{dialect}"
            );
        }
        mdb.close().await;
    }
}

/// Airflow's SQLAlchemy URL forms, with parameters sqlx does not know, reach the servers.
#[tokio::test]
async fn sqlalchemy_urls_connect() {
    let pg = TestDb::postgres().await;
    let my = TestDb::mysql().await;
    let lite = TestDb::sqlite().await;
    for db in [&pg, &my, &lite] {
        create(db, AirflowVersion::V2_10, &[]).await;
    }
    let pg_tail = pg.url().split_once("://").unwrap().1.to_string();
    let my_tail = my.url().split_once("://").unwrap().1.to_string();
    let urls = [
        format!("postgresql://{pg_tail}"),
        format!("postgresql+psycopg2://{pg_tail}?sslmode=disable&connect_timeout=5&keepalives=1"),
        format!("postgresql+psycopg://{pg_tail}?sslmode=prefer&application_name=test"),
        format!("mysql://{my_tail}"),
        format!("mysql+mysqldb://{my_tail}?charset=utf8mb4&binary_prefix=true"),
        format!("mysql+pymysql://{my_tail}?charset=utf8&ssl_mode=DISABLED"),
        lite.url().to_string(),
    ];
    for url in urls {
        let mdb = MetadataDb::connect(&args(&url)).await.unwrap();
        assert_eq!(
            mdb.detect_schema()
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}")),
            AirflowSchema::Airflow2WithExecutor,
            "{url}"
        );
        mdb.close().await;
    }
    // A relative SQLite path (SQLAlchemy: three slashes), resolved from the working directory.
    let dir = tempfile::tempdir().unwrap();
    let abs = dir.path().join("rel.db");
    airflow::execute(
        &format!("sqlite:///{}", abs.display()),
        &airflow::create_table_sql(Dialect::Sqlite, AirflowVersion::V3),
    )
    .await
    .unwrap();
    let cwd = std::env::current_dir().unwrap();
    let rel = pathdiff(&abs, &cwd);
    let mdb = MetadataDb::connect(&args(&format!("sqlite:///{}", rel.display())))
        .await
        .unwrap();
    assert_eq!(mdb.detect_schema().await.unwrap(), AirflowSchema::Airflow3);
}

/// `abs` relative to `base` (both absolute), with `..` as needed.
fn pathdiff(abs: &std::path::Path, base: &std::path::Path) -> PathBuf {
    let a: Vec<_> = abs.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &a[common..] {
        out.push(c);
    }
    out
}

/// Passwords: percent-decoded from the URL, replaced by `--database-password-file`, and never
/// shown in an error (MariaDB, since the PostgreSQL test server trusts every local login).
#[tokio::test]
async fn passwords_and_password_file() {
    let password = "p@ss:w/rd%;é '\\";
    let mut db = TestDb::mysql().await;
    create(&db, AirflowVersion::V3, &[]).await;
    let user = db.create_user(password).await;

    // Percent-encoded in the URL.
    let mdb = MetadataDb::connect(&args(&db.url_as(&user, Some(password))))
        .await
        .unwrap();
    assert_eq!(mdb.detect_schema().await.unwrap(), AirflowSchema::Airflow3);
    assert!(!mdb.redacted_url().contains("p@ss"));
    mdb.close().await;

    // The file wins over the URL's (wrong) password; its trailing newline is not part of it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let mut a = args(&db.url_as(&user, Some("wrong-url-password")));
    a.database_password_file = Some(file.clone());
    let mdb = MetadataDb::connect(&a).await.unwrap();
    assert_eq!(mdb.detect_schema().await.unwrap(), AirflowSchema::Airflow3);
    mdb.close().await;

    // A wrong password: a connect error that shows neither password.
    std::fs::write(&file, "Wrong-File-Secret-42\n").unwrap();
    let mdb = MetadataDb::connect(&a).await.unwrap();
    let err = mdb.detect_schema().await.unwrap_err();
    assert_eq!(err.kind(), "connect", "{err}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("Access denied"), "{shown}");
    for secret in ["Wrong-File-Secret-42", "wrong-url-password", "p@ss"] {
        assert!(!shown.contains(secret), "{shown}");
    }

    // PostgreSQL reads the password file too (trust auth accepts any password).
    let pg = TestDb::postgres().await;
    create(&pg, AirflowVersion::V2_9, &[]).await;
    let mut a = args(pg.url());
    a.database_password_file = Some(file);
    let mdb = MetadataDb::connect(&a).await.unwrap();
    assert_eq!(mdb.detect_schema().await.unwrap(), AirflowSchema::Airflow2);
}

/// Error paths that need a server, with a password in the URL: kind and secret-free message.
#[tokio::test]
async fn server_errors_are_secret_free() {
    let secret = "Sup3r-Secret-Pw";
    let pg = TestDb::postgres().await;
    let my = TestDb::mysql().await;
    let pg_missing = pg
        .url_as("postgres", Some(secret))
        .replace(pg.name(), "aks_missing_db");
    let my_missing = my
        .url_as("root", Some(secret))
        .replace(my.name(), "aks_missing_db");
    let my_wrong_pw = my.url_as("root", Some(secret));
    let cases = [
        (pg_missing, "connect", "does not exist"),
        (
            my_missing.replace("root:", "nosuchuser:"),
            "connect",
            "Access denied",
        ),
        (my_wrong_pw, "connect", "Access denied"),
        (
            format!("postgresql+psycopg2://airflow:{secret}@127.0.0.1:1/airflow"),
            "connect",
            "refused",
        ),
    ];
    for (url, kind, needle) in cases {
        let mut a = args(&url);
        a.database_timeout = Duration::from_millis(500);
        let mdb = MetadataDb::connect(&a).await.unwrap();
        let err = mdb.detect_schema().await.unwrap_err();
        let shown = format!("{err} | {err:?}");
        assert_eq!(err.kind(), kind, "{shown}");
        assert!(shown.contains(needle), "{shown}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains(mdb.redacted_url()), "{shown}");
    }

    // A query error (the table exists but lacks a column the query needs).
    airflow::execute(
        pg.url(),
        &["CREATE TABLE task_instance (executor VARCHAR(10), id INTEGER)".to_string()],
    )
    .await
    .unwrap();
    let mdb = MetadataDb::connect(&args(&pg.url_as("postgres", Some(secret))))
        .await
        .unwrap();
    let err = refresher::refresh_once(&mdb).await.unwrap_err();
    assert_eq!(err.kind(), "query", "{err}");
    assert!(err.to_string().contains("queue"), "{err}");
    assert!(!format!("{err:?}").contains(secret));
}

async fn wait_for(
    rx: &mut tokio::sync::watch::Receiver<airflow_keda_scaler::scaler::snapshot::Published>,
    what: &str,
    f: impl Fn(&airflow_keda_scaler::scaler::snapshot::Published) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|p| f(p)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap();
}

/// Through a relay: while cut, the refresher records errors and keeps the last snapshot; after
/// restore it recovers by itself. A stalled connection ends in a timeout, not a hang.
#[tokio::test]
async fn refresher_survives_connection_loss() {
    let db = TestDb::postgres().await;
    let rows: Vec<FixtureRow> = (0..5)
        .map(|i| FixtureRow::new("d", &format!("t{i}"), "r", Some("queued"), "default"))
        .collect();
    create(&db, AirflowVersion::V3, &rows).await;
    let relay = Relay::start(db.addr()).await;
    let mut a = args(&db.url_via(relay.addr()));
    a.database_timeout = Duration::from_millis(500);
    let mdb = MetadataDb::connect(&a).await.unwrap();
    let store = SnapshotStore::new();
    let mut rx = store.subscribe();
    let shutdown = CancellationToken::new();
    let (stats_tx, mut stats_rx) = tokio::sync::mpsc::unbounded_channel::<RefreshStats>();
    let task = tokio::spawn(refresher::run_observed(
        mdb,
        store.clone(),
        refresher::Pace::new(Duration::from_millis(50), 1.0),
        shutdown.clone(),
        move |s| {
            let _ = stats_tx.send(s.clone());
        },
    ));
    wait_for(&mut rx, "the first snapshot", |p| p.latest.is_some()).await;
    let first = store.current();
    assert_eq!(
        first
            .latest
            .as_ref()
            .unwrap()
            .demand(&celery(&["default"], true))
            .queued,
        5
    );

    relay.cut();
    wait_for(&mut rx, "an error while cut", |p| p.last_error.is_some()).await;
    let cut = store.current();
    assert!(cut.latest.is_some(), "the last snapshot is kept");
    let reason = cut.last_error.as_deref().unwrap().to_string();
    assert!(
        reason.starts_with("cannot connect to postgres://"),
        "{reason}"
    );
    // Still failing three refreshes later (counted, not guessed from time), with no new
    // snapshot.
    let mut kinds = Vec::new();
    while let Ok(s) = stats_rx.try_recv() {
        kinds.push(s.error_kind);
    }
    for _ in 0..3 {
        let stats = tokio::time::timeout(Duration::from_secs(10), stats_rx.recv())
            .await
            .expect("a refresh within 10 s")
            .unwrap();
        assert!(stats.error_kind.is_some(), "a refresh succeeded while cut");
        kinds.push(stats.error_kind);
    }
    let later = store.current();
    assert!(later.last_error.is_some());
    assert_eq!(
        later.generation, cut.generation,
        "no snapshot while the database is away"
    );

    relay.restore();
    let before = later.generation;
    wait_for(&mut rx, "recovery", move |p| {
        p.generation > before && p.last_error.is_none()
    })
    .await;

    // Stalled: no answer at all. The query times out (500 ms) instead of hanging.
    relay.stall();
    wait_for(&mut rx, "a timeout while stalled", |p| {
        p.last_error
            .as_deref()
            .is_some_and(|e| e.contains("did not answer"))
    })
    .await;
    relay.restore();
    let before = store.current().generation;
    wait_for(&mut rx, "recovery after the stall", move |p| {
        p.generation > before && p.last_error.is_none()
    })
    .await;

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the refresher stops on shutdown")
        .unwrap();
    while let Ok(s) = stats_rx.try_recv() {
        kinds.push(s.error_kind);
    }
    assert!(kinds.contains(&None));
    assert!(kinds.contains(&Some("connect")), "{kinds:?}");
    assert!(kinds.contains(&Some("timeout")), "{kinds:?}");
}

/// A migration while the scaler runs (the table replaced by the 3.x shape): the refresher
/// re-detects the schema after the failed refresh and publishes Airflow 3 snapshots.
#[tokio::test]
async fn refresher_follows_a_schema_change() {
    let db = TestDb::sqlite().await;
    let rows = vec![
        FixtureRow::new("d", "a", "r", Some("queued"), "default")
            .with_executor(Some("KubernetesExecutor")),
    ];
    create(&db, AirflowVersion::V2_9, &rows).await;
    let mdb = MetadataDb::connect(&args(db.url())).await.unwrap();
    let store = SnapshotStore::new();
    let mut rx = store.subscribe();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(refresher::run(
        mdb,
        store.clone(),
        refresher::Pace::new(Duration::from_millis(20), 1.0),
        shutdown.clone(),
    ));
    wait_for(&mut rx, "the 2.9 snapshot", |p| {
        p.latest
            .as_ref()
            .is_some_and(|s| s.schema == AirflowSchema::Airflow2)
    })
    .await;
    // 2.9: every row of the queue is Celery's.
    let s = store.current().latest.unwrap();
    assert_eq!(s.demand(&celery(&["default"], false)).queued, 1);

    // The migration: the table is briefly gone (a refresh fails), then has the 3.x shape.
    airflow::execute(db.url(), &airflow::drop_table_sql(Dialect::Sqlite))
        .await
        .unwrap();
    wait_for(&mut rx, "an error while the table is gone", |p| {
        p.last_error
            .as_deref()
            .is_some_and(|e| e.contains("no task_instance table"))
    })
    .await;
    create(&db, AirflowVersion::V3, &rows).await;
    wait_for(&mut rx, "the 3.x snapshot", |p| {
        p.latest
            .as_ref()
            .is_some_and(|s| s.schema == AirflowSchema::Airflow3)
    })
    .await;
    // 3.x: the KubernetesExecutor row is no longer Celery's.
    let s = store.current().latest.unwrap();
    assert_eq!(s.demand(&celery(&["default"], true)).queued, 0);
    shutdown.cancel();
    task.await.unwrap();
}

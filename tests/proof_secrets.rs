//! Proof: no secret leaks, SQL never carries data, and the process shuts down as documented.
//!
//! Secrets: the real binary (`serve`, JSON logs at `debug`) runs with a database password in
//! the URL (flag, `AIRFLOW_KEDA_SCALER_DATABASE_URL` or Airflow's own variable) or in a
//! password file, against an unreachable port, PostgreSQL with an unknown role, a working
//! PostgreSQL connection, and MariaDB with a wrong and then the right password. Every RPC is
//! called, `/metrics`, `/readyz` and `/livez` are scraped, the process gets SIGTERM: the password
//! (raw or percent-encoded) appears in no log line, RPC error, response or metric.
//!
//! SQL: the scaler sends only constant statements (`src/db/dialect.rs`, `&'static str`); queue
//! names are filtered in memory. Queue names made of quotes, semicolons, comments, wildcards,
//! placeholders and Unicode are counted exactly on PostgreSQL, MariaDB and SQLite.
//!
//! Shutdown: SIGTERM ends open streams with OK and exits 0 well within the grace period; a call
//! that never finishes holds the drain until the grace period (exit 1); a second SIGTERM
//! during such a drain exits at once.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use airflow_keda_scaler::{
    scaler::db::Dialect, scaler::grpc::proto::externalscaler::GetMetricsRequest,
};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use testkit::airflow::{AirflowVersion, FixtureRow};
use testkit::{
    binary::Serve,
    db::TestDb,
    process::free_port,
    scaler::{create, object},
};

const BIN: &str = env!("CARGO_BIN_EXE_airflow-keda-scaler");

/// A password nobody else would print: a random core plus characters URLs must escape.
struct Secret {
    raw: String,
    core: String,
}

impl Secret {
    fn new() -> Self {
        let core = format!("Zq{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        Self {
            raw: format!("{core}-pa55/w0rd@h:1?x=%41#f&"),
            core,
        }
    }

    fn encoded(&self) -> String {
        utf8_percent_encode(&self.raw, NON_ALPHANUMERIC).to_string()
    }

    /// Panics if `text` shows the secret in any form.
    fn assert_absent(&self, what: &str, text: &str) {
        for form in [self.raw.as_str(), &self.encoded(), &self.core] {
            if let Some(at) = text.find(form) {
                let from = text[..at]
                    .char_indices()
                    .rev()
                    .nth(200)
                    .map_or(0, |(i, _)| i);
                panic!(
                    "the password appears in {what}: …{}…",
                    &text[from..(at + form.len()).min(text.len())]
                );
            }
        }
    }
}

/// How the database URL reaches the process.
enum UrlVia {
    Flag,
    Env,
    AirflowEnv,
}

/// `serve` with JSON logs, a 200 ms refresh, `--shutdown-grace grace` and no drain delay; the
/// database URL given as `via` says.
async fn start(url: &str, via: UrlVia, extra: &[&str], grace: &str) -> Serve {
    let mut args = vec!["--log-format", "json"];
    args.extend(["--refresh-interval", "200ms", "--max-staleness", "2s"]);
    args.extend(["--database-timeout", "1s", "--shutdown-grace", grace]);
    args.extend(["--drain-delay", "0s"]);
    args.extend_from_slice(extra);
    let env: &[(&str, &str)] = match via {
        UrlVia::Flag => {
            args.extend(["--database-url", url]);
            &[]
        }
        UrlVia::Env => &[("AIRFLOW_KEDA_SCALER_DATABASE_URL", url)],
        UrlVia::AirflowEnv => &[("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", url)],
    };
    Serve::start(BIN, &args, env, None).await
}

fn metrics_request(wq: &str) -> GetMetricsRequest {
    GetMetricsRequest {
        scaled_object_ref: Some(object(&[("workerQueue", wq)])),
        metric_name: format!("airflow-tasks-{wq}"),
    }
}

/// Calls every RPC (and health) and returns everything the clients saw, as text.
async fn call_everything(p: &Serve) -> String {
    let mut c = p.client().await;
    let mut seen = String::new();
    let r = object;
    seen += &format!("{:?}\n", c.get_metrics(metrics_request("default")).await);
    seen += &format!("{:?}\n", c.is_active(r(&[("workerQueue", "ml")])).await);
    seen += &format!(
        "{:?}\n",
        c.get_metric_spec(r(&[("workerQueue", "default")])).await
    );
    seen += &format!(
        "{:?}\n",
        c.is_active(r(&[("maxTasksPerWorker", "0")])).await
    );
    match c.stream_is_active(r(&[("workerQueue", "default")])).await {
        Ok(s) => {
            // Without fresh data the stream stays open and sends nothing (issue 14 point 11).
            match tokio::time::timeout(Duration::from_secs(2), s.into_inner().message()).await {
                Ok(first) => seen += &format!("stream: {first:?}\n"),
                Err(_) => seen += "stream: open, nothing sent while stale\n",
            }
        }
        Err(e) => seen += &format!("stream: {e:?}\n"),
    }
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(testkit::scaler::channel(p.grpc).await);
    for service in ["", "liveness", "readiness"] {
        let h = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await;
        seen += &format!("health {service:?}: {h:?}\n");
    }
    for path in ["/livez", "/readyz", "/metrics"] {
        let (status, body) = p.get(path).await.expect("the admin port answers");
        seen += &format!("GET {path} {status}\n{body}\n");
    }
    seen
}

/// Every stderr line is a JSON object with a level (`--log-format json`).
fn assert_json_lines(stderr: &str) -> usize {
    let mut n = 0;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some(), "no level: {line}");
        n += 1;
    }
    n
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Refreshes fail: RPCs answer UNAVAILABLE with the (redacted) reason.
    Failing,
    /// Refreshes succeed.
    Ready,
}

/// Runs one process with `url`, checks the outcome and that no `secrets` leaked anywhere.
/// Returns what the clients saw.
async fn run_and_check(
    url: &str,
    via: UrlVia,
    extra: &[&str],
    expect: Expect,
    secrets: &[&Secret],
) -> String {
    let mut p = start(url, via, extra, "5s").await;
    match expect {
        Expect::Failing => {
            p.wait_metrics("airflow_keda_scaler_refresh_errors_total{")
                .await
        }
        Expect::Ready => p.wait_metrics("airflow_keda_scaler_ready 1").await,
    };
    let seen = call_everything(&p).await;
    p.signal();
    let (status, took) = p.exit_within(Duration::from_secs(7)).await;
    assert!(
        status.success(),
        "exit {status} after SIGTERM:\n{}",
        p.stderr()
    );
    assert!(took < Duration::from_secs(5), "exit took {took:?}");
    let stderr = p.stderr();
    let lines = assert_json_lines(&stderr);
    assert!(lines > 3, "too few log lines to prove anything:\n{stderr}");
    match expect {
        Expect::Failing => {
            assert!(seen.contains("Unavailable"), "{seen}");
            assert!(
                stderr.contains("refresh of the Airflow metadata database failed"),
                "{stderr}"
            );
        }
        Expect::Ready => {
            assert!(seen.contains("metric_value"), "{seen}");
            assert!(
                stderr.contains("Airflow metadata schema detected"),
                "{stderr}"
            );
        }
    }
    for secret in secrets {
        secret.assert_absent("the log", &stderr);
        secret.assert_absent("stdout", &p.stdout());
        secret.assert_absent("RPC answers, health, /livez, /readyz or /metrics", &seen);
    }
    eprintln!(
        "proof_secrets: {expect:?}: {lines} JSON log lines ({} bytes) and {} bytes of RPC \
         answers, health and admin pages scanned: no password",
        stderr.len(),
        seen.len()
    );
    seen
}

/// `url` with `user:password` put in (both percent-encoded).
fn with_credentials(url: &str, user: &str, password: &str) -> String {
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let (scheme, rest) = url.split_once("://").unwrap();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    format!("{scheme}://{}:{}@{rest}", enc(user), enc(password))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_database_password_never_shown() {
    let secret = Secret::new();
    // Airflow's own variable, SQLAlchemy form, a port nothing listens on.
    let url = with_credentials(
        &format!("postgresql+psycopg2://127.0.0.1:{}/airflow", free_port()),
        "airflow",
        &secret.raw,
    );
    let seen = run_and_check(&url, UrlVia::AirflowEnv, &[], Expect::Failing, &[&secret]).await;
    // The reason is there, with the redacted URL (user, no password).
    assert!(
        seen.contains("cannot connect to postgres://airflow@127.0.0.1:"),
        "{seen}"
    );
    assert!(
        seen.contains("refresh_errors_total{kind=\"connect\"}"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unknown_role_password_never_shown() {
    let db = TestDb::postgres().await;
    create(&db, AirflowVersion::V3, &[]).await;
    let secret = Secret::new();
    let role = format!("aks_nobody_{:08x}", rand::random::<u32>());
    let url = db.url_as(&role, Some(&secret.raw));
    let seen = run_and_check(&url, UrlVia::Flag, &[], Expect::Failing, &[&secret]).await;
    assert!(seen.contains(&role), "the reason names the role: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_working_connection_passwords_never_shown() {
    let db = TestDb::postgres().await;
    let rows = [FixtureRow::new(
        "dag",
        "t",
        "run",
        Some("queued"),
        "default",
    )];
    create(&db, AirflowVersion::V3, &rows).await;
    // The test server trusts local logins: any password works, and must still stay hidden.
    let in_url = Secret::new();
    let url = db.url_as("postgres", Some(&in_url.raw));
    run_and_check(&url, UrlVia::Env, &[], Expect::Ready, &[&in_url]).await;

    // A password file replaces the URL's password; neither may show.
    let in_file = Secret::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{}\n", in_file.raw)).unwrap();
    let file = file.display().to_string();
    run_and_check(
        &url,
        UrlVia::Flag,
        &["--database-password-file", &file],
        Expect::Ready,
        &[&in_url, &in_file],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_wrong_and_right_password_never_shown() {
    let mut db = TestDb::mysql().await;
    create(&db, AirflowVersion::V3, &[]).await;
    let right = Secret::new();
    let user = db.create_user(&right.raw).await;
    let wrong = Secret::new();
    let seen = run_and_check(
        &db.url_as(&user, Some(&wrong.raw)),
        UrlVia::Env,
        &[],
        Expect::Failing,
        &[&wrong, &right],
    )
    .await;
    assert!(seen.contains("Access denied"), "{seen}");
    run_and_check(
        &db.url_as(&user, Some(&right.raw)),
        UrlVia::Flag,
        &[],
        Expect::Ready,
        &[&right, &wrong],
    )
    .await;
}

/// Queue names that are SQL, quotes, wildcards, placeholders or Unicode are data: each is
/// counted exactly (its own count, distinct from every other), on every database.
async fn queue_names_are_data(db: TestDb) {
    let names = [
        "x'; DROP TABLE task_instance; --",
        "' OR '1'='1",
        "q\"uote",
        "semi;colon",
        "back\\slash",
        "100%_like",
        "$1",
        "?",
        ":name",
        "/* comment */",
        "ünïcødé-队列-🚀",
        "ML",
        "ml",
    ];
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        for j in 0..=i {
            let state = if j % 2 == 0 { "queued" } else { "running" };
            rows.push(FixtureRow::new(
                "dag",
                &format!("t{i}_{j}"),
                "run",
                Some(state),
                name,
            ));
        }
    }
    create(&db, AirflowVersion::V3, &rows).await;
    let mut r = testkit::scaler::start(
        db.url(),
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .await;
    testkit::scaler::wait_ready(&mut r.health).await;
    for _round in 0..2 {
        for (i, name) in names.iter().enumerate() {
            let got = r
                .client
                .get_metrics(GetMetricsRequest {
                    scaled_object_ref: Some(object(&[("queues", name)])),
                    metric_name: String::new(),
                })
                .await
                .unwrap_or_else(|e| panic!("{name:?}: {e:?}"))
                .into_inner()
                .metric_values[0]
                .metric_value;
            assert_eq!(got, i as i64 + 1, "{:?}: queue {name:?}", db.dialect());
        }
        // The table is still there and still read: a refresh later, the same answers.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    r.scaler.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_are_data_postgres() {
    queue_names_are_data(TestDb::postgres().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_are_data_mariadb() {
    queue_names_are_data(TestDb::mysql().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_names_are_data_sqlite() {
    queue_names_are_data(TestDb::sqlite().await).await;
}

/// The statements the scaler sends are constants: nothing a trigger or a row holds can become
/// SQL. (A guard against someone building SQL with `format!` in the runtime path.)
#[test]
fn runtime_sql_is_constant() {
    for dialect in [Dialect::Postgres, Dialect::MySql, Dialect::Sqlite] {
        let sql = dialect.sql();
        for statement in [sql.detect_columns, sql.counts, sql.counts_with_executor] {
            assert!(
                !statement.contains('$') && !statement.contains('?'),
                "{statement}"
            );
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![
        root.join("scaler/refresher.rs"),
        root.join("scaler/grpc/service.rs"),
        root.join("demo/schema.rs"),
    ];
    // Every file of the database layer, sub-modules included.
    let mut dirs = vec![root.join("scaler/db")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let upper = line.to_ascii_uppercase();
            let builds_sql = (upper.contains("FORMAT!") || upper.contains("PUSH_STR"))
                && [
                    "SELECT ", "WHERE ", " FROM ", "INSERT ", "UPDATE ", "DELETE ",
                ]
                .iter()
                .any(|kw| upper.contains(kw));
            assert!(
                !builds_sql,
                "{}:{}: SQL built at run time: {line}",
                file.display(),
                n + 1
            );
        }
    }
}

/// Starts a scaler on a SQLite database and waits until it is ready.
async fn ready_sqlite_process(grace: &str) -> (Serve, TestDb) {
    let db = TestDb::sqlite().await;
    let rows = [FixtureRow::new(
        "dag",
        "t",
        "run",
        Some("queued"),
        "default",
    )];
    create(&db, AirflowVersion::V3, &rows).await;
    let p = start(db.url(), UrlVia::Flag, &[], grace).await;
    p.wait_metrics("airflow_keda_scaler_ready 1").await;
    (p, db)
}

/// A call that never finishes: a reflection stream whose request side stays open.
async fn hold_a_call(grpc: SocketAddr) -> impl Send {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let mut client = ServerReflectionClient::new(testkit::scaler::channel(grpc).await);
    let first = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let requests =
        futures::StreamExt::chain(tokio_stream::iter([first]), futures::stream::pending());
    let mut responses = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    responses.message().await.unwrap().expect("a first answer");
    (client, responses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_with_ok_and_exits_zero() {
    let (mut p, _db) = ready_sqlite_process("10s").await;
    let mut client = p.client().await;
    let mut stream = client
        .stream_is_active(object(&[("workerQueue", "default")]))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().unwrap().result);
    let signalled = Instant::now();
    p.signal();
    // The stream ends with status OK (KEDA reconnects without backoff penalty).
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends after SIGTERM");
    assert!(matches!(end, Ok(None)), "stream end: {end:?}");
    let (status, _) = p.exit_within(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "exit {status}:\n{}", p.stderr());
    assert!(
        took < Duration::from_secs(3),
        "exit took {took:?} (grace 10 s)"
    );
    let stderr = p.stderr();
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert!(stderr.contains("Clean"), "{stderr}");
    eprintln!("proof_secrets: SIGTERM with an open stream: stream ended OK, exit 0 after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_bounds_a_stuck_drain() {
    let (mut p, _db) = ready_sqlite_process("1s").await;
    let _held = hold_a_call(p.grpc).await;
    let signalled = Instant::now();
    p.signal();
    let (status, _) = p.exit_within(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert_eq!(
        status.code(),
        Some(1),
        "grace expired → exit 1:\n{}",
        p.stderr()
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "exit after {took:?} with a 1 s grace period"
    );
    assert!(p.stderr().contains("GraceExpired"), "{}", p.stderr());
    eprintln!("proof_secrets: stuck call, grace 1 s: exit 1 after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_at_once() {
    let (mut p, _db) = ready_sqlite_process("30s").await;
    let _held = hold_a_call(p.grpc).await;
    p.signal();
    // The drain is really held up by the open call.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        p.process.exited().is_none(),
        "exited before the second signal:\n{}",
        p.stderr()
    );
    let second = Instant::now();
    p.signal();
    let (status, _) = p.exit_within(Duration::from_secs(5)).await;
    let took = second.elapsed();
    assert_eq!(status.code(), Some(1), "forced → exit 1:\n{}", p.stderr());
    assert!(
        took < Duration::from_secs(1),
        "second SIGTERM: exit after {took:?}"
    );
    assert!(p.stderr().contains("Forced"), "{}", p.stderr());
    eprintln!("proof_secrets: second SIGTERM during a 30 s drain: exit 1 after {took:?}");
}

/// Startup failures (malformed URLs) and `--help` never echo the password either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_errors_and_help_never_echo_the_password() {
    let secret = Secret::new();
    let pw = secret.encoded();
    let urls = [
        format!("postgres://airflow:{pw}@127.0.0.1:notaport/airflow"),
        format!("postgres://airflow:{pw}@[::1/airflow"),
        format!("mongodb://airflow:{pw}@db/airflow"),
        format!("postgres://airflow:{pw}@127.0.0.1:5432/airflow?sslmode=bogus"),
        format!("mysql+mysqldb://airflow:{pw}@db:3306/airflow?ssl-mode=bogus"),
        format!("postgres//airflow:{pw}@db/airflow"),
        format!("postgres://airflow:{pw}%E2@db/airflow"),
        secret.raw.clone(),
    ];
    let mut refused = 0;
    for url in &urls {
        let out = tokio::process::Command::new(BIN)
            .args(["--log-format", "json", "--log", "debug", "serve"])
            .args(["--grpc-addr", "127.0.0.1:0", "--probe-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            .env("AIRFLOW_KEDA_SCALER_DATABASE_URL", url)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(10), out)
            .await
            .expect("a bad URL stops the program at once")
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 3: invalid configuration (README, exit codes).
        assert_eq!(out.status.code(), Some(3), "{url}: {stderr}");
        assert!(stderr.contains("database configuration"), "{url}: {stderr}");
        secret.assert_absent("a startup error", &stderr);
        secret.assert_absent("stdout", &String::from_utf8_lossy(&out.stdout));
        refused += 1;
    }
    // `--help` shows where the URL comes from, never its value.
    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--help"])
        .env("AIRFLOW_KEDA_SCALER_DATABASE_URL", &urls[0])
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", &urls[0])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("AIRFLOW_KEDA_SCALER_DATABASE_URL"), "{help}");
    secret.assert_absent("--help", &help);
    eprintln!(
        "proof_secrets: {refused} malformed URLs refused at start, --help: no password shown"
    );
}

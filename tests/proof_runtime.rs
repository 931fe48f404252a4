//! Proof, through the real binary: what KEDA's fallback, rollouts and bad days need (issue 14).
//!
//! - a database outage: `GetMetricSpec` / `StreamMetricSpec` keep answering, `StreamIsActive`
//!   stays open and silent and sends the state as soon as the database is back, a stream
//!   opened during the outage too; `/metrics` drops the snapshot's numbers while stale and
//!   speaks the Prometheus text format 0.0.4 when asked;
//! - SIGTERM: readiness NOT_SERVING at once (probe port and `/readyz`), still serving new
//!   connections for `--drain-delay`, then streams and `Health.Watch` end with OK, exit 0;
//!   `Health.Watch` sends only changes;
//! - the open-files limit exhausted by idle clients: liveness keeps answering, the accept loop
//!   does not spin, idle connections are closed after `--idle-timeout`;
//! - a slow refresh query stretches the refresh interval (duty-cycle bound) and a fast one
//!   brings it back; the effective interval is exported.

use std::time::{Duration, Instant};

use testkit::{
    airflow::{self, AirflowVersion, FixtureRow},
    binary::Serve,
    db::TestDb,
    relay::Relay,
    scaler::{create, metric, object},
};
use tokio::io::AsyncReadExt as _;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const BIN: &str = env!("CARGO_BIN_EXE_airflow-keda-scaler");

/// `serve` on `url` with `extra` flags (`ulimit -n` first when `nofile` is set).
async fn serve(url: &str, extra: &[&str], nofile: Option<u32>) -> Serve {
    serve_env(url, extra, nofile, &[]).await
}

/// [`serve`] with extra environment variables.
async fn serve_env(url: &str, extra: &[&str], nofile: Option<u32>, env: &[(&str, &str)]) -> Serve {
    let mut args = vec!["--database-url", url, "--database-timeout", "1s"];
    args.extend_from_slice(extra);
    Serve::start(BIN, &args, env, nofile).await
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn health(probe: &mut HealthClient<Channel>, service: &str) -> Option<ServingStatus> {
    let r = probe
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(r.into_inner().status).ok()
}

fn rows(n: usize, state: &str) -> Vec<FixtureRow> {
    (0..n)
        .map(|i| FixtureRow::new("dag", &format!("t{i}"), "run", Some(state), "default"))
        .collect()
}

async fn sqlite_serve(extra: &[&str], nofile: Option<u32>) -> (Serve, TestDb) {
    let db = TestDb::sqlite().await;
    create(&db, AirflowVersion::V3, &rows(3, "queued")).await;
    let p = serve(db.url(), extra, nofile).await;
    p.until("ready", Duration::from_secs(15), || async {
        gauge(&p.metrics().await, "airflow_keda_scaler_ready") == Some(1.0)
    })
    .await;
    (p, db)
}

/// Issue 14 points 1, 7, 11: an outage longer than `--max-staleness`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_keeps_specs_and_streams_and_hides_stale_numbers() {
    let db = TestDb::postgres().await;
    create(&db, AirflowVersion::V3, &rows(5, "queued")).await;
    let relay = Relay::start(db.addr()).await;
    let p = serve(
        &db.url_via(relay.addr()),
        &["--refresh-interval", "100ms", "--max-staleness", "1s"],
        None,
    )
    .await;
    p.until("ready", Duration::from_secs(15), || async {
        gauge(&p.metrics().await, "airflow_keda_scaler_ready") == Some(1.0)
    })
    .await;
    let mut client = p.client().await;
    let queue = object(&[("workerQueue", "default"), ("activationTasks", "6")]);
    let mut stream = client
        .stream_is_active(queue.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!stream.message().await.unwrap().unwrap().result, "5 ≤ 6");
    let text = p.metrics().await;
    assert_eq!(
        gauge(
            &text,
            "airflow_keda_scaler_queued_tasks{worker_queue=\"default\"}"
        ),
        Some(5.0),
        "{text}"
    );

    relay.cut();
    let cut = Instant::now();
    p.until("stale", Duration::from_secs(10), || async {
        gauge(&p.metrics().await, "airflow_keda_scaler_ready") == Some(0.0)
    })
    .await;
    let stale_after = cut.elapsed();

    // Point 1: the spec answers from metadata, so KEDA's fallback can engage.
    let spec = client
        .get_metric_spec(queue.clone())
        .await
        .expect("GetMetricSpec answers while stale")
        .into_inner();
    assert_eq!(spec.metric_specs[0].target_size, 4);
    let mut spec_stream = client
        .stream_metric_spec(queue.clone())
        .await
        .expect("StreamMetricSpec opens while stale")
        .into_inner();
    assert_eq!(
        spec_stream.message().await.unwrap().unwrap().metric_specs[0].target_size,
        4
    );
    // The pull RPCs carry the error.
    let err = metric(&mut client, "default").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.message().contains("--max-staleness"),
        "{}",
        err.message()
    );

    // Point 11: the stream stays open and silent; a new one opens while stale.
    let mut late = client
        .stream_is_active(queue.clone())
        .await
        .expect("StreamIsActive opens while stale")
        .into_inner();
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(quiet.is_err(), "sent while stale: {quiet:?}");

    // Point 7: the snapshot's numbers are gone while stale; text 0.0.4 when asked.
    let (status, ctype, text) = p
        .get_with("/metrics", Some("text/plain;version=0.0.4;q=0.9,*/*;q=0.1"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(ctype, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains("# TYPE airflow_keda_scaler_rpcs_total counter"),
        "{text}"
    );
    // Whole metric names: `airflow_parallelism` (Airflow's configured value, not from the
    // snapshot) may stay.
    for gone in [
        "queued_tasks",
        "running_tasks",
        "desired_workers",
        "scheduled_tasks",
        "parallelism",
    ] {
        let name = format!("airflow_keda_scaler_{gone}");
        assert!(
            !text
                .lines()
                .any(|l| l.split([' ', '{']).next() == Some(name.as_str())),
            "{gone} shown while stale:\n{text}"
        );
    }
    let (_, ctype, _) = p.get_with("/metrics", None).await.unwrap();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");

    // The database comes back with more work: both streams send the new state at once.
    airflow::execute(
        db.url(),
        &[airflow::insert_sql(
            db.dialect(),
            AirflowVersion::V3,
            &(5..9)
                .map(|i| FixtureRow::new("dag", &format!("t{i}"), "run", Some("queued"), "default"))
                .collect::<Vec<_>>(),
        )],
    )
    .await
    .unwrap();
    relay.restore();
    let restored = Instant::now();
    for s in [&mut stream, &mut late] {
        let pushed = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .unwrap_or_else(|_| panic!("no push after recovery:\n{}", p.stderr()))
            .unwrap()
            .unwrap();
        assert!(pushed.result, "9 > 6");
    }
    let pushed_after = restored.elapsed();
    assert_eq!(metric(&mut client, "default").await.unwrap(), 9);
    eprintln!(
        "proof_runtime: outage: stale after {stale_after:?}; GetMetricSpec/StreamMetricSpec \
         answered while stale; 2 streams stayed open, silent, and pushed true {pushed_after:?} \
         after the database came back"
    );
}

/// Issue 14 points 2 and 3: SIGTERM with a drain delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_keeps_serving_through_the_drain_delay_then_exits_zero() {
    let delay = Duration::from_millis(1500);
    let (mut p, _db) = sqlite_serve(
        &[
            "--refresh-interval",
            "50ms",
            "--drain-delay",
            "1500ms",
            "--shutdown-grace",
            "5s",
        ],
        None,
    )
    .await;
    let mut probe = p.probe().await;
    let mut watch = probe
        .watch(HealthCheckRequest {
            service: "readiness".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    // Point 3: 20 refreshes later, still nothing new on the Watch stream.
    let repeated = tokio::time::timeout(Duration::from_secs(1), watch.message()).await;
    assert!(repeated.is_err(), "Watch repeated a status: {repeated:?}");
    let mut client = p.client().await;
    let mut stream = client
        .stream_is_active(object(&[("workerQueue", "default")]))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().unwrap().result);

    let signalled = Instant::now();
    p.signal();
    let changed = tokio::time::timeout(Duration::from_secs(1), watch.message())
        .await
        .expect("Watch sends NOT_SERVING at once")
        .unwrap()
        .unwrap();
    assert_eq!(changed.status, ServingStatus::NotServing as i32);
    let not_serving_after = signalled.elapsed();
    let (status, body) = p.get("/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    // Still serving during the drain delay: a new connection, a call, liveness.
    let mut fresh = p.client().await;
    assert_eq!(metric(&mut fresh, "default").await.unwrap(), 3);
    assert_eq!(
        health(&mut p.probe().await, "liveness").await,
        Some(ServingStatus::Serving)
    );
    assert!(signalled.elapsed() < delay, "checks took the whole delay");

    // Then the stream and the Watch end with OK, and the process exits 0.
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends");
    assert!(matches!(end, Ok(None)), "stream end: {end:?}");
    let stream_end = signalled.elapsed();
    let watch_end = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the Watch ends");
    assert!(matches!(watch_end, Ok(None)), "Watch end: {watch_end:?}");
    let status = p.exit_within(Duration::from_secs(5)).await.0;
    let took = signalled.elapsed();
    assert!(status.success(), "exit {status}:\n{}", p.stderr());
    assert!(
        stream_end >= delay,
        "stream ended before the drain delay: {stream_end:?}"
    );
    assert!(took < delay + Duration::from_secs(2), "exit after {took:?}");
    eprintln!(
        "proof_runtime: SIGTERM (drain delay {delay:?}): NOT_SERVING after {not_serving_after:?}, \
         new calls served during the delay, stream and Watch ended OK at {stream_end:?}, exit 0 \
         after {took:?}"
    );
}

/// Issue 14 point 5, through the binary: a critical task that dies (the refresher or the
/// readiness tracker panics, the gRPC listener's accept stream ends) turns the probe port's
/// readiness off or closes it, and the process exits non-zero naming the task. The deaths are
/// injected with fail points (`fail` crate, cargo feature `failpoints`, on in `.ci/test`; a
/// build without the feature has none and skips this test).
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_critical_task_turns_the_probe_off_and_exits_non_zero() {
    // Counted fail points: the task dies after about 3 s of good refreshes (100 ms apart), so
    // the Watch below sees SERVING first. The gRPC listener dies on its first connection.
    let cases = [
        ("refresher-loop=30*off->panic", "refresher panicked", false),
        (
            "readiness-tracker=30*off->panic",
            "gRPC readiness panicked",
            false,
        ),
        (
            "grpc-accept=return",
            "gRPC server stopped unexpectedly",
            true,
        ),
    ];
    for (failpoint, reason, connect) in cases {
        let db = TestDb::sqlite().await;
        create(&db, AirflowVersion::V3, &rows(3, "queued")).await;
        let mut p = serve_env(
            db.url(),
            &["--refresh-interval", "100ms", "--drain-delay", "5s"],
            None,
            &[("FAILPOINTS", failpoint)],
        )
        .await;
        let mut watch = p
            .probe()
            .await
            .watch(HealthCheckRequest {
                service: "readiness".into(),
            })
            .await
            .expect("Watch readiness")
            .into_inner();
        let deadline = Duration::from_secs(10);
        // SERVING first (after the first refresh).
        loop {
            let m = tokio::time::timeout(deadline, watch.message())
                .await
                .expect("Watch sends SERVING")
                .expect("Watch stream")
                .expect("Watch open");
            if m.status == ServingStatus::Serving as i32 {
                break;
            }
        }
        if connect {
            // The listener dies on this connection; the call fails or is cut.
            let _ = tokio::time::timeout(deadline, async {
                metric(&mut p.client().await, "default").await
            })
            .await;
        }
        // Then readiness goes off (NOT_SERVING) or the probe port closes (the Watch ends):
        // never SERVING again.
        let after = tokio::time::timeout(deadline, watch.message())
            .await
            .expect("the probe stops saying SERVING");
        if let Ok(Some(m)) = after {
            assert_eq!(
                m.status,
                ServingStatus::NotServing as i32,
                "{failpoint}: {}",
                p.stderr()
            );
        }
        // The drain delay (5 s) is skipped: a dead task stops the process at once.
        let status = p.exit_within(Duration::from_secs(4)).await.0;
        let stderr = p.stderr();
        assert!(!status.success(), "{failpoint}: exit {status}\n{stderr}");
        assert!(
            stderr.contains(reason),
            "{failpoint}: the log names the task ({reason:?}):\n{stderr}"
        );
        eprintln!("proof_runtime: {failpoint}: probe off, exit {status}, log says {reason:?}");
    }
}

/// Issue 14 point 4: idle clients exhaust the open-files limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_answers_and_accept_does_not_spin_when_clients_exhaust_the_fd_limit() {
    let (p, _db) = sqlite_serve(
        &["--refresh-interval", "200ms", "--idle-timeout", "3s"],
        Some(160),
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..400 {
        match tokio::net::TcpStream::connect(p.grpc).await {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    // Let the server take what its cap allows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu_before = p.process.cpu();
    let window = Instant::now();
    for _ in 0..10 {
        let started = Instant::now();
        let live = tokio::time::timeout(Duration::from_secs(2), async {
            health(&mut p.probe().await, "liveness").await
        })
        .await
        .expect("liveness answers within 2 s");
        assert_eq!(live, Some(ServingStatus::Serving));
        assert!(started.elapsed() < Duration::from_secs(1));
        let (status, _) = p.get("/livez").await.expect("/livez answers");
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let used = p.process.cpu().saturating_sub(cpu_before);
    let share = used.as_secs_f64() / window.elapsed().as_secs_f64();
    assert!(share < 0.3, "CPU {share:.2} of a core while exhausted");

    // The idle connections the server took are closed after --idle-timeout.
    let mut closed = 0;
    let deadline = Instant::now() + Duration::from_secs(8);
    for s in &mut idle {
        let mut buf = [0u8; 64];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.max(Duration::from_millis(1)), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => closed += 1,
            Ok(Ok(_)) => {
                // HTTP/2 SETTINGS from the server; read on until the close.
                let mut rest = Vec::new();
                if let Ok(Ok(_)) = tokio::time::timeout(left, s.read_to_end(&mut rest)).await {
                    closed += 1;
                }
            }
            Err(_) => break,
        }
    }
    assert!(closed > 0, "no idle connection was closed");
    eprintln!(
        "proof_runtime: ulimit -n 160, {} idle connections: liveness and /livez answered 10/10, \
         CPU {:.0} % of a core, {closed} idle connections closed by --idle-timeout 3s",
        idle.len(),
        share * 100.0
    );
}

/// Issue 14 point 10: a slow refresh query stretches the interval, a fast one restores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refresh_query_stretches_the_interval_and_a_fast_one_restores_it() {
    let db = TestDb::postgres().await;
    create(&db, AirflowVersion::V3, &rows(2, "queued")).await;
    let slow = [
        "ALTER TABLE task_instance RENAME TO task_instance_rows",
        "CREATE VIEW task_instance AS SELECT t.* FROM task_instance_rows t, \
         (SELECT pg_sleep(0.1)) s",
    ];
    let slow: Vec<String> = slow.iter().map(|s| s.to_string()).collect();
    airflow::execute(db.url(), &slow).await.unwrap();
    let p = serve(
        db.url(),
        &[
            "--refresh-interval",
            "100ms",
            "--refresh-max-duty-cycle",
            "10%",
        ],
        None,
    )
    .await;
    // 0.1 s per query at 10 %: at least 1 s between refreshes.
    p.until("interval stretched", Duration::from_secs(15), || async {
        gauge(
            &p.metrics().await,
            "airflow_keda_scaler_refresh_interval_effective_seconds",
        )
        .is_some_and(|v| v >= 0.95)
    })
    .await;
    let stretched = gauge(
        &p.metrics().await,
        "airflow_keda_scaler_refresh_interval_effective_seconds",
    );
    airflow::execute(
        db.url(),
        &[
            "CREATE OR REPLACE VIEW task_instance AS SELECT t.* FROM task_instance_rows t, \
           (SELECT 1) s"
                .to_string(),
        ],
    )
    .await
    .unwrap();
    p.until("interval restored", Duration::from_secs(15), || async {
        gauge(
            &p.metrics().await,
            "airflow_keda_scaler_refresh_interval_effective_seconds",
        )
        .is_some_and(|v| v < 0.15)
    })
    .await;
    assert!(
        p.stderr().contains("refresh interval stretched"),
        "{}",
        p.stderr()
    );
    eprintln!(
        "proof_runtime: 0.1 s query at --refresh-interval 100ms, --refresh-max-duty-cycle 10%: \
         effective interval {stretched:?} s; back to 0.1 s once the query is fast"
    );
}

/// Issue 14 point 9: the database password rotates (MariaDB: the PostgreSQL test server trusts
/// every loopback login, so a password proves nothing there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_password_file_is_used_without_a_restart() {
    let mut db = TestDb::mysql().await;
    create(&db, AirflowVersion::V3, &rows(2, "queued")).await;
    let user = db.create_user("first-Pa55").await;
    let relay = Relay::start(db.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "first-Pa55\n").unwrap();
    let url = db.url_as(&user, None).replace(
        &format!(":{}/", db.addr().port()),
        &format!(":{}/", relay.addr().port()),
    );
    let p = serve(
        &url,
        &[
            "--refresh-interval",
            "100ms",
            "--max-staleness",
            "1s",
            "--database-password-file",
            file.to_str().unwrap(),
        ],
        None,
    )
    .await;
    let ready = |want: f64| {
        let p = &p;
        move || async move { gauge(&p.metrics().await, "airflow_keda_scaler_ready") == Some(want) }
    };
    p.until("ready", Duration::from_secs(15), ready(1.0)).await;

    // The password changes in the database; open connections die (as on a database restart).
    let admin = testkit::db::admin_url(db.dialect());
    airflow::execute(
        &admin,
        &[format!(
            "ALTER USER '{user}'@'%' IDENTIFIED BY 'second-Pa55'"
        )],
    )
    .await
    .unwrap();
    relay.cut();
    relay.restore();
    p.until(
        "stale with the old password",
        Duration::from_secs(15),
        ready(0.0),
    )
    .await;
    // The Secret is updated: the scaler reads the file again and recovers, same process.
    std::fs::write(&file, "second-Pa55\n").unwrap();
    let rotated = Instant::now();
    p.until(
        "ready with the new password",
        Duration::from_secs(15),
        ready(1.0),
    )
    .await;
    let took = rotated.elapsed();
    let mut client = p.client().await;
    assert_eq!(metric(&mut client, "default").await.unwrap(), 2);
    let log = p.stderr();
    assert!(log.contains("password file changed"), "{log}");
    assert!(!log.contains("Pa55"), "a password in the log:\n{log}");
    eprintln!(
        "proof_runtime: rotated MariaDB password: ready again {took:?} after the file changed"
    );
}

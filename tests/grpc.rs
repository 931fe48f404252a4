//! End to end: the scaler against real PostgreSQL, MariaDB and SQLite, asked through a real
//! tonic client (generated from KEDA's proto) over a loopback socket.

use std::time::Duration;

use airflow_keda_scaler::scaler::grpc::proto::externalscaler::GetMetricsRequest;
use testkit::airflow::{self, AirflowVersion, FixtureRow};
use testkit::{
    db::TestDb,
    relay::Relay,
    scaler::{channel, create, health_of, metric, object, start, wait_ready},
};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

const CELERY_PATH: &str = "airflow.providers.celery.executors.celery_executor.CeleryExecutor";

/// Rows in every state, several queues and executors. Returns them with the expected
/// (default, ml) metric values for schemas with and without the executor column.
fn rows() -> Vec<FixtureRow> {
    let mut rows = Vec::new();
    let mut n = 0;
    let mut add = |state: Option<&str>, queue: &str, executor: Option<&str>, count: usize| {
        for _ in 0..count {
            n += 1;
            rows.push(
                FixtureRow::new("dag", &format!("t{n}"), "run_1", state, queue)
                    .with_executor(executor),
            );
        }
    };
    add(Some("queued"), "default", None, 3);
    add(Some("running"), "default", Some("CeleryExecutor"), 5);
    add(Some("running"), "default", Some("KubernetesExecutor"), 7);
    add(Some("queued"), "default", Some(CELERY_PATH), 1);
    add(Some("queued"), "ml", None, 2);
    add(
        Some("running"),
        "gpu'; DROP TABLE task_instance; --",
        None,
        1,
    );
    // Every other state: none of these may count.
    for state in airflow::ALL_STATES
        .into_iter()
        .filter(|s| !matches!(s, Some("queued" | "running")))
    {
        add(state, "default", None, 2);
        add(state, "ml", Some("CeleryExecutor"), 1);
    }
    rows
}

/// Every RPC and health, for one database and one Airflow schema.
async fn check_all_rpcs(db: TestDb, version: AirflowVersion) {
    create(&db, version, &rows()).await;
    let mut r = start(
        db.url(),
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        health_of(&mut r.health, "liveness").await,
        ServingStatus::Serving
    );
    wait_ready(&mut r.health).await;
    assert_eq!(health_of(&mut r.health, "").await, ServingStatus::Serving);

    // default: 3 NULL + 5 Celery + 1 Celery module path (+ 7 Kubernetes without the column).
    let want_default = if version.has_executor() { 9 } else { 16 };
    assert_eq!(
        metric(&mut r.client, "default").await.unwrap(),
        want_default,
        "{version:?}"
    );
    // ml: 2 queued on `ml` + 1 running on the queue whose name is SQL.
    assert_eq!(metric(&mut r.client, "ml").await.unwrap(), 3, "{version:?}");

    let spec = r
        .client
        .get_metric_spec(object(&[("workerQueue", "default")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(spec.metric_specs[0].target_size, 4);
    assert_eq!(spec.metric_specs[0].target_size_float, 4.0);
    assert_eq!(spec.metric_specs[0].metric_name, "airflow-tasks-default");

    let active = |pairs: &'static [(&'static str, &'static str)]| {
        let mut c = r.client.clone();
        async move {
            c.is_active(object(pairs))
                .await
                .unwrap()
                .into_inner()
                .result
        }
    };
    assert!(active(&[("workerQueue", "default")]).await);
    // ml has 3 tasks, activationTasks 10.
    assert!(!active(&[("workerQueue", "ml")]).await);
    assert!(active(&[("workerQueue", "ml"), ("activationTasks", "2")]).await);
    // Inline, no file entry: a queue without work.
    assert!(!active(&[("queues", "nothing-here")]).await);
    // NULL executor rows stop counting when Celery is not the default executor.
    let not_default = r
        .client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object(&[
                ("queues", "default"),
                ("defaultExecutor", "false"),
            ])),
            metric_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let want = if version.has_executor() { 6 } else { 16 };
    assert_eq!(
        not_default.metric_values[0].metric_value, want,
        "{version:?}"
    );

    // Bad metadata: INVALID_ARGUMENT naming the key.
    let err = r
        .client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object(&[("maxTasksPerWorker", "0")])),
            metric_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("maxTasksPerWorker"),
        "{}",
        err.message()
    );

    // StreamIsActive: the current state at once.
    let mut stream = r
        .client
        .stream_is_active(object(&[("workerQueue", "default")]))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().unwrap().result);
    // StreamMetricSpec: the spec at once.
    let mut specs = r
        .client
        .stream_metric_spec(object(&[("workerQueue", "ml")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        specs.message().await.unwrap().unwrap().metric_specs[0].target_size,
        2
    );

    // Shutdown: streams end with status OK, readiness goes away with the server.
    r.scaler.shutdown.cancel();
    assert_eq!(stream.message().await.unwrap(), None, "stream ends with OK");
    assert_eq!(specs.message().await.unwrap(), None, "stream ends with OK");
    r.scaler.wait().await.unwrap();
}

macro_rules! matrix {
    ($($name:ident: $db:ident, $version:ident;)*) => {$(
        #[tokio::test]
        async fn $name() {
            check_all_rpcs(TestDb::$db().await, AirflowVersion::$version).await;
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

/// A task queued in an idle queue reaches a StreamIsActive client as `true`, once.
#[tokio::test]
async fn stream_is_active_pushes_transitions() {
    let db = TestDb::postgres().await;
    create(&db, AirflowVersion::V3, &[]).await;
    let mut r = start(db.url(), Duration::from_millis(50), Duration::from_secs(30)).await;
    wait_ready(&mut r.health).await;
    let mut stream = r
        .client
        .stream_is_active(object(&[("workerQueue", "default")]))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !stream.message().await.unwrap().unwrap().result,
        "idle at first"
    );

    let row = FixtureRow::new("dag", "t", "run", Some("queued"), "default");
    airflow::execute(
        db.url(),
        &[airflow::insert_sql(
            db.dialect(),
            AirflowVersion::V3,
            &[row],
        )],
    )
    .await
    .unwrap();
    // A deadline on the event, generous for a busy machine (push latency is measured in the
    // benchmarks, P4, not here).
    let pushed = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("pushed within 10 s")
        .unwrap()
        .unwrap();
    assert!(pushed.result);

    // No repeat while nothing changes: many refreshes later, the next message the stream
    // carries is the next transition (`false`, once the task is done), not another `true`.
    let mut published = r.scaler.store.subscribe();
    let generation = published.borrow_and_update().generation;
    tokio::time::timeout(Duration::from_secs(10), async {
        while published.borrow_and_update().generation < generation + 5 {
            published.changed().await.unwrap();
        }
    })
    .await
    .expect("5 more refreshes within 10 s");
    airflow::execute(
        db.url(),
        &["UPDATE task_instance SET state = 'success'".to_string()],
    )
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("pushed within 10 s")
        .unwrap()
        .unwrap();
    assert!(
        !next.result,
        "a repeated `true` came before the transition to `false`"
    );
    r.scaler.stop().await.unwrap();
}

/// The connection is cut: the last snapshot is served until the staleness bound, then
/// `GetMetrics` and `IsActive` answer UNAVAILABLE (never 0 / false), readiness is NOT_SERVING,
/// the spec RPCs still answer and streams stay open, silent; after the database returns, the
/// scaler recovers by itself and the streams send the current state.
#[tokio::test]
async fn database_loss_then_recovery() {
    let db = TestDb::postgres().await;
    let rows: Vec<FixtureRow> = (0..6)
        .map(|i| FixtureRow::new("dag", &format!("t{i}"), "run", Some("running"), "default"))
        .collect();
    create(&db, AirflowVersion::V3, &rows).await;
    let relay = Relay::start(db.addr()).await;
    let url = db.url_via(relay.addr());
    let staleness = Duration::from_millis(1500);
    let mut r = start(&url, Duration::from_millis(100), staleness).await;
    wait_ready(&mut r.health).await;
    assert_eq!(metric(&mut r.client, "default").await.unwrap(), 6);

    relay.cut();
    let cut_at = std::time::Instant::now();
    let mut served = 0;
    let mut unavailable = 0;
    let mut stream = r
        .client
        .stream_is_active(object(&[("workerQueue", "default")]))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().unwrap().result);
    // Until the first UNAVAILABLE (deadline 20 s). A served answer must have been asked for
    // within the staleness bound (plus one refresh): the server cannot answer from a snapshot
    // older than the bound, and a slow machine only makes `asked` earlier, never later.
    while unavailable == 0 {
        assert!(
            cut_at.elapsed() < Duration::from_secs(20),
            "still served 20 s after the cut"
        );
        let asked = cut_at.elapsed();
        match metric(&mut r.client, "default").await {
            Ok(v) => {
                assert_eq!(v, 6, "the last snapshot, never 0");
                assert!(
                    asked < staleness + Duration::from_millis(100),
                    "served {asked:?} after the cut"
                );
                served += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable);
                assert!(status.message().contains("old"), "{}", status.message());
                unavailable += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        served > 0 && unavailable > 0,
        "served {served}, unavailable {unavailable}"
    );
    assert_eq!(
        health_of(&mut r.health, "readiness").await,
        ServingStatus::NotServing
    );
    let is_active = r
        .client
        .is_active(object(&[("workerQueue", "default")]))
        .await;
    assert_eq!(is_active.unwrap_err().code(), Code::Unavailable);
    // The spec depends only on metadata: it answers while stale, so KEDA's fallback can engage.
    let spec = r
        .client
        .get_metric_spec(object(&[("workerQueue", "default")]))
        .await
        .expect("GetMetricSpec answers while the data is stale")
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    let mut spec_stream = r
        .client
        .stream_metric_spec(object(&[("workerQueue", "default")]))
        .await
        .expect("StreamMetricSpec opens while stale")
        .into_inner();
    assert_eq!(
        spec_stream
            .message()
            .await
            .unwrap()
            .unwrap()
            .metric_specs
            .len(),
        1
    );
    // The stream stays open and sends nothing while stale (never `false`, never an error that
    // would start KEDA's reconnect back-off); a new stream opens while stale too.
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(quiet.is_err(), "nothing sent while stale: {quiet:?}");
    let mut opened_while_stale = r
        .client
        .stream_is_active(object(&[("workerQueue", "default")]))
        .await
        .expect("StreamIsActive opens while stale")
        .into_inner();

    relay.restore();
    // As soon as a fresh snapshot arrives, both streams send the current state.
    for s in [&mut stream, &mut opened_while_stale] {
        let pushed = tokio::time::timeout(Duration::from_secs(5), s.message())
            .await
            .expect("a push after recovery")
            .unwrap()
            .unwrap();
        assert!(pushed.result);
    }
    wait_ready(&mut r.health).await;
    assert_eq!(metric(&mut r.client, "default").await.unwrap(), 6);
    r.scaler.stop().await.unwrap();
}

/// Without a reachable database the server still starts, answers UNAVAILABLE and is not ready;
/// once a refresh has failed, the answer carries its reason, without the password.
#[tokio::test]
async fn unreachable_database_at_start_is_unavailable_not_zero() {
    let mut r = start(
        "postgres://airflow:s3cr3t-password@127.0.0.1:1/airflow",
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .await;
    // Wait for the event (the first failed refresh recorded), not for a guessed time: before
    // it, the answer is a placeholder that cannot contain the password anyway.
    let mut published = r.scaler.store.subscribe();
    let reason = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(reason) = published.borrow_and_update().last_error.clone() {
                break reason;
            }
            published.changed().await.unwrap();
        }
    })
    .await
    .expect("a failed refresh within 20 s");
    let err = metric(&mut r.client, "default").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains(&*reason),
        "{} / {reason}",
        err.message()
    );
    assert!(!err.message().contains("s3cr3t"), "{}", err.message());
    assert_eq!(
        health_of(&mut r.health, "readiness").await,
        ServingStatus::NotServing
    );
    r.scaler.stop().await.unwrap();
}

/// Lists the services over gRPC reflection of version `$v` (`v1` or `v1alpha`).
macro_rules! reflection_services {
    ($v:ident, $addr:expr) => {{
        use tonic_reflection::pb::$v::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel($addr).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect(concat!("reflection ", stringify!($v), " is served"))
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection answer");
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

/// gRPC reflection, both v1 and v1alpha (grpcurl < 1.9 speaks only v1alpha), lists the scaler
/// and health services.
#[tokio::test]
async fn reflection_v1_and_v1alpha_list_services() {
    let db = TestDb::sqlite().await;
    create(&db, AirflowVersion::V3, &[]).await;
    let r = start(
        db.url(),
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .await;
    for names in [
        reflection_services!(v1, r.scaler.grpc_addr),
        reflection_services!(v1alpha, r.scaler.grpc_addr),
    ] {
        for service in ["externalscaler.ExternalScaler", "grpc.health.v1.Health"] {
            assert!(names.iter().any(|n| n == service), "{names:?}");
        }
    }
    r.scaler.stop().await.unwrap();
}

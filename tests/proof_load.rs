//! Proof: load. [`STREAMS`] concurrent `StreamIsActive` streams on ONE HTTP/2 connection (what
//! KEDA does: one long-lived connection per scaler address), plus [`UNARY_TASKS`] client tasks
//! calling the unary RPCs back to back for at least [`LOAD`] and [`CALLS_PER_TASK`] calls each — half on that same connection, half on
//! their own. Asserts zero errors and correct values, that every stream got its initial
//! message, and that one queued task reaches every stream. Reports RSS (`VmRSS` of this
//! process: server and clients together) before, under load, and after the streams closed.
//!
//! Per-connection stream limit: hyper's HTTP/2 server defaults to 200 concurrent streams, but
//! tonic's `Server` passes its own `max_concurrent_streams` (default `None`) through, so no
//! `SETTINGS_MAX_CONCURRENT_STREAMS` is advertised and one connection carries all 1 000
//! streams. This test keeps that true.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use airflow_keda_scaler::scaler::grpc::proto::externalscaler::{
    GetMetricsRequest, ScaledObjectRef, external_scaler_client::ExternalScalerClient,
};
use testkit::airflow::{self, AirflowVersion, FixtureRow};
use testkit::{
    db::TestDb,
    scaler::{channel, create, health_of, object, start, wait_ready},
};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

const STREAMS: usize = 1000;
const UNARY_TASKS: usize = 8;
const LOAD: Duration = Duration::from_secs(5);
/// Every unary task makes at least this many calls, however long it takes the machine.
const CALLS_PER_TASK: u64 = 200;
/// The calls must be done by then (an event deadline, not a throughput figure).
const LOAD_DEADLINE: Duration = Duration::from_secs(120);
/// RSS growth allowed between "before" and "under load" (a report, not a benchmark).
const RSS_GROWTH_LIMIT_KIB: u64 = 200 * 1024;

/// `VmRSS` of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The metadata of stream `i`: four shapes, all of them watching the `default` queue.
fn stream_ref(i: usize) -> ScaledObjectRef {
    let pairs: Vec<(String, String)> = match i % 4 {
        0 => vec![("workerQueue".into(), "default".into())],
        1 => vec![("queues".into(), "default".into())],
        2 => vec![("queues".into(), format!("default,load-{i}"))],
        _ => vec![
            ("queues".into(), "default".into()),
            ("maxTasksPerWorker".into(), "8".into()),
            ("scalerAddress".into(), "scaler:9090".into()),
        ],
    };
    ScaledObjectRef {
        name: format!("so-{i}"),
        namespace: "airflow".into(),
        scaler_metadata: pairs.into_iter().collect::<HashMap<_, _>>(),
    }
}

#[derive(Debug)]
enum Event {
    /// The stream's first message.
    Opened(usize, bool),
    /// A later message.
    Pushed(usize, bool, Instant),
    /// Opening failed, the stream failed or ended early.
    Error(usize, String),
}

/// Opens stream `i`, reports its first message, then every later one, until `stop`.
async fn hold_stream(
    mut client: ExternalScalerClient<Channel>,
    i: usize,
    events: mpsc::UnboundedSender<Event>,
    stop: CancellationToken,
) {
    let mut stream = match client.stream_is_active(stream_ref(i)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let _ = events.send(Event::Error(i, format!("open: {s:?}")));
            return;
        }
    };
    let mut first = true;
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            m = stream.message() => m,
        };
        let event = match next {
            Ok(Some(m)) if first => Event::Opened(i, m.result),
            Ok(Some(m)) => Event::Pushed(i, m.result, Instant::now()),
            Ok(None) => Event::Error(i, "ended before the test stopped it".into()),
            Err(s) => Event::Error(i, format!("{s:?}")),
        };
        first = false;
        let end = matches!(event, Event::Error(..));
        let _ = events.send(event);
        if end {
            return;
        }
    }
}

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    errors: AtomicU64,
    max_latency_us: AtomicU64,
}

/// Unary calls back to back for at least [`LOAD`] and at least [`CALLS_PER_TASK`] calls (a busy
/// machine takes longer, it does not fail the proof), each answer checked. Panics if the calls
/// are not done by [`LOAD_DEADLINE`].
async fn unary(
    mut client: ExternalScalerClient<Channel>,
    tally: Arc<Tally>,
    started: Instant,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut n: u64 = 0;
    while started.elapsed() < LOAD || n < CALLS_PER_TASK {
        assert!(
            started.elapsed() < LOAD_DEADLINE,
            "only {n} of {CALLS_PER_TASK} unary calls within {LOAD_DEADLINE:?}"
        );
        n += 1;
        let started = Instant::now();
        let problem: Option<String> = match n % 5 {
            0 => match client
                .get_metrics(GetMetricsRequest {
                    scaled_object_ref: Some(object(&[("workerQueue", "ml")])),
                    metric_name: "airflow-tasks-ml".into(),
                })
                .await
            {
                Ok(r)
                    if r.get_ref().metric_values.len() == 1
                        && r.get_ref().metric_values[0].metric_value == 3 =>
                {
                    None
                }
                other => Some(format!("GetMetrics ml: {other:?}")),
            },
            1 => match client
                .get_metrics(GetMetricsRequest {
                    scaled_object_ref: Some(object(&[("queues", "default")])),
                    metric_name: String::new(),
                })
                .await
            {
                Ok(r)
                    if r.get_ref().metric_values.len() == 1
                        && r.get_ref().metric_values[0].metric_value == 0 =>
                {
                    None
                }
                other => Some(format!("GetMetrics default: {other:?}")),
            },
            2 => match client
                .is_active(object(&[("workerQueue", "default")]))
                .await
            {
                Ok(r) if !r.get_ref().result => None,
                other => Some(format!("IsActive default: {other:?}")),
            },
            3 => match client
                .is_active(object(&[("workerQueue", "ml"), ("activationTasks", "2")]))
                .await
            {
                Ok(r) if r.get_ref().result => None,
                other => Some(format!("IsActive ml: {other:?}")),
            },
            _ => match client
                .get_metric_spec(object(&[("workerQueue", "default")]))
                .await
            {
                Ok(r)
                    if r.get_ref().metric_specs.len() == 1
                        && r.get_ref().metric_specs[0].target_size == 4 =>
                {
                    None
                }
                other => Some(format!("GetMetricSpec: {other:?}")),
            },
        };
        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        tally.max_latency_us.fetch_max(us, Ordering::Relaxed);
        tally.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(p) = problem {
            tally.errors.fetch_add(1, Ordering::Relaxed);
            if errors.len() < 5 {
                errors.push(p);
            }
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_streams_and_sustained_unary_calls() {
    let db = TestDb::postgres().await;
    // `ml` (queues ml + the SQL-named one): 3 tasks; `default` idle.
    let rows = vec![
        FixtureRow::new("dag", "a", "run", Some("queued"), "ml"),
        FixtureRow::new("dag", "b", "run", Some("running"), "ml"),
        FixtureRow::new(
            "dag",
            "c",
            "run",
            Some("running"),
            "gpu'; DROP TABLE task_instance; --",
        ),
        FixtureRow::new("dag", "d", "run", Some("success"), "default"),
    ];
    create(&db, AirflowVersion::V3, &rows).await;
    let mut r = start(
        db.url(),
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .await;
    wait_ready(&mut r.health).await;
    let rss_before = rss_kib();

    // All streams on one connection, as KEDA would hold them.
    let shared = channel(r.scaler.grpc_addr).await;
    let stop = CancellationToken::new();
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut streams = JoinSet::new();
    let opening = Instant::now();
    for i in 0..STREAMS {
        streams.spawn(hold_stream(
            ExternalScalerClient::new(shared.clone()),
            i,
            tx.clone(),
            stop.clone(),
        ));
    }
    drop(tx);
    let mut opened = vec![None; STREAMS];
    let mut errors: Vec<String> = Vec::new();
    let open_deadline = Instant::now() + Duration::from_secs(15);
    while opened.iter().any(Option::is_none) {
        match tokio::time::timeout_at(open_deadline.into(), events.recv()).await {
            Ok(Some(Event::Opened(i, active))) => opened[i] = Some(active),
            Ok(Some(Event::Error(i, what))) => errors.push(format!("stream {i}: {what}")),
            Ok(Some(other)) => errors.push(format!("{other:?}")),
            Ok(None) | Err(_) => break,
        }
    }
    let open_time = opening.elapsed();
    let opened_count = opened.iter().filter(|o| o.is_some()).count();
    assert!(errors.is_empty(), "stream errors while opening: {errors:?}");
    assert_eq!(
        opened_count, STREAMS,
        "streams that got their initial message"
    );
    assert!(
        opened.iter().all(|o| *o == Some(false)),
        "`default` is idle: every initial message is false"
    );

    // Sustained unary load while every stream stays open.
    let tally = Arc::new(Tally::default());
    let load_started = Instant::now();
    let mut unary_tasks = JoinSet::new();
    for i in 0..UNARY_TASKS {
        let client = if i % 2 == 0 {
            ExternalScalerClient::new(shared.clone())
        } else {
            ExternalScalerClient::new(channel(r.scaler.grpc_addr).await)
        };
        unary_tasks.spawn(unary(client, Arc::clone(&tally), load_started));
    }
    let mut unary_errors = Vec::new();
    while let Some(result) = unary_tasks.join_next().await {
        unary_errors.extend(result.unwrap());
    }
    let load_time = load_started.elapsed();
    let calls = tally.calls.load(Ordering::Relaxed);
    let call_errors = tally.errors.load(Ordering::Relaxed);
    let rss_loaded = rss_kib();
    // Nothing happened to the streams meanwhile (no transition, no error).
    while let Ok(event) = events.try_recv() {
        errors.push(format!("during the load: {event:?}"));
    }

    // One task queued in `default`: every stream must be told, once.
    let inserted = Instant::now();
    airflow::execute(
        db.url(),
        &[airflow::insert_sql(
            db.dialect(),
            AirflowVersion::V3,
            &[FixtureRow::new(
                "dag",
                "new",
                "run",
                Some("queued"),
                "default",
            )],
        )],
    )
    .await
    .unwrap();
    let mut told = vec![false; STREAMS];
    let mut last_delivery = Duration::ZERO;
    let push_deadline = Instant::now() + Duration::from_secs(10);
    while told.iter().any(|t| !t) {
        match tokio::time::timeout_at(push_deadline.into(), events.recv()).await {
            Ok(Some(Event::Pushed(i, true, at))) if !told[i] => {
                told[i] = true;
                last_delivery = last_delivery.max(at.duration_since(inserted));
            }
            Ok(Some(other)) => errors.push(format!("after the insert: {other:?}")),
            Ok(None) | Err(_) => break,
        }
    }
    let told_count = told.iter().filter(|t| **t).count();
    // No second push without a second transition.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(event) = events.try_recv() {
        errors.push(format!("repeat: {event:?}"));
    }
    assert_eq!(
        health_of(&mut r.health, "readiness").await,
        ServingStatus::Serving
    );

    stop.cancel();
    while let Some(result) = streams.join_next().await {
        result.unwrap();
    }
    drop(shared);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = rss_kib();

    eprintln!(
        "proof_load: {STREAMS} StreamIsActive streams on one HTTP/2 connection, all opened with \
         their initial message in {} ms; {UNARY_TASKS} unary tasks for {:.1} s: {calls} calls \
         ({:.0}/s), {call_errors} errors, max latency {:.1} ms; transition pushed to \
         {told_count}/{STREAMS} streams, the last {} ms after the insert; stream errors {}; \
         RSS before {:.1} MiB, under load {:.1} MiB (+{:.1}), after closing the streams {:.1} MiB",
        open_time.as_millis(),
        load_time.as_secs_f64(),
        calls as f64 / load_time.as_secs_f64(),
        tally.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
        last_delivery.as_millis(),
        errors.len(),
        mib(rss_before),
        mib(rss_loaded),
        mib(rss_loaded.saturating_sub(rss_before)),
        mib(rss_after),
    );
    assert!(errors.is_empty(), "stream errors: {errors:?}");
    assert_eq!(call_errors, 0, "unary errors, e.g. {unary_errors:?}");
    assert!(
        calls >= CALLS_PER_TASK * UNARY_TASKS as u64,
        "{calls} unary calls"
    );
    assert_eq!(told_count, STREAMS, "streams told about the transition");
    assert!(
        rss_loaded.saturating_sub(rss_before) < RSS_GROWTH_LIMIT_KIB,
        "RSS grew by {:.1} MiB",
        mib(rss_loaded - rss_before)
    );
    r.scaler.stop().await.unwrap();
}

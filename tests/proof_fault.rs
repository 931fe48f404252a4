//! Proof: the metadata database goes away for longer than `--max-staleness` while clients poll
//! and stream, then comes back.
//!
//! PostgreSQL is reached through a relay that the test cuts (every connection reset) for
//! [`OUTAGE`] > [`STALENESS`]. Meanwhile several client tasks call `GetMetrics` and `IsActive`
//! every ~50 ms, a few `StreamIsActive` streams behave like KEDA (reconnect when a stream ends),
//! and a health client polls readiness. During the outage three more tasks are queued directly
//! in the database, so the answers after recovery prove a new snapshot is served.
//!
//! Every answer is classified by when it was sent and asserted:
//! - never `0` / `false`: the real value is 7 before and during the outage, 10 after it;
//! - the last snapshot (7 / `true`) is served only while it is younger than the bound;
//! - after the bound every pull answer is `UNAVAILABLE`, readiness NOT_SERVING; streams stay
//!   open and silent (never push `false`, never end: KEDA's reconnect back-off never starts);
//! - after the database returns the scaler recovers without a restart: readiness SERVING, 10 /
//!   `true`, every stream (still the same one) sends `true`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use airflow_keda_scaler::scaler::grpc::proto::externalscaler::{
    GetMetricsRequest, external_scaler_client::ExternalScalerClient,
};
use testkit::airflow::{self, AirflowVersion, FixtureRow};
use testkit::{
    db::TestDb,
    relay::Relay,
    scaler::{channel, create, health_of, object, start},
};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const REFRESH: Duration = Duration::from_millis(100);
const STALENESS: Duration = Duration::from_millis(1500);
/// How long the database stays unreachable (> STALENESS).
const OUTAGE: Duration = Duration::from_millis(3500);
/// Healthy polling before the cut.
const HEALTHY: Duration = Duration::from_millis(600);
/// Polling after recovery.
const AFTER: Duration = Duration::from_millis(800);
/// Clock slack for "just before / after the bound" (the last snapshot may predate the cut by
/// one refresh; a refresh may finish just after it).
const SLACK: Duration = Duration::from_millis(500);
/// The real value before the cut, and after the tasks queued during the outage.
const BEFORE: i64 = 7;
const AFTER_VALUE: i64 = 10;
const POLLERS: usize = 4;
const STREAMS: usize = 3;

#[derive(Debug, Clone)]
enum Outcome {
    Metric(i64),
    Active(bool),
    Unavailable(String),
    Other(String),
}

#[derive(Debug, Clone)]
struct Answer {
    rpc: &'static str,
    sent: Instant,
    outcome: Outcome,
}

#[derive(Debug, Clone)]
enum StreamEvent {
    Pushed(bool),
    EndedUnavailable(String),
    EndedOk,
    OpenRefused(String),
    Failed(String),
}

type Log<T> = Arc<Mutex<Vec<(Instant, T)>>>;

fn classify<T>(result: Result<T, tonic::Status>, ok: impl FnOnce(T) -> Outcome) -> Outcome {
    match result {
        Ok(v) => ok(v),
        Err(s) if s.code() == Code::Unavailable => Outcome::Unavailable(s.message().to_string()),
        Err(s) => Outcome::Other(format!("{s:?}")),
    }
}

async fn poll(
    mut client: ExternalScalerClient<Channel>,
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: CancellationToken,
) {
    let limit = Duration::from_secs(2);
    while !stop.is_cancelled() {
        let sent = Instant::now();
        let outcome = match tokio::time::timeout(
            limit,
            client.get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(object(&[("workerQueue", "default")])),
                metric_name: "airflow-tasks-default".into(),
            }),
        )
        .await
        {
            Err(_) => Outcome::Other("GetMetrics timed out".into()),
            Ok(r) => classify(r, |r| {
                let values = r.into_inner().metric_values;
                match values.as_slice() {
                    [v] if v.metric_value as f64 == v.metric_value_float => {
                        Outcome::Metric(v.metric_value)
                    }
                    _ => Outcome::Other(format!("not exactly one consistent value: {values:?}")),
                }
            }),
        };
        answers.lock().unwrap().push(Answer {
            rpc: "GetMetrics",
            sent,
            outcome,
        });
        let sent = Instant::now();
        let outcome = match tokio::time::timeout(
            limit,
            client.is_active(object(&[("workerQueue", "default")])),
        )
        .await
        {
            Err(_) => Outcome::Other("IsActive timed out".into()),
            Ok(r) => classify(r, |r| Outcome::Active(r.into_inner().result)),
        };
        answers.lock().unwrap().push(Answer {
            rpc: "IsActive",
            sent,
            outcome,
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A KEDA-like `external-push` client: keeps a stream open, reopens it when it ends (after a
/// short pause instead of KEDA's 2 s backoff, to keep the test short).
async fn stream(
    mut client: ExternalScalerClient<Channel>,
    log: Log<StreamEvent>,
    stop: CancellationToken,
) {
    let record = |e: StreamEvent| log.lock().unwrap().push((Instant::now(), e));
    while !stop.is_cancelled() {
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            r = client.stream_is_active(object(&[("workerQueue", "default")])) => r,
        };
        match opened {
            Err(s) if s.code() == Code::Unavailable => {
                record(StreamEvent::OpenRefused(s.message().to_string()));
            }
            Err(s) => record(StreamEvent::Failed(format!("open: {s:?}"))),
            Ok(response) => {
                let mut messages = response.into_inner();
                loop {
                    let next = tokio::select! {
                        () = stop.cancelled() => return,
                        m = messages.message() => m,
                    };
                    match next {
                        Ok(Some(m)) => record(StreamEvent::Pushed(m.result)),
                        Ok(None) => {
                            record(StreamEvent::EndedOk);
                            break;
                        }
                        Err(s) if s.code() == Code::Unavailable => {
                            record(StreamEvent::EndedUnavailable(s.message().to_string()));
                            break;
                        }
                        Err(s) => {
                            record(StreamEvent::Failed(format!("{s:?}")));
                            break;
                        }
                    }
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn watch_readiness(
    mut health: HealthClient<Channel>,
    log: Log<Option<ServingStatus>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let status = health
            .check(HealthCheckRequest {
                service: "readiness".into(),
            })
            .await
            .ok()
            .and_then(|r| ServingStatus::try_from(r.into_inner().status).ok());
        log.lock().unwrap().push((Instant::now(), status));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rows(range: std::ops::Range<usize>, state: &str) -> Vec<FixtureRow> {
    range
        .map(|i| FixtureRow::new("dag", &format!("t{i}"), "run", Some(state), "default"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_longer_than_staleness_then_recovery() {
    let db = TestDb::postgres().await;
    // 5 running + 2 queued on `default`; other states and queues must not count.
    let mut initial = rows(0..5, "running");
    initial.extend(rows(5..7, "queued"));
    initial.extend(rows(7..10, "success"));
    initial.push(FixtureRow::new(
        "dag",
        "other",
        "run",
        Some("queued"),
        "other",
    ));
    create(&db, AirflowVersion::V3, &initial).await;
    let relay = Relay::start(db.addr()).await;
    let mut r = start(&db.url_via(relay.addr()), REFRESH, STALENESS).await;
    testkit::scaler::wait_ready(&mut r.health).await;

    let stop = CancellationToken::new();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let stream_logs: Vec<Log<StreamEvent>> = (0..STREAMS).map(|_| Log::default()).collect();
    let readiness: Log<Option<ServingStatus>> = Log::default();
    let mut tasks = Vec::new();
    for i in 0..POLLERS {
        // Half share the test's connection, half have their own.
        let client = if i % 2 == 0 {
            r.client.clone()
        } else {
            ExternalScalerClient::new(channel(r.scaler.grpc_addr).await)
        };
        tasks.push(tokio::spawn(poll(
            client,
            Arc::clone(&answers),
            stop.clone(),
        )));
    }
    for log in &stream_logs {
        tasks.push(tokio::spawn(stream(
            r.client.clone(),
            Arc::clone(log),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(watch_readiness(
        r.health.clone(),
        Arc::clone(&readiness),
        stop.clone(),
    )));

    tokio::time::sleep(HEALTHY).await;
    let cut_at = Instant::now();
    relay.cut();
    // The database moves on while the scaler cannot see it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    airflow::execute(
        db.url(),
        &[airflow::insert_sql(
            db.dialect(),
            AirflowVersion::V3,
            &rows(100..103, "queued"),
        )],
    )
    .await
    .unwrap();
    tokio::time::sleep_until((cut_at + OUTAGE).into()).await;
    let restored_at = Instant::now();
    relay.restore();

    // Recovery without a restart: readiness turns SERVING by itself.
    let ready_at = loop {
        if health_of(&mut r.health, "readiness").await == ServingStatus::Serving {
            break Instant::now();
        }
        assert!(
            restored_at.elapsed() < Duration::from_secs(10),
            "not ready 10 s after the database returned"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    tokio::time::sleep(AFTER).await;
    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }

    // --- Unary answers -------------------------------------------------------------------
    let bound = cut_at + STALENESS;
    let answers = answers.lock().unwrap().clone();
    let (mut live, mut from_last, mut unavailable_outage, mut unavailable_recovering) =
        (0, 0, 0, 0);
    let mut after = 0;
    let mut other: Vec<String> = Vec::new();
    for a in &answers {
        let at = a.sent.saturating_duration_since(cut_at);
        let wrong = |why: &str| {
            format!(
                "{} sent {at:?} after the cut: {why}: {:?}",
                a.rpc, a.outcome
            )
        };
        match &a.outcome {
            Outcome::Metric(BEFORE) | Outcome::Active(true) if a.sent < cut_at => live += 1,
            Outcome::Metric(BEFORE) | Outcome::Active(true) if a.sent < restored_at => {
                if a.sent < bound + SLACK {
                    from_last += 1;
                } else {
                    other.push(wrong("served after the staleness bound"));
                }
            }
            Outcome::Metric(AFTER_VALUE) | Outcome::Active(true) if a.sent >= restored_at => {
                after += 1;
            }
            Outcome::Metric(_) | Outcome::Active(_) => other.push(wrong("wrong value")),
            Outcome::Unavailable(message) => {
                if !message.contains("--max-staleness") {
                    other.push(wrong("UNAVAILABLE without the staleness reason"));
                } else if a.sent < bound.checked_sub(SLACK).unwrap() {
                    other.push(wrong("UNAVAILABLE before the bound"));
                } else if a.sent < restored_at {
                    unavailable_outage += 1;
                } else if a.sent < ready_at {
                    unavailable_recovering += 1;
                } else {
                    other.push(wrong("UNAVAILABLE after readiness was SERVING again"));
                }
            }
            Outcome::Other(what) => other.push(wrong(&format!("unexpected: {what}"))),
        }
    }
    // Between bound + slack and the restore, nothing but UNAVAILABLE.
    let past_bound = answers
        .iter()
        .filter(|a| a.sent > bound + Duration::from_millis(300) && a.sent < restored_at)
        .count();
    let past_bound_unavailable = answers
        .iter()
        .filter(|a| a.sent > bound + Duration::from_millis(300) && a.sent < restored_at)
        .filter(|a| matches!(a.outcome, Outcome::Unavailable(_)))
        .count();

    // --- Readiness -----------------------------------------------------------------------
    let readiness = readiness.lock().unwrap().clone();
    let in_window = |from: Instant, to: Instant| {
        readiness
            .iter()
            .filter(move |(at, _)| *at > from && *at < to)
            .map(|(_, s)| *s)
    };
    let not_serving_polls = in_window(bound + Duration::from_millis(300), restored_at)
        .filter(|s| *s == Some(ServingStatus::NotServing))
        .count();
    let polls_past_bound = in_window(bound + Duration::from_millis(300), restored_at).count();

    // --- Streams -------------------------------------------------------------------------
    let (mut pushed_true, mut pushed_false, mut ended_unavailable, mut refused, mut reopened) =
        (0, 0, 0, 0, 0);
    let mut push_after_ready = Duration::ZERO;
    for (i, log) in stream_logs.iter().enumerate() {
        let log = log.lock().unwrap().clone();
        let mut true_after_restore = false;
        for (at, event) in &log {
            match event {
                StreamEvent::Pushed(true) => {
                    pushed_true += 1;
                    true_after_restore |= *at >= restored_at;
                }
                StreamEvent::Pushed(false) => {
                    pushed_false += 1;
                    other.push(format!(
                        "stream {i} pushed false at {:?}",
                        at.saturating_duration_since(cut_at)
                    ));
                }
                StreamEvent::EndedUnavailable(message) => {
                    ended_unavailable += 1;
                    other.push(format!("stream {i} ended with UNAVAILABLE: {message}"));
                }
                StreamEvent::OpenRefused(message) => {
                    refused += 1;
                    other.push(format!("stream {i} open refused: {message}"));
                }
                StreamEvent::EndedOk => other.push(format!("stream {i} ended with OK")),
                StreamEvent::Failed(what) => other.push(format!("stream {i} failed: {what}")),
            }
            if let StreamEvent::Pushed(_) = event
                && *at > bound
                && *at < restored_at
            {
                other.push(format!("stream {i} sent while stale"));
            }
        }
        assert!(
            true_after_restore,
            "stream {i} did not send `true` after recovery: {log:?}"
        );
        if let Some((at, _)) = log
            .iter()
            .find(|(at, e)| *at >= restored_at && matches!(e, StreamEvent::Pushed(true)))
        {
            push_after_ready = push_after_ready.max(at.saturating_duration_since(ready_at));
        }
        reopened += 1;
    }

    eprintln!(
        "proof_fault: outage {} ms > max-staleness {} ms (refresh {} ms), {POLLERS} pollers + \
         {STREAMS} streams | unary answers: before cut {live} served (7/true); during outage \
         {from_last} served from the last snapshot (7/true, all within the bound) and \
         {unavailable_outage} UNAVAILABLE ({past_bound_unavailable}/{past_bound} past the \
         bound); after restore {unavailable_recovering} UNAVAILABLE until ready ({} ms after \
         restore), then {after} served (10/true); other (0 or false or wrong) {} | readiness \
         past the bound: {not_serving_polls}/{polls_past_bound} polls NOT_SERVING, SERVING \
         again | streams: {pushed_true} pushed true, {pushed_false} pushed false, \
         {ended_unavailable} ended UNAVAILABLE, {refused} reopen attempts refused, \
         {reopened}/{STREAMS} kept open through the outage and sent true after recovery (at most \
         {} ms after readiness)",
        OUTAGE.as_millis(),
        STALENESS.as_millis(),
        REFRESH.as_millis(),
        ready_at.duration_since(restored_at).as_millis(),
        other.len(),
        push_after_ready.as_millis(),
    );
    assert!(
        other.is_empty(),
        "answers that must not happen:\n{}",
        other.join("\n")
    );
    assert!(live > 0 && from_last > 0 && after > 0, "too few answers");
    assert!(unavailable_outage > 0, "no UNAVAILABLE during the outage");
    assert!(past_bound > 0 && past_bound == past_bound_unavailable);
    assert!(polls_past_bound > 0 && not_serving_polls == polls_past_bound);
    assert!(
        in_window(cut_at.checked_sub(HEALTHY).unwrap(), cut_at)
            .all(|s| s == Some(ServingStatus::Serving)),
        "readiness not SERVING before the cut"
    );
    assert!(
        in_window(ready_at, Instant::now()).all(|s| s == Some(ServingStatus::Serving)),
        "readiness flapped after recovery"
    );
    assert_eq!(pushed_false, 0);

    // Values are right after recovery.
    assert_eq!(
        testkit::scaler::metric(&mut r.client, "default")
            .await
            .unwrap(),
        AFTER_VALUE
    );
    assert!(
        r.client
            .is_active(object(&[("workerQueue", "default")]))
            .await
            .unwrap()
            .into_inner()
            .result
    );
    r.scaler.stop().await.unwrap();
}

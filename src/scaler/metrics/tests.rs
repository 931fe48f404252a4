//! Tests of the scaler's metrics: names, staleness, bounded labels, exposition formats.
use super::*;
use crate::scaler::snapshot::{AirflowSchema, QueueCount, Snapshot, TaskState};

#[test]
fn exposition_reports_declared_queues_rpcs_and_streams() {
    let m = Metrics::new();
    let declared =
        WorkerQueues::parse("workerQueues:\n  - name: default\n  - name: ml\n    queues: [ml]\n")
            .unwrap();
    let store = SnapshotStore::new();
    let text = m.encode(&store, &declared, Duration::from_secs(30));
    assert!(text.contains("airflow_keda_scaler_ready 0"), "{text}");
    store.publish(Snapshot::new(
        AirflowSchema::Airflow2,
        vec![QueueCount::new("default", TaskState::Queued, None, 40)],
    ));
    m.rpc("GetMetrics", tonic::Code::Ok, Duration::from_micros(120));
    m.rpc(
        "GetMetrics",
        tonic::Code::Unavailable,
        Duration::from_micros(80),
    );
    let guard = m.stream_opened("StreamIsActive");
    let text = m.encode(&store, &declared, Duration::from_secs(30));
    for needle in [
        "airflow_keda_scaler_ready 1",
        "airflow_keda_scaler_queued_tasks{worker_queue=\"default\"} 40",
        "airflow_keda_scaler_desired_workers{worker_queue=\"default\"} 3",
        "airflow_keda_scaler_desired_workers{worker_queue=\"ml\"} 1",
        // Astro's current definition: (10 + 10) max workers × (16 + 16).
        "airflow_keda_scaler_parallelism 640",
        "airflow_keda_scaler_rpcs_total{method=\"GetMetrics\",code=\"unavailable\"} 1",
        "airflow_keda_scaler_open_streams{method=\"StreamIsActive\"} 1",
        "airflow_keda_scaler_rpc_duration_seconds_count{method=\"GetMetrics\"} 2",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    drop(guard);
    let text = m.encode(&store, &declared, Duration::from_secs(30));
    assert!(text.contains("airflow_keda_scaler_open_streams{method=\"StreamIsActive\"} 0"));
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");

    // Stale: the snapshot's numbers are gone, not shown as live.
    let text = m.encode(&store, &declared, Duration::ZERO);
    assert!(text.contains("airflow_keda_scaler_ready 0"), "{text}");
    for gone in [
        "queued_tasks{",
        "running_tasks{",
        "desired_workers{",
        // The value line (airflow_parallelism, the configured one, stays).
        "airflow_keda_scaler_parallelism ",
    ] {
        assert!(
            !text.contains(gone),
            "{gone} still shown while stale:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
}

/// Every label value comes from a fixed set or the worker-queue file, whatever the database
/// holds: a snapshot with a thousand Airflow queues nobody declared adds no series.
#[test]
fn labels_stay_bounded_whatever_the_snapshot_holds() {
    let m = Metrics::new();
    let declared =
        WorkerQueues::parse("workerQueues:\n  - name: default\n  - name: ml\n    queues: [ml]\n")
            .unwrap();
    let store = SnapshotStore::new();
    let counts = (0..1000)
        .map(|i| {
            QueueCount::new(
                &format!("invented-{i}"),
                TaskState::Queued,
                Some(&format!("Executor{i}")),
                1,
            )
        })
        .collect();
    store.publish(Snapshot::new(AirflowSchema::Airflow3, counts));
    for code in [tonic::Code::Ok, tonic::Code::InvalidArgument] {
        m.rpc("GetMetrics", code, Duration::from_micros(10));
    }
    m.refresh_failed("connect");
    m.tls_reload("certificate", "rejected");
    let text = m.encode(&store, &declared, Duration::from_secs(30));
    let worker_queues = ["default", "ml"];
    let methods = [
        "IsActive",
        "StreamIsActive",
        "GetMetricSpec",
        "GetMetrics",
        "StreamMetricSpec",
    ];
    let mut series = 0;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = line.split_once('{') else {
            continue;
        };
        let labels = labels.split('}').next().unwrap();
        for pair in labels.split(',') {
            let (key, value) = pair.split_once('=').unwrap();
            let value = value.trim_matches('"');
            let allowed = match key {
                "worker_queue" => worker_queues.contains(&value),
                "method" => methods.contains(&value),
                "code" => value == "ok" || value == "invalid_argument",
                "kind" => value == "connect",
                "what" => value == "certificate",
                "result" => value == "rejected",
                "le" => true,
                _ => false,
            };
            assert!(allowed, "label {key}={value} in {line}");
        }
        series += 1;
    }
    assert!(!text.contains("invented"), "{text}");
    // queued/running/desired for 2 worker queues, 2 rpc counters, a histogram, 1 error kind,
    // 1 reload: a few dozen series, not thousands.
    assert!(series < 60, "{series} series:\n{text}");
}

#[test]
fn workers_gauges_follow_the_cluster_view() {
    use crate::scaler::{
        cluster::{ClusterView, DriftCause, DriftReport, HpaObservation, WorkerObservation},
        model::target::{ScaleTargetRef, TargetKind},
    };
    let m = Metrics::new();
    let declared = WorkerQueues::parse(
        "workerQueues:\n  - name: default\n    scaleTargetRef: {kind: Deployment, name: w}\n",
    )
    .unwrap();
    let store = SnapshotStore::new();
    store.publish(Snapshot::new(
        AirflowSchema::Airflow3,
        vec![
            QueueCount::new("default", TaskState::Running, None, 32),
            QueueCount::new("default", TaskState::Scheduled, None, 5),
        ],
    ));
    let mut view = ClusterView::default();
    view.workloads.insert(
        ScaleTargetRef {
            kind: TargetKind::Deployment,
            name: "w".into(),
        },
        WorkerObservation {
            found: true,
            ready_workers: 1,
            hpa: Some(HpaObservation {
                desired_replicas: 2,
                current_replicas: 1,
                ..HpaObservation::default()
            }),
            ..WorkerObservation::default()
        },
    );
    view.drift.insert(
        "default".into(),
        DriftReport {
            drifting: true,
            off_for_secs: 90.0,
            cause: DriftCause::ParallelismCap,
        },
    );
    let cluster = ClusterStore::default();
    cluster.publish(view);
    m.watch_workers(
        Some(cluster),
        PlanOptions {
            airflow_parallelism: Some(32),
            ..PlanOptions::default()
        },
    );
    m.deletion_cost_patches(3, 1);
    let text = m.encode(&store, &declared, Duration::from_secs(30));
    for needle in [
        "airflow_keda_scaler_scheduled_tasks{worker_queue=\"default\"} 5",
        "airflow_keda_scaler_ready_workers{worker_queue=\"default\"} 1",
        "airflow_keda_scaler_hpa_desired_workers{worker_queue=\"default\"} 2",
        "airflow_keda_scaler_hpa_current_workers{worker_queue=\"default\"} 1",
        "airflow_keda_scaler_hpa_drift{worker_queue=\"default\"} 1",
        // 32 caps 10 workers x 16 at 2.
        "airflow_keda_scaler_parallelism_capped_workers{worker_queue=\"default\"} 2",
        "airflow_keda_scaler_airflow_parallelism 32",
        // 32 running at parallelism 32 with 5 scheduled.
        "airflow_keda_scaler_starved 1",
        "airflow_keda_scaler_pod_deletion_cost_patches_total{result=\"ok\"} 3",
        "airflow_keda_scaler_pod_deletion_cost_patches_total{result=\"error\"} 1",
        "airflow_keda_scaler_parallelism 160",
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
}

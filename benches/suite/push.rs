//! P4: push latency at default settings. A `StreamIsActive` stream watches an idle queue; a
//! row is set to `queued` (committed) at a random moment; the time until the stream delivers
//! `true` is measured. The row is then set back and the stream's `false` awaited before the
//! next sample.

use std::time::{Duration, Instant};

use airflow_keda_scaler::{
    scaler::db::Dialect,
    scaler::grpc::proto::externalscaler::{
        ScaledObjectRef, external_scaler_client::ExternalScalerClient,
    },
    scaler::metrics::Metrics,
};
use sqlx::{Connection, postgres::PgConnection};
use testkit::airflow::{AirflowVersion, FixtureRow};

use crate::{
    common::{BenchDb, Mode, Row, fmt_dur, median, percentile, server_runtime, small_rows},
    grpc::start_scaler,
    say,
};

pub fn p4(mode: &Mode) -> Row {
    let samples = if mode.smoke { 3 } else { 20 };
    let rt = server_runtime("p4", 2);
    let lat = rt.block_on(async {
        let db = BenchDb::create(
            Dialect::Postgres,
            &crate::common::run_scoped("aks_bench_p4"),
        )
        .await;
        let mut rows = small_rows();
        rows.push(FixtureRow::new(
            "push_dag",
            "push_task",
            "run_1",
            Some("success"),
            "push",
        ));
        db.create_table(AirflowVersion::V3, &rows).await;
        // Default refresh interval (1 s).
        let scaler = start_scaler(&db.url(), Duration::from_secs(1), Metrics::new()).await;
        let mut client = ExternalScalerClient::connect(format!("http://{}", scaler.grpc_addr))
            .await
            .unwrap();
        let object = ScaledObjectRef {
            name: "airflow-worker-push".into(),
            namespace: "airflow".into(),
            scaler_metadata: [("queues".to_string(), "push".to_string())].into(),
        };
        let mut stream = client.stream_is_active(object).await.unwrap().into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert!(!first.result, "idle queue starts inactive");
        let mut sql = PgConnection::connect(&db.url()).await.unwrap();
        let mut lat = Vec::new();
        for i in 0..samples {
            // A random moment relative to the refresh ticks.
            let jitter = Duration::from_millis(rand::random_range(0..1000));
            tokio::time::sleep(jitter).await;
            sqlx::query("UPDATE task_instance SET state = 'queued' WHERE dag_id = 'push_dag'")
                .execute(&mut sql)
                .await
                .unwrap();
            let committed = Instant::now();
            let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("a push within 10 s")
                .unwrap()
                .unwrap();
            let l = committed.elapsed();
            assert!(msg.result, "pushed true");
            say!("  P4 sample {i}: {}", fmt_dur(l));
            lat.push(l);
            sqlx::query("UPDATE task_instance SET state = 'success' WHERE dag_id = 'push_dag'")
                .execute(&mut sql)
                .await
                .unwrap();
            let back = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("false pushed back")
                .unwrap()
                .unwrap();
            assert!(!back.result);
        }
        let _ = sql.close().await;
        drop(stream);
        let _ = scaler.stop().await;
        drop(db);
        lat
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let mut secs: Vec<f64> = lat.iter().map(Duration::as_secs_f64).collect();
    let p50 = median(&mut secs);
    let mut sorted = lat.clone();
    sorted.sort();
    let p95 = percentile(&sorted, 95.0);
    let max = sorted.last().copied().unwrap_or_default();
    Row {
        id: "P4".into(),
        figure: format!(
            "push latency: row → `queued` to `StreamIsActive` `true` ({samples} samples, default 1 s refresh)"
        ),
        result: format!(
            "p50 {}, p95 {}, max {}",
            fmt_dur(Duration::from_secs_f64(p50)),
            fmt_dur(p95),
            fmt_dur(max)
        ),
        baseline:
            "KEDA polling: uniform over the pollingInterval, 10–30 s (p50 5–15 s, max 10–30 s)"
                .into(),
        ratio: format!("{:.0}× faster (p50 vs 10 s poll p50)", 5.0 / p50.max(1e-3)),
        target: "≤ 1 s".into(),
        verdict: Row::judged(mode.smoke, p95 <= Duration::from_secs(1)),
    }
}

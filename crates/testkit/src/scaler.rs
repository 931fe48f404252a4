//! Starting the real scaler in-process on loopback ports, and talking to it with the clients
//! generated from KEDA's proto and tonic-health.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use crate::airflow::{self, AirflowVersion, FixtureRow};
use airflow_keda_scaler::{
    scaler::config::DbConfig,
    scaler::grpc::GrpcOptions,
    scaler::grpc::proto::externalscaler::{
        GetMetricsRequest, ScaledObjectRef, external_scaler_client::ExternalScalerClient,
    },
    scaler::metrics::Metrics,
    scaler::model::worker_queue::WorkerQueues,
    scaler::{Scaler, ScalerConfig},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::db::TestDb;

/// The worker queues most tests use. (shared fixture: `tests/fixtures/worker-queues.yaml`).
pub const WORKER_QUEUES: &str = include_str!("../../../tests/fixtures/worker-queues.yaml");

/// Database settings of the tests: `url`, 2 s timeout.
pub fn db_config(url: &str) -> DbConfig {
    DbConfig {
        database_timeout: Duration::from_secs(2),
        ..DbConfig::url(url)
    }
}

pub struct Running {
    pub scaler: Scaler,
    pub client: ExternalScalerClient<Channel>,
    pub health: HealthClient<Channel>,
}

pub async fn start(url: &str, refresh: Duration, max_staleness: Duration) -> Running {
    let config = ScalerConfig {
        grpc: GrpcOptions {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            probe_addr: Some("127.0.0.1:0".parse().unwrap()),
            max_staleness,
            tls: None,
            metrics: Metrics::new(),
            limits: Default::default(),
        },
        admin_addr: None,
        declared: WorkerQueues::parse(WORKER_QUEUES).unwrap(),
        refresh_interval: refresh,
        refresh_max_duty_cycle: 1.0,
        db: db_config(url),
    };
    let scaler = Scaler::start(config, CancellationToken::new())
        .await
        .unwrap();
    let endpoint = format!("http://{}", scaler.grpc_addr);
    let client = ExternalScalerClient::connect(endpoint.clone())
        .await
        .unwrap();
    let health = HealthClient::new(channel(scaler.probe_addr.unwrap()).await);
    Running {
        scaler,
        client,
        health,
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn object(pairs: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "airflow-worker".into(),
        namespace: "airflow".into(),
        scaler_metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

pub async fn health_of(health: &mut HealthClient<Channel>, service: &str) -> ServingStatus {
    let status = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

pub async fn wait_ready(health: &mut HealthClient<Channel>) {
    for _ in 0..200 {
        if health_of(health, "readiness").await == ServingStatus::Serving {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("scaler never became ready");
}

pub async fn metric(
    client: &mut ExternalScalerClient<Channel>,
    wq: &str,
) -> Result<i64, tonic::Status> {
    let r = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(object(&[("workerQueue", wq)])),
            metric_name: format!("airflow-tasks-{wq}"),
        })
        .await?
        .into_inner();
    assert_eq!(r.metric_values.len(), 1, "exactly one metric value");
    let v = &r.metric_values[0];
    assert_eq!(
        v.metric_value as f64, v.metric_value_float,
        "int and float agree"
    );
    assert_eq!(v.metric_name, format!("airflow-tasks-{wq}"));
    Ok(v.metric_value)
}

/// Creates `task_instance` of `version` in `db` and inserts `rows`.
pub async fn create(db: &TestDb, version: AirflowVersion, rows: &[FixtureRow]) {
    let mut statements = airflow::create_table_sql(db.dialect(), version);
    if !rows.is_empty() {
        statements.push(airflow::insert_sql(db.dialect(), version, rows));
    }
    airflow::execute(db.url(), &statements).await.unwrap();
}

//! P1: `GetMetrics` throughput and latency, N concurrent HTTP/2 clients on loopback, against
//! the real scaler and against a no-op tonic server for the same proto.
//!
//! The load generator uses the client generated from KEDA's proto (the same as the tests).
//! Each client has its own HTTP/2 connection and keeps one call in flight (closed loop).

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    time::{Duration, Instant},
};

use airflow_keda_scaler::{
    scaler::grpc::GrpcOptions,
    scaler::grpc::proto::externalscaler::{
        GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
        MetricValue, ScaledObjectRef,
        external_scaler_client::ExternalScalerClient,
        external_scaler_server::{ExternalScaler, ExternalScalerServer},
    },
    scaler::metrics::Metrics,
    scaler::model::worker_queue::WorkerQueues,
    scaler::{Scaler, ScalerConfig},
};
use futures::Stream;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Response, Status,
    transport::{Channel, Endpoint},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::common::{
    BenchDb, Mode, QUEUES, Row, db_args, fmt_dur, median, percentile, server_runtime,
    worker_queues_yaml,
};
use crate::say;

/// The metadata KEDA sends for trigger `i` (the whole trigger `metadata` map).
pub fn trigger(i: usize) -> ScaledObjectRef {
    let q = QUEUES[i % QUEUES.len()];
    ScaledObjectRef {
        name: format!("airflow-worker-{q}"),
        namespace: "airflow".into(),
        scaler_metadata: HashMap::from([
            (
                "scalerAddress".to_string(),
                "airflow-keda-scaler.airflow.svc.cluster.local:9090".to_string(),
            ),
            ("workerQueue".to_string(), q.to_string()),
        ]),
    }
}

pub fn metrics_request(i: usize) -> GetMetricsRequest {
    GetMetricsRequest {
        scaled_object_ref: Some(trigger(i)),
        metric_name: format!("airflow-tasks-{}", QUEUES[i % QUEUES.len()]),
    }
}

/// The baseline: answers a constant, does nothing else.
#[derive(Debug, Clone, Copy)]
pub struct Noop;

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ExternalScaler for Noop {
    async fn is_active(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        Ok(Response::new(IsActiveResponse { result: true }))
    }

    type StreamIsActiveStream = Stream_<IsActiveResponse>;

    async fn stream_is_active(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        Err(Status::unimplemented("noop"))
    }

    async fn get_metric_spec(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: "airflow-tasks-default".into(),
                target_size: 16,
                target_size_float: 16.0,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        _: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: "airflow-tasks-default".into(),
                metric_value: 7,
                metric_value_float: 7.0,
            }],
        }))
    }

    type StreamMetricSpecStream = Stream_<GetMetricSpecResponse>;

    async fn stream_metric_spec(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        Err(Status::unimplemented("noop"))
    }
}

/// Starts the no-op server on the current runtime; returns its address.
pub async fn start_noop(shutdown: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ExternalScalerServer::new(Noop))
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    addr
}

/// Starts the real scaler (in-process) on the current runtime, waits until it is ready.
pub async fn start_scaler(url: &str, refresh: Duration, metrics: Metrics) -> Scaler {
    let config = ScalerConfig {
        grpc: GrpcOptions {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            probe_addr: None,
            max_staleness: Duration::from_secs(30),
            tls: None,
            metrics,
            limits: Default::default(),
        },
        admin_addr: None,
        declared: WorkerQueues::parse(&worker_queues_yaml()).unwrap(),
        refresh_interval: refresh,
        refresh_max_duty_cycle: 1.0,
        db: db_args(url),
    };
    let scaler = Scaler::start(config, CancellationToken::new())
        .await
        .unwrap();
    wait_serving(scaler.grpc_addr, Duration::from_secs(20))
        .await
        .expect("scaler ready");
    scaler
}

/// Polls gRPC health `readiness` until SERVING; returns how long it took.
pub async fn wait_serving(addr: SocketAddr, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(200));
    let mut health: Option<HealthClient<Channel>> = None;
    while start.elapsed() < limit {
        if health.is_none() {
            health = endpoint.connect().await.ok().map(HealthClient::new);
        }
        if let Some(h) = health.as_mut() {
            let ok = h
                .check(HealthCheckRequest {
                    service: "readiness".into(),
                })
                .await
                .map(|r| r.into_inner().status == ServingStatus::Serving as i32);
            match ok {
                Ok(true) => return Some(start.elapsed()),
                Ok(false) => {}
                Err(_) => health = None,
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// Result of one load window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

impl Load {
    /// Joins the load tasks (each: latencies in ns of the successful calls inside the measured
    /// window, and its error count) into one result.
    pub async fn gather(
        tasks: Vec<tokio::task::JoinHandle<(Vec<u32>, u64)>>,
        window: Duration,
    ) -> Self {
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            let (lat, e) = t.await.unwrap();
            all.extend(lat);
            errors += e;
        }
        Self::of(all, errors, window)
    }

    /// The result of latencies in ns (any order) and an error count measured over `window`.
    pub fn of(mut all: Vec<u32>, errors: u64, window: Duration) -> Self {
        all.sort_unstable();
        Self {
            rps: all.len() as f64 / window.as_secs_f64(),
            p50: Duration::from_nanos(u64::from(percentile(&all, 50.0))),
            p99: Duration::from_nanos(u64::from(percentile(&all, 99.0))),
            errors,
        }
    }
}

/// Opens `clients` connections to `addr`.
pub async fn connect(addr: SocketAddr, clients: usize) -> Vec<ExternalScalerClient<Channel>> {
    let mut out = Vec::with_capacity(clients);
    for _ in 0..clients {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        out.push(ExternalScalerClient::new(channel));
    }
    out
}

/// Closed-loop `GetMetrics` from every client for `window` (after a short warm-up).
pub async fn load(clients: &[ExternalScalerClient<Channel>], window: Duration) -> Load {
    let warmup = Duration::from_millis(200).min(window / 2);
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = metrics_request(i);
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let ok = match client.get_metrics(req.clone()).await {
                    Ok(r) => r.into_inner().metric_values.len() == 1,
                    Err(_) => false,
                };
                let done = Instant::now();
                if t >= start {
                    if ok {
                        lat.push(u32::try_from((done - t).as_nanos()).unwrap_or(u32::MAX));
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    Load::gather(tasks, window).await
}

/// Medians over repetitions.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub errors: u64,
}

pub fn summarize(runs: &[Load]) -> Summary {
    let mut rps: Vec<f64> = runs.iter().map(|r| r.rps).collect();
    let mut p50: Vec<f64> = runs.iter().map(|r| r.p50.as_secs_f64()).collect();
    let mut p99: Vec<f64> = runs.iter().map(|r| r.p99.as_secs_f64()).collect();
    Summary {
        rps: median(&mut rps),
        p50: Duration::from_secs_f64(median(&mut p50)),
        p99: Duration::from_secs_f64(median(&mut p99)),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

pub fn clients(mode: &Mode) -> usize {
    std::env::var("AKS_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if mode.smoke { 4 } else { 16 })
}

/// P1.
pub fn p1(mode: &Mode, pg: &BenchDb) -> Row {
    let n = clients(mode);
    let server_rt = server_runtime("p1-server", 2);
    let client_rt = server_runtime("p1-client", 2);
    let shutdown = CancellationToken::new();
    let noop_addr = server_rt.block_on(start_noop(shutdown.clone()));
    let url = pg.url();
    let scaler = server_rt
        .block_on(async move { start_scaler(&url, Duration::from_secs(1), Metrics::new()).await });
    let scaler_addr = scaler.grpc_addr;

    let (noop, real, mut ratios) = client_rt.block_on(async {
        let noop_clients = connect(noop_addr, n).await;
        let real_clients = connect(scaler_addr, n).await;
        let mut noop = Vec::new();
        let mut real = Vec::new();
        let mut ratios = Vec::new();
        for rep in 0..mode.reps {
            // Alternate the order so drift on a noisy machine hits both sides alike.
            let (a, b) = if rep % 2 == 0 {
                let a = load(&noop_clients, mode.window).await;
                let b = load(&real_clients, mode.window).await;
                (a, b)
            } else {
                let b = load(&real_clients, mode.window).await;
                let a = load(&noop_clients, mode.window).await;
                (a, b)
            };
            say!(
                "  P1 rep {rep}: scaler {:.0}/s p50 {} p99 {} | no-op {:.0}/s p50 {} p99 {}",
                b.rps,
                fmt_dur(b.p50),
                fmt_dur(b.p99),
                a.rps,
                fmt_dur(a.p50),
                fmt_dur(a.p99)
            );
            ratios.push(b.rps / a.rps.max(1.0));
            noop.push(a);
            real.push(b);
        }
        (noop, real, ratios)
    });
    client_rt.shutdown_timeout(Duration::from_secs(2));
    shutdown.cancel();
    server_rt.block_on(async move {
        let _ = scaler.stop().await;
    });
    server_rt.shutdown_timeout(Duration::from_secs(2));

    let (a, b) = (summarize(&noop), summarize(&real));
    let ratio = median(&mut ratios);
    Row {
        id: "P1".into(),
        figure: format!("`GetMetrics`, {n} HTTP/2 clients, loopback"),
        result: format!(
            "{:.0} calls/s, p50 {}, p99 {}{}",
            b.rps,
            fmt_dur(b.p50),
            fmt_dur(b.p99),
            errors_note(b.errors)
        ),
        baseline: format!(
            "no-op tonic server: {:.0} calls/s, p50 {}, p99 {}",
            a.rps,
            fmt_dur(a.p50),
            fmt_dur(a.p99)
        ),
        ratio: format!("{ratio:.2}×"),
        target: "≥ 0.8× no-op".into(),
        verdict: Row::judged(mode.smoke, ratio >= 0.8 && b.errors == 0),
    }
}

pub fn errors_note(errors: u64) -> String {
    if errors == 0 {
        String::new()
    } else {
        format!(", **{errors} errors**")
    }
}

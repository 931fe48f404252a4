//! The scaler's Prometheus metrics. Label values come only from bounded sets: RPC method names
//! and gRPC codes (fixed lists), refresh error kinds (fixed list) and the worker queues declared
//! in the worker-queue file (never from trigger metadata, which any ScaledObject can invent).
//!
//! The snapshot's numbers (`queued_tasks`, `running_tasks`, `desired_workers`, `parallelism`)
//! are exposed only while the snapshot is fresh: while `ready` is 0 they are absent, so a
//! dashboard cannot show stale numbers as live (Prometheus marks the series stale).

use std::{
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use tokio_util::sync::CancellationToken;

use crate::{
    runtime::admin::AdminView,
    scaler::cluster::ClusterStore,
    scaler::model::sizing::{Plan, PlanOptions},
    scaler::model::worker_queue::WorkerQueues,
    scaler::snapshot::{Published, SnapshotStore},
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    worker_queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Per-worker-queue gauges of what Kubernetes shows (issue 10).
#[derive(Debug, Default)]
struct WorkerGauges {
    scheduled: Family<QueueLabels, Gauge>,
    ready: Family<QueueLabels, Gauge>,
    hpa_desired: Family<QueueLabels, Gauge>,
    hpa_current: Family<QueueLabels, Gauge>,
    drift: Family<QueueLabels, Gauge>,
    capped: Family<QueueLabels, Gauge>,
    airflow_parallelism: Gauge,
    starved: Gauge,
    cost_patches: Family<ResultLabels, Counter>,
    /// The cluster view and plan settings, once `serve` has them.
    source: Mutex<Option<(ClusterStore, PlanOptions)>>,
}

impl WorkerGauges {
    /// `live` holds what comes from the snapshot (shown only while it is fresh), `registry`
    /// the rest.
    fn register(&self, registry: &mut Registry, live: &mut Registry) {
        live.register(
            "scheduled_tasks",
            "Scheduled task instances per declared worker queue (waiting for the scheduler)",
            self.scheduled.clone(),
        );
        registry.register(
            "ready_workers",
            "Ready worker pods of the worker queue's scaleTargetRef (Kubernetes)",
            self.ready.clone(),
        );
        registry.register(
            "hpa_desired_workers",
            "desiredReplicas of the HPA that targets the worker queue's workload",
            self.hpa_desired.clone(),
        );
        registry.register(
            "hpa_current_workers",
            "currentReplicas of the HPA that targets the worker queue's workload",
            self.hpa_current.clone(),
        );
        registry.register(
            "hpa_drift",
            "1 while ready workers have differed from the formula for longer than --drift-after",
            self.drift.clone(),
        );
        registry.register(
            "parallelism_capped_workers",
            "Most workers the configured [core] parallelism lets the worker queue reach, when \
             lower than maxWorkers (absent otherwise)",
            self.capped.clone(),
        );
        registry.register(
            "airflow_parallelism",
            "Airflow's configured [core] parallelism (--airflow-parallelism; -1 when unknown)",
            self.airflow_parallelism.clone(),
        );
        registry.register(
            "starved",
            "1 while tasks wait as scheduled and queued + running is at [core] parallelism",
            self.starved.clone(),
        );
        registry.register(
            "pod_deletion_cost_patches",
            "Pod-deletion-cost annotations written, by result",
            self.cost_patches.clone(),
        );
    }

    fn observe(&self, plan: &Plan, with_cluster: bool) {
        for q in &plan.worker_queues {
            let labels = QueueLabels {
                worker_queue: q.worker_queue.clone(),
            };
            self.scheduled
                .get_or_create(&labels)
                .set(gauge_value(q.scheduled));
            match q.parallelism_cap {
                Some(cap) => {
                    self.capped.get_or_create(&labels).set(i64::from(cap));
                }
                None => {
                    self.capped.remove(&labels);
                }
            }
            if !with_cluster || q.target.is_none() {
                continue;
            }
            let set = |f: &Family<QueueLabels, Gauge>, v: Option<u32>| match v {
                Some(v) => {
                    f.get_or_create(&labels).set(i64::from(v));
                }
                None => {
                    f.remove(&labels);
                }
            };
            set(&self.ready, q.ready_workers);
            set(&self.hpa_desired, q.hpa_desired_workers);
            set(&self.hpa_current, q.hpa_current_workers);
            self.drift
                .get_or_create(&labels)
                .set(i64::from(q.drift.as_ref().is_some_and(|d| d.drifting)));
        }
        self.airflow_parallelism
            .set(plan.airflow_parallelism.map_or(-1, gauge_value));
        self.starved.set(i64::from(plan.starved));
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    what: &'static str,
    result: &'static str,
}

fn rpc_latency_histogram() -> Histogram {
    // 50 µs … ~0.8 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

fn refresh_histogram() -> Histogram {
    // 1 ms … ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// All scaler metrics, cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    /// The snapshot's numbers, encoded only while the snapshot is fresh.
    live: Registry,
    queued: Family<QueueLabels, Gauge>,
    running: Family<QueueLabels, Gauge>,
    desired: Family<QueueLabels, Gauge>,
    parallelism: Gauge,
    snapshot_age: Gauge<f64, AtomicU64>,
    ready: Gauge,
    refresh_duration: Histogram,
    refresh_errors: Family<KindLabels, Counter>,
    rpcs: Family<RpcLabels, Counter>,
    rpc_latency: Family<MethodLabels, Histogram, fn() -> Histogram>,
    open_streams: Family<MethodLabels, Gauge>,
    workers: WorkerGauges,
    refresh_interval: Gauge<f64, AtomicU64>,
    tls_refused: Counter,
    tls_reloads: Family<ReloadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("airflow_keda_scaler");
        let mut live = Registry::with_prefix("airflow_keda_scaler");
        let refresh_interval = Gauge::<f64, AtomicU64>::default();
        let tls_refused = Counter::default();
        let queued = Family::<QueueLabels, Gauge>::default();
        let running = Family::<QueueLabels, Gauge>::default();
        let desired = Family::<QueueLabels, Gauge>::default();
        let parallelism = Gauge::default();
        let snapshot_age = Gauge::<f64, AtomicU64>::default();
        let ready = Gauge::default();
        let refresh_duration = refresh_histogram();
        let refresh_errors = Family::<KindLabels, Counter>::default();
        let rpcs = Family::<RpcLabels, Counter>::default();
        let rpc_latency: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(rpc_latency_histogram);
        let open_streams = Family::<MethodLabels, Gauge>::default();
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        live.register(
            "queued_tasks",
            "Queued task instances per declared worker queue (latest snapshot)",
            queued.clone(),
        );
        live.register(
            "running_tasks",
            "Running task instances per declared worker queue (latest snapshot)",
            running.clone(),
        );
        live.register(
            "desired_workers",
            "clamp(ceil((queued + running) / maxTasksPerWorker), min, max) per declared worker queue",
            desired.clone(),
        );
        live.register(
            "parallelism",
            "The [core] parallelism to set: (sum of maxWorkers) x (sum of maxTasksPerWorker) over \
             declared worker queues (--parallelism-mode ready: ready workers instead of maxWorkers)",
            parallelism.clone(),
        );
        registry.register(
            "snapshot_age_seconds",
            "Age of the latest good snapshot (-1 when there is none)",
            snapshot_age.clone(),
        );
        registry.register(
            "ready",
            "1 while a snapshot younger than --max-staleness exists",
            ready.clone(),
        );
        registry.register(
            "refresh_duration_seconds",
            "Duration of successful refresh queries",
            refresh_duration.clone(),
        );
        registry.register(
            "refresh_errors",
            "Failed refreshes by kind",
            refresh_errors.clone(),
        );
        registry.register("rpcs", "gRPC calls by method and code", rpcs.clone());
        registry.register(
            "rpc_duration_seconds",
            "gRPC call latency by method (stream methods: until the stream is opened)",
            rpc_latency.clone(),
        );
        registry.register(
            "open_streams",
            "Open server streams by method",
            open_streams.clone(),
        );
        let workers = WorkerGauges::default();
        workers.register(&mut registry, &mut live);
        registry.register(
            "refresh_interval_effective_seconds",
            "Start-to-start time of refreshes: --refresh-interval, stretched while the query \
             takes more than --refresh-max-duty-cycle of it",
            refresh_interval.clone(),
        );
        registry.register(
            "tls_handshakes_refused",
            "TLS handshakes on the gRPC port that failed or timed out (e.g. a client without a \
             certificate the client CA signed)",
            tls_refused.clone(),
        );
        registry.register(
            "tls_reloads",
            "Changes of the gRPC TLS files seen by the reloader, by file (certificate, client_ca) \
             and result (applied; rejected: invalid, the previous one is kept; unreadable)",
            tls_reloads.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                workers,
                registry,
                live,
                refresh_interval,
                tls_refused,
                queued,
                running,
                desired,
                parallelism,
                snapshot_age,
                ready,
                refresh_duration,
                refresh_errors,
                rpcs,
                rpc_latency,
                open_streams,
                tls_reloads,
            }),
        }
    }

    /// Records what the TLS reloader did with a changed file: `what` is `certificate` or
    /// `client_ca`, `result` `applied`, `rejected` or `unreadable`.
    pub fn tls_reload(&self, what: &'static str, result: &'static str) {
        self.inner
            .tls_reloads
            .get_or_create(&ReloadLabels { what, result })
            .inc();
    }

    /// How many times the reloader reported `what` / `result` (tests and the demo wait on it).
    pub fn tls_reloads(&self, what: &'static str, result: &'static str) -> u64 {
        self.inner
            .tls_reloads
            .get_or_create(&ReloadLabels { what, result })
            .get()
    }

    /// Records one finished RPC.
    pub fn rpc(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.inner
            .rpcs
            .get_or_create(&RpcLabels {
                method,
                code: code_name(code),
            })
            .inc();
        self.inner
            .rpc_latency
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an open stream until the returned guard drops.
    pub fn stream_opened(&self, method: &'static str) -> StreamGuard {
        let gauge = self
            .inner
            .open_streams
            .get_or_create(&MethodLabels { method })
            .clone();
        gauge.inc();
        StreamGuard { gauge }
    }

    pub fn refresh_ok(&self, elapsed: Duration) {
        self.inner.refresh_duration.observe(elapsed.as_secs_f64());
    }

    /// From now on, scrapes include what `cluster` shows and use `options` (serve).
    pub fn watch_workers(&self, cluster: Option<ClusterStore>, options: PlanOptions) {
        if let Ok(mut g) = self.inner.workers.source.lock() {
            *g = Some((cluster.unwrap_or_default(), options));
        }
    }

    /// Counts written (and failed) pod-deletion-cost patches.
    pub fn deletion_cost_patches(&self, patched: u64, failed: u64) {
        let c = &self.inner.workers.cost_patches;
        c.get_or_create(&ResultLabels { result: "ok" })
            .inc_by(patched);
        if failed > 0 {
            c.get_or_create(&ResultLabels { result: "error" })
                .inc_by(failed);
        }
    }

    /// Records the effective refresh interval.
    pub fn refresh_interval(&self, interval: Duration) {
        self.inner.refresh_interval.set(interval.as_secs_f64());
    }

    /// The counter of refused TLS handshakes (handed to the TLS acceptor).
    pub fn tls_refused(&self) -> Counter {
        self.inner.tls_refused.clone()
    }

    pub fn refresh_failed(&self, kind: &'static str) {
        self.inner
            .refresh_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Sets the per-queue gauges from a snapshot state (called on publish and at scrape).
    pub fn observe_snapshot(
        &self,
        published: &Published,
        declared: &WorkerQueues,
        max_staleness: Duration,
    ) {
        let i = &self.inner;
        i.ready
            .set(i64::from(published.fresh(max_staleness).is_ok()));
        match &published.latest {
            None => {
                i.snapshot_age.set(-1.0);
            }
            Some(snapshot) => {
                i.snapshot_age.set(snapshot.age().as_secs_f64());
                let source = i.workers.source.lock().ok().and_then(|g| g.clone());
                let (cluster, options) = match &source {
                    Some((store, options)) => (store.current(), *options),
                    None => (None, PlanOptions::default()),
                };
                let plan = Plan::compute_with(declared, snapshot, cluster.as_deref(), options);
                i.workers.observe(&plan, cluster.is_some());
                for q in &plan.worker_queues {
                    let labels = QueueLabels {
                        worker_queue: q.worker_queue.clone(),
                    };
                    i.queued.get_or_create(&labels).set(gauge_value(q.queued));
                    i.running.get_or_create(&labels).set(gauge_value(q.running));
                    i.desired
                        .get_or_create(&labels)
                        .set(i64::from(q.desired_workers));
                }
                i.parallelism.set(gauge_value(plan.parallelism.value));
            }
        }
    }

    /// Prometheus text exposition, with scrape-time values refreshed from `store`.
    pub fn encode(
        &self,
        store: &SnapshotStore,
        declared: &WorkerQueues,
        max_staleness: Duration,
    ) -> String {
        let published = store.current();
        self.observe_snapshot(&published, declared, max_staleness);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode_registry(&mut out, &self.inner.registry)
            .is_err()
            || (published.fresh(max_staleness).is_ok()
                && prometheus_client::encoding::text::encode_registry(&mut out, &self.inner.live)
                    .is_err())
            || prometheus_client::encoding::text::encode_eof(&mut out).is_err()
        {
            out.clear();
        }
        out
    }
}

/// What the admin server shows of the scaler: ready while a fresh snapshot exists (and not
/// shutting down), and the metrics with scrape-time values.
#[derive(Debug, Clone)]
pub struct AdminMetrics {
    pub store: SnapshotStore,
    pub declared: Arc<WorkerQueues>,
    pub metrics: Metrics,
    pub max_staleness: Duration,
    /// Cancelled when the process starts draining (readiness off).
    pub draining: CancellationToken,
}

impl AdminView for AdminMetrics {
    fn readiness(&self) -> Result<String, String> {
        if self.draining.is_cancelled() {
            return Err("shutting down: draining\n".to_string());
        }
        match self.store.current().fresh(self.max_staleness) {
            Ok(_) => Ok("ok\n".to_string()),
            Err(e) => Err(format!("{e}\n")),
        }
    }

    fn metrics(&self) -> String {
        self.metrics
            .encode(&self.store, &self.declared, self.max_staleness)
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Decrements the open-streams gauge on drop.
#[derive(Debug)]
pub struct StreamGuard {
    gauge: Gauge,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Stable lowercase names of gRPC codes (a fixed set: bounded labels).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests;

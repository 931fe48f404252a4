//! KEDA's `externalscaler.ExternalScaler` gRPC service: a thin adapter over
//! [`metadata::parse`] → [`Published::fresh`] → [`sizing`].
//!
//! No RPC touches the database. `GetMetrics` and `IsActive` answer from the latest snapshot;
//! when there is no fresh one they answer `UNAVAILABLE` with the reason — never 0 or `false`.
//! `GetMetricSpec` and `StreamMetricSpec` depend only on the metadata and the worker-queue file
//! and always answer (KEDA's `fallback` engages only while `GetMetricSpec` succeeds).
//! `StreamIsActive` stays open through an outage: it sends nothing while the data is stale
//! (KEDA keeps its last state, the pull RPCs carry the error) and the current state as soon as
//! a fresh snapshot arrives; it ends with OK on shutdown, so KEDA's reconnect back-off resets.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    scaler::grpc::proto::externalscaler::{
        GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
        MetricValue, ScaledObjectRef, external_scaler_server::ExternalScaler,
    },
    scaler::metrics::Metrics,
    scaler::model::metadata::{self, MetadataError},
    scaler::model::sizing,
    scaler::model::worker_queue::{WorkerQueue, WorkerQueues},
    scaler::snapshot::{Demand, Published, Snapshot, SnapshotStore, StaleError},
};

/// The one metric spec of a worker queue: target = maxTasksPerWorker (int and float set).
pub fn metric_spec(wq: &WorkerQueue) -> GetMetricSpecResponse {
    GetMetricSpecResponse {
        metric_specs: vec![MetricSpec {
            metric_name: wq.metric_name(),
            target_size: i64::from(wq.max_tasks_per_worker),
            target_size_float: f64::from(wq.max_tasks_per_worker),
        }],
    }
}

/// The one metric value of a worker queue: queued + running (int and float set).
pub fn metric_value(wq: &WorkerQueue, demand: Demand) -> GetMetricsResponse {
    let total = demand.total();
    GetMetricsResponse {
        metric_values: vec![MetricValue {
            metric_name: wq.metric_name(),
            metric_value: i64::try_from(total).unwrap_or(i64::MAX),
            // u64 → f64 loses precision only above 2^53 tasks.
            metric_value_float: total as f64,
        }],
    }
}

impl From<MetadataError> for Status {
    fn from(e: MetadataError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

impl From<StaleError> for Status {
    fn from(e: StaleError) -> Self {
        Status::unavailable(e.to_string())
    }
}

/// Serves KEDA from the shared [`SnapshotStore`].
#[derive(Debug, Clone)]
pub struct ScalerService {
    declared: Arc<WorkerQueues>,
    store: SnapshotStore,
    max_staleness: Duration,
    shutdown: CancellationToken,
    metrics: Metrics,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl ScalerService {
    pub fn new(
        declared: Arc<WorkerQueues>,
        store: SnapshotStore,
        max_staleness: Duration,
        shutdown: CancellationToken,
        metrics: Metrics,
    ) -> Self {
        Self {
            declared,
            store,
            max_staleness,
            shutdown,
            metrics,
        }
    }

    /// Counts the call by method and outcome.
    fn record<T>(
        &self,
        method: &'static str,
        start: Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let code = result
            .as_ref()
            .map_or_else(Status::code, |_| tonic::Code::Ok);
        self.metrics.rpc(method, code, start.elapsed());
        result
    }

    fn worker_queue(&self, r: Option<&ScaledObjectRef>) -> Result<WorkerQueue, Status> {
        let r = r.ok_or_else(|| Status::invalid_argument("scaledObjectRef is missing"))?;
        Ok(metadata::parse(&r.scaler_metadata, &self.declared)?)
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, Status> {
        Ok(self.store.current().fresh(self.max_staleness)?)
    }

    fn demand(&self, wq: &WorkerQueue) -> Result<Demand, Status> {
        Ok(self.snapshot()?.demand(&wq.selector()))
    }
}

/// Delay before re-checking a snapshot that is fresh now: just after it would go stale.
fn until_stale(published: &Published, max_staleness: Duration) -> Duration {
    let age = published
        .latest
        .as_ref()
        .map_or(Duration::ZERO, |s| s.age());
    max_staleness.saturating_sub(age) + Duration::from_millis(10)
}

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let start = Instant::now();
        let result = self.worker_queue(Some(request.get_ref())).and_then(|wq| {
            let demand = self.demand(&wq)?;
            Ok(Response::new(IsActiveResponse {
                result: sizing::is_active(demand, wq.activation_tasks),
            }))
        });
        self.record("IsActive", start, result)
    }

    type StreamIsActiveStream = ResponseStream<IsActiveResponse>;

    /// Sends the current state at once (or, while the data is stale, as soon as a fresh
    /// snapshot arrives), then only transitions; nothing while stale (KEDA never sees a `false`
    /// caused by an error, and keeps the stream instead of backing off). After an outage the
    /// current state is sent again. Ends with OK on shutdown.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let start = Instant::now();
        let opened = self.worker_queue(Some(request.get_ref()));
        let wq = self.record("StreamIsActive", start, opened)?;
        let guard = self.metrics.stream_opened("StreamIsActive");
        let selector = wq.selector();
        let mut rx = self.store.subscribe();
        let max_staleness = self.max_staleness;
        let shutdown = self.shutdown.clone();
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let _guard = guard;
            let mut last: Option<bool> = None;
            loop {
                let published = rx.borrow_and_update().clone();
                let recheck = match published.fresh(max_staleness) {
                    Ok(snapshot) => {
                        let active =
                            sizing::is_active(snapshot.demand(&selector), wq.activation_tasks);
                        if last != Some(active) {
                            if tx
                                .send(Ok(IsActiveResponse { result: active }))
                                .await
                                .is_err()
                            {
                                return;
                            }
                            last = Some(active);
                        }
                        until_stale(&published, max_staleness)
                    }
                    Err(_) => {
                        // Stale: send nothing; push the state again once fresh data arrives.
                        last = None;
                        Duration::from_secs(3600)
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    changed = rx.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(recheck) => {}
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let start = Instant::now();
        let result = self
            .worker_queue(Some(request.get_ref()))
            .map(|wq| Response::new(metric_spec(&wq)));
        self.record("GetMetricSpec", start, result)
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let start = Instant::now();
        let result = self
            .worker_queue(request.get_ref().scaled_object_ref.as_ref())
            .and_then(|wq| {
                let demand = self.demand(&wq)?;
                Ok(Response::new(metric_value(&wq, demand)))
            });
        self.record("GetMetrics", start, result)
    }

    type StreamMetricSpecStream = ResponseStream<GetMetricSpecResponse>;

    /// The spec depends only on the metadata and the worker-queue file, which do not change
    /// while the process runs (nor with the database's health): send it once, hold the stream,
    /// end with OK on shutdown.
    async fn stream_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        let start = Instant::now();
        let opened = self.worker_queue(Some(request.get_ref()));
        let wq = self.record("StreamMetricSpec", start, opened)?;
        let guard = self.metrics.stream_opened("StreamMetricSpec");
        let (tx, out) = mpsc::channel(1);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _guard = guard;
            if tx.send(Ok(metric_spec(&wq))).await.is_err() {
                return;
            }
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tx.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_and_value_set_int_and_float() {
        let wq = WorkerQueue {
            max_tasks_per_worker: 4,
            ..WorkerQueue::default()
        };
        let spec = metric_spec(&wq);
        assert_eq!(spec.metric_specs.len(), 1);
        assert_eq!(spec.metric_specs[0].target_size, 4);
        assert_eq!(spec.metric_specs[0].target_size_float, 4.0);
        assert_eq!(spec.metric_specs[0].metric_name, "airflow-tasks-default");
        let value = metric_value(
            &wq,
            Demand {
                queued: 3,
                running: 6,
                ..Demand::default()
            },
        );
        assert_eq!(value.metric_values.len(), 1);
        assert_eq!(value.metric_values[0].metric_value, 9);
        assert_eq!(value.metric_values[0].metric_value_float, 9.0);
        let zero = metric_value(&wq, Demand::default());
        assert_eq!(zero.metric_values[0].metric_value, 0);
    }
}

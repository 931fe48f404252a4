//! The KEDA external scaler: database → [`refresher`] → [`snapshot`] → [`grpc`] → KEDA.
//!
//! - [`config`]: configuration types (filled by `cli`, or by tests and the demo directly).
//! - [`model`]: worker queues, trigger metadata, sizing formulas (pure).
//! - [`db`]: the Airflow metadata database (dialect SQL, URLs, schema detection).
//! - [`snapshot`], [`refresher`]: the one refresh query and what it publishes.
//! - [`grpc`]: KEDA's ExternalScaler service, the gRPC listeners and their readiness.
//! - [`metrics`]: Prometheus metrics and the admin view.
//! - [`mod@explain`]: the offline `explain` command.
//!
//! [`Scaler::start`] wires the parts; `serve`, the demo and the end-to-end tests all run the
//! same assembly.

pub mod cluster;
pub mod config;
pub mod db;
pub mod explain;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod refresher;
pub mod snapshot;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

pub use self::explain::explain;
use self::{
    config::{DbConfig, ServeConfig},
    db::{DbError, MetadataDb},
    grpc::{GrpcError, GrpcOptions, GrpcServers},
    metrics::{AdminMetrics, Metrics},
    model::worker_queue::{WorkerQueueFileError, WorkerQueues},
    snapshot::SnapshotStore,
};
use crate::runtime::{
    admin,
    shutdown::{self, Drain, DrainTimes},
    tasks::{Supervisor, TaskError},
};

/// Errors that stop the scaler before or while it serves.
#[derive(Debug, thiserror::Error)]
pub enum ScalerError {
    /// The worker-queue file is invalid.
    #[error(transparent)]
    WorkerQueues(#[from] WorkerQueueFileError),
    /// The database configuration is wrong (or, for `explain`, the database failed).
    #[error(transparent)]
    Db(#[from] DbError),
    /// A gRPC listener could not start.
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    /// The admin port could not be bound.
    #[error(transparent)]
    AdminBind(crate::runtime::ListenError),
    /// A critical task stopped.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// Output could not be written.
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
    /// Output could not be encoded.
    #[error("cannot write output: {0}")]
    Encode(serde_json::Error),
    /// `--kubernetes on` without a configuration, or no client could be built.
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
}

/// Everything `start` needs (what `serve` describes, minus file loading).
#[derive(Debug, Clone)]
pub struct ScalerConfig {
    pub grpc: GrpcOptions,
    /// Plain-HTTP admin listener (`/livez`, `/readyz`, `/metrics`).
    pub admin_addr: Option<SocketAddr>,
    pub declared: WorkerQueues,
    pub refresh_interval: Duration,
    /// Upper bound of the refresh's duty cycle (share of wall time spent querying), in (0, 1].
    pub refresh_max_duty_cycle: f64,
    pub db: DbConfig,
}

impl ScalerConfig {
    /// Reads the worker-queue file (if any) named by `serve`'s configuration.
    pub fn load(serve: &ServeConfig) -> Result<Self, ScalerError> {
        Ok(Self {
            grpc: GrpcOptions {
                grpc_addr: serve.grpc_addr,
                probe_addr: Some(serve.probe_addr),
                max_staleness: serve.max_staleness,
                tls: serve.tls.clone(),
                metrics: Metrics::new(),
                limits: serve.limits,
            },
            admin_addr: Some(serve.admin_addr),
            declared: load_worker_queues(serve.worker_queues.as_deref())?,
            refresh_interval: serve.refresh_interval,
            refresh_max_duty_cycle: serve.refresh_max_duty_cycle,
            db: serve.db.clone(),
        })
    }
}

/// Loads the worker-queue file, or an empty set without one.
pub fn load_worker_queues(path: Option<&Path>) -> Result<WorkerQueues, ScalerError> {
    Ok(match path {
        Some(p) => WorkerQueues::load(p)?,
        None => WorkerQueues::default(),
    })
}

/// A running scaler.
#[derive(Debug)]
pub struct Scaler {
    pub grpc_addr: SocketAddr,
    pub probe_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    pub store: SnapshotStore,
    pub shutdown: CancellationToken,
    /// Cancelled first on shutdown: readiness NOT_SERVING while the listeners keep serving.
    pub draining: CancellationToken,
    tasks: Supervisor,
}

impl Scaler {
    /// Connects to the database, starts the refresher and binds the listeners. Returns once
    /// the ports are bound; readiness turns SERVING with the first snapshot. Every task is
    /// supervised: one that stops before `shutdown` fires cancels it, and [`Scaler::wait`]
    /// reports it.
    pub async fn start(
        config: ScalerConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, ScalerError> {
        // Lazy: a database that is down at start only delays readiness; a bad URL still fails.
        let db = MetadataDb::connect(&config.db).await?;
        tracing::info!(
            database = %db.redacted_url(),
            worker_queues = ?config.declared.names(),
            refresh_interval = ?config.refresh_interval,
            "starting scaler"
        );
        if config.grpc.max_staleness < config.db.database_timeout {
            tracing::warn!(
                max_staleness = ?config.grpc.max_staleness,
                database_timeout = ?config.db.database_timeout,
                "--max-staleness is shorter than --database-timeout: one slow refresh makes every \
                 RPC answer UNAVAILABLE before the query has even failed"
            );
        }
        if config.db.pgbouncer {
            tracing::warn!(
                "--pgbouncer (AIRFLOW_KEDA_SCALER_PGBOUNCER) has no effect and is deprecated: \
                 the scaler works behind PgBouncer in any pooling mode without a setting"
            );
        }
        let draining = shutdown::draining_token(&shutdown);
        let tasks = Supervisor::new(shutdown.clone());
        let store = SnapshotStore::new();
        let refresh_metrics = config.grpc.metrics.clone();
        let refresh = refresher::run_observed(
            db,
            store.clone(),
            refresher::Pace::new(config.refresh_interval, config.refresh_max_duty_cycle)
                .with_ceiling(config.grpc.max_staleness / 2),
            shutdown.clone(),
            move |stats| {
                refresh_metrics.refresh_interval(stats.next_in);
                match stats.error_kind {
                    None => refresh_metrics.refresh_ok(stats.duration),
                    Some(kind) => refresh_metrics.refresh_failed(kind),
                }
            },
        );
        tasks.critical("refresher", async move {
            refresh.await;
            Ok::<(), std::convert::Infallible>(())
        });
        let declared = Arc::new(config.declared);
        let metrics = config.grpc.metrics.clone();
        let max_staleness = config.grpc.max_staleness;
        let started = GrpcServers::start(
            config.grpc,
            Arc::clone(&declared),
            store.clone(),
            &tasks,
            draining.clone(),
        )
        .await;
        let servers = match started {
            Ok(s) => s,
            Err(e) => {
                shutdown.cancel();
                let _ = tasks.wait().await;
                return Err(e.into());
            }
        };
        let mut admin_addr = None;
        if let Some(addr) = config.admin_addr {
            let view = AdminMetrics {
                store: store.clone(),
                declared,
                metrics,
                max_staleness,
                draining: draining.clone(),
            };
            match admin::start(addr, Arc::new(view), &tasks).await {
                Ok(bound) => admin_addr = Some(bound),
                Err(e) => {
                    shutdown.cancel();
                    let _ = tasks.wait().await;
                    return Err(ScalerError::AdminBind(e));
                }
            }
        }
        tracing::info!(grpc = %servers.grpc_addr, probe = ?servers.probe_addr, admin = ?admin_addr, "listening");
        Ok(Self {
            grpc_addr: servers.grpc_addr,
            probe_addr: servers.probe_addr,
            admin_addr,
            store,
            shutdown,
            draining,
            tasks,
        })
    }

    /// Waits until every task has stopped (after `shutdown` fired, by a signal, a call to
    /// [`Scaler::stop`] or a critical task that stopped); reports the first such failure.
    pub async fn wait(self) -> Result<(), ScalerError> {
        Ok(self.tasks.wait().await?)
    }

    /// Cancels and waits.
    pub async fn stop(self) -> Result<(), ScalerError> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// `serve`: runs the scaler until SIGTERM/SIGINT, then turns readiness off, keeps serving for
/// the drain delay and drains within the shutdown grace (a second signal exits at once; see
/// [`shutdown`]). Returns how the drain ended; a critical task that stopped is an error.
pub async fn serve(config: &ServeConfig) -> Result<Drain, ScalerError> {
    let scaler_config = ScalerConfig::load(config)?;
    let token = CancellationToken::new();
    let declared = Arc::new(scaler_config.declared.clone());
    let metrics = scaler_config.grpc.metrics.clone();
    let max_staleness = scaler_config.grpc.max_staleness;
    let scaler = Scaler::start(scaler_config, token.clone()).await?;
    let tasks = scaler.tasks.clone();
    // The workers as Kubernetes runs them (optional): a helper task, stopped by the token.
    let workers = cluster::run::start(
        &config.workers,
        declared,
        scaler.store.clone(),
        metrics,
        max_staleness,
        token.clone(),
    )
    .await;
    match workers {
        Ok(Some(run)) => tasks.helper("workers", run),
        Ok(None) => {}
        Err(e) => {
            token.cancel();
            let _ = tasks.wait().await;
            return Err(e.into());
        }
    }
    let times = DrainTimes {
        delay: config.drain_delay,
        grace: config.shutdown_grace,
    };
    let drain = shutdown::run_until_signal(token, scaler.draining.clone(), times, async {
        let _ = tasks.wait().await;
    })
    .await;
    tracing::info!(?drain, "stopped");
    tasks.failure()?;
    Ok(drain)
}

//! Wiring of the scaler's parts: database → refresher → snapshot store → gRPC listeners.
//! Used by `serve`, `demo` and the end-to-end tests, so they all run the same assembly.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    admin,
    cli::{DbArgs, ExplainArgs, OutputFormat, ServeArgs},
    db::{DbError, MetadataDb},
    metrics::Metrics,
    refresher,
    server::{GrpcOptions, GrpcServers, ServerError},
    shutdown::{self, Drain},
    snapshot::{SnapshotStore, TaskState},
    tls::grpc::TlsFiles,
    worker_queue::{WorkerQueue, WorkerQueueFileError, WorkerQueues},
};

/// Errors that stop the program before or while it serves.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    WorkerQueues(#[from] WorkerQueueFileError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot write output: {0}")]
    Output(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// Everything `start` needs (what `serve` flags describe, minus file loading).
#[derive(Debug, Clone)]
pub struct ScalerConfig {
    pub grpc: GrpcOptions,
    /// Plain-HTTP admin listener (`/livez`, `/readyz`, `/metrics`).
    pub admin_addr: Option<SocketAddr>,
    pub declared: WorkerQueues,
    pub refresh_interval: Duration,
    pub db: DbArgs,
}

impl ScalerConfig {
    /// Reads the worker-queue file (if any) named by the flags.
    pub fn from_args(args: &ServeArgs) -> Result<Self, AppError> {
        Ok(Self {
            grpc: GrpcOptions {
                grpc_addr: args.grpc_addr,
                probe_addr: Some(args.probe_addr),
                max_staleness: args.max_staleness,
                tls: match (&args.tls_cert, &args.tls_key) {
                    (Some(cert), Some(key)) => Some(TlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                        client_ca: args.tls_client_ca.clone(),
                        reload_interval: args.tls_reload_interval,
                    }),
                    _ => None,
                },
                metrics: Metrics::new(),
            },
            admin_addr: Some(args.admin_addr),
            declared: load_worker_queues(args.worker_queues.as_deref())?,
            refresh_interval: args.refresh_interval,
            db: args.db.clone(),
        })
    }
}

/// Loads the worker-queue file, or an empty set without one.
pub fn load_worker_queues(path: Option<&Path>) -> Result<WorkerQueues, AppError> {
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
    servers: GrpcServers,
    admin: Option<JoinHandle<std::io::Result<()>>>,
    refresher: JoinHandle<()>,
}

impl Scaler {
    /// Connects to the database, starts the refresher and binds the listeners. Returns once
    /// the ports are bound; readiness turns SERVING with the first snapshot.
    pub async fn start(
        config: ScalerConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, AppError> {
        // Lazy: a database that is down at start only delays readiness; a bad URL still fails.
        let db = MetadataDb::connect(&config.db).await?;
        tracing::info!(
            database = %db.redacted_url(),
            worker_queues = ?config.declared.names(),
            refresh_interval = ?config.refresh_interval,
            "starting scaler"
        );
        let store = SnapshotStore::new();
        let refresh_metrics = config.grpc.metrics.clone();
        let refresher = tokio::spawn(refresher::run_observed(
            db,
            store.clone(),
            config.refresh_interval,
            shutdown.clone(),
            move |stats| match stats.error_kind {
                None => refresh_metrics.refresh_ok(stats.duration),
                Some(kind) => refresh_metrics.refresh_failed(kind),
            },
        ));
        let declared = Arc::new(config.declared);
        let metrics = config.grpc.metrics.clone();
        let max_staleness = config.grpc.max_staleness;
        let servers = GrpcServers::start(
            config.grpc,
            Arc::clone(&declared),
            store.clone(),
            shutdown.clone(),
        )
        .await?;
        let mut admin = None;
        if let Some(addr) = config.admin_addr {
            let (bound, task) = admin::start(
                addr,
                store.clone(),
                declared,
                metrics,
                max_staleness,
                shutdown.clone(),
            )
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
            admin = Some((bound, task));
        }
        let admin_addr = admin.as_ref().map(|(a, _)| *a);
        tracing::info!(grpc = %servers.grpc_addr, probe = ?servers.probe_addr, admin = ?admin_addr, "listening");
        Ok(Self {
            grpc_addr: servers.grpc_addr,
            probe_addr: servers.probe_addr,
            admin_addr,
            admin: admin.map(|(_, t)| t),
            store,
            shutdown,
            servers,
            refresher,
        })
    }

    /// Waits until the listeners and the refresher stopped (after `shutdown` fired).
    pub async fn wait(self) -> Result<(), AppError> {
        let served = self.servers.wait().await;
        if let Some(admin) = self.admin {
            let _ = admin.await;
        }
        self.refresher.abort();
        let _ = self.refresher.await;
        Ok(served?)
    }

    /// Cancels and waits.
    pub async fn stop(self) -> Result<(), AppError> {
        self.shutdown.cancel();
        self.wait().await
    }
}

/// `serve`: runs the scaler until SIGTERM/SIGINT, then drains within `--shutdown-grace` (a
/// second signal exits at once). Returns how the drain ended.
pub async fn serve(args: &ServeArgs) -> Result<Drain, AppError> {
    let config = ScalerConfig::from_args(args)?;
    let token = CancellationToken::new();
    let declared = Arc::new(config.declared.clone());
    let metrics = config.grpc.metrics.clone();
    let max_staleness = config.grpc.max_staleness;
    let scaler = Scaler::start(config, token.clone()).await?;
    // The workers as Kubernetes runs them (optional; stops with the token).
    crate::cluster::run::start(
        &args.workers.config(),
        declared,
        scaler.store.clone(),
        metrics,
        max_staleness,
        token.clone(),
    )
    .await?;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let waiter = tokio::spawn(async move {
        let result = scaler.wait().await;
        let _ = done_tx.send(());
        result
    });
    let drain = shutdown::run_until_signal(token, args.shutdown_grace, async {
        let _ = done_rx.await;
    })
    .await;
    tracing::info!(?drain, "stopped");
    if waiter.is_finished() {
        waiter
            .await
            .map_err(|e| AppError::Server(ServerError::Task(e.to_string())))??;
    }
    Ok(drain)
}

/// `explain`: one snapshot, one line per worker queue, then parallelism.
pub async fn explain(args: &ExplainArgs, out: &mut dyn std::io::Write) -> Result<(), AppError> {
    let declared = load_worker_queues(args.worker_queues.as_deref())?;
    let db = MetadataDb::connect(&args.db).await?;
    let snapshot = refresher::refresh_once(&db).await?;
    let declared = if declared.is_empty() {
        // No file: every Airflow queue with work is its own worker queue, default settings.
        let mut queues: Vec<String> = snapshot
            .counts
            .iter()
            .filter(|c| matches!(c.state, TaskState::Queued | TaskState::Running))
            .map(|c| c.queue.clone())
            .collect();
        queues.sort();
        queues.dedup();
        WorkerQueues::from_list(
            queues
                .into_iter()
                .map(|q| WorkerQueue {
                    name: Some(q.clone()),
                    queues: vec![q],
                    ..WorkerQueue::default()
                })
                .collect(),
        )
    } else {
        declared
    };
    let (plan, cluster_line) =
        crate::cluster::explain_plan(&args.workers.config(), &declared, &snapshot).await?;
    let text = match args.output {
        OutputFormat::Table => format!(
            "database: {} ({})\n{cluster_line}\n{}",
            db.redacted_url(),
            snapshot.schema.describe(),
            plan.to_table()
        ),
        OutputFormat::Json => {
            let mut v = serde_json::to_value(&plan).map_err(|e| AppError::Output(e.to_string()))?;
            if let Some(obj) = v.as_object_mut() {
                obj.insert(
                    "schema".into(),
                    serde_json::to_value(snapshot.schema).unwrap_or_default(),
                );
            }
            let mut s =
                serde_json::to_string_pretty(&v).map_err(|e| AppError::Output(e.to_string()))?;
            s.push('\n');
            s
        }
    };
    out.write_all(text.as_bytes())
        .map_err(|e| AppError::Output(e.to_string()))
}

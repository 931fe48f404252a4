//! The scaler's gRPC listeners: the main port (ExternalScaler + health + reflection) and the
//! plaintext probe port (health only), plus the task that keeps readiness in step with the
//! snapshot's freshness.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use crate::{
    metrics::Metrics,
    proto::{FILE_DESCRIPTOR_SET, externalscaler::external_scaler_server::ExternalScalerServer},
    scaler_service::ScalerService,
    snapshot::SnapshotStore,
    tls::grpc::{GrpcTls, TlsFiles},
    worker_queue::WorkerQueues,
};

/// Health service name: the process is up.
pub const LIVENESS: &str = "liveness";
/// Health service name: a fresh snapshot exists (also drives `""`).
pub const READINESS: &str = "readiness";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("server task ended abnormally: {0}")]
    Task(String),
}

/// What the gRPC listeners need.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    pub grpc_addr: SocketAddr,
    /// Plaintext health-only listener for Kubernetes' native gRPC probes.
    pub probe_addr: Option<SocketAddr>,
    pub max_staleness: Duration,
    /// TLS (and mutual TLS) for the main port; the probe port stays plaintext.
    pub tls: Option<TlsFiles>,
    pub metrics: Metrics,
}

/// Running gRPC listeners.
#[derive(Debug)]
pub struct GrpcServers {
    pub grpc_addr: SocketAddr,
    pub probe_addr: Option<SocketAddr>,
    pub health: HealthReporter,
    tasks: Vec<JoinHandle<Result<(), ServerError>>>,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

async fn set_ready(reporter: &HealthReporter, ready: bool) {
    let status = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status(READINESS, status).await;
    reporter.set_service_status("", status).await;
}

/// Keeps `readiness` and `""` SERVING exactly while a fresh snapshot exists; NOT_SERVING at
/// once on shutdown.
async fn track_readiness(
    reporter: HealthReporter,
    store: SnapshotStore,
    max_staleness: Duration,
    shutdown: CancellationToken,
) {
    let mut rx = store.subscribe();
    loop {
        let published = rx.borrow_and_update().clone();
        let fresh = published.fresh(max_staleness);
        set_ready(&reporter, fresh.is_ok()).await;
        let recheck = match &fresh {
            Ok(s) => max_staleness.saturating_sub(s.age()) + Duration::from_millis(10),
            Err(_) => Duration::from_secs(3600),
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = rx.changed() => if changed.is_err() { break },
            () = tokio::time::sleep(recheck) => {}
        }
    }
    set_ready(&reporter, false).await;
}

impl GrpcServers {
    /// Binds every listener (so the caller knows the ports), then serves until `shutdown`.
    pub async fn start(
        options: GrpcOptions,
        declared: Arc<WorkerQueues>,
        store: SnapshotStore,
        shutdown: CancellationToken,
    ) -> Result<Self, ServerError> {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        set_ready(&reporter, false).await;

        // Both reflection versions: grpcurl < 1.9 and other older clients speak only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let (reflection_v1, reflection_v1alpha) =
            (reflection().build_v1()?, reflection().build_v1alpha()?);
        let scaler = ScalerService::new(
            declared,
            store.clone(),
            options.max_staleness,
            shutdown.clone(),
            options.metrics.clone(),
        );

        let main_listener = bind(options.grpc_addr).await?;
        let grpc_addr = main_listener
            .local_addr()
            .map_err(|source| ServerError::Bind {
                addr: options.grpc_addr,
                source,
            })?;
        let router = Server::builder()
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(ExternalScalerServer::new(scaler));
        let token = shutdown.clone();
        let main_task = match options.tls {
            Some(files) => {
                let tls = GrpcTls::load(files).map_err(|e| ServerError::Tls(e.to_string()))?;
                tracing::info!(mutual = tls.mutual(), "gRPC TLS enabled");
                tls.spawn_reloader(shutdown.clone());
                let incoming = tls.incoming(main_listener, shutdown.clone());
                tokio::spawn(async move {
                    router
                        .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
                        .await
                        .map_err(ServerError::from)
                })
            }
            None => tokio::spawn(async move {
                router
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(main_listener),
                        token.cancelled_owned(),
                    )
                    .await
                    .map_err(ServerError::from)
            }),
        };
        let mut tasks = vec![main_task];

        let mut probe_addr = None;
        if let Some(addr) = options.probe_addr {
            let listener = bind(addr).await?;
            probe_addr = Some(
                listener
                    .local_addr()
                    .map_err(|source| ServerError::Bind { addr, source })?,
            );
            let probe_health =
                HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
            let token = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                Server::builder()
                    .add_service(probe_health)
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        token.cancelled_owned(),
                    )
                    .await
                    .map_err(ServerError::from)
            }));
        }

        tokio::spawn(track_readiness(
            reporter.clone(),
            store,
            options.max_staleness,
            shutdown,
        ));

        Ok(Self {
            grpc_addr,
            probe_addr,
            health: reporter,
            tasks,
        })
    }

    /// Waits until every listener has stopped (after the shutdown token fired).
    pub async fn wait(self) -> Result<(), ServerError> {
        for task in self.tasks {
            match task.await {
                Ok(result) => result?,
                Err(join) => {
                    return Err(ServerError::Task(join.to_string()));
                }
            }
        }
        Ok(())
    }
}

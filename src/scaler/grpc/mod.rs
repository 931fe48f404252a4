//! The scaler's gRPC side: KEDA's `ExternalScaler` [`service`], the listeners (the main port
//! with ExternalScaler + health + reflection, and the plaintext probe port with health only),
//! and [`readiness`], which keeps gRPC health in step with the snapshot's freshness.

pub mod proto;
pub mod readiness;
pub mod service;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::StreamExt as _;

use tokio_util::sync::CancellationToken;
use tonic::transport::Server;
use tonic_health::{ServingStatus, pb::health_server::HealthServer, server::HealthReporter};

pub use self::readiness::{LIVENESS, READINESS};
use self::{
    proto::{FILE_DESCRIPTOR_SET, externalscaler::external_scaler_server::ExternalScalerServer},
    readiness::{StoppingHealth, set_ready, track_readiness},
    service::ScalerService,
};
use crate::{
    runtime::{
        conn::{self, ConnLimits},
        tasks::Supervisor,
        tls::{
            TlsError,
            reloading::{ReloadingTls, TlsFiles},
        },
    },
    scaler::{metrics::Metrics, model::worker_queue::WorkerQueues, snapshot::SnapshotStore},
};

/// Why the gRPC listeners could not start.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// A port could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::runtime::ListenError),
    /// Reflection could not be set up.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// TLS could not be set up.
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsError),
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
    /// Connection limits of the main port (HTTP/2 keepalive, caps, idle timeout).
    pub limits: ConnLimits,
}

/// Connections the plaintext probe port accepts at once (kubelet probes; taken from the
/// descriptors the main port's cap leaves free).
const PROBE_MAX_CONNECTIONS: usize = 16;

fn server_builder(limits: &ConnLimits) -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(Some(limits.max_concurrent_streams))
        .tcp_keepalive(Some(limits.keepalive_interval))
}

/// Running gRPC listeners (their tasks belong to the [`Supervisor`] they were started with).
#[derive(Debug)]
pub struct GrpcServers {
    pub grpc_addr: SocketAddr,
    pub probe_addr: Option<SocketAddr>,
    pub health: HealthReporter,
}

impl GrpcServers {
    /// Binds every listener (so the caller knows the ports), then serves until shutdown, as
    /// critical tasks of `tasks`. Readiness turns NOT_SERVING when `draining` fires; the
    /// listeners stop when the supervisor's shutdown token does.
    pub async fn start(
        options: GrpcOptions,
        declared: Arc<WorkerQueues>,
        store: SnapshotStore,
        tasks: &Supervisor,
        draining: CancellationToken,
    ) -> Result<Self, GrpcError> {
        let shutdown = tasks.shutdown().clone();
        let (reporter, _) = tonic_health::server::health_reporter();
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

        let (main_listener, grpc_addr) = crate::runtime::listen(options.grpc_addr).await?;
        let limits = options.limits;
        let router = server_builder(&limits)
            .add_service(HealthServer::new(StoppingHealth::new(
                reporter.clone(),
                shutdown.clone(),
            )))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(ExternalScalerServer::new(scaler));
        let token = shutdown.clone();
        match options.tls {
            Some(files) => {
                let tls = ReloadingTls::load("gRPC", files, &[b"h2"])?;
                tracing::info!(mutual = tls.mutual(), "gRPC TLS enabled");
                let metrics = options.metrics.clone();
                let reloader = tls.reloader(shutdown.clone(), move |what, result| {
                    metrics.tls_reload(what, result);
                });
                tasks.critical("gRPC TLS reloader", async move {
                    reloader.await;
                    Ok::<(), std::convert::Infallible>(())
                });
                let incoming = tls
                    .incoming(
                        main_listener,
                        limits,
                        options.metrics.tls_refused(),
                        shutdown.clone(),
                    )
                    .map(|(stream, _peer)| Ok::<_, std::io::Error>(stream));
                tasks.critical("gRPC server", async move {
                    router
                        .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
                        .await
                });
            }
            None => tasks.critical("gRPC server", async move {
                let incoming = conn::incoming(main_listener, limits, 1, token.clone())
                    // Fault injection for the proofs (feature `failpoints`): `return` ends the
                    // listener's stream, as a listener that died would. Always true otherwise.
                    .take_while(|_| {
                        fail::fail_point!("grpc-accept", |_| std::future::ready(false));
                        std::future::ready(true)
                    });
                router
                    .serve_with_incoming_shutdown(incoming, token.cancelled_owned())
                    .await
            }),
        }

        let mut probe_addr = None;
        if let Some(addr) = options.probe_addr {
            let (listener, bound) = crate::runtime::listen(addr).await?;
            probe_addr = Some(bound);
            let probe_health =
                HealthServer::new(StoppingHealth::new(reporter.clone(), shutdown.clone()));
            let token = shutdown.clone();
            let probe_limits = ConnLimits {
                max_connections: PROBE_MAX_CONNECTIONS,
                ..limits
            };
            tasks.critical("gRPC probe server", async move {
                server_builder(&probe_limits)
                    .add_service(probe_health)
                    .serve_with_incoming_shutdown(
                        conn::incoming(listener, probe_limits, 1, token.clone()),
                        token.cancelled_owned(),
                    )
                    .await
            });
        }

        // Critical: a readiness tracker that died would freeze the probes' answer.
        let tracker = track_readiness(reporter.clone(), store, options.max_staleness, draining);
        tasks.critical("gRPC readiness", async move {
            tracker.await;
            // Draining is not stopping: the listeners still serve until the stop token fires.
            shutdown.cancelled().await;
            Ok::<(), std::convert::Infallible>(())
        });

        Ok(Self {
            grpc_addr,
            probe_addr,
            health: reporter,
        })
    }
}

//! The webhook's servers: HTTPS `POST /mutate` (rustls, certificate hot reload, connections
//! from [`runtime::tls::acceptor`]) and the admin port of [`runtime::admin`] with `/livez`,
//! `/readyz` and `/metrics`. Every task runs under a [`Supervisor`].
//!
//! Handlers are thin adapters over [`review::handle`]. Readiness holds only after both ports
//! are bound and a certificate and a policy are loaded; it drops as soon as shutdown starts,
//! while both ports keep serving for the drain delay ([`runtime::shutdown`]).
//!
//! Edges: a request whose declared `Content-Length` is over `--max-body-bytes` gets 413 before
//! its body is read; at most `--max-in-flight` reviews are read and decoded at once (the others
//! wait with their body unread), which bounds memory whatever the number of clients; HTTPS
//! connections follow the shared [`runtime::conn`] limits.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::Router;
use futures::StreamExt as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::runtime::{
    self,
    admin::{self, AdminView},
    conn::ConnLimits,
    reload::{Poll, Watched},
    shutdown::{self, Drain, DrainTimes},
    tasks::{Supervisor, TaskError},
    tls::{self, CertStore, TlsError},
};

use super::{
    metrics::{Metrics, Reloaded},
    policy::Policy,
};

mod routes;

use routes::{MAX_STREAMS_PER_CONNECTION, READ_AHEAD, mutate_router};

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A port could not be bound.
    #[error(transparent)]
    Bind(#[from] runtime::ListenError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A critical task stopped.
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files, re-read when they change.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// Generated at start for these names.
    SelfSigned {
        /// DNS names / IP addresses.
        hosts: Vec<String>,
    },
}

/// Everything the webhook needs to run (independent of clap).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// HTTPS address.
    pub addr: SocketAddr,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// Certificate source.
    pub tls: TlsSource,
    /// Policy file.
    pub policy: PathBuf,
    /// How often files are checked for changes.
    pub reload_interval: Duration,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Time allowed per request (and per TLS handshake).
    pub request_timeout: Duration,
    /// Reviews read and decoded at once; more wait with their body unread.
    pub max_in_flight: usize,
}

/// The policy in force; swapped by the reloader.
#[derive(Debug, Default)]
pub struct PolicyStore {
    current: RwLock<Option<Arc<Policy>>>,
}

impl PolicyStore {
    /// The policy in force, if one was ever loaded.
    pub fn get(&self) -> Option<Arc<Policy>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a new policy in force.
    pub fn set(&self, policy: Policy) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(policy));
    }
}

/// State shared by the handlers and the reloader.
#[derive(Debug)]
pub struct AppState {
    /// Policy in force.
    pub policy: PolicyStore,
    /// Certificate in use.
    pub certs: Arc<CertStore>,
    /// Metrics.
    pub metrics: Metrics,
    stopping: AtomicBool,
}

impl AppState {
    /// Why the webhook is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.stopping.load(Ordering::Relaxed) {
            why.push("shutting down");
        }
        if self.policy.get().is_none() {
            why.push("no valid policy loaded");
        }
        if !self.certs.is_loaded() {
            why.push("no valid certificate loaded");
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

/// A started webhook.
#[derive(Debug)]
pub struct RunningWebhook {
    /// Bound HTTPS address.
    pub addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// Shared state (readiness, policy, certificate).
    pub state: Arc<AppState>,
    /// Cancelled first on shutdown: readiness off while both ports still serve.
    pub draining: CancellationToken,
    tasks: Supervisor,
}

impl RunningWebhook {
    /// Resolves when every server and the reloader have stopped (after `shutdown` fires, or
    /// after a critical task stopped, which it reports).
    pub async fn wait(self) -> Result<(), TaskError> {
        self.tasks.wait().await
    }
}

/// What the admin server shows of the webhook.
#[derive(Debug)]
struct WebhookView(Arc<AppState>);

impl AdminView for WebhookView {
    fn readiness(&self) -> Result<String, String> {
        match self.0.not_ready() {
            None => Ok("ready\n".to_owned()),
            Some(why) => Err(format!("not ready: {why}\n")),
        }
    }

    fn metrics(&self) -> String {
        self.0.metrics.encode()
    }
}

/// Binds both ports, loads the certificate and the policy (a missing or invalid one leaves the
/// webhook running but not ready), and serves until `shutdown` is cancelled.
pub async fn start(
    config: WebhookConfig,
    shutdown: CancellationToken,
) -> Result<RunningWebhook, ServerError> {
    let (https, addr) = runtime::listen(config.addr).await?;
    let (admin, admin_addr) = runtime::listen(config.admin_addr).await?;

    let state = Arc::new(AppState {
        policy: PolicyStore::default(),
        certs: Arc::new(CertStore::new()),
        metrics: Metrics::new(),
        stopping: AtomicBool::new(false),
    });

    let mut cert_files = match &config.tls {
        TlsSource::Files { cert, key } => Some(Watched::new(vec![cert.clone(), key.clone()])),
        TlsSource::SelfSigned { hosts } => {
            let (cert, key) = tls::self_signed(hosts)?;
            let ck = tls::certified_key(
                cert.as_bytes(),
                key.as_bytes(),
                "self-signed",
                "self-signed",
                &tls::provider(),
            )?;
            state.certs.set(ck);
            state.metrics.reload(Reloaded::Certificate, true);
            tracing::warn!(hosts = ?hosts, "serving a self-signed certificate: for local runs only");
            None
        }
    };
    let mut policy_file = Watched::new(vec![config.policy.clone()]);
    reload_policy(&state, &mut policy_file).await;
    if let Some(w) = cert_files.as_mut() {
        reload_cert(&state, w).await;
    }

    let tls_config = Arc::new(tls::server_config(state.certs.clone())?);
    let draining = shutdown::draining_token(&shutdown);
    let tasks = Supervisor::new(shutdown.clone());

    // Reloader.
    {
        let state = state.clone();
        let token = shutdown.clone();
        let interval = config.reload_interval.max(Duration::from_millis(10));
        tasks.critical("webhook reloader", async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {
                        reload_policy(&state, &mut policy_file).await;
                        if let Some(w) = cert_files.as_mut() {
                            reload_cert(&state, w).await;
                        }
                    }
                }
            }
            Ok::<(), std::convert::Infallible>(())
        });
    }

    // Readiness drops as soon as the drain starts.
    {
        let state = state.clone();
        let token = draining.clone();
        tasks.helper("webhook readiness", async move {
            token.cancelled().await;
            state.stopping.store(true, Ordering::Relaxed);
        });
    }

    let router = mutate_router(state.clone(), &config);
    let https_tasks = tasks.clone();
    tasks.critical(
        "webhook HTTPS server",
        serve_https(
            https,
            TlsAcceptor::from(tls_config),
            router,
            https_tasks,
            config.request_timeout,
        ),
    );

    admin::serve(admin, Arc::new(WebhookView(state.clone())), &tasks);

    tracing::info!(%addr, %admin_addr, policy = %config.policy.display(), "webhook listening");
    Ok(RunningWebhook {
        addr,
        admin_addr,
        state,
        draining,
        tasks,
    })
}

/// Runs the webhook until SIGTERM / SIGINT, then turns readiness off, keeps serving for the
/// drain delay and drains within the grace period. Exit code 0 after a clean drain, 1
/// otherwise (grace expired, second signal, or a critical task that stopped).
pub async fn run(config: WebhookConfig, times: DrainTimes) -> Result<ExitCode, ServerError> {
    let token = CancellationToken::new();
    let server = start(config, token.clone()).await?;
    let tasks = server.tasks.clone();
    let drain = shutdown::run_until_signal(token, server.draining.clone(), times, async {
        let _ = tasks.wait().await;
    })
    .await;
    tracing::info!(?drain, "webhook stopped");
    tasks.failure()?;
    Ok(match drain {
        Drain::Clean => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}

async fn reload_policy(state: &AppState, watched: &mut Watched) {
    let path = watched
        .paths()
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let had = state.policy.get().is_some();
    let keep = if had {
        "keeping the last good policy"
    } else {
        "not ready until a valid policy is loaded"
    };
    match watched.poll().await {
        Poll::Unchanged => {}
        Poll::Failed(e) => {
            state.metrics.reload(Reloaded::Policy, false);
            tracing::error!(policy = %path, error = %e, "policy cannot be read; {keep}");
        }
        Poll::Changed(files) => {
            let bytes = files.into_iter().next().unwrap_or_default();
            let parsed = match String::from_utf8(bytes) {
                Ok(text) => Policy::parse(&text),
                Err(_) => Err(vec![super::policy::Problem {
                    path: ".".to_owned(),
                    message: "the file is not UTF-8".to_owned(),
                }]),
            };
            match parsed {
                Ok(policy) => {
                    for w in policy.lint() {
                        tracing::warn!(policy = %path, "policy: {w}");
                    }
                    tracing::info!(
                        policy = %path,
                        node_types = policy.node_types.len(),
                        profiles = policy.profiles.len(),
                        rules = policy.rules.len(),
                        "policy {}",
                        if had { "reloaded" } else { "loaded" }
                    );
                    state.policy.set(policy);
                    state.metrics.reload(Reloaded::Policy, true);
                }
                Err(problems) => {
                    state.metrics.reload(Reloaded::Policy, false);
                    let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
                    tracing::error!(
                        policy = %path,
                        problems = list.len(),
                        "policy rejected, {keep}: {}",
                        list.join("; ")
                    );
                }
            }
        }
    }
}

async fn reload_cert(state: &AppState, watched: &mut Watched) {
    let names: Vec<String> = watched
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let (cert_name, key_name) = match names.as_slice() {
        [c, k] => (c.clone(), k.clone()),
        _ => return,
    };
    match watched.poll().await {
        Poll::Unchanged => {}
        Poll::Failed(e) => {
            state.metrics.reload(Reloaded::Certificate, false);
            tracing::error!(error = %e, "certificate cannot be read; keeping the current one");
        }
        Poll::Changed(files) => {
            let (cert, key) = match files.as_slice() {
                [c, k] => (c, k),
                _ => return,
            };
            match tls::certified_key(cert, key, &cert_name, &key_name, &tls::provider()) {
                Ok(ck) => {
                    let first = !state.certs.is_loaded();
                    state.certs.set(ck);
                    state.metrics.reload(Reloaded::Certificate, true);
                    tracing::info!(cert = %cert_name, "certificate {}", if first { "loaded" } else { "reloaded" });
                }
                Err(e) => {
                    state.metrics.reload(Reloaded::Certificate, false);
                    // A non-atomic update may show a new cert with the old key for one poll.
                    tracing::error!(error = %e, "certificate rejected; keeping the current one");
                }
            }
        }
    }
}

/// Serves `router` over TLS on `listener` until shutdown, then lets open connections finish
/// their in-flight requests. Connections come from the shared acceptor
/// ([`runtime::tls::acceptor::incoming`]); each one is a helper task of `tasks`.
async fn serve_https(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    router: Router,
    tasks: Supervisor,
    timeout: Duration,
) -> Result<(), std::convert::Infallible> {
    let shutdown = tasks.shutdown().clone();
    let mut incoming = runtime::tls::acceptor::incoming(
        listener,
        acceptor,
        timeout,
        ConnLimits::default(),
        prometheus_client::metrics::counter::Counter::default(),
        shutdown.clone(),
    );
    while let Some((tls, peer)) = incoming.next().await {
        let router = router.clone();
        let shutdown = shutdown.clone();
        tasks.helper("webhook connection", async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // A request waiting for an in-flight slot holds what the server read ahead of its
            // body: keep that small (HTTP/2's own default window, a 64 KiB HTTP/1 buffer), so
            // the wait costs memory per connection, not per body.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(READ_AHEAD as usize);
            builder
                .http2()
                .timer(TokioTimer::new())
                .initial_stream_window_size(READ_AHEAD)
                .initial_connection_window_size(READ_AHEAD)
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION);
            let conn =
                builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    Ok(())
}

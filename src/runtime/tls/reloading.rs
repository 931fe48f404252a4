//! TLS (and mutual TLS) served from PEM files that are re-read while running.
//!
//! Used by the scaler's gRPC port: KEDA dials with the PEM text of a TriggerAuthentication
//! (`caCert`, `tlsClientCert`, `tlsClientKey`) and needs ALPN `h2`. The server certificate and
//! the client CA are polled by content (Secret mounts swap a symlink, which file inotify
//! misses); a new valid pair or CA takes effect on the next handshake, an invalid one is logged
//! and the previous one kept. Connections are accepted by [`super::acceptor::incoming`].

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use futures::Stream;
use rustls::server::danger::ClientCertVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{
    CertStore, TlsError, acceptor, certified_key,
    client_ca::{ReloadingClientVerifier, client_verifier},
    provider,
};
use crate::runtime::reload::{Poll, Watched};

/// Longest time a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the PEM files are and how often to look at them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA bundle that client certificates must chain to; enables mutual TLS.
    pub client_ca: Option<PathBuf>,
    pub reload_interval: Duration,
}

/// TLS state served from [`TlsFiles`]; `label` names the port in log lines (e.g. `gRPC`).
#[derive(Clone)]
pub struct ReloadingTls {
    label: &'static str,
    files: TlsFiles,
    certs: Arc<CertStore>,
    clients: Option<Arc<ReloadingClientVerifier>>,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for ReloadingTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("label", &self.label)
            .field("files", &self.files)
            .field("mutual", &self.mutual())
            .finish_non_exhaustive()
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl ReloadingTls {
    /// Loads the files now (an invalid file stops the start) and builds the acceptor, which
    /// offers the `alpn` protocols.
    pub fn load(label: &'static str, files: TlsFiles, alpn: &[&[u8]]) -> Result<Self, TlsError> {
        let p = provider();
        let certs = Arc::new(CertStore::new());
        certs.set(certified_key(
            &read(&files.cert)?,
            &read(&files.key)?,
            &files.cert.display().to_string(),
            &files.key.display().to_string(),
            &p,
        )?);
        let clients = match &files.client_ca {
            Some(ca) => Some(Arc::new(ReloadingClientVerifier::new(client_verifier(
                &read(ca)?,
                &ca.display().to_string(),
            )?))),
            None => None,
        };
        let builder =
            rustls::ServerConfig::builder_with_provider(p).with_safe_default_protocol_versions()?;
        let builder = match &clients {
            Some(v) => {
                builder.with_client_cert_verifier(Arc::clone(v) as Arc<dyn ClientCertVerifier>)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::clone(&certs) as _);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            label,
            files,
            certs,
            clients,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.clients.is_some()
    }

    /// Polls the files every `reload_interval` until `shutdown`; swaps what changed and is
    /// valid. To be spawned (it runs until shutdown). Every change it sees is reported to
    /// `observe` (`what`: `certificate` or `client_ca`; `result`: `applied`, `rejected` or
    /// `unreadable`), besides the log line: metrics count them, tests wait on them.
    pub fn reloader<F>(
        &self,
        shutdown: CancellationToken,
        observe: F,
    ) -> impl Future<Output = ()> + Send + 'static + use<F>
    where
        F: Fn(&'static str, &'static str) + Send + 'static,
    {
        let files = self.files.clone();
        let certs = Arc::clone(&self.certs);
        let clients = self.clients.clone();
        let label = self.label;
        async move {
            let mut pair = Watched::new(vec![files.cert.clone(), files.key.clone()]);
            let mut ca = files.client_ca.clone().map(|p| Watched::new(vec![p]));
            // The first poll records what `load` already installed.
            let _ = pair.poll().await;
            if let Some(ca) = ca.as_mut() {
                let _ = ca.poll().await;
            }
            let p = provider();
            let mut ticker =
                tokio::time::interval(files.reload_interval.max(Duration::from_millis(10)));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                match pair.poll().await {
                    Poll::Changed(c) if c.len() == 2 => {
                        let cert_name = files.cert.display().to_string();
                        match certified_key(
                            &c[0],
                            &c[1],
                            &cert_name,
                            &files.key.display().to_string(),
                            &p,
                        ) {
                            Ok(key) => {
                                certs.set(key);
                                tracing::info!(cert = %cert_name, "{label} TLS certificate reloaded");
                                observe("certificate", "applied");
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "new {label} TLS certificate rejected; keeping the previous one");
                                observe("certificate", "rejected");
                            }
                        }
                    }
                    Poll::Failed(e) => {
                        tracing::warn!(error = %e, "cannot read the {label} TLS certificate; keeping the previous one");
                        observe("certificate", "unreadable");
                    }
                    _ => {}
                }
                if let (Some(watch), Some(verifier)) = (ca.as_mut(), clients.as_ref()) {
                    match watch.poll().await {
                        Poll::Changed(c) if c.len() == 1 => {
                            let name = watch.paths()[0].display().to_string();
                            match client_verifier(&c[0], &name) {
                                Ok(v) => {
                                    verifier.set(v);
                                    tracing::info!(client_ca = %name, "{label} client CA reloaded");
                                    observe("client_ca", "applied");
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "new {label} client CA rejected; keeping the previous one");
                                    observe("client_ca", "rejected");
                                }
                            }
                        }
                        Poll::Failed(e) => {
                            tracing::warn!(error = %e, "cannot read the {label} client CA; keeping the previous one");
                            observe("client_ca", "unreadable");
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// The TLS connections completed on `listener` under `limits` (see
    /// [`acceptor::incoming`]); `refused` counts failed handshakes.
    pub fn incoming(
        &self,
        listener: TcpListener,
        limits: crate::runtime::conn::ConnLimits,
        refused: prometheus_client::metrics::counter::Counter,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = (acceptor::TlsConn, std::net::SocketAddr)> + use<> {
        acceptor::incoming(
            listener,
            self.acceptor.clone(),
            HANDSHAKE_TIMEOUT,
            limits,
            refused,
            shutdown,
        )
    }
}

//! TLS and mutual TLS for the scaler's gRPC port, re-read from PEM files while running.
//!
//! KEDA dials with the PEM text of a TriggerAuthentication (`caCert`, `tlsClientCert`,
//! `tlsClientKey`) and needs ALPN `h2`. The server certificate and the client CA are polled by
//! content (Secret mounts swap a symlink, which file inotify misses); a new valid pair or CA
//! takes effect on the next handshake, an invalid one is logged and the previous one kept.

use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use futures::Stream;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{CertificateDer, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{CertStore, TlsError, certified_key, provider};
use crate::reload::{Poll, Watched};

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

/// A client-certificate verifier whose CA bundle can be swapped while running.
pub struct ReloadingClientVerifier {
    inner: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl fmt::Debug for ReloadingClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingClientVerifier")
            .finish_non_exhaustive()
    }
}

impl ReloadingClientVerifier {
    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.inner.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn set(&self, verifier: Arc<dyn ClientCertVerifier>) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = verifier;
    }
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No hints: they would have to outlive a swap. Clients (KEDA's Go client included) then
    /// send their one certificate.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// Builds a verifier that accepts client certificates chaining to the CAs in `pem`.
pub fn client_verifier(pem: &[u8], name: &str) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            what: name.to_owned(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::Pem {
            what: name.to_owned(),
            reason: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate(name.to_owned()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Pem {
            what: name.to_owned(),
            reason: e.to_string(),
        })
}

/// The gRPC port's TLS state.
#[derive(Clone)]
pub struct GrpcTls {
    files: TlsFiles,
    certs: Arc<CertStore>,
    clients: Option<Arc<ReloadingClientVerifier>>,
    acceptor: TlsAcceptor,
}

impl fmt::Debug for GrpcTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcTls")
            .field("files", &self.files)
            .field("mutual", &self.mutual())
            .finish_non_exhaustive()
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Pem {
        what: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl GrpcTls {
    /// Loads the files now (an invalid file stops the start) and builds the acceptor.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
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
            Some(ca) => Some(Arc::new(ReloadingClientVerifier {
                inner: RwLock::new(client_verifier(&read(ca)?, &ca.display().to_string())?),
            })),
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
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
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
    /// valid.
    pub fn spawn_reloader(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let files = self.files.clone();
        let certs = Arc::clone(&self.certs);
        let clients = self.clients.clone();
        tokio::spawn(async move {
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
                                tracing::info!(cert = %cert_name, "gRPC TLS certificate reloaded");
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "new gRPC TLS certificate rejected; keeping the previous one")
                            }
                        }
                    }
                    Poll::Failed(e) => {
                        tracing::warn!(error = %e, "cannot read the gRPC TLS certificate; keeping the previous one")
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
                                    tracing::info!(client_ca = %name, "gRPC client CA reloaded");
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "new gRPC client CA rejected; keeping the previous one")
                                }
                            }
                        }
                        Poll::Failed(e) => {
                            tracing::warn!(error = %e, "cannot read the gRPC client CA; keeping the previous one")
                        }
                        _ => {}
                    }
                }
            }
        })
    }

    /// Accepts TCP connections and yields those that complete the TLS handshake. Handshakes
    /// run concurrently, so a slow client cannot hold up others; failures are logged at debug
    /// level and dropped (a client without a valid certificate never reaches a service).
    pub fn incoming(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> impl Stream<Item = Result<TlsStream<tokio::net::TcpStream>, std::io::Error>> + use<> {
        let (tx, rx) = mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    a = listener.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

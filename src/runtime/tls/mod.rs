//! TLS shared by the webhook's HTTPS port and the scaler's gRPC port: certificates
//! come from PEM files that are re-read when they change (the server keeps serving the previous
//! pair until a new, valid one is in place), or from a self-signed pair generated at start for
//! local runs.
//!
//! The rustls server asks [`CertStore`] for the certificate on every handshake, so a swap takes
//! effect on the next connection without a restart.

use std::{
    fmt,
    sync::{Arc, RwLock},
};

pub mod acceptor;
pub mod client_ca;
pub mod reloading;

use rustls::{
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// Why a certificate could not be loaded or TLS set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate, key or CA file cannot be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What the system said.
        reason: String,
    },
    /// No certificate in the PEM.
    #[error("no PEM certificate found in {0}")]
    NoCertificate(String),
    /// Unreadable PEM.
    #[error("bad PEM in {what}: {reason}")]
    Pem {
        /// Which file.
        what: String,
        /// Parser message.
        reason: String,
    },
    /// No key, an unsupported key, or a key that does not belong to the certificate.
    #[error("private key in {what} cannot be used with the certificate: {reason}")]
    Key {
        /// Which file.
        what: String,
        /// Why.
        reason: String,
    },
    /// Self-signed generation failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider used by the webhook (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain and private key and checks that they belong together.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_name: &str,
    key_name: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what: cert_name.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_name.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key {
        what: key_name.to_owned(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Key {
        what: key_name.to_owned(),
        reason: e.to_string(),
    })
}

/// A self-signed certificate and key (PEM) for these DNS names / IP addresses.
pub fn self_signed(hosts: &[String]) -> Result<(String, String), TlsError> {
    let pair = rcgen::generate_simple_self_signed(hosts.to_vec())?;
    Ok((pair.cert.pem(), pair.signing_key.serialize_pem()))
}

/// The certificate currently served; swapped by the reloader.
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl Default for CertStore {
    fn default() -> Self {
        Self::new()
    }
}

impl CertStore {
    /// An empty store: handshakes fail until a certificate is set.
    pub fn new() -> Self {
        Self {
            current: RwLock::new(None),
        }
    }

    /// Serves this certificate from the next handshake on.
    pub fn set(&self, key: CertifiedKey) {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        *guard = Some(Arc::new(key));
    }

    /// True once a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.get().is_some()
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

/// The webhook's rustls server configuration: asks `store` on every handshake and offers HTTP/2
/// and HTTP/1.1.
pub fn server_config(store: Arc<CertStore>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_loads_and_mismatch_is_refused() {
        let p = provider();
        let (cert, key) = self_signed(&["localhost".into()]).unwrap();
        assert!(certified_key(cert.as_bytes(), key.as_bytes(), "c", "k", &p).is_ok());
        let (_, other_key) = self_signed(&["localhost".into()]).unwrap();
        let err = certified_key(cert.as_bytes(), other_key.as_bytes(), "c", "k", &p).unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
        assert!(matches!(
            certified_key(b"", key.as_bytes(), "c", "k", &p),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(certified_key(cert.as_bytes(), b"junk", "c", "k", &p).is_err());
        let store = CertStore::new();
        assert!(!store.is_loaded());
        store.set(certified_key(cert.as_bytes(), key.as_bytes(), "c", "k", &p).unwrap());
        assert!(store.is_loaded());
        assert!(server_config(Arc::new(store)).is_ok());
    }
}

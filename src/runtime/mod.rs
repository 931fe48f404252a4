//! Process plumbing shared by the scaler and the webhook, with no knowledge of either:
//!
//! - [`shutdown`]: the SIGTERM drain (readiness off, drain delay, grace).
//! - [`conn`]: connection limits (cap, idle timeout, accept back-off).
//! - [`telemetry`]: logging setup.
//! - [`admin`]: the one plain-HTTP admin server (`/livez`, `/readyz`, `/metrics`).
//! - [`reload`]: files re-read when their content changes.
//! - [`tls`]: certificate store, client CA, the one TLS acceptor.
//! - [`tasks`]: task supervision (a critical task that ends stops the process).
//!
//! And [`listen`], the one way a role binds a port: the error names the address and says what
//! to do ([`listen_hint`]).

pub mod admin;
pub mod conn;
pub mod reload;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;
pub mod tls;
pub mod yaml;

/// A port that could not be opened: `cannot listen on ADDR: ERROR (what to do)`.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}{}", listen_hint(source))]
pub struct ListenError {
    /// The address asked for.
    pub addr: std::net::SocketAddr,
    /// The error.
    pub source: std::io::Error,
}

/// Binds `addr`; returns the listener and the address it got (port 0 resolved).
pub async fn listen(
    addr: std::net::SocketAddr,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), ListenError> {
    let fail = |source| ListenError { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(fail)?;
    let bound = listener.local_addr().map_err(fail)?;
    Ok((listener, bound))
}

/// What to do when a listener cannot be opened, appended to "cannot listen on ADDR: ERROR".
pub fn listen_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process listens there, e.g. a scaler or demo still running: stop it, or \
             choose another port with the listener's --*-addr flag)"
        }
        std::io::ErrorKind::AddrNotAvailable => {
            " (no interface of this machine has that address: use 0.0.0.0 or 127.0.0.1)"
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need privileges: choose a port above 1024)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_port_in_use_gets_a_hint() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = std::net::TcpListener::bind(taken.local_addr().unwrap()).unwrap_err();
        assert!(super::listen_hint(&e).contains("another process listens there"));
    }
}

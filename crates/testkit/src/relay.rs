//! A TCP relay between a test and a database server that the test can cut and restore.
//!
//! - [`Relay::cut`]: every relayed connection is reset (RST) and new connections are accepted
//!   and reset at once, as when the database host goes away.
//! - [`Relay::stall`]: nothing is forwarded any more and nothing is closed, as when packets are
//!   dropped on the way: clients hang until their own timeouts.
//! - [`Relay::restore`]: new connections are forwarded again (stalled ones are reset first).

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Cut,
    Stall,
}

/// A relay listening on `127.0.0.1:<random port>`, forwarding to one target.
pub struct Relay {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
    accept: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let (tx, _) = watch::channel(Mode::Forward);
        let mode = Arc::new(tx);
        let accept = tokio::spawn(accept_loop(listener, target, Arc::clone(&mode)));
        Self { addr, mode, accept }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every connection and every new one until [`Relay::restore`].
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Stops forwarding without closing anything until [`Relay::restore`] or [`Relay::cut`].
    pub fn stall(&self) {
        self.mode.send_replace(Mode::Stall);
    }

    /// Forwards new connections again. Connections open before the last cut or stall are reset
    /// even when the restore follows at once.
    pub fn restore(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.mode.send_replace(Mode::Cut);
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, mode: Arc<watch::Sender<Mode>>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        let rx = mode.subscribe();
        let current = *rx.borrow();
        match current {
            Mode::Cut => reset(inbound),
            Mode::Stall => {
                tokio::spawn(async move {
                    let mut rx = rx;
                    let _ = rx.wait_for(|m| *m != Mode::Stall).await;
                    reset(inbound);
                });
            }
            Mode::Forward => {
                tokio::spawn(relay_one(inbound, target, rx));
            }
        }
    }
}

async fn relay_one(mut inbound: TcpStream, target: SocketAddr, mut rx: watch::Receiver<Mode>) {
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        reset(inbound);
        return;
    };
    // Any mode change after this connection opened ends it. Waiting for "not Forward" instead
    // would miss a cut followed at once by a restore: a watch channel keeps only the latest
    // value, so the connection would see Forward again and survive the cut.
    tokio::select! {
        _ = copy_bidirectional(&mut inbound, &mut outbound) => return,
        _ = rx.changed() => {}
    }
    if *rx.borrow_and_update() == Mode::Stall {
        // Hold both ends open, forwarding nothing, until cut or restored.
        let _ = rx.wait_for(|m| *m != Mode::Stall).await;
    }
    reset(inbound);
    reset(outbound);
}

/// Closes with RST, as a vanished host's network path would surface it.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

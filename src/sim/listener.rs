//! The API server's listener, which a test can restart: every open connection (watches and exec streams included) is cut, new ones are refused for a while, then it listens on the same port again.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A listener whose connections all end when [`RestartHandle::restart`] is called.
pub(crate) struct RestartableListener {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    epoch: CancellationToken,
    restarts: mpsc::UnboundedReceiver<Duration>,
}

/// Asks the listener to restart.
#[derive(Clone)]
pub(crate) struct RestartHandle(mpsc::UnboundedSender<Duration>);

impl RestartHandle {
    /// Cuts every connection and refuses new ones for `down`, then listens again.
    pub(crate) fn restart(&self, down: Duration) -> bool {
        self.0.send(down).is_ok()
    }
}

impl RestartableListener {
    pub(crate) fn new(listener: TcpListener, addr: SocketAddr) -> (Self, RestartHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            RestartableListener {
                listener: Some(listener),
                addr,
                epoch: CancellationToken::new(),
                restarts: rx,
            },
            RestartHandle(tx),
        )
    }

    async fn go_down(&mut self, down: Duration) {
        tracing::info!(
            down_ms = down.as_millis() as u64,
            "injected fault: API server restarting"
        );
        self.listener = None;
        self.epoch.cancel();
        self.epoch = CancellationToken::new();
        tokio::time::sleep(down).await;
        // Rebinding can race the kernel releasing the port: a bounded number of tries.
        for attempt in 1..=50u32 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.listener = Some(l);
                    tracing::info!("API server listening again");
                    return;
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "rebinding the API listener");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tracing::warn!(addr = %self.addr, "the API listener could not listen again");
    }
}

impl axum::serve::Listener for RestartableListener {
    type Io = Severable;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                // Could not rebind: only a new restart request can bring it back.
                match self.restarts.recv().await {
                    Some(down) => self.go_down(down).await,
                    None => std::future::pending::<()>().await,
                }
                continue;
            };
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((io, addr)) => {
                        let cut = Box::pin(self.epoch.clone().cancelled_owned());
                        return (Severable { io, cut }, addr);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(down) = self.restarts.recv() => self.go_down(down).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// A connection that fails every read and write once its listener restarted.
pub(crate) struct Severable {
    io: TcpStream,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Severable {
    fn severed(&mut self, cx: &mut Context<'_>) -> bool {
        self.cut.as_mut().poll(cx).is_ready()
    }
}

fn reset() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "the API server restarted",
    )
}

impl AsyncRead for Severable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.severed(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Severable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.severed(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.severed(cx) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

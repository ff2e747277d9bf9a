//! The accept loop of the HTTP edge, plain or over TLS: each connection is
//! served with HTTP/1.1 or HTTP/2, and bounded in time, so that no client
//! holds a connection (a task and a file descriptor, which the DICOM port,
//! the catalog and the blob files share) for ever:
//!
//! - a connection that has not sent a whole first request within
//!   [`FIRST_REQUEST_TIMEOUT`] is closed (a client that connects and says
//!   nothing, or sends its headers a byte a minute);
//! - on HTTP/1.1, each later request's headers must come within
//!   [`HEADER_READ_TIMEOUT`] (hyper's timer), so idle keep-alive connections
//!   end too;
//! - both are shortened to the idle timeout where that is shorter;
//! - a connection on which no byte moves either way for the idle timeout is
//!   closed ([`IdleGuard`]): a client that stopped reading a download, or a
//!   peer that vanished. A slow link that keeps moving bytes is never cut.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection may take to send its first request's headers.
pub const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an HTTP/1.1 connection may take to send a request's headers,
/// counted from the end of the previous response.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve `router` on `listener` until `shutdown` resolves; over TLS when
/// `tls` is given. At shutdown no new connection is accepted, handshakes
/// under way are abandoned, and open connections finish their requests.
pub(crate) async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let stopping = tokio_util::sync::CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off, go on.
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        let connection = Connection {
            router: router.clone(),
            peer,
            idle_timeout,
            watcher: graceful.watcher(),
            stopping: stopping.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection.serve(stream).await,
                Some(acceptor) => {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let handshaken = tokio::select! {
                        handshaken = handshake => handshaken,
                        () = connection.stopping.cancelled() => return,
                    };
                    match handshaken {
                        Ok(Ok(stream)) => connection.serve(stream).await,
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    stopping.cancel();
    graceful.shutdown().await;
}

/// One accepted connection, before its first byte is read.
struct Connection {
    router: Router,
    peer: SocketAddr,
    idle_timeout: Duration,
    watcher: hyper_util::server::graceful::Watcher,
    stopping: tokio_util::sync::CancellationToken,
}

impl Connection {
    async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Connection { router, peer, idle_timeout, watcher, .. } = self;
        let request_seen = Arc::new(AtomicBool::new(false));
        let seen = Arc::clone(&request_seen);
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            seen.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT.min(idle_timeout));
        builder.http2().timer(TokioTimer::new());
        let io = TokioIo::new(IdleGuard::new(stream, idle_timeout));
        let served = watcher.watch(builder.serve_connection_with_upgrades(io, service).into_owned());
        let mut served = std::pin::pin!(served);
        let first_request_timeout = FIRST_REQUEST_TIMEOUT.min(idle_timeout);
        tokio::select! {
            result = &mut served => return log_end(peer, result),
            () = tokio::time::sleep(first_request_timeout) => {}
        }
        if !request_seen.load(Ordering::Relaxed) {
            tracing::debug!(%peer, "no request within {first_request_timeout:?}: connection closed");
            return;
        }
        log_end(peer, served.await);
    }
}

fn log_end(peer: SocketAddr, result: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
    }
}

/// A stream that fails with `TimedOut` once no byte has moved either way for
/// `limit` while a read, write or flush waits.
pub(crate) struct IdleGuard<S> {
    inner: S,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleGuard<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> IdleGuard<S> {
        IdleGuard { inner, limit, deadline: Box::pin(tokio::time::sleep(limit)) }
    }

    fn moved(&mut self) {
        let limit = self.limit;
        self.deadline.as_mut().reset(Instant::now() + limit);
    }

    /// What a waiting operation returns: an error once the deadline passed.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no data moved for {:?}", self.limit),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.waiting(cx),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(written)) => {
                if written > 0 {
                    self.moved();
                }
                Poll::Ready(Ok(written))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.waiting(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.waiting(cx),
            ready => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_stream_on_which_nothing_moves_times_out_and_one_that_moves_does_not() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut guarded = IdleGuard::new(near, Duration::from_secs(60));
        // The far end answers a byte every 50 s: slow, never idle for 60 s.
        let answering = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                far.write_all(b"x").await.expect("write");
            }
            far
        });
        let mut byte = [0u8; 1];
        for _ in 0..4 {
            guarded.read_exact(&mut byte).await.expect("a slow peer is waited for");
        }
        let _far = answering.await.expect("answering task");
        // Now nothing comes: the read fails once 60 s pass.
        let started = Instant::now();
        let error = guarded.read_exact(&mut byte).await.expect_err("an idle read times out");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_takes_nothing_of_times_out() {
        let (near, _unread_far) = tokio::io::duplex(1024);
        let mut guarded = IdleGuard::new(near, Duration::from_secs(60));
        let error = guarded.write_all(&[0u8; 64 * 1024]).await.expect_err("a stalled write times out");
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
    }
}

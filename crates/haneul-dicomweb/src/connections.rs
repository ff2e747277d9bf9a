//! The accept loop of the HTTP edge, plain or over TLS: each connection is
//! served with HTTP/1.1 or HTTP/2, and bounded in time, so that no client
//! holds a connection (a task and a file descriptor, which the DICOM port,
//! the catalog and the blob files share) for ever. Only the client's part is
//! timed; the server may take as long as a request needs.
//!
//! - A connection with no request in flight for [`IDLE_CONNECTION_TIMEOUT`]
//!   is closed (HTTP/2: GOAWAY): one that never sends a whole request (silent,
//!   or its headers a byte a minute), and an idle keep-alive connection, even
//!   one that keeps answering HTTP/2 pings.
//! - A request body that brings no data for the idle timeout while its
//!   handler waits for it fails (a stalled upload).
//! - A connection whose client takes no data of an answer for the idle
//!   timeout is dropped: a frame of a response body that hyper was given and
//!   has not asked past (HTTP/1.1 behind a full socket, HTTP/2 behind a
//!   stream window the client never reopens), or a write of the socket that
//!   takes no byte ([`WriteGuard`]).
//! - A connection being closed (idle, or the server stopping) finishes the
//!   requests in flight, then goes once idle for [`CLOSE_GRACE`].
//!
//! The first limit is the idle timeout at most, where that is shorter.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may stay without a request in flight: from its
/// start to its first request's headers, and between a response and the
/// next request's headers.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection being closed for idleness may take to go (an
/// HTTP/2 client that does not acknowledge the GOAWAY).
const CLOSE_GRACE: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    let connections = tokio_util::task::TaskTracker::new();
    let stopping = CancellationToken::new();
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
        let connection = Connection { router: router.clone(), peer, idle_timeout, stopping: stopping.clone() };
        let tls = tls.clone();
        connections.spawn(async move {
            let Some(acceptor) = tls else {
                return connection.serve(stream).await;
            };
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
        });
    }
    drop(listener);
    stopping.cancel();
    connections.close();
    connections.wait().await;
}

/// One accepted connection, before its first byte is read.
pub(crate) struct Connection {
    pub(crate) router: Router,
    pub(crate) peer: SocketAddr,
    pub(crate) idle_timeout: Duration,
    /// Cancelled when the server stops: the connection then finishes its
    /// requests and closes.
    pub(crate) stopping: CancellationToken,
}

impl Connection {
    pub(crate) async fn serve<S>(self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Connection { router, peer, idle_timeout, stopping } = self;
        let activity = Activity::new();
        let requests = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            // In flight until hyper has sent the answer's body and dropped
            // it, and the request's body is read or dropped (a STOW-RS that
            // answered early drains the rest).
            let in_flight = requests.begin();
            let uploading = requests.begin();
            let mut request = request.map(|body| UploadBody::new(body, idle_timeout, uploading));
            request.extensions_mut().insert(ConnectInfo(peer));
            let answer = router.clone().oneshot(request);
            let activity = Arc::clone(&requests);
            async move {
                let response = answer.await.unwrap_or_else(|never: Infallible| match never {});
                Ok::<_, Infallible>(response.map(|body| AnswerBody::new(body, activity, in_flight)))
            }
        });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // hyper's own header timeout as well, which needs a timer.
        builder.http1().timer(TokioTimer::new()).header_read_timeout(IDLE_CONNECTION_TIMEOUT.min(idle_timeout));
        builder.http2().timer(TokioTimer::new());
        let io = TokioIo::new(WriteGuard::new(stream, idle_timeout));
        let connection = builder.serve_connection_with_upgrades(io, service);
        let mut connection = std::pin::pin!(connection);
        let idle_limit = IDLE_CONNECTION_TIMEOUT.min(idle_timeout);
        // Biased: a request already readable is served before the idle
        // limit is looked at.
        tokio::select! {
            biased;
            result = connection.as_mut() => return log_end(peer, result),
            () = activity.stalled_for(idle_timeout) => return stalled(peer, idle_timeout),
            () = stopping.cancelled() => {}
            () = activity.idle_for(idle_limit) => {
                tracing::debug!(%peer, "no request for {idle_limit:?}: connection closed");
            }
        }
        // No new request from here (HTTP/2: GOAWAY); those in flight finish.
        connection.as_mut().graceful_shutdown();
        activity.restart_idle_clock();
        tokio::select! {
            biased;
            result = connection.as_mut() => log_end(peer, result),
            () = activity.stalled_for(idle_timeout) => stalled(peer, idle_timeout),
            // An HTTP/2 client that never acknowledges the GOAWAY.
            () = activity.idle_for(CLOSE_GRACE) => tracing::debug!(%peer, "closing connection dropped"),
        }
    }
}

fn stalled(peer: SocketAddr, limit: Duration) {
    tracing::debug!(%peer, "the client took no data of an answer for {limit:?}: connection dropped");
}

fn log_end(peer: SocketAddr, result: Result<(), BoxError>) {
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "HTTP connection ended with an error");
    }
}

/// How many requests of a connection are in flight, since when none is,
/// and which answers wait for the client to take a frame.
struct Activity {
    state: Mutex<ActivityState>,
    /// Woken when the first request starts or the last one ends.
    in_flight_changed: Notify,
    /// Woken when a frame starts waiting for the client while none did.
    handed_changed: Notify,
}

struct ActivityState {
    in_flight: usize,
    idle_since: Instant,
    /// Answers whose last frame hyper has not asked past, with since when.
    handed: HashMap<u64, Instant>,
    next_answer: u64,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                idle_since: Instant::now(),
                handed: HashMap::new(),
                next_answer: 0,
            }),
            in_flight_changed: Notify::new(),
            handed_changed: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        // The state stays consistent whatever panicked while holding it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.state();
        state.in_flight += 1;
        if state.in_flight == 1 {
            drop(state);
            self.in_flight_changed.notify_one();
        }
        InFlight(Arc::clone(self))
    }

    /// Count idleness from now (a connection starting to close).
    fn restart_idle_clock(&self) {
        self.state().idle_since = Instant::now();
        self.in_flight_changed.notify_one();
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.in_flight_changed.notified();
            let idle_until = {
                let state = self.state();
                (state.in_flight == 0).then(|| far_instant(state.idle_since, limit))
            };
            let Some(deadline) = idle_until else {
                changed.await;
                continue;
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }

    fn new_answer(&self) -> u64 {
        let mut state = self.state();
        state.next_answer += 1;
        state.next_answer
    }

    /// Answer `id` gave hyper a frame: the client's turn.
    fn handed(&self, id: u64) {
        let mut state = self.state();
        let first = state.handed.is_empty();
        state.handed.insert(id, Instant::now());
        drop(state);
        if first {
            self.handed_changed.notify_one();
        }
    }

    /// Answer `id` was asked for more, or is gone.
    fn taken(&self, id: u64) {
        self.state().handed.remove(&id);
    }

    /// Resolves once a frame has waited `limit` for the client to take it.
    async fn stalled_for(&self, limit: Duration) {
        loop {
            let changed = self.handed_changed.notified();
            let oldest = self.state().handed.values().min().copied();
            let Some(since) = oldest else {
                changed.await;
                continue;
            };
            let deadline = far_instant(since, limit);
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => {}
                () = changed => {}
            }
        }
    }
}

/// A request in flight, from its headers until its response body is done.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight > 0 {
            return;
        }
        state.idle_since = Instant::now();
        drop(state);
        self.0.in_flight_changed.notify_one();
    }
}

/// `start + limit`, or a far future where that does not fit.
fn far_instant(start: Instant, limit: Duration) -> Instant {
    start.checked_add(limit).unwrap_or_else(|| start + Duration::from_secs(100 * 365 * 86_400))
}

/// A response body that keeps its request counted in flight until hyper
/// drops it (sent, or the connection gone), and tells how long each frame
/// waits for the client.
struct AnswerBody {
    body: Body,
    activity: Arc<Activity>,
    id: u64,
    _in_flight: InFlight,
}

impl AnswerBody {
    fn new(body: Body, activity: Arc<Activity>, in_flight: InFlight) -> AnswerBody {
        let id = activity.new_answer();
        AnswerBody { body, activity, id, _in_flight: in_flight }
    }
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        self.activity.taken(self.id);
    }
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        // Asked again: the previous frame was taken. A frame the server is
        // still making is the server's time, not the client's.
        self.activity.taken(self.id);
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.activity.handed(self.id);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails once its handler has waited `limit` for data
/// that does not come, and keeps its request in flight until it is read to
/// its end, fails, or is dropped.
struct UploadBody {
    body: hyper::body::Incoming,
    limit: Duration,
    clock: StallClock,
    /// `None` once the body ended: then it only answers its end.
    in_flight: Option<InFlight>,
}

impl UploadBody {
    fn new(body: hyper::body::Incoming, limit: Duration, in_flight: InFlight) -> UploadBody {
        UploadBody { body, limit, clock: StallClock::new(), in_flight: Some(in_flight) }
    }
}

impl HttpBody for UploadBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.in_flight.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.clock.stop();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                self.in_flight = None;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(None) => {
                self.in_flight = None;
                Poll::Ready(None)
            }
            Poll::Pending => {
                let limit = self.limit;
                if self.clock.waited(limit, cx).is_pending() {
                    return Poll::Pending;
                }
                self.in_flight = None;
                Poll::Ready(Some(Err(format!("no request data for {limit:?}").into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.in_flight.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A stream whose writes, flushes and shutdown fail with `TimedOut` once one
/// has waited `limit` without the peer taking a byte. Reads are untouched:
/// the server may think as long as it needs.
pub(crate) struct WriteGuard<S> {
    inner: S,
    limit: Duration,
    clock: StallClock,
}

impl<S> WriteGuard<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> WriteGuard<S> {
        WriteGuard { inner, limit, clock: StallClock::new() }
    }

    /// What a write that made no progress returns: an error once it has
    /// waited `limit`.
    fn waiting<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        match self.clock.waited(limit, cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took no data for {limit:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// What a write that made progress returns, the clock stopped.
    fn progressed<T>(&mut self, result: std::io::Result<T>) -> Poll<std::io::Result<T>> {
        self.clock.stop();
        Poll::Ready(result)
    }
}

/// A clock that runs while an operation waits: started by the first wait,
/// stopped by progress. One timer, reset rather than allocated again.
struct StallClock {
    sleep: Pin<Box<Sleep>>,
    running: bool,
}

impl StallClock {
    fn new() -> StallClock {
        StallClock { sleep: Box::pin(tokio::time::sleep(Duration::ZERO)), running: false }
    }

    fn stop(&mut self) {
        self.running = false;
    }

    /// Ready once the wait that started the clock has lasted `limit`.
    fn waited(&mut self, limit: Duration, cx: &mut Context<'_>) -> Poll<()> {
        if !self.running {
            self.sleep.as_mut().reset(far_instant(Instant::now(), limit));
            self.running = true;
        }
        self.sleep.as_mut().poll(cx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteGuard<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(result) => self.progressed(result),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => self.progressed(result),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(result) => self.progressed(result),
            Poll::Pending => self.waiting(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(result) => self.progressed(result),
            Poll::Pending => self.waiting(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    /// Bounds every test, so that a limit that never fires fails the test
    /// instead of hanging it (the clock is paused: this costs nothing).
    const TEST_BOUND: Duration = Duration::from_secs(3600);

    fn router() -> Router {
        Router::new()
            .route("/quick", get(|| async { "quick" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(400)).await;
                    "slow"
                }),
            )
            .route("/upload", post(|body: Bytes| async move { format!("{} bytes", body.len()) }))
            .route(
                "/stream",
                // Five chunks, 20 s apart: the server is slow, not the client.
                get(|| async {
                    let chunks = futures_util::stream::unfold(0, |sent| async move {
                        if sent == 5 {
                            return None;
                        }
                        tokio::time::sleep(Duration::from_secs(20)).await;
                        Some((Ok::<_, Infallible>(Bytes::from_static(b"piece")), sent + 1))
                    });
                    Body::from_stream(chunks)
                }),
            )
            .route(
                "/big",
                // 1 MiB in 16 frames, as a file is streamed.
                get(|| async {
                    let frames = (0..16).map(|_| Ok::<_, Infallible>(Bytes::from(vec![7u8; 64 * 1024])));
                    Body::from_stream(futures_util::stream::iter(frames))
                }),
            )
    }

    /// A connection served with a 300 s idle timeout; the client's end.
    fn connect() -> DuplexStream {
        let (client, server) = tokio::io::duplex(1 << 16);
        let connection = Connection {
            router: router(),
            peer: "127.0.0.1:9".parse().expect("address"),
            idle_timeout: Duration::from_secs(300),
            stopping: CancellationToken::new(),
        };
        tokio::spawn(connection.serve(server));
        client
    }

    /// A connection closed after the idle limit, within its close grace.
    fn assert_closed_for_idleness(held: Duration) {
        assert!(held >= IDLE_CONNECTION_TIMEOUT && held <= IDLE_CONNECTION_TIMEOUT + CLOSE_GRACE, "{held:?}");
    }

    /// Read until the server closes; what came.
    async fn read_to_close(client: &mut DuplexStream) -> String {
        let mut received = Vec::new();
        tokio::time::timeout(TEST_BOUND, client.read_to_end(&mut received))
            .await
            .expect("the server never closed the connection")
            .expect("read");
        String::from_utf8_lossy(&received).into_owned()
    }

    /// Read one response, up to the end of a body of `body_length` bytes.
    async fn read_response(client: &mut DuplexStream, body_length: usize) -> String {
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            let read =
                tokio::time::timeout(TEST_BOUND, client.read(&mut buffer)).await.expect("no response").expect("read");
            assert!(read > 0, "closed before the response: {}", String::from_utf8_lossy(&received));
            received.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                if text.len() >= end + 4 + body_length {
                    return text;
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_nothing_is_closed() {
        let mut client = connect();
        let started = Instant::now();
        assert_eq!(read_to_close(&mut client).await, "");
        let held = started.elapsed();
        assert_closed_for_idleness(held);
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_the_server_streams_slowly_is_not_cut() {
        let mut client = connect();
        client.write_all(b"GET /stream HTTP/1.1\r\nHost: haneul\r\n\r\n").await.expect("write");
        // 100 s of answer, with no byte for 20 s at a time: longer than the
        // 30 s a connection may stay without a request in flight.
        let started = Instant::now();
        let mut received = String::new();
        while received.matches("piece").count() < 5 {
            let mut buffer = [0u8; 1024];
            let read =
                tokio::time::timeout(TEST_BOUND, client.read(&mut buffer)).await.expect("no answer").expect("read");
            assert!(read > 0, "closed in the middle of the answer: {received}");
            received.push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
        assert!(started.elapsed() >= Duration::from_secs(100));
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_download_whose_client_stops_taking_data_is_dropped() {
        let client = TokioIo::new(connect());
        // Windows of 64 KiB (hyper's client would open 2 MiB), so that the
        // 1 MiB answer cannot all be sent.
        let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .handshake(client)
            .await
            .expect("HTTP/2 handshake");
        let driving = tokio::spawn(connection);
        let request =
            hyper::Request::get("http://haneul/big").body(http_body_util::Empty::<Bytes>::new()).expect("request");
        // The answer's head comes; its 1 MiB body is never read, so the
        // client never reopens the stream's window.
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let started = Instant::now();
        let _ended = tokio::time::timeout(TEST_BOUND, driving).await.expect("the server kept the stalled download");
        let held = started.elapsed();
        assert!(held >= Duration::from_secs(300) && held < Duration::from_secs(301), "{held:?}");
        drop(response);
    }

    #[tokio::test(start_paused = true)]
    async fn headers_sent_a_line_at_a_time_do_not_keep_a_connection() {
        let mut client = connect();
        let started = Instant::now();
        client.write_all(b"GET /quick HTTP/1.1\r\nHost: haneul\r\n").await.expect("write");
        // A header line every 10 s: bytes keep coming, the request never does.
        let trickling = async {
            for number in 0.. {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if client.write_all(format!("X-Line-{number}: x\r\n").as_bytes()).await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(TEST_BOUND, trickling).await.expect("the server kept reading the trickle");
        let held = started.elapsed();
        assert_closed_for_idleness(held);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_http2_connection_is_closed_though_it_answers_pings() {
        let client = TokioIo::new(connect());
        let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .handshake(client)
            .await
            .expect("HTTP/2 handshake");
        let driving = tokio::spawn(connection);
        let request =
            hyper::Request::get("http://haneul/quick").body(http_body_util::Empty::<Bytes>::new()).expect("request");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        drop(response);
        let answered = Instant::now();
        // The client pings every 10 s, and the server answers: bytes move,
        // but no request comes.
        tokio::time::timeout(TEST_BOUND, driving)
            .await
            .expect("the server kept the idle HTTP/2 connection")
            .expect("connection task")
            .expect("a clean close (GOAWAY)");
        let held = answered.elapsed();
        assert_closed_for_idleness(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_the_server_works_on_longer_than_the_idle_timeout_is_answered() {
        let mut client = connect();
        client.write_all(b"GET /slow HTTP/1.1\r\nHost: haneul\r\n\r\n").await.expect("write");
        let response = read_response(&mut client, 4).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("slow"), "{response}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_closes_after_its_answer() {
        let mut client = connect();
        client.write_all(b"GET /quick HTTP/1.1\r\nHost: haneul\r\n\r\n").await.expect("write");
        read_response(&mut client, 5).await;
        let answered = Instant::now();
        assert_eq!(read_to_close(&mut client).await, "");
        let held = answered.elapsed();
        assert_closed_for_idleness(held);
    }

    #[tokio::test(start_paused = true)]
    async fn an_upload_that_stops_fails_after_the_idle_timeout_and_a_slow_one_does_not() {
        let mut client = connect();
        client.write_all(b"POST /upload HTTP/1.1\r\nHost: haneul\r\nContent-Length: 8\r\n\r\nab").await.expect("write");
        // Two bytes every 200 s: slow, never 300 s without data.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(200)).await;
            client.write_all(b"cd").await.expect("write");
        }
        let response = read_response(&mut client, 7).await;
        assert!(response.ends_with("8 bytes"), "{response}");

        let mut client = connect();
        let started = Instant::now();
        client.write_all(b"POST /upload HTTP/1.1\r\nHost: haneul\r\nContent-Length: 8\r\n\r\nab").await.expect("write");
        let response = tokio::time::timeout(TEST_BOUND, async {
            let mut received = Vec::new();
            let mut buffer = [0u8; 1024];
            while !String::from_utf8_lossy(&received).contains("\r\n\r\n") {
                let read = client.read(&mut buffer).await.expect("read");
                if read == 0 {
                    break;
                }
                received.extend_from_slice(&buffer[..read]);
            }
            String::from_utf8_lossy(&received).into_owned()
        })
        .await
        .expect("the server waited for ever for the rest of the body");
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(300) && waited < Duration::from_secs(330), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_takes_nothing_of_times_out() {
        let (near, _unread_far) = tokio::io::duplex(1024);
        let mut guarded = WriteGuard::new(near, Duration::from_secs(60));
        let started = Instant::now();
        let written = tokio::time::timeout(TEST_BOUND, guarded.write_all(&[0u8; 64 * 1024]))
            .await
            .expect("the stalled write never gave up");
        assert_eq!(written.expect_err("a stalled write fails").kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_secs(60) && started.elapsed() < Duration::from_secs(61));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_is_waited_for() {
        let (near, mut far) = tokio::io::duplex(1024);
        let mut guarded = WriteGuard::new(near, Duration::from_secs(60));
        // 1 KiB every 50 s: each write waits, none 60 s.
        let reading = tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            let mut total = 0;
            while total < 8 * 1024 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                total += far.read(&mut buffer).await.expect("read");
            }
            total
        });
        tokio::time::timeout(TEST_BOUND, guarded.write_all(&[0u8; 8 * 1024]))
            .await
            .expect("bounded")
            .expect("a slow reader is waited for");
        guarded.flush().await.expect("flush");
        drop(guarded);
        assert_eq!(reading.await.expect("reader"), 8 * 1024);
    }
}

//! Serving the router over HTTP/1: the accept loop, the per-connection
//! timeouts, the connection cap and graceful shutdown.
//!
//! `axum::serve` never times a connection out, so connections that send
//! nothing used to pile up until depwatch ran out of file descriptors and
//! `/metrics`, `/api/health` and `/healthz` went dark with them. Here:
//! - hyper's `header_read_timeout` ([`HEADER_READ_TIMEOUT`]) bounds every
//!   wait for a request head. hyper (1.x, `proto/h1/conn.rs`) starts that
//!   timer whenever the connection is ready for a head: right after the
//!   accept (a client that never sends a byte), and again each time a
//!   keep-alive connection turns idle after an answer. So the one timeout
//!   closes silent connections, slow request heads and idle keep-alive
//!   connections alike.
//! - At most [`max_connections`] connections are open at once, sized from
//!   the open-file limit (raised to its hard limit at start) with room left
//!   for the probes' own sockets and files. When full, a new connection is
//!   accepted and closed at once — the client learns it now instead of
//!   waiting in the accept queue until its own timeout, which for a
//!   scraper is a whole scrape lost — and every open connection is asked to
//!   close once its current request (if any) is answered, so that the next
//!   attempt finds room even when idle connections hold every slot.
//! - On shutdown the listener closes and open connections finish the request
//!   in progress (`app::run` waits for them up to its grace period).
//! - A handler may close its own connection at once with the [`Hangup`] in
//!   its request's extensions: an event stream whose client stopped reading
//!   would otherwise hold the connection, with hyper waiting to write.
//! - A write that makes no progress for [`WRITE_STALL_TIMEOUT`] ends the
//!   connection ([`Stalled`], nginx's `send_timeout`): a client that asks
//!   for a large answer (`/metrics` or `/api/health` at scale) and never
//!   reads it would otherwise keep its slot for good, and the cap's request
//!   to close cannot reach a connection stuck in the middle of an answer.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

/// How long a connection may take to send a request head, counted from its
/// accept or from the end of its previous answer (so also the idle
/// keep-alive timeout). Long enough for a slow network, short enough that
/// idle connections give their file descriptor back; a scraper whose
/// interval is longer simply opens a new connection per scrape.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a write to a client may wait with nothing taken by the client
/// before the connection is dropped; any progress starts it again, so a
/// slow reader of a large answer is served to the end.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest request head (request line and headers) read: beyond it
/// the client gets 431. Prometheus' requests are a few hundred bytes.
pub const MAX_HEAD_BYTES: usize = 16 << 10;
/// File descriptors always kept out of the connection cap: probes' sockets,
/// the state store, tailed logs, /proc reads.
const MIN_RESERVED_FDS: u64 = 64;
/// The cap never goes above this, whatever the fd limit: an exporter needs
/// far fewer, and each connection costs buffers.
const MAX_CONNECTIONS: usize = 4096;
/// ... nor below this, however low the fd limit.
const MIN_CONNECTIONS: usize = 8;
/// At most one "connection limit reached" line per this period.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// The pause after a failed accept (out of file descriptors, most likely),
/// so that the loop does not spin while connections close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The server's own metric families.
#[derive(Clone)]
pub struct ServerMetrics {
    open: Gauge,
    limit: Gauge,
    rejected: Counter,
}

impl ServerMetrics {
    pub fn register(r: &mut Registry) -> Self {
        let m = ServerMetrics {
            open: Gauge::default(),
            limit: Gauge::default(),
            rejected: Counter::default(),
        };
        r.register(
            "server_connections",
            "Connections open to depwatch's HTTP server",
            m.open.clone(),
        );
        r.register(
            "server_connections_limit",
            "The most connections depwatch's HTTP server keeps open at once (from the open-file limit)",
            m.limit.clone(),
        );
        r.register(
            "server_connections_rejected",
            "Connections closed at once because the HTTP server had the most it keeps open",
            m.rejected.clone(),
        );
        m
    }
}

/// Raises the soft limit of open files to the hard limit, as Go's runtime
/// (and so Prometheus' own servers) does at start, and returns the soft limit
/// now in force (`None`: unlimited).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current == now.maximum {
        return now.current;
    }
    let raised = Rlimit {
        current: now.maximum,
        maximum: now.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => now.maximum,
        Err(e) => {
            // An unlimited hard limit can be above what the kernel allows
            // (fs.nr_open): keep the soft one.
            tracing::debug!(error = %e, soft = ?now.current, hard = ?now.maximum, "Cannot raise the open-file limit.");
            now.current
        }
    }
}

/// The most connections to keep open under an open-file limit: a quarter of
/// the limit (at least [`MIN_RESERVED_FDS`]) stays for everything else.
pub fn max_connections(fd_limit: Option<u64>) -> usize {
    let Some(limit) = fd_limit else {
        return MAX_CONNECTIONS;
    };
    let reserved = (limit / 4).max(MIN_RESERVED_FDS);
    usize::try_from(limit.saturating_sub(reserved))
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// Closes the connection a request came on, now, whatever it is writing
/// (in the request's extensions; absent when the router is called directly).
#[derive(Clone, Default)]
pub struct Hangup(Arc<tokio::sync::Notify>);

impl Hangup {
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// An open connection's slot: returns the permit and counts the connection
/// out when the connection task ends, however it ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// Serves `router` on `listener` until `stop` turns true, then waits for the
/// open connections to finish the request they are answering.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    metrics: ServerMetrics,
    tls: Arc<std::sync::RwLock<Option<Arc<super::tls::Tls>>>>,
    mut stop: watch::Receiver<bool>,
) {
    let fd_limit = raise_fd_limit();
    let limit = max_connections(fd_limit);
    metrics.limit.set(i64::try_from(limit).unwrap_or(i64::MAX));
    tracing::debug!(fd_limit = ?fd_limit, max_connections = limit, "HTTP server limits set.");
    let permits = Arc::new(Semaphore::new(limit));
    // Bumped to ask every open connection to close after its current answer.
    let (shed, _) = watch::channel(0u64);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut connections = JoinSet::new();
    let mut unlogged = 0u64;
    let mut full_log = LogGate::default();
    let mut error_log = LogGate::default();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            a = listener.accept() => a,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors, most likely: make room and pause.
                shed.send_modify(|g| *g += 1);
                if error_log.open() {
                    tracing::warn!(error = %e, "Cannot accept a connection; asking open ones to close.");
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(tcp);
            metrics.rejected.inc();
            shed.send_modify(|g| *g += 1);
            unlogged += 1;
            if full_log.open() {
                tracing::warn!(
                    limit,
                    rejected = unlogged,
                    "Connection limit reached: closing new connections, and open ones after their current answer."
                );
                unlogged = 0;
            }
            continue;
        };
        // Small answers: do not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        metrics.open.inc();
        let slot = Slot {
            _permit: permit,
            open: metrics.open.clone(),
        };
        let tls = crate::util::sync::read(&tls).clone();
        connections.spawn(connection(
            builder.clone(),
            tcp,
            tls,
            router.clone(),
            slot,
            stop.clone(),
            shed.subscribe(),
        ));
    }
    // No new connections; the open ones finish their current request.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    builder: http1::Builder,
    tcp: TcpStream,
    tls: Option<Arc<super::tls::Tls>>,
    router: Router,
    slot: Slot,
    stop: watch::Receiver<bool>,
    shed: watch::Receiver<u64>,
) {
    let peer = tcp.peer_addr().ok();
    let Some(tls) = tls else {
        let svc = Tagged {
            router,
            peer,
            cert: None,
            hangup: Hangup::default(),
        };
        let io = TokioIo::new(Stalled::new(tcp, WRITE_STALL_TIMEOUT));
        return drive(builder, io, svc, slot, stop, shed).await;
    };
    // The handshake counts against the same timeout as a request head: a
    // client that opens TLS and stalls gives its slot back as fast.
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    let stream = match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed.");
            return;
        }
        Err(_) => {
            tracing::debug!("TLS handshake timed out.");
            return;
        }
    };
    let settings = tls.settings();
    let verified = settings.client_auth.verifies()
        && stream.get_ref().1.peer_certificates().is_some_and(|c| {
            settings.client_allowed_sans.is_empty()
                || c.first()
                    .is_some_and(|ee| super::tls::san_allowed(ee, &settings.client_allowed_sans))
        });
    if settings.client_auth.verifies()
        && !settings.client_allowed_sans.is_empty()
        && stream.get_ref().1.peer_certificates().is_some()
        && !verified
    {
        tracing::debug!("Client certificate without an allowed SAN: closing.");
        return;
    }
    let svc = Tagged {
        router,
        peer,
        cert: Some(super::peer::ClientCert { verified }),
        hangup: Hangup::default(),
    };
    let io = TokioIo::new(Stalled::new(stream, WRITE_STALL_TIMEOUT));
    drive(builder, io, svc, slot, stop, shed).await;
}

/// A connection whose writes fail with `TimedOut` once one has waited
/// `limit` without the client taking a byte (see [`WRITE_STALL_TIMEOUT`]).
/// Reads pass through: waits for a request are hyper's header timeout's.
struct Stalled<I> {
    io: I,
    limit: Duration,
    /// Started by the first write that had to wait, dropped by any progress.
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> Stalled<I> {
    fn new(io: I, limit: Duration) -> Self {
        Stalled {
            io,
            limit,
            stall: None,
        }
    }

    fn watch<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stall = None;
            return r;
        }
        let limit = self.limit;
        let stall = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the client took nothing of its answer for {} s (the write stall timeout)",
                    limit.as_secs()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Stalled<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Stalled<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch(r, cx)
    }
}

/// The router, with what the connection knows of the client put on every
/// request (its address, its certificate) for the access check.
#[derive(Clone)]
struct Tagged {
    router: Router,
    peer: Option<std::net::SocketAddr>,
    cert: Option<super::peer::ClientCert>,
    hangup: Hangup,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Tagged {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<Router, hyper::Request<hyper::body::Incoming>>;

    fn call(&self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(p) = self.peer {
            req.extensions_mut().insert(super::peer::Peer(p));
        }
        if let Some(c) = self.cert {
            req.extensions_mut().insert(c);
        }
        req.extensions_mut().insert(self.hangup.clone());
        tower::ServiceExt::oneshot(self.router.clone(), req)
    }
}

async fn drive<I>(
    builder: http1::Builder,
    io: I,
    svc: Tagged,
    _slot: Slot,
    mut stop: watch::Receiver<bool>,
    mut shed: watch::Receiver<u64>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let hangup = svc.hangup.clone();
    let conn = builder.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "HTTP connection ended with an error.");
                }
                return;
            }
            // A stop whose sender is gone is a stop too.
            _ = stop.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            Ok(()) = shed.changed(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            // Dropping the connection closes the socket.
            () = hangup.0.notified() => return,
        }
    }
}

/// Lets a log line through at most once per [`LOG_EVERY`]: once per burst
/// rather than once per connection.
#[derive(Default)]
struct LogGate(Option<Instant>);

impl LogGate {
    fn open(&mut self) -> bool {
        let now = Instant::now();
        let open = self.0.is_none_or(|t| now.duration_since(t) >= LOG_EVERY);
        if open {
            self.0 = Some(now);
        }
        open
    }
}

/// Errors of one connection that came and went before it was accepted.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_for_probes() {
        assert_eq!(max_connections(Some(256)), 192);
        assert_eq!(max_connections(Some(1024)), 768);
        assert_eq!(max_connections(Some(100)), 36);
        assert_eq!(max_connections(Some(20)), MIN_CONNECTIONS);
        assert_eq!(max_connections(Some(1 << 20)), MAX_CONNECTIONS);
        assert_eq!(max_connections(None), MAX_CONNECTIONS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_takes_nothing_of_times_out_and_progress_restarts_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut client) = tokio::io::duplex(64);
        let mut conn = Stalled::new(ours, Duration::from_secs(30));
        conn.write_all(&[0; 64]).await.unwrap();
        let t0 = tokio::time::Instant::now();
        // The client takes 16 bytes at 20, 40 and 60 s, then nothing more.
        let reader = tokio::spawn(async move {
            let mut buf = [0; 16];
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                client.read_exact(&mut buf).await.unwrap();
            }
            client
        });
        let err = conn.write_all(&[1; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(90) && waited < Duration::from_secs(91),
            "30 s after the last progress at 60 s, not {waited:?}"
        );
        let _open = reader.await.unwrap();
        // A connection that writes without waiting never times out.
        let (ours, _client) = tokio::io::duplex(1 << 16);
        let mut conn = Stalled::new(ours, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(5)).await;
        conn.write_all(&[2; 1024]).await.unwrap();
        conn.flush().await.unwrap();
    }
}

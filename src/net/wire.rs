//! What a check's connection measured and read: the time of each phase of
//! a request ([`Timings`], kept by a check that a timeout drops), and the
//! TCP connection itself ([`Plain`]), which counts the bytes and the
//! informational answers it has read ([`Wire`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The most informational answers (`100 Continue`, `103 Early Hints`)
/// read before the answer. hyper parses every one it has read before it
/// reads again, so a partner that sends them in a loop would keep a check
/// busy past its timeout (and the checks thread with it).
pub(super) const MAX_INFORMATIONAL: u32 = 32;

/// What one request measured, filled as it goes (a timeout keeps what was
/// reached).
#[derive(Default)]
pub struct Timings {
    pub dns: Duration,
    pub connect: Duration,
    pub tls: Duration,
    pub first_byte: Duration,
    pub transfer: Duration,
    /// The last answer's status (0: none came).
    pub status: u16,
    /// The peer certificate's notAfter (Unix seconds), also when it failed
    /// verification.
    pub cert_not_after: Option<i64>,
    pub tls_version: Option<&'static str>,
    pub redirects: u32,
    pub body_bytes: usize,
    /// The last URL asked, without its query.
    pub final_url: Option<Arc<str>>,
    /// The phase under way and when it began (`None` between phases).
    pub(super) at: Option<(Phase, Instant)>,
    /// What the last connection has read, and how much of it before its
    /// answer's head began: what of the head a timeout cut.
    pub(super) wire: Option<Arc<Wire>>,
    pub(super) head_from: u64,
}

/// What a check's connection has read, shared with it ([`Plain`]).
#[derive(Default)]
pub(super) struct Wire {
    /// Informational answers (hyper's callback counts them): past
    /// [`MAX_INFORMATIONAL`], nothing more is read.
    pub(super) informational: AtomicU32,
    pub(super) bytes: AtomicU64,
}

/// A phase of a request (the `phase` of `depwatch_http_phase_duration_seconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Dns,
    Connect,
    Tls,
    FirstByte,
    Transfer,
}

impl Timings {
    pub(super) fn begin(&mut self, phase: Phase) {
        self.at = Some((phase, Instant::now()));
    }

    /// Counts the phase under way into its time.
    pub(super) fn end(&mut self) {
        if let Some((phase, since)) = self.at.take() {
            *match phase {
                Phase::Dns => &mut self.dns,
                Phase::Connect => &mut self.connect,
                Phase::Tls => &mut self.tls,
                Phase::FirstByte => &mut self.first_byte,
                Phase::Transfer => &mut self.transfer,
            } += since.elapsed();
        }
    }

    /// For a request that a timeout dropped: the phase it was in, with the
    /// time spent in it counted.
    pub fn cut(&mut self) -> Option<Phase> {
        let phase = self.at.map(|(p, _)| p);
        self.end();
        phase
    }

    /// The bytes of the answer's head read so far (as they came over the
    /// wire, encrypted for https).
    pub fn head_bytes(&self) -> u64 {
        self.wire.as_ref().map_or(0, |w| {
            w.bytes
                .load(Ordering::Relaxed)
                .saturating_sub(self.head_from)
        })
    }
}

/// A check's TCP connection. Its one request says `Connection: close`, so
/// hyper half-closes it once the answer is in; the connection is dropped
/// right after, and the close sends the same FIN: the `shutdown` call before
/// it would be one more system call per check for nothing. A TLS layer above
/// still sends its close_notify. Beside it, what it has read ([`Wire`]).
pub(super) struct Plain(pub(super) TcpStream, pub(super) Arc<Wire>);

impl AsyncRead for Plain {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.1.informational.load(Ordering::Relaxed) > MAX_INFORMATIONAL {
            return Poll::Ready(Err(io::Error::other("too many informational answers")));
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.0).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.1.bytes.fetch_add(n, Ordering::Relaxed);
        read
    }
}

impl AsyncWrite for Plain {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

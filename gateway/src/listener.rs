//! The gateway's own accept loop, instead of `axum::serve`: hyper's HTTP/1 connection with a
//! timer, so that a client that sends its headers slowly is closed (`header_read_timeout_ms`),
//! an idle plain HTTP connection is closed (`http_idle_timeout_ms`), every connection holds a
//! place among the caps from accept until it closes (`Shared::admit`), and the bytes a
//! WebSocket sends before it logs in are checked as they arrive (`FrameGuard`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tower_service::Service;

use crate::http::failure_response;
use crate::protocol::{CloseReason, Failure, ProtocolCode};
use crate::rate_limit::RateLimit;
use crate::routes;
use crate::shared::{Place, Shared, Slot};
use crate::stats::Counters;

/// How long the listener waits after an accept failed for want of a resource (descriptors,
/// memory) before it tries again: long enough not to spin, short enough that the first
/// descriptor freed is soon used.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The most bytes hyper buffers for one connection's request head (and reads ahead): the
/// smallest hyper allows is 8 KiB, and a request of this gateway needs far less.
const HTTP_BUFFER_BYTES_MAX: usize = 16 << 10;

/// What a connection refused at accept is sent, if the socket takes it at once (no waiting):
/// a client that already sent its request may see a reset instead.
const REFUSED_RESPONSE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Accepts connections on `listener` and serves `router` on each until `shutdown` completes.
/// The shutdown itself (telling every connection to end) is the caller's.
pub(crate) async fn serve(
    shared: &Arc<Shared>,
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => accept(shared, &router, stream, peer),
            Err(error) => {
                Counters::add(&shared.counters.accept_errors, 1);
                // A connection that was reset before it was accepted concerns only itself; any
                // other failure (EMFILE, ENFILE, ENOBUFS, ENOMEM) would fail again at once:
                // wait a little, still ready to stop.
                if !matches!(
                    error.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) {
                    tracing::debug!(error = %error, "accept failed; backing off");
                    tokio::select! {
                        biased;
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            }
        }
    }
}

/// Gives the new connection its place and a task, or refuses it at once.
fn accept(shared: &Arc<Shared>, router: &Router, stream: TcpStream, peer: SocketAddr) {
    let slot = match shared.admit(peer.ip()) {
        Ok(slot) => slot,
        Err(_) => {
            // Refusing must cost nothing: no task, no wait; the socket closes when dropped.
            let _ = stream.try_write(REFUSED_RESPONSE);
            return;
        }
    };
    // Small frames go out at once (no Nagle delay waiting for an acknowledgement).
    let _ = stream.set_nodelay(true);
    let place = Arc::clone(&slot.place);
    let activity = Arc::new(Activity::new());
    let io = Guarded {
        inner: stream,
        activity: Arc::clone(&activity),
        guard: FrameGuard::default(),
        login_frame_bytes_max: shared.config.login_frame_bytes_max() as u64,
        blocked: false,
        slot,
    };
    tokio::spawn(serve_connection(Arc::clone(shared), router.clone(), io, place, activity));
}

/// Serves one connection's HTTP requests until it closes, is upgraded to a WebSocket (which
/// then goes on without this task), idles too long, or is told to end.
async fn serve_connection(
    shared: Arc<Shared>,
    router: Router,
    io: Guarded,
    place: Arc<Place>,
    activity: Arc<Activity>,
) {
    let gateway = &shared.config.gateway;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(gateway.header_read_timeout_ms))
        .max_buf_size(HTTP_BUFFER_BYTES_MAX);
    // Plain HTTP requests on one connection share the rate a socket's frames have, so that a
    // few keep-alive connections cannot make the server answer tens of thousands of requests
    // a second; beyond it a request is answered 429 (8010) and the connection closes.
    let limit = Mutex::new(RateLimit::new(gateway.request_rate_per_s, gateway.request_burst, Instant::now()));
    let service = {
        let (place, activity) = (Arc::clone(&place), Arc::clone(&activity));
        service_fn(move |mut request: Request<Incoming>| {
            place.requests.fetch_add(1, Ordering::Relaxed);
            let admitted = limit.lock().unwrap_or_else(PoisonError::into_inner).take(Instant::now());
            request.extensions_mut().insert(Arc::clone(&place));
            let in_flight = InFlight::new(&activity);
            let mut router = router.clone();
            async move {
                let response = match admitted {
                    true => router.call(request).await,
                    false => Ok(too_many_requests()),
                };
                drop(in_flight);
                response
            }
        })
    };
    let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let mut ending = place.ending.subscribe();
    let idle = Duration::from_millis(gateway.http_idle_timeout_ms);
    let mut stopping = false;
    loop {
        tokio::select! {
            // Ended, failed (the header timeout among them), or upgraded: either way this
            // task is done; an upgraded socket goes on in its own.
            _ = connection.as_mut() => return,
            reason = ending.wait_for(Option::is_some), if !stopping => {
                let reason = reason.ok().and_then(|reason| *reason);
                match reason {
                    // At shutdown a request in progress is finished, then the connection closes.
                    Some(CloseReason::GoingAway) | None => {
                        connection.as_mut().graceful_shutdown();
                        stopping = true;
                    }
                    // Evicted (or any other reason): closed at once.
                    Some(_) => return,
                }
            }
            () = tokio::time::sleep_until(activity.idle_deadline(idle)) => {
                if activity.idle_for(idle) {
                    return;
                }
            }
        }
    }
}

/// The answer to a plain HTTP request beyond the connection's rate limit: 429 with the
/// protocol's code, and the connection closes after it.
fn too_many_requests() -> axum::response::Response {
    let failure = Failure::new(
        ProtocolCode::TooManyRequests,
        "too many requests on this connection: slow down, and open a new one",
    );
    let mut response = failure_response(StatusCode::TOO_MANY_REQUESTS, &failure);
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    // The router's responses carry it from its middleware; this one bypasses the router.
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// When a connection last sent or received a byte, and how many of its requests are in
/// progress: an HTTP connection is idle when nothing moved for a while and no request is
/// being answered.
struct Activity {
    started: Instant,
    /// Milliseconds from `started` to the last byte moved.
    last_ms: AtomicU64,
    in_flight: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity { started: Instant::now(), last_ms: AtomicU64::new(0), in_flight: AtomicU64::new(0) }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection will have been idle `idle` long if nothing moves until then.
    fn idle_deadline(&self, idle: Duration) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }

    /// Whether nothing moved for `idle` and no request is in progress.
    fn idle_for(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0 && Instant::now() >= self.idle_deadline(idle)
    }
}

/// A request in progress, for [`Activity`]; counted until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A connection's socket: it holds the connection's place (given back when the socket is
/// dropped, upgraded or not), notes activity for the idle timeout, and checks the frames a
/// WebSocket sends before it logs in.
struct Guarded {
    inner: TcpStream,
    activity: Arc<Activity>,
    guard: FrameGuard,
    login_frame_bytes_max: u64,
    /// A frame too long for a socket not logged in arrived after the upgrade: nothing more
    /// is read, and the socket is closing (1009).
    blocked: bool,
    slot: Slot,
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.blocked {
            // The socket's reader is woken by its ending, never by this read.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let place = &this.slot.place;
        let fresh = buf.filled().len() - before;
        if fresh == 0 {
            return Poll::Ready(Ok(()));
        }
        let upgraded = place.upgraded.load(Ordering::Relaxed);
        if !upgraded {
            this.activity.touch();
        }
        if place.logged_in.load(Ordering::Relaxed) || place.frame_too_big.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        let scanned = this.guard.scan(&buf.filled()[before..], this.login_frame_bytes_max);
        if let Some(at) = scanned {
            place.frame_too_big.store(true, Ordering::Relaxed);
            // Before the upgrade the bytes are hyper's (a second request, or frames a client
            // sent before the handshake's answer): the upgrade's socket sees the flag and
            // closes before it reads them. After it, the frame's header is withheld, so that
            // the WebSocket never learns the frame's length nor reserves room for it.
            if upgraded {
                this.blocked = true;
                routes::end(&place.ending, CloseReason::TooBig);
                buf.set_filled(before + at);
                if at == 0 {
                    return Poll::Pending;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if written > 0 && !this.slot.place.upgraded.load(Ordering::Relaxed) {
            this.activity.touch();
        }
        Poll::Ready(Ok(written))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        if written > 0 && !this.slot.place.upgraded.load(Ordering::Relaxed) {
            this.activity.touch();
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Follows the bytes a client sends, to find its WebSocket frames' lengths before the
/// WebSocket library reads them: first the end of the connection's first request head (a
/// WebSocket upgrade must be its connection's first request), then frame after frame (RFC
/// 6455 section 5.2), skipping payloads. Only the lengths matter here; the library checks
/// everything else.
#[derive(Debug, Default)]
struct FrameGuard {
    head: HeadScan,
    /// The frame header read so far (at most 14 bytes: 2, 8 of length, 4 of mask).
    header: [u8; 14],
    header_len: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: u64,
    /// Bytes of the data message being received, over its fragments.
    message_bytes: u64,
}

/// Where the first request head is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum HeadScan {
    /// Before the request line (hyper skips empty lines there).
    #[default]
    Start,
    /// In the head, after any other byte.
    Line,
    /// Just after a line feed.
    Lf,
    /// Just after a line feed and a carriage return.
    LfCr,
    /// The head ended: frames follow.
    Done,
}

impl FrameGuard {
    /// Reads `bytes` on; if a frame (or a data message) longer than `max` starts in them,
    /// returns the offset of the byte that made its length known: the bytes before it are
    /// safe to hand on, and the frame's header is not complete without it.
    fn scan(&mut self, bytes: &[u8], max: u64) -> Option<usize> {
        let mut at = 0;
        while at < bytes.len() {
            let Some(&byte) = bytes.get(at) else { break };
            if self.head != HeadScan::Done {
                self.head = match (self.head, byte) {
                    (HeadScan::Start, b'\r' | b'\n') => HeadScan::Start,
                    (HeadScan::Lf | HeadScan::LfCr, b'\n') => HeadScan::Done,
                    (_, b'\n') => HeadScan::Lf,
                    (HeadScan::Lf, b'\r') => HeadScan::LfCr,
                    _ => HeadScan::Line,
                };
                at += 1;
                continue;
            }
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left).unwrap_or(usize::MAX).min(bytes.len() - at);
                self.payload_left -= skip as u64;
                at += skip;
                continue;
            }
            if let Some(slot) = self.header.get_mut(self.header_len) {
                *slot = byte;
            }
            self.header_len += 1;
            at += 1;
            if self.header_len < 2 {
                continue;
            }
            let [first, second, ..] = self.header;
            let length_bytes = match second & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask_bytes = if second & 0x80 != 0 { 4 } else { 0 };
            if self.header_len == 2 + length_bytes {
                let length = match length_bytes {
                    0 => u64::from(second & 0x7f),
                    n => self.header.iter().skip(2).take(n).fold(0u64, |sum, b| (sum << 8) | u64::from(*b)),
                };
                let opcode = first & 0x0f;
                if opcode < 8 {
                    // A data frame: a new message unless it continues one (opcode 0).
                    if opcode != 0 {
                        self.message_bytes = 0;
                    }
                    self.message_bytes = self.message_bytes.saturating_add(length);
                }
                if length > max || self.message_bytes > max {
                    return Some(at - 1);
                }
                self.payload_left = length;
            }
            if self.header_len == 2 + length_bytes + mask_bytes {
                self.header_len = 0;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"\r\nGET /ws HTTP/1.1\r\nHost: x\r\n\r\n";

    /// A masked client frame with `len` payload bytes (zeros).
    fn frame(opcode: u8, fin: bool, len: usize) -> Vec<u8> {
        let mut out = vec![opcode | if fin { 0x80 } else { 0 }];
        match len {
            0..=125 => out.push(0x80 | len as u8),
            126..=65_535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(len as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(std::iter::repeat_n(0u8, len));
        out
    }

    #[test]
    fn frames_within_the_limit_pass_in_any_split() {
        let mut stream = HEAD.to_vec();
        for (opcode, fin, len) in
            [(1, true, 100), (9, true, 4), (1, false, 300), (0, true, 200), (2, true, 500)]
        {
            stream.extend(frame(opcode, fin, len));
        }
        for chunk in [1, 2, 3, 7, 64, stream.len()] {
            let mut guard = FrameGuard::default();
            for piece in stream.chunks(chunk) {
                assert_eq!(guard.scan(piece, 500), None, "chunks of {chunk}");
            }
            assert_eq!((guard.header_len, guard.payload_left), (0, 0));
        }
    }

    #[test]
    fn a_long_frame_is_caught_at_its_length_and_a_long_message_at_its_fragment() {
        let mut stream = HEAD.to_vec();
        stream.extend(frame(1, true, 10));
        let long_at = stream.len();
        stream.extend(frame(1, true, 1 << 20));
        let mut guard = FrameGuard::default();
        // The header's length field ends at byte 2 + 8 of the frame (offset 9 from its start).
        assert_eq!(guard.scan(&stream, 4_096), Some(long_at + 9));

        let mut fragments = HEAD.to_vec();
        fragments.extend(frame(1, false, 3_000));
        let second_at = fragments.len();
        fragments.extend(frame(0, true, 3_000));
        let mut guard = FrameGuard::default();
        assert_eq!(guard.scan(&fragments, 4_096), Some(second_at + 3));
    }
}

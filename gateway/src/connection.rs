//! One WebSocket: a reader that answers requests in order, and a writer (`writer.rs`) that
//! drains the socket's bounded outbound queue (replies and notices). When the socket closes without a
//! `logout`, its session is disconnected (R2.2), unless another socket has since taken the
//! device over.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use axum::Error as AxumError;
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use presence_engine::{Command, DeviceId, Reply, SessionHandle, UserId};
use presence_runtime::TrySendError;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::metrics::{self, OP_INVALID};
use crate::protocol::{self, CloseReason, Failure, Op, ProtocolCode};
use crate::rate_limit::RateLimit;
use crate::routes::{self, Outbound, Peer};
use crate::shared::{unavailable, Backend, Place, QueueError, Shared};
use crate::stats::Counters;
use crate::token::{self, TokenError};
use crate::writer::write_frames;

/// How long a socket's disconnect waits between tries while the engine's queue is full.
const DISCONNECT_RETRY: Duration = Duration::from_millis(10);
/// The longest a closing socket stays open after its close frame (at most `close_timeout_ms`),
/// reading what the client still sends, so that the close frame reaches the client before
/// the connection is dropped: a drop with unread bytes is a reset, and a client that meets
/// the reset first (its write failing, say) may never read the close frame.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// Frames refused for the rate limit (8010) within one [`RATE_LIMIT_WINDOW`] before the
/// socket is closed (4005): a client that pipelined a burst hears 8010 and slows down; one
/// that goes on sending faster than its rate is dropped, even if some of its frames fit in.
const RATE_LIMIT_REFUSALS_MAX: u32 = 100;
/// The window over which refusals are counted.
const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(1);
/// The bytes of replies a socket may have queued and not yet written: a client that pipelines
/// requests faster than it reads them waits for room (backpressure) once its replies fill
/// this much, whatever their count, so one socket never holds more than this (plus one reply
/// larger than all of it, which takes the whole budget alone) in the server's memory.
const REPLY_BUDGET_BYTES: usize = 256 << 10;
const _: () = assert!(REPLY_BUDGET_BYTES <= u32::MAX as usize, "a reply's cost is a u32 of permits");

/// Serves one upgraded socket until it closes, then cleans up after it.
pub(crate) async fn serve(socket: WebSocket, shared: Arc<Shared>, place: Arc<Place>) {
    let ending = Arc::clone(&place.ending);
    if place.frame_too_big.load(Ordering::Relaxed) {
        // A frame too long for a socket not logged in came with the handshake: the socket
        // closes (1009) before it reads it.
        routes::end(&ending, CloseReason::TooBig);
    }
    let (sink, mut stream) = socket.split();
    // Notices may take `outbound_queue` places, the socket's own replies as many again, each
    // holding its bytes of the reply budget (`Connection::send`).
    let places = shared.config.gateway.outbound_queue;
    let (outbound, queue) = mpsc::channel(places.saturating_mul(2));
    let peer = Peer { id: place.id, outbound, ending: Arc::clone(&ending) };
    let close_timeout = Duration::from_millis(shared.config.gateway.close_timeout_ms);
    let writer = tokio::spawn(write_frames(sink, queue, Arc::clone(&ending), close_timeout));
    let mut connection = Connection::new(shared, peer);
    let reason = connection.read_frames(&mut stream).await;
    // A logout's close frame is queued behind its reply, and the writer ends the socket when
    // it gets there; ending it now would drop the reply.
    if reason != CloseReason::LoggedOut {
        routes::end(&ending, reason);
    }
    // The first reason set is the one the writer closes with.
    connection.shared.counters.tallies.closed(ending.borrow().unwrap_or(reason));
    connection.finish(reason).await;
    drop(connection);
    let mut writer = writer;
    if tokio::time::timeout(close_timeout, &mut writer).await.is_err() {
        routes::end(&ending, reason);
        let _ = writer.await;
    }
    linger(&mut stream, reason, close_timeout.min(CLOSE_LINGER)).await;
    // The socket (and with it the connection's place among the caps) goes last.
    drop(stream);
}

/// After the close frame: reads and drops whatever the client still sends until it answers
/// the close or goes, for at most `linger`. A stream that failed (a frame the transport
/// refused) cannot be read any more, so then the connection just stays open that long: its
/// unread bytes would make the drop a reset at once.
async fn linger(stream: &mut SplitStream<WebSocket>, reason: CloseReason, linger: Duration) {
    let failed =
        matches!(reason, CloseReason::TooBig | CloseReason::InvalidData | CloseReason::ProtocolViolation);
    let drain = async {
        while let Some(Ok(_)) = stream.next().await {}
        if failed {
            std::future::pending::<()>().await;
        }
    };
    let _ = tokio::time::timeout(linger, drain).await;
}

/// Whether the socket goes on after a request.
enum Flow {
    Continue,
    Close(CloseReason),
}

struct Connection {
    shared: Arc<Shared>,
    peer: Peer,
    /// The user and device this socket logged in as.
    identity: Option<(UserId, DeviceId)>,
    /// The session's handle, for heartbeats by WebSocket ping.
    session: Option<SessionHandle>,
    /// Bytes for replies in the outbound queue ([`REPLY_BUDGET_BYTES`]): the reader waits for
    /// a reply's bytes before it queues it, so a client that pipelines requests faster than it
    /// reads is slowed down (backpressure), never closed as a slow reader.
    replies: Arc<Semaphore>,
    /// When the engine last took a heartbeat for this socket's session (its login counts).
    heartbeat_taken: Option<Instant>,
    /// Heartbeats sooner than this after the last one taken are answered without the engine.
    coalesce: Duration,
    /// The socket's rate limit, one token a frame.
    limit: RateLimit,
    /// Frames refused for the rate limit in the current window, and when the window began.
    refusals: (u32, Instant),
    /// The op of the request being answered, for the metrics' count of replies.
    op: &'static str,
}

impl Connection {
    fn new(shared: Arc<Shared>, peer: Peer) -> Connection {
        let gateway = &shared.config.gateway;
        let limit = RateLimit::new(gateway.request_rate_per_s, gateway.request_burst, Instant::now());
        let coalesce = shared.config.heartbeat_coalesce();
        Connection {
            shared,
            peer,
            identity: None,
            session: None,
            replies: Arc::new(Semaphore::new(REPLY_BUDGET_BYTES)),
            heartbeat_taken: None,
            coalesce,
            limit,
            refusals: (0, Instant::now()),
            op: OP_INVALID,
        }
    }

    /// Queues a reply to one of the socket's own requests, waiting for a place in the reply
    /// budget while the client has not read the earlier ones. Replies are never a reason to
    /// close a socket as a slow reader: a client that reads nothing holds at most the budget
    /// and its requests wait. One that has read nothing for the idle timeout is closed as a
    /// slow reader all the same (4002), since it holds a connection for nothing.
    async fn send(&self, text: String) {
        self.shared.counters.tallies.succeeded(self.op);
        self.queue_reply(Outbound::Text(Utf8Bytes::from(text))).await;
    }

    /// Queues a refusal, counted for the metrics by its code, as `send` counts a success.
    async fn fail(&self, id: Option<u64>, failure: &Failure) {
        self.shared.counters.tallies.answered(self.op, failure.code);
        self.queue_reply(Outbound::Text(Utf8Bytes::from(protocol::failed(id, failure)))).await;
    }

    /// Queues `out` (a reply's text, or a close after a reply) in the reply budget.
    async fn queue_reply(&self, out: Outbound) {
        let mut ending = self.peer.ending.subscribe();
        let idle = self.shared.config.idle_timeout();
        let permit = tokio::select! {
            biased;
            _ = ending.wait_for(Option::is_some) => {
                // The socket is ending: the writer sends what is queued before its close
                // frame (unless the client is gone or too slow), so the reply goes in if there
                // is room, without waiting.
                let _ = self.peer.outbound.try_send(out);
                return;
            }
            permit = tokio::time::timeout(idle, Arc::clone(&self.replies).acquire_many_owned(reply_cost(&out))) => permit,
        };
        let out = match (permit, out) {
            (Ok(Ok(permit)), Outbound::Text(text)) => Outbound::Reply(text, permit),
            (Ok(Ok(_)), out) => out,
            // The budget is never closed; if it were, there would be nobody to tell.
            (Ok(Err(_)), _) => return,
            (Err(_), _) => {
                if routes::end(&self.peer.ending, CloseReason::SlowReader) {
                    Counters::add(&self.shared.counters.slow_readers_closed, 1);
                }
                return;
            }
        };
        // With a permit in hand there is room unless notices filled the queue, which ends
        // the socket (4002) and closes the queue: the send then fails at once.
        tokio::select! {
            biased;
            _ = ending.wait_for(Option::is_some) => {}
            _ = self.peer.outbound.send(out) => {}
        }
    }

    /// Takes one token of the socket's rate limit for a frame; says whether the frame may
    /// be served. A refused text frame is answered `TooManyRequests` (8010).
    async fn admit(&mut self, message: &Message) -> Result<bool, CloseReason> {
        let now = Instant::now();
        if self.limit.take(now) {
            return Ok(true);
        }
        let (refused, since) = &mut self.refusals;
        if now.saturating_duration_since(*since) >= RATE_LIMIT_WINDOW {
            (*refused, *since) = (0, now);
        }
        *refused = refused.saturating_add(1);
        if *refused >= RATE_LIMIT_REFUSALS_MAX {
            return Err(CloseReason::TooManyRequests);
        }
        if let Message::Text(text) = message {
            let id = match protocol::parse(text.as_str(), self.shared.config.gateway.max_frame_bytes) {
                Ok(request) => {
                    self.op = metrics::op_label(&request.op);
                    Some(request.id)
                }
                Err(refusal) => refusal.id,
            };
            let gateway = &self.shared.config.gateway;
            let failure = Failure::new(
                ProtocolCode::TooManyRequests,
                format!(
                    "more than {} frames a second (bursts of {}): nothing was done; slow down",
                    gateway.request_rate_per_s, gateway.request_burst
                ),
            );
            self.fail(id, &failure).await;
        }
        Ok(false)
    }

    /// Whether a heartbeat now should reach the engine: not if it took one for this session
    /// within the coalescing interval.
    fn heartbeat_due(&self, now: Instant) -> bool {
        self.heartbeat_taken.is_none_or(|taken| now.saturating_duration_since(taken) >= self.coalesce)
    }

    /// Reads frames until the socket ends; returns why.
    async fn read_frames(&mut self, stream: &mut SplitStream<WebSocket>) -> CloseReason {
        let mut ending = self.peer.ending.subscribe();
        let login_deadline =
            Instant::now() + Duration::from_millis(self.shared.config.gateway.login_timeout_ms);
        let idle = self.shared.config.idle_timeout();
        loop {
            let deadline = match self.identity {
                None => login_deadline.min(Instant::now() + idle),
                Some(_) => Instant::now() + idle,
            };
            let next = tokio::select! {
                biased;
                reason = ending.wait_for(Option::is_some) => {
                    return reason.ok().and_then(|r| *r).unwrap_or(CloseReason::ClientGone);
                }
                next = tokio::time::timeout_at(deadline, stream.next()) => next,
            };
            let message = match next {
                Err(_) if self.identity.is_none() && Instant::now() >= login_deadline => {
                    return CloseReason::LoginTimeout
                }
                Err(_) => return CloseReason::IdleTimeout,
                Ok(None) => return CloseReason::ClientGone,
                Ok(Some(Err(error))) => return read_error(&error),
                Ok(Some(Ok(message))) => message,
            };
            self.op = OP_INVALID;
            if !matches!(message, Message::Close(_)) {
                match self.admit(&message).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(reason) => return reason,
                }
            }
            let flow = match message {
                Message::Text(text) => self.request(text.as_str()).await,
                Message::Binary(_) => {
                    let failure = Failure::new(
                        ProtocolCode::BadJson,
                        "binary frames are not part of the protocol: send JSON text",
                    );
                    self.fail(None, &failure).await;
                    Flow::Continue
                }
                Message::Ping(_) => {
                    self.ping();
                    Flow::Continue
                }
                Message::Pong(_) => Flow::Continue,
                Message::Close(_) => return CloseReason::ClientGone,
            };
            if let Flow::Close(reason) = flow {
                return reason;
            }
        }
    }

    /// A WebSocket ping is a heartbeat (R2.4), by session handle (in a cluster, by ids, sent
    /// to the shard's owner without waiting for the answer): queued if there is room, dropped
    /// if not (the next one will do, well within the timeout). Pings before login only keep
    /// the socket from idling. A ping within the coalescing interval of the last heartbeat
    /// the engine took does not reach the queue at all: however fast a client pings, its
    /// session puts at most one heartbeat on the queue per interval, so pings cannot make the
    /// queue refuse others' requests.
    fn ping(&mut self) {
        let now = Instant::now();
        if !self.heartbeat_due(now) {
            return;
        }
        let queued = match &self.shared.backend {
            Backend::Local(handle) => match self.session {
                Some(session) => {
                    handle.try_submit_heartbeat(session).map_err(|e| matches!(e, TrySendError::Full(_)))
                }
                None => return,
            },
            Backend::Cluster(_) => match &self.identity {
                Some((user, device)) => {
                    let heartbeat = Command::heartbeat(user.clone(), device.clone());
                    self.shared.try_queue(heartbeat).map(drop).map_err(|e| e == QueueError::Full)
                }
                None => return,
            },
        };
        match queued {
            Ok(()) => self.heartbeat_taken = Some(now),
            Err(true) => Counters::add(&self.shared.counters.heartbeats_shed, 1),
            Err(false) => {}
        }
    }

    async fn request(&mut self, text: &str) -> Flow {
        let request = match protocol::parse(text, self.shared.config.gateway.max_frame_bytes) {
            Ok(request) => request,
            Err(refusal) => {
                self.fail(refusal.id, &refusal.failure).await;
                return Flow::Continue;
            }
        };
        let id = request.id;
        self.op = metrics::op_label(&request.op);
        let now = Instant::now();
        let heartbeat = matches!(request.op, Op::Heartbeat {});
        let command = match (request.op, &self.identity) {
            (Op::Login { token, device }, _) => {
                match self.login(token, device).await {
                    Ok((user, device)) => self.send(protocol::logged_in(id, &user, &device)).await,
                    Err(failure) => self.fail(Some(id), &failure).await,
                }
                return Flow::Continue;
            }
            (_, None) => {
                let failure =
                    Failure::new(ProtocolCode::LoginFirst, "log in first: {\"op\": \"login\", ...}");
                self.fail(Some(id), &failure).await;
                return Flow::Continue;
            }
            (Op::Logout {}, Some(_)) => return self.logout(id).await,
            // Coalesced as a ping is: the engine took a heartbeat for this session just now.
            (Op::Heartbeat {}, Some(_)) if !self.heartbeat_due(now) => {
                self.send(protocol::ok(id)).await;
                return Flow::Continue;
            }
            (op, Some((user, device))) => op_command(op, user, device),
        };
        match self.shared.run(command).await {
            Ok(Reply::Statuses(statuses)) => self.send(protocol::statuses(id, &statuses)).await,
            Ok(_) => {
                if heartbeat {
                    self.heartbeat_taken = Some(now);
                }
                self.send(protocol::ok(id)).await;
            }
            Err(failure) => self.fail(Some(id), &failure).await,
        }
        Flow::Continue
    }

    /// R2.1, as the token's user. The route goes in when the login is queued, under the
    /// routing lock, so that the device hears the notice of its own login (R5.3) and the
    /// runtime sees claims in the order they were made.
    async fn login(&mut self, token: String, device: String) -> Result<(UserId, DeviceId), Failure> {
        if let Some((user, device)) = &self.identity {
            return Err(Failure::new(
                ProtocolCode::AlreadyLoggedIn,
                format!("this socket is already {user} on {device}; open another for another login"),
            ));
        }
        if self.shared.is_shutting_down() {
            return Err(unavailable());
        }
        let user = self.shared.secret.verify(&token, token::now_s()).map_err(|e| {
            Counters::add(&self.shared.counters.bad_tokens, 1);
            match e {
                TokenError::Expired { .. } => Failure::new(ProtocolCode::TokenExpired, e.to_string()),
                _ => Failure::new(ProtocolCode::BadToken, e.to_string()),
            }
        })?;
        let (user, device) = (UserId::from(user), DeviceId::from(device));
        let pending = {
            let mut routes = self.shared.routes.lock();
            let command =
                Command::login_with_owner(user.clone(), device.clone(), self.shared.node_id.clone());
            let pending = self.shared.queue(command)?;
            if let Some(previous) = routes.insert(&user, &device, self.peer.clone()) {
                // The same device through a new socket (its client reconnected before the old
                // socket died): the new one takes over, and the old one must not disconnect it.
                previous.end(CloseReason::Replaced);
            }
            pending
        };
        if let Err(failure) = pending.wait().await {
            self.shared.routes.lock().remove(&user, &device, self.peer.id);
            return Err(failure);
        }
        self.identity = Some((user.clone(), device.clone()));
        self.shared.logged_in(self.peer.id);
        // A login starts the session's heartbeat clock, as a heartbeat does.
        self.heartbeat_taken = Some(Instant::now());
        // Without a handle pings still keep the socket open; explicit heartbeats still work.
        self.session = self.shared.session_handle(&user, &device).await;
        Ok((user, device))
    }

    /// R2.2: the session ends, and so does the socket, once the logout is durable.
    async fn logout(&mut self, id: u64) -> Flow {
        let Some((user, device)) = self.identity.clone() else { return Flow::Continue };
        let pending = {
            let mut routes = self.shared.routes.lock();
            if !routes.is(&user, &device, self.peer.id) {
                return Flow::Close(CloseReason::Replaced);
            }
            match self.shared.queue(Command::logout(user.clone(), device.clone())) {
                Ok(pending) => {
                    routes.remove(&user, &device, self.peer.id);
                    Ok(pending)
                }
                Err(failure) => Err(failure),
            }
        };
        let pending = match pending {
            Ok(pending) => pending,
            Err(failure) => {
                self.fail(Some(id), &failure).await;
                return Flow::Continue;
            }
        };
        match pending.wait().await {
            // The socket served its session and nothing else: it reads no more frames (a
            // frame pipelined behind the logout, a login as someone else included, is never
            // run), and closes once the reply is written.
            Ok(_) => {
                self.identity = None;
                self.session = None;
                self.send(protocol::ok(id)).await;
                self.queue_reply(Outbound::Close(CloseReason::LoggedOut)).await;
                Flow::Close(CloseReason::LoggedOut)
            }
            Err(failure) => {
                // Nothing changed (R7.1): the socket still serves the device, unless another
                // socket claimed it meanwhile.
                {
                    let mut routes = self.shared.routes.lock();
                    if routes.get(&user, &device).is_none() {
                        routes.insert(&user, &device, self.peer.clone());
                    }
                }
                self.fail(Some(id), &failure).await;
                Flow::Continue
            }
        }
    }

    /// After the socket ended: R2.2, its session is disconnected, unless it logged out, was
    /// kicked (the session is gone), or another socket took the device over; at shutdown the
    /// server disconnects all of its sessions in one command instead.
    async fn finish(&mut self, reason: CloseReason) {
        let Some((user, device)) = self.identity.take() else { return };
        loop {
            let pending = {
                let mut routes = self.shared.routes.lock();
                if !routes.is(&user, &device, self.peer.id) {
                    return;
                }
                if reason == CloseReason::Kicked || self.shared.is_shutting_down() {
                    routes.remove(&user, &device, self.peer.id);
                    return;
                }
                match self.shared.try_queue(Command::disconnect(user.clone(), device.clone())) {
                    Ok(pending) => {
                        routes.remove(&user, &device, self.peer.id);
                        Some(pending)
                    }
                    Err(QueueError::Full) => None,
                    Err(QueueError::Stopped) => {
                        routes.remove(&user, &device, self.peer.id);
                        return;
                    }
                }
            };
            match pending {
                // NotLoggedIn (the session timed out or was kicked meanwhile) changes nothing.
                Some(pending) => {
                    let _ = pending.wait().await;
                    return;
                }
                // The disconnect must not be shed: the route stays ours, so no new socket of
                // the device can be disconnected by it, and we try again shortly.
                None => tokio::time::sleep(DISCONNECT_RETRY).await,
            }
        }
    }
}

fn op_command(op: Op, user: &UserId, device: &DeviceId) -> Command {
    let (user, device) = (user.clone(), device.clone());
    match op {
        Op::Heartbeat {} => Command::heartbeat(user, device),
        Op::SetStatus { custom } => Command::set_status(user, device, custom),
        Op::GetStatus { targets } => Command::get_status(user, device, targets),
        Op::Subscribe { targets } => Command::subscribe(user, device, targets),
        Op::Unsubscribe { targets } => Command::unsubscribe(user, device, targets),
        // Handled before: a login or logout never becomes a command here.
        Op::Login { .. } | Op::Logout {} => Command::heartbeat(user, device),
    }
}

/// Why reading failed, as RFC 6455 section 7.4.1 names it: a frame beyond the transport's
/// limit (1009), a text frame that is not UTF-8 (1007), a frame that breaks the protocol
/// (1002); or the connection broke (nothing to send). The transport's error is tungstenite's,
/// wrapped by axum.
fn read_error(error: &AxumError) -> CloseReason {
    use tungstenite::error::{Error, ProtocolError};
    let inner = std::error::Error::source(error).and_then(|e| e.downcast_ref::<Error>());
    match inner {
        Some(Error::Capacity(_)) => CloseReason::TooBig,
        Some(Error::Utf8(_)) => CloseReason::InvalidData,
        // The client went without a close frame: nobody is left to tell.
        Some(Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => CloseReason::ClientGone,
        Some(Error::Protocol(_)) => CloseReason::ProtocolViolation,
        _ => CloseReason::ClientGone,
    }
}

/// The reply budget's bytes a queued reply takes: its length, or the whole budget for one
/// longer than all of it (a close after a reply takes one).
fn reply_cost(out: &Outbound) -> u32 {
    let bytes = match out {
        Outbound::Text(text) | Outbound::Reply(text, _) => text.len(),
        Outbound::Close(_) => 1,
    };
    // The budget fits a u32 (a named constant of 256 KiB).
    u32::try_from(bytes.clamp(1, REPLY_BUDGET_BYTES)).unwrap_or(u32::MAX)
}

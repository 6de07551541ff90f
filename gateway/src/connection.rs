//! One WebSocket: a reader that answers requests in order, and a writer that drains the
//! socket's bounded outbound queue (replies and notices). When the socket closes without a
//! `logout`, its session is disconnected (R2.2), unless another socket has since taken the
//! device over.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use presence_engine::runtime::TrySendError;
use presence_engine::{Command, DeviceId, Reply, SessionHandle, UserId};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::metrics::{self, OP_INVALID};
use crate::protocol::{self, CloseReason, Failure, Op, ProtocolCode};
use crate::routes::{self, Outbound, Peer};
use crate::shared::{unavailable, Backend, Place, QueueError, Shared};
use crate::stats::Counters;
use crate::token::{self, TokenError};

/// How long a socket's disconnect waits between tries while the engine's queue is full.
const DISCONNECT_RETRY: Duration = Duration::from_millis(10);

/// Serves one upgraded socket until it closes, then cleans up after it.
pub(crate) async fn serve(socket: WebSocket, shared: Arc<Shared>, place: Arc<Place>) {
    let ending = Arc::clone(&place.ending);
    if place.frame_too_big.load(Ordering::Relaxed) {
        // A frame too long for a socket not logged in came with the handshake: the socket
        // closes (1009) before it reads it.
        routes::end(&ending, CloseReason::TooBig);
    }
    let (sink, mut stream) = socket.split();
    let (outbound, queue) = mpsc::channel(shared.config.gateway.outbound_queue);
    let peer = Peer { id: place.id, outbound, ending: Arc::clone(&ending) };
    let close_timeout = Duration::from_millis(shared.config.gateway.close_timeout_ms);
    let writer = tokio::spawn(write_frames(sink, queue, Arc::clone(&ending), close_timeout));
    let mut connection = Connection { shared, peer, identity: None, session: None, op: OP_INVALID };
    let reason = connection.read_frames(&mut stream).await;
    routes::end(&ending, reason);
    // The first reason set is the one the writer closes with.
    connection.shared.counters.tallies.closed(ending.borrow().unwrap_or(reason));
    connection.finish(reason).await;
    drop(connection);
    let _ = writer.await;
    // The socket (and with it the connection's place among the caps) goes last.
    drop(stream);
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
    /// The op of the request being answered, for the metrics' count of replies.
    op: &'static str,
}

impl Connection {
    /// Queues a reply that succeeded, counted for the metrics (failures go through `fail`).
    fn send(&self, text: String) {
        self.shared.counters.tallies.succeeded(self.op);
        self.reply(text);
    }

    /// Queues a reply; `send` and `fail` count it first.
    fn reply(&self, text: String) {
        self.peer.push(Outbound::Text(Utf8Bytes::from(text)), &self.shared.counters);
    }

    fn fail(&self, id: Option<u64>, failure: &Failure) {
        self.shared.counters.tallies.answered(self.op, failure.code);
        self.reply(protocol::failed(id, failure));
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
            let flow = match message {
                Message::Text(text) => self.request(text.as_str()).await,
                Message::Binary(_) => {
                    let failure = Failure::new(
                        ProtocolCode::BadJson,
                        "binary frames are not part of the protocol: send JSON text",
                    );
                    self.fail(None, &failure);
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
    /// the socket from idling.
    fn ping(&self) {
        let shed = match &self.shared.backend {
            Backend::Local(handle) => match self.session {
                Some(session) => matches!(handle.try_submit_heartbeat(session), Err(TrySendError::Full(_))),
                None => false,
            },
            Backend::Cluster(_) => match &self.identity {
                Some((user, device)) => {
                    let heartbeat = Command::heartbeat(user.clone(), device.clone());
                    matches!(self.shared.try_queue(heartbeat), Err(QueueError::Full))
                }
                None => false,
            },
        };
        if shed {
            Counters::add(&self.shared.counters.heartbeats_shed, 1);
        }
    }

    async fn request(&mut self, text: &str) -> Flow {
        let request = match protocol::parse(text, self.shared.config.gateway.max_frame_bytes) {
            Ok(request) => request,
            Err(refusal) => {
                self.fail(refusal.id, &refusal.failure);
                return Flow::Continue;
            }
        };
        let id = request.id;
        self.op = metrics::op_label(&request.op);
        let command = match (request.op, &self.identity) {
            (Op::Login { token, device }, _) => {
                match self.login(token, device).await {
                    Ok((user, device)) => self.send(protocol::logged_in(id, &user, &device)),
                    Err(failure) => self.fail(Some(id), &failure),
                }
                return Flow::Continue;
            }
            (_, None) => {
                self.fail(
                    Some(id),
                    &Failure::new(ProtocolCode::LoginFirst, "log in first: {\"op\": \"login\", ...}"),
                );
                return Flow::Continue;
            }
            (Op::Logout {}, Some(_)) => return self.logout(id).await,
            (op, Some((user, device))) => op_command(op, user, device),
        };
        match self.shared.run(command).await {
            Ok(Reply::Statuses(statuses)) => self.send(protocol::statuses(id, &statuses)),
            Ok(_) => self.send(protocol::ok(id)),
            Err(failure) => self.fail(Some(id), &failure),
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
                    pending
                }
                Err(failure) => {
                    self.fail(Some(id), &failure);
                    return Flow::Continue;
                }
            }
        };
        match pending.wait().await {
            Ok(_) => {
                self.identity = None;
                self.session = None;
                self.send(protocol::ok(id));
                self.peer.push(Outbound::Close(CloseReason::LoggedOut), &self.shared.counters);
                Flow::Continue
            }
            Err(failure) => {
                // Nothing changed (R7.1): the socket still serves the device, unless another
                // socket claimed it meanwhile.
                let mut routes = self.shared.routes.lock();
                if routes.get(&user, &device).is_none() {
                    routes.insert(&user, &device, self.peer.clone());
                }
                drop(routes);
                self.fail(Some(id), &failure);
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

/// Why reading failed: a frame beyond the transport's limit, or the connection broke.
fn read_error(error: &axum::Error) -> CloseReason {
    let text = error.to_string().to_ascii_lowercase();
    match text.contains("too long") || text.contains("too big") || text.contains("capacity") {
        true => CloseReason::TooBig,
        false => CloseReason::ClientGone,
    }
}

/// Writes queued frames to the socket, several at a time with one flush, until the socket
/// ends; then sends the close frame (when there is someone to send it to).
async fn write_frames(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outbound>,
    ending: routes::Ending,
    close_timeout: Duration,
) {
    let mut watch = ending.subscribe();
    let reason = loop {
        let first = tokio::select! {
            biased;
            reason = watch.wait_for(Option::is_some) => break reason.ok().and_then(|r| *r),
            first = queue.recv() => first,
        };
        // Every sender is gone: the reader has finished and set its reason.
        let Some(first) = first else { break *ending.borrow() };
        let written = tokio::select! {
            biased;
            reason = watch.wait_for(Option::is_some) => break reason.ok().and_then(|r| *r),
            written = write_batch(&mut sink, &mut queue, first) => written,
        };
        match written {
            Written::More => {}
            Written::Close(reason) => {
                routes::end(&ending, reason);
                break Some(reason);
            }
            Written::Broken => break *ending.borrow(),
        }
    };
    // Nobody reads the queue from now on: pushes fail at once instead of filling it.
    queue.close();
    let reason = reason.unwrap_or(CloseReason::ClientGone);
    routes::end(&ending, reason);
    if reason != CloseReason::ClientGone {
        let frame = CloseFrame { code: reason.code(), reason: Utf8Bytes::from_static(reason.text()) };
        let _ = tokio::time::timeout(close_timeout, sink.send(Message::Close(Some(frame)))).await;
    }
    let _ = tokio::time::timeout(close_timeout, sink.close()).await;
}

enum Written {
    More,
    Close(CloseReason),
    Broken,
}

/// Writes `first` and whatever else is queued behind it, then flushes once.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    queue: &mut mpsc::Receiver<Outbound>,
    first: Outbound,
) -> Written {
    let mut next = Some(first);
    let mut end = Written::More;
    while let Some(out) = next.take() {
        match out {
            Outbound::Text(text) => {
                if sink.feed(Message::Text(text)).await.is_err() {
                    return Written::Broken;
                }
                next = queue.try_recv().ok();
            }
            Outbound::Close(reason) => end = Written::Close(reason),
        }
    }
    match sink.flush().await {
        Ok(()) => end,
        Err(_) => Written::Broken,
    }
}

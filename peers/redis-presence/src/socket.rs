//! One WebSocket of the Redis peer: the gateway's requests and replies (docs/PROTOCOL.md),
//! each answered after its Redis round trips; notices come from the subscription.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use presence_engine::{GeneralStatus, TargetStatus};
use presence_gateway::protocol::{self, CloseReason, Failure, Op, ProtocolCode};
use presence_gateway::token;
use tokio::sync::{mpsc, watch};

use crate::store::{Local, Out};
use crate::Shared;

/// The engine's limits, kept so that both servers refuse the same requests (R3.1, R4.1, R6.2).
const CUSTOM_BYTES_MAX: usize = 50;
const SUBSCRIBE_BATCH_MAX: usize = 100;
const QUERY_BATCH_MAX: usize = 500;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn invalid(message: &str) -> Failure {
    Failure { code: 6017, name: "InvalidParameter", message: message.into() }
}

fn redis_failure(error: &redis::RedisError) -> Failure {
    Failure { code: 9000, name: "Storage", message: format!("redis: {error}") }
}

struct Socket {
    shared: Arc<Shared>,
    local: Local,
    /// The user logged in, and its status as this socket last wrote or heard it.
    me: Option<TargetStatus>,
}

pub(crate) async fn serve(socket: WebSocket, shared: Arc<Shared>) {
    let (sink, mut stream) = socket.split();
    let (outbound, queue) = mpsc::channel(shared.settings.outbound_queue.max(1));
    let (ending, _) = watch::channel(None);
    let local = Local { id: NEXT_ID.fetch_add(1, Ordering::Relaxed), outbound, ending: Arc::new(ending) };
    let writer = tokio::spawn(write(sink, queue, Arc::clone(&local.ending)));
    let mut ended = local.ending.subscribe();
    let mut socket = Socket { shared, local, me: None };
    let mut logged_out = false;
    loop {
        let message = tokio::select! {
            biased;
            _ = ended.wait_for(Option::is_some) => break,
            message = stream.next() => message,
        };
        let Some(Ok(message)) = message else { break };
        match message {
            Message::Text(text) => {
                if socket.request(text.as_str()).await {
                    logged_out = true;
                }
            }
            Message::Binary(_) => socket.fail(None, &Failure::new(ProtocolCode::BadJson, "send JSON text")),
            Message::Ping(_) => socket.heartbeat().await,
            Message::Pong(_) => {}
            Message::Close(_) => break,
        }
    }
    socket.local.ending.send_if_modified(|code| code.replace(CloseReason::ClientGone.code()).is_none());
    if let Some(me) = socket.me.take() {
        if !logged_out {
            // The socket closed without a logout: the usual design publishes OFFLINE now.
            let _ = socket.shared.store.change(&me.user, GeneralStatus::Offline, "").await;
        }
    }
    socket.shared.store.unwatch(socket.local.id, None);
    drop(socket);
    let _ = writer.await;
}

impl Socket {
    fn send(&self, text: String) {
        self.local.push(Out::Text(Utf8Bytes::from(text)));
    }

    fn fail(&self, id: Option<u64>, failure: &Failure) {
        self.send(protocol::failed(id, failure));
    }

    async fn heartbeat(&mut self) {
        if let Some(me) = &self.me {
            let _ = self.shared.store.refresh(me).await;
        }
    }

    /// Answers one request; true after a logout.
    async fn request(&mut self, text: &str) -> bool {
        let request = match protocol::parse(text, self.shared.settings.max_frame_bytes) {
            Ok(request) => request,
            Err(refusal) => {
                self.fail(refusal.id, &refusal.failure);
                return false;
            }
        };
        let id = request.id;
        let store = &self.shared.store;
        let reply = match (request.op, &self.me) {
            (Op::Login { token, device }, None) => match self.shared.secret.verify(&token, token::now_s()) {
                Err(e @ token::TokenError::Expired { .. }) => {
                    Err(Failure::new(ProtocolCode::TokenExpired, e.to_string()))
                }
                Err(e) => Err(Failure::new(ProtocolCode::BadToken, e.to_string())),
                Ok(user) if user.is_empty() || device.is_empty() => Err(invalid("empty user or device id")),
                Ok(user) => {
                    // Its own user's notices reach it, as the engine's do (R5.2).
                    let watched = store.watch(&self.local, std::slice::from_ref(&user)).await;
                    match watched.map_err(|e| redis_failure(&e)) {
                        Err(e) => Err(e),
                        Ok(()) => match store.change(&user, GeneralStatus::Online, "").await {
                            Ok(status) => {
                                self.me = Some(status);
                                Ok(protocol::logged_in(id, &user, &device))
                            }
                            Err(e) => Err(redis_failure(&e)),
                        },
                    }
                }
            },
            (Op::Login { .. }, Some(_)) => {
                Err(Failure::new(ProtocolCode::AlreadyLoggedIn, "already logged in"))
            }
            (_, None) => Err(Failure::new(ProtocolCode::LoginFirst, "log in first")),
            (Op::Heartbeat {}, Some(me)) => {
                store.refresh(me).await.map(|()| protocol::ok(id)).map_err(|e| redis_failure(&e))
            }
            (Op::SetStatus { custom }, Some(_)) if custom.len() > CUSTOM_BYTES_MAX => {
                Err(invalid("custom status too long"))
            }
            (Op::SetStatus { custom }, Some(me)) => {
                let user = me.user.clone();
                match store.change(&user, GeneralStatus::Online, &custom).await {
                    Ok(status) => {
                        self.me = Some(status);
                        Ok(protocol::ok(id))
                    }
                    Err(e) => Err(redis_failure(&e)),
                }
            }
            (Op::GetStatus { targets }, Some(_)) if targets.is_empty() || targets.len() > QUERY_BATCH_MAX => {
                Err(invalid("1 to 500 targets"))
            }
            (Op::GetStatus { targets }, Some(_)) => {
                store.read(&targets).await.map(|s| protocol::statuses(id, &s)).map_err(|e| redis_failure(&e))
            }
            (Op::Subscribe { targets }, Some(me))
                if targets.is_empty()
                    || targets.len() > SUBSCRIBE_BATCH_MAX
                    || targets.iter().any(|t| *t == *me.user) =>
            {
                Err(invalid("1 to 100 targets, not yourself"))
            }
            (Op::Subscribe { targets }, Some(_)) => match store.watch(&self.local, &targets).await {
                Ok(()) => store
                    .read(&targets)
                    .await
                    .map(|s| protocol::statuses(id, &s))
                    .map_err(|e| redis_failure(&e)),
                Err(e) => Err(redis_failure(&e)),
            },
            (Op::Unsubscribe { targets }, Some(me)) => {
                let own = me.user.to_string();
                let targets: Vec<String> = match targets.is_empty() {
                    true => Vec::new(),
                    false => targets.into_iter().filter(|t| *t != own).collect(),
                };
                let users = (!targets.is_empty()).then_some(targets.as_slice());
                store.unwatch(self.local.id, users);
                // Clearing the list keeps its own user's notices.
                let result = match users {
                    None => store.watch(&self.local, &[own]).await,
                    Some(_) => Ok(()),
                };
                result.map(|()| protocol::ok(id)).map_err(|e| redis_failure(&e))
            }
            (Op::Logout {}, Some(me)) => {
                let user = me.user.clone();
                match store.change(&user, GeneralStatus::Unlogined, "").await {
                    Ok(_) => {
                        self.me = None;
                        self.send(protocol::ok(id));
                        self.local
                            .push(Out::Close(CloseReason::LoggedOut.code(), CloseReason::LoggedOut.text()));
                        return true;
                    }
                    Err(e) => Err(redis_failure(&e)),
                }
            }
        };
        match reply {
            Ok(text) => self.send(text),
            Err(failure) => self.fail(Some(id), &failure),
        }
        false
    }
}

/// Writes queued frames, several per flush, until the socket ends.
async fn write(
    mut sink: SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Out>,
    ending: Arc<watch::Sender<Option<u16>>>,
) {
    let mut ended = ending.subscribe();
    let close = loop {
        let next = tokio::select! {
            biased;
            code = ended.wait_for(Option::is_some) => break code.ok().and_then(|c| *c),
            next = queue.recv() => next,
        };
        let Some(mut out) = next else { break None };
        loop {
            match out {
                Out::Text(text) => {
                    if sink.feed(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Out::Close(code, reason) => {
                    ending.send_if_modified(|c| c.replace(code).is_none());
                    let frame = CloseFrame { code, reason: Utf8Bytes::from_static(reason) };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    return;
                }
            }
            match queue.try_recv() {
                Ok(more) => out = more,
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    };
    if let Some(code) = close.filter(|&c| c != CloseReason::ClientGone.code()) {
        let frame = CloseFrame { code, reason: Utf8Bytes::from_static("") };
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), sink.send(Message::Close(Some(frame))))
                .await;
    }
}

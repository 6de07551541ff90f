//! The Redis side: status keys with `SET EX`, versions with `INCR`, changes with `PUBLISH`,
//! reads with `MGET`, and one `SUBSCRIBE` connection whose messages go to local watchers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use presence_engine::{GeneralStatus, TargetStatus, UserStatus};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{Msg, RedisResult};
use tokio::sync::{mpsc, watch};

/// What a socket's writer is given.
#[derive(Debug)]
pub(crate) enum Out {
    Text(Utf8Bytes),
    Close(u16, &'static str),
}

/// The sending side of one local socket.
#[derive(Clone, Debug)]
pub(crate) struct Local {
    pub id: u64,
    pub outbound: mpsc::Sender<Out>,
    /// Set to a close code when the socket must end now.
    pub ending: Arc<watch::Sender<Option<u16>>>,
}

/// The close code of a socket too slow to read what it is sent (as the gateway's 4002).
pub(crate) const SLOW_READER: u16 = 4002;

impl Local {
    /// Queues without waiting; a full queue ends the socket as a slow reader.
    pub fn push(&self, out: Out) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.outbound.try_send(out) {
            self.ending.send_if_modified(|code| code.replace(SLOW_READER).is_none());
        }
    }
}

/// The connection to Redis, and who watches which user on this peer.
pub(crate) struct Store {
    commands: MultiplexedConnection,
    /// The SUBSCRIBE connection's sink, held across each (un)subscribe so that they reach
    /// Redis in the order the local watch list changed.
    subscriptions: tokio::sync::Mutex<PubSubSink>,
    /// user -> the local sockets watching it.
    watchers: Mutex<HashMap<String, Vec<Local>>>,
    ttl_s: u64,
}

/// How long a command waits for Redis's reply before it fails (9000).
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn status_key(user: &str) -> String {
    format!("presence:s:{user}")
}

fn version_key(user: &str) -> String {
    format!("presence:v:{user}")
}

fn channel(user: &str) -> String {
    format!("presence:{user}")
}

impl Store {
    /// Connects (one multiplexed connection for commands, one for SUBSCRIBE); the stream is
    /// the subscription's messages, for [`Store::dispatch`].
    pub(crate) async fn connect(url: &str) -> RedisResult<(Store, PubSubStream)> {
        let client = redis::Client::open(url)?;
        // The client's default gives up on a reply after 500 ms; the gateway never gives up on
        // the engine's, so neither does this peer (a slow Redis shows as latency, not errors).
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(RESPONSE_TIMEOUT));
        let commands = client.get_multiplexed_async_connection_with_config(&config).await?;
        let (sink, stream) = client.get_async_pubsub().await?.split();
        let store = Store {
            commands,
            subscriptions: tokio::sync::Mutex::new(sink),
            watchers: Mutex::new(HashMap::new()),
            ttl_s: 400,
        };
        Ok((store, stream))
    }

    /// Sets the `EX` of status keys.
    pub(crate) fn set_ttl_s(&mut self, ttl_s: u64) {
        self.ttl_s = ttl_s.max(1);
    }

    fn watchers(&self) -> MutexGuard<'_, HashMap<String, Vec<Local>>> {
        self.watchers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `socket` watches `users`; the peer SUBSCRIBEs to the users nobody here watched yet.
    pub(crate) async fn watch(&self, socket: &Local, users: &[String]) -> RedisResult<()> {
        let mut subscriptions = self.subscriptions.lock().await;
        let new: Vec<String> = {
            let mut watchers = self.watchers();
            let mut new = Vec::new();
            for user in users {
                let list = watchers.entry(user.clone()).or_default();
                if list.is_empty() {
                    new.push(channel(user));
                }
                if !list.iter().any(|w| w.id == socket.id) {
                    list.push(socket.clone());
                }
            }
            new
        };
        if !new.is_empty() {
            subscriptions.subscribe(&new).await?;
        }
        Ok(())
    }

    /// Socket `id` stops watching `users` (every user, for `None`); the peer UNSUBSCRIBEs
    /// from the users nobody here watches any more.
    pub(crate) async fn unwatch(&self, id: u64, users: Option<&[String]>) -> RedisResult<()> {
        let mut subscriptions = self.subscriptions.lock().await;
        let gone: Vec<String> = {
            let mut watchers = self.watchers();
            let mut gone = Vec::new();
            watchers.retain(|user, list| {
                if users.is_none_or(|users| users.contains(user)) {
                    list.retain(|w| w.id != id);
                }
                if list.is_empty() {
                    gone.push(channel(user));
                }
                !list.is_empty()
            });
            gone
        };
        if !gone.is_empty() {
            subscriptions.unsubscribe(&gone).await?;
        }
        Ok(())
    }

    /// A message of the subscription: queued on each local socket watching its user.
    pub(crate) fn dispatch(&self, message: &Msg) {
        let Some(user) = message.get_channel_name().strip_prefix("presence:") else { return };
        let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else { return };
        let text = Utf8Bytes::from(text);
        let watchers = self.watchers();
        for socket in watchers.get(user).into_iter().flatten() {
            socket.push(Out::Text(text.clone()));
        }
    }

    /// A new status for `user`: `INCR` its version, `SET` its key with `EX` (or `DEL` it when
    /// it is not online), `PUBLISH` the notice. Returns the status as stored.
    pub(crate) async fn change(
        &self,
        user: &str,
        general: GeneralStatus,
        custom: &str,
    ) -> RedisResult<TargetStatus> {
        let mut redis = self.commands.clone();
        let version: u64 = redis::cmd("INCR").arg(version_key(user)).query_async(&mut redis).await?;
        let status = TargetStatus {
            user: user.into(),
            status: UserStatus { general, custom: custom.into() },
            version,
        };
        let stored = serde_json::to_string(&status).unwrap_or_default();
        let notice = presence_gateway::protocol::notice(&status.user, &status.status, version);
        let mut pipe = redis::pipe();
        match general {
            GeneralStatus::Online => {
                pipe.cmd("SET").arg(status_key(user)).arg(&stored).arg("EX").arg(self.ttl_s).ignore()
            }
            _ => pipe.cmd("DEL").arg(status_key(user)).ignore(),
        };
        pipe.cmd("PUBLISH").arg(channel(user)).arg(notice).ignore();
        pipe.query_async::<()>(&mut redis).await?;
        Ok(status)
    }

    /// A heartbeat: the key `SET` again with a fresh `EX`.
    pub(crate) async fn refresh(&self, status: &TargetStatus) -> RedisResult<()> {
        let mut redis = self.commands.clone();
        let stored = serde_json::to_string(status).unwrap_or_default();
        redis::cmd("SET")
            .arg(status_key(&status.user))
            .arg(stored)
            .arg("EX")
            .arg(self.ttl_s)
            .query_async::<()>(&mut redis)
            .await
    }

    /// The statuses of `users`, in order: one `MGET` of their status and version keys. A
    /// missing key is OFFLINE if the user ever had a version, else UNLOGINED.
    pub(crate) async fn read(&self, users: &[String]) -> RedisResult<Vec<TargetStatus>> {
        let mut redis = self.commands.clone();
        let mut mget = redis::cmd("MGET");
        for user in users {
            mget.arg(status_key(user));
        }
        for user in users {
            mget.arg(version_key(user));
        }
        let values: Vec<Option<String>> = mget.query_async(&mut redis).await?;
        let (statuses, versions) = values.split_at(users.len().min(values.len()));
        Ok(users
            .iter()
            .enumerate()
            .map(|(at, user)| {
                let stored = statuses.get(at).cloned().flatten().and_then(|s| serde_json::from_str(&s).ok());
                let version = versions.get(at).cloned().flatten().and_then(|v| v.parse().ok());
                stored.unwrap_or_else(|| TargetStatus {
                    user: user.as_str().into(),
                    status: UserStatus {
                        general: match version {
                            Some(_) => GeneralStatus::Offline,
                            None => GeneralStatus::Unlogined,
                        },
                        custom: "".into(),
                    },
                    version: version.unwrap_or(0),
                })
            })
            .collect())
    }
}

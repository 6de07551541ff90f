//! The Redis side: status keys with `SET EX`, versions with `INCR`, changes with `PUBLISH`,
//! reads with `MGET`, and one `SUBSCRIBE` connection whose messages go to local watchers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use presence_engine::{GeneralStatus, TargetStatus, UserStatus};
use redis::aio::{MultiplexedConnection, PubSubSink, PubSubStream};
use redis::{Msg, RedisResult};
use tokio::sync::{mpsc, watch};

/// How long a command waits for Redis's reply before it fails (9000).
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
    /// The SUBSCRIBE connection's sink (clones share the connection; requests are pipelined).
    subscriptions: PubSubSink,
    /// user -> the local sockets watching it.
    watchers: Mutex<HashMap<String, Vec<Local>>>,
    /// The users whose channel this peer subscribed to (true once Redis confirmed). A channel
    /// is never unsubscribed, so that no SUBSCRIBE can be overtaken by an older UNSUBSCRIBE;
    /// messages for users nobody here watches any more are dropped by `dispatch`.
    channels: Mutex<HashMap<String, watch::Receiver<bool>>>,
    ttl_s: u64,
}

fn status_key(user: &str) -> String {
    format!("presence:s:{user}")
}

fn version_key(user: &str) -> String {
    format!("presence:v:{user}")
}

fn channel(user: &str) -> String {
    format!("presence:{user}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
        let (subscriptions, stream) = client.get_async_pubsub().await?.split();
        let store = Store {
            commands,
            subscriptions,
            watchers: Mutex::new(HashMap::new()),
            channels: Mutex::new(HashMap::new()),
            ttl_s: 400,
        };
        Ok((store, stream))
    }

    /// Sets the `EX` of status keys.
    pub(crate) fn set_ttl_s(&mut self, ttl_s: u64) {
        self.ttl_s = ttl_s.max(1);
    }

    /// `socket` watches `users`. The peer SUBSCRIBEs to the users it never subscribed to, and
    /// returns once every one of them is confirmed (by this call or an earlier one), so that
    /// every change published afterwards reaches the socket.
    pub(crate) async fn watch(&self, socket: &Local, users: &[String]) -> RedisResult<()> {
        let (mut new, mut senders, mut pending) = (Vec::new(), Vec::new(), Vec::new());
        {
            let mut watchers = lock(&self.watchers);
            let mut channels = lock(&self.channels);
            for user in users {
                let list = watchers.entry(user.clone()).or_default();
                if !list.iter().any(|w| w.id == socket.id) {
                    list.push(socket.clone());
                }
                match channels.get(user) {
                    Some(confirmed) => pending.push(confirmed.clone()),
                    None => {
                        let (sender, confirmed) = watch::channel(false);
                        channels.insert(user.clone(), confirmed);
                        new.push(channel(user));
                        senders.push(sender);
                    }
                }
            }
        }
        if !new.is_empty() {
            if let Err(error) = self.subscriptions.clone().subscribe(&new).await {
                // Forget them, so that the next watch tries again; their waiters see the error.
                let mut channels = lock(&self.channels);
                for user in users {
                    if new.contains(&channel(user)) {
                        channels.remove(user);
                    }
                }
                return Err(error);
            }
            for sender in senders {
                sender.send_replace(true);
            }
        }
        for mut confirmed in pending {
            if confirmed.wait_for(|done| *done).await.is_err() {
                return Err(redis::RedisError::from((redis::ErrorKind::Io, "a SUBSCRIBE failed")));
            }
        }
        Ok(())
    }

    /// Socket `id` stops watching `users` (every user, for `None`).
    pub(crate) fn unwatch(&self, id: u64, users: Option<&[String]>) {
        lock(&self.watchers).retain(|user, list| {
            if users.is_none_or(|users| users.contains(user)) {
                list.retain(|w| w.id != id);
            }
            !list.is_empty()
        });
    }

    /// A message of the subscription: queued on each local socket watching its user.
    pub(crate) fn dispatch(&self, message: &Msg) {
        let Some(user) = message.get_channel_name().strip_prefix("presence:") else { return };
        let Ok(text) = std::str::from_utf8(message.get_payload_bytes()) else { return };
        let text = Utf8Bytes::from(text);
        let watchers = lock(&self.watchers);
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

//! Serving a claimed shard (docs/DESIGN.md, the cluster): its runtime, the subjects only its
//! owner listens on (commands in batches, status and friendship reads, the host's views), and
//! the notices of its turns on their way to the nodes that hold the devices' sockets.

use super::*;

/// Starts the runtime of a claimed shard and its subscriptions.
pub(super) async fn start_serving(
    inner: &Arc<Inner>,
    shard: u32,
    engine: Engine<NatsStore>,
    claim_seq: u64,
) -> Result<Arc<Served>, String> {
    let config = RuntimeConfig {
        auto_tick: inner.config.tick_interval_ms > 0,
        tick_interval_ms: inner.config.tick_interval_ms.max(1),
        snapshots: SnapshotPolicy::default(),
        ..RuntimeConfig::default()
    };
    let sink = NatsSink { shard, subjects: inner.subjects.clone(), out: inner.notices.clone() };
    let (runtime, handle) = Runtime::spawn(engine, SystemClock, sink, config);
    let served = Arc::new(Served {
        claim_seq,
        handle,
        runtime: Mutex::new(Some(runtime)),
        tasks: Mutex::new(Vec::new()),
        fenced: AtomicBool::new(false),
    });
    let subjects = [
        inner.subjects.command(shard),
        inner.subjects.read(shard),
        inner.subjects.friends(shard),
        inner.subjects.view(shard),
    ];
    let mut tasks = Vec::new();
    for (kind, subject) in subjects.into_iter().enumerate() {
        let mut subscriber =
            inner.client.subscribe(subject.clone()).await.map_err(|e| format!("{subject}: {e}"))?;
        let inner = Arc::clone(inner);
        let served = Arc::clone(&served);
        tasks.push(tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let inner = Arc::clone(&inner);
                let served = Arc::clone(&served);
                tokio::spawn(async move {
                    let Some(reply) = message.reply.clone() else { return };
                    let answer = match kind {
                        0 => serve_commands(&inner, shard, &served, &message.payload).await,
                        1 => serve_read(&served, &message.payload).await,
                        2 => serve_friends(&inner, shard, &served, &message.payload).await,
                        _ => serve_view(&served, &message.payload).await,
                    };
                    let _ = inner.client.publish(reply, Bytes::from(answer)).await;
                });
            }
        }));
    }
    *lock(&served.tasks) = tasks;
    lock(&inner.served).insert(shard, Arc::clone(&served));
    Ok(served)
}

/// Serves one batch of commands for `shard` (docs/DESIGN.md, the cluster's wire): the other
/// shards' statuses the batch needs are read together, then every command goes to the
/// shard's runtime before any answer is awaited, so that the batch runs in one turn or few.
async fn serve_commands(inner: &Inner, shard: u32, served: &Served, payload: &[u8]) -> Vec<u8> {
    let requests = match decode_requests(payload) {
        Ok(requests) => requests,
        Err(e) => {
            let message = format!("not a batch of commands: {e}");
            return encode_answers(&[CommandAnswer::Refused { code: 6017, message }]);
        }
    };
    if !inner.lease_ok() || served.fenced.load(Ordering::SeqCst) {
        let message = format!("node {} does not serve shard {shard} now", inner.id);
        return encode_answers(&vec![CommandAnswer::Unavailable { message }; requests.len()]);
    }
    let friends = inner.config.engine.friend_notifications;
    let needs: Vec<Vec<UserId>> =
        requests.iter().map(|r| remote_users(&r.command, &inner.map, shard, friends)).collect();
    let mut all: Vec<UserId> = needs.iter().flatten().cloned().collect();
    all.sort();
    all.dedup();
    let known = if all.is_empty() { RemoteStatuses::new() } else { inner.read_remote(all).await };
    let mut pending = Vec::with_capacity(requests.len());
    for (request, users) in requests.into_iter().zip(needs) {
        if let Some(right) = request.command.shard(&inner.map).filter(|&s| s != shard) {
            let message = format!(
                "this command belongs to shard {right}, not {shard} (R9.1): send it to {}",
                inner.subjects.command(right)
            );
            pending.push(Err(CommandAnswer::Refused { code: 6017, message }));
            continue;
        }
        let statuses: RemoteStatuses =
            users.iter().filter_map(|u| known.get(u).map(|s| (u.clone(), s.clone()))).collect();
        pending.push(Ok(served.handle.send_with_statuses(request.command, request.at_ms, statuses)));
    }
    let mut answers = Vec::with_capacity(pending.len());
    for sent in pending {
        let result = match sent {
            Err(answer) => {
                answers.push(answer);
                continue;
            }
            Ok(Ok(pending)) => pending.await,
            Ok(Err(e)) => Err(e),
        };
        answers.push(match result {
            Ok(reply) => CommandAnswer::Done(reply),
            Err(RuntimeError::Refused(Error::Storage(e))) if e.kind() == StoreErrorKind::Fenced => {
                served.fenced.store(true, Ordering::SeqCst);
                CommandAnswer::Unavailable { message: format!("shard {shard} moved to another node: {e}") }
            }
            Err(RuntimeError::Refused(e)) => {
                CommandAnswer::Refused { code: e.code(), message: e.to_string() }
            }
            Err(e) => CommandAnswer::Unavailable { message: e.to_string() },
        });
    }
    encode_answers(&answers)
}

async fn serve_read(served: &Served, payload: &[u8]) -> Vec<u8> {
    let Ok(request) = serde_json::from_slice::<StatusRead>(payload) else { return Vec::new() };
    let read = served.handle.read(move |view| {
        request
            .users
            .into_iter()
            .map(|user| {
                let (status, version) = view.versioned_status(&user);
                (user, status, version)
            })
            .collect()
    });
    match read {
        Ok(pending) => match pending.await {
            Ok(statuses) => serde_json::to_vec(&StatusAnswer { statuses }).unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

async fn serve_friends(inner: &Inner, shard: u32, served: &Served, payload: &[u8]) -> Vec<u8> {
    let Ok(request) = serde_json::from_slice::<FriendsRead>(payload) else { return Vec::new() };
    let map = inner.map.clone();
    let read = served.handle.read(move |view| {
        let mut pairs = Vec::new();
        for user in view.user_ids() {
            if map.shard_of(user) != shard {
                continue;
            }
            for friend in view.friends(user) {
                if map.shard_of(&friend) == request.with {
                    pairs.push((user.clone(), friend));
                }
            }
        }
        pairs
    });
    match read {
        Ok(pending) => match pending.await {
            Ok(pairs) => serde_json::to_vec(&FriendsAnswer { pairs }).unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

async fn serve_view(served: &Served, payload: &[u8]) -> Vec<u8> {
    let Ok(request) = serde_json::from_slice::<ViewRead>(payload) else { return Vec::new() };
    let read = served.handle.read(move |view| {
        let user = request.user.as_ref();
        let (status, version) = view.versioned_status(user);
        ViewAnswer {
            status,
            version,
            sessions: view
                .sessions(user)
                .into_iter()
                .map(|s| SessionAnswer {
                    device: s.device.to_string(),
                    connected: s.connected,
                    login_at_ms: s.login_at_ms,
                    heartbeat_at_ms: s.heartbeat_at_ms,
                })
                .collect(),
            subscriptions: view.subscriptions(user),
            friends: view.friends(user),
        }
    });
    match read {
        Ok(pending) => match pending.await {
            Ok(answer) => serde_json::to_vec(&answer).unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

/// The notices of one shard's turns, to the nodes that hold the devices' sockets: one
/// message per turn and owner (R9.2).
struct NatsSink {
    shard: u32,
    subjects: Subjects,
    out: mpsc::UnboundedSender<Outgoing>,
}

impl NoticeSink for NatsSink {
    fn deliver(&mut self, notices: &[Notice], names: &Names<'_>) {
        let mut by_owner: BTreeMap<String, Vec<NoticeOut>> = BTreeMap::new();
        for notice in notices {
            match notice {
                Notice::Status(n) => {
                    for &recipient in &n.recipients {
                        let (to, device) = names.resolve(recipient);
                        let subject = self.subjects.notices(names.owner(recipient).map(|o| o.as_ref()));
                        by_owner.entry(subject).or_default().push(NoticeOut::Status {
                            to: to.to_string(),
                            device: device.to_string(),
                            about: n.about.to_string(),
                            status: n.status.general,
                            custom: n.status.custom.to_string(),
                            version: n.version,
                            cause: n.cause.clone(),
                        });
                    }
                }
                Notice::Kicked(recipient) => {
                    let (to, device) = names.resolve(*recipient);
                    let subject = self.subjects.notices(names.owner(*recipient).map(|o| o.as_ref()));
                    by_owner
                        .entry(subject)
                        .or_default()
                        .push(NoticeOut::Kicked { to: to.to_string(), device: device.to_string() });
                }
            }
        }
        for (subject, notices) in by_owner {
            let batch = NoticeBatch { shard: self.shard, notices };
            let payload = Bytes::from(serde_json::to_vec(&batch).unwrap_or_default());
            let _ = self.out.send(Outgoing::Notices(subject, payload));
        }
    }
}

//! The follower (R9.2, docs/DESIGN.md, the cluster): every node takes in every shard's durable
//! batches, their status changes for the shards it serves and the friendships a lower shard
//! ordered. The owners announce each batch as it becomes durable
//! (`NatsOptions::announce`), so a batch arrives without a request; the streams stay the
//! truth, read when an announcement shows a gap, at every pass (each `follow_interval_ms`),
//! and from where the node was after a disconnect. A batch whose events do not follow the
//! last one taken in, or a snapshot covering events it never saw (a compaction removed
//! batches this node never read), is detected and logged, and the friendships the served
//! shards mirror from that shard are reconciled with it. A status change among those batches
//! is not: a watch entry for that user stays as it was until the user's next change or the
//! shard's next claim, and its watchers heard no notice of it. Telling them needs a notice
//! for a change whose cause was compacted away, which the specification does not have yet.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use presence_engine::{codec, Command, EventKind, EventStore, RemoteStatuses, StatusChange, StoredBatch};
use presence_storage_nats::{Announced, NatsStore};

use super::{reconcile_friends, remote_users, Inner};

/// What the follower thread is told.
pub(super) enum Follow {
    /// A batch a shard's owner announced on its subject.
    Announced(u32, async_nats::Message),
    /// Read every stream for batches not announced to this node, now.
    Pass,
}

/// How many announcements wait for the follower before more are dropped (a dropped one is
/// read from the stream when the next announcement of its shard shows the gap, or at the
/// next pass).
pub(super) const FOLLOW_QUEUE: usize = 8_192;

/// How often the follower hands the status changes it took in to the served shards: what a
/// change's way to another node's watchers gains in latency against the wake-ups of every
/// served shard's runtime for every batch of every shard.
const HAND_OVER_EVERY: Duration = Duration::from_millis(5);

/// Hands the owners' announcements to the follower thread, never waiting: when its queue is
/// full the announcement is dropped, and the follower reads the batch from the stream.
pub(super) async fn forward_announced(
    inner: Arc<Inner>,
    mut announced: async_nats::Subscriber,
    follow: SyncSender<Follow>,
) {
    while let Some(message) = announced.next().await {
        let Some(shard) = inner.subjects.parse_log(&message.subject) else { continue };
        if follow.try_send(Follow::Announced(shard, message)).is_err() {
            tracing::debug!(shard, "the follower is behind; it reads the stream instead");
        }
    }
}

/// Where the follower is in one shard's stream.
#[derive(Default)]
struct Followed {
    store: Option<NatsStore>,
    /// The stream sequence number up to which this node has taken everything in; `None`
    /// until it first looked.
    after: Option<u64>,
    /// The event sequence number the next batch must start at; `None` until a batch was
    /// taken in.
    next_event: Option<u64>,
}

/// What to do with an announced batch, for a follower that has read its stream up to `after`.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Already taken in (read from the stream before its announcement came).
    Skip,
    /// The next one: take it in.
    Take,
    /// Something came between: read the stream from `after`.
    ReadStream,
}

fn step(after: u64, announced: &Announced) -> Step {
    if announced.seq <= after {
        Step::Skip
    } else if announced.prev == after {
        Step::Take
    } else {
        Step::ReadStream
    }
}

/// Whether a batch leaves out events after the last batch taken in: batches of one log are
/// contiguous, so only a compaction of what this node never read makes a hole. (One that
/// starts before `next_event` was covered by a re-read already.)
fn events_missed(next_event: Option<u64>, batch: &StoredBatch) -> bool {
    next_event.is_some_and(|next| batch.first_seq > next)
}

/// Follows every shard's stream until the node stops: announcements as they come, and a pass
/// over every stream at start, every `follow_interval_ms`, and when asked
/// ([`Follow::Pass`]).
pub(super) fn follow(inner: Arc<Inner>, runtime: tokio::runtime::Handle, told: Receiver<Follow>) {
    let streams = (0..inner.config.shards).map(|_| Followed::default()).collect();
    let mut follower = Follower { inner, runtime, streams, intake: Vec::new() };
    let interval = Duration::from_millis(follower.inner.config.follow_interval_ms);
    let mut next_pass = Instant::now();
    let mut next_hand_over = Instant::now();
    while !follower.inner.stopping.load(Ordering::SeqCst) {
        let mut until = next_pass;
        if !follower.intake.is_empty() {
            until = until.min(next_hand_over);
        }
        let wait = until.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
        let mut pass = match told.recv_timeout(wait) {
            Ok(Follow::Announced(shard, message)) => {
                follower.take_announced(shard, &message);
                false
            }
            Ok(Follow::Pass) => true,
            Err(RecvTimeoutError::Timeout) => Instant::now() >= next_pass,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        for _ in 0..FOLLOW_QUEUE {
            match told.try_recv() {
                Ok(Follow::Announced(shard, message)) => follower.take_announced(shard, &message),
                Ok(Follow::Pass) => pass = true,
                Err(_) => break,
            }
        }
        // The served shards hear of what came in at most every `HAND_OVER_EVERY`, all at
        // once: a shard's runtime wakes once for many batches, not once for each.
        if pass || Instant::now() >= next_hand_over {
            follower.hand_over();
            next_hand_over = Instant::now() + HAND_OVER_EVERY;
        }
        if !pass {
            continue;
        }
        for shard in 0..follower.streams.len() {
            follower.catch_up(shard as u32);
        }
        follower.hand_over();
        if !follower.inner.following.load(Ordering::SeqCst)
            && follower.streams.iter().all(|f| f.after.is_some())
        {
            tracing::info!("following every shard's stream: this node may serve shards now");
            follower.inner.following.store(true, Ordering::SeqCst);
        }
        follower.inner.follow_passes.fetch_add(1, Ordering::SeqCst);
        next_pass = Instant::now() + interval;
    }
}

/// The follower thread's state.
struct Follower {
    inner: Arc<Inner>,
    runtime: tokio::runtime::Handle,
    streams: Vec<Followed>,
    /// Status changes taken in and not yet handed to the served shards, by the shard that
    /// made them, in log order.
    intake: Vec<(u32, Vec<StatusChange>)>,
}

impl Follower {
    /// Opens `shard`'s stream to follow it, if it is not open. The point this node follows
    /// it from is fixed the first time it looks, before the node serves anything: what came
    /// before is in the statuses a shard reads when it is claimed (R9.5) and in the
    /// friendships it reconciles; a reopen after an error goes on from where it was. Only
    /// claims create streams (a follower that raced another node's to create one made
    /// nats-server 2.9 read a stream still being made, and crash).
    fn open(&mut self, shard: u32) -> bool {
        let Some(followed) = self.streams.get_mut(shard as usize) else { return false };
        if followed.store.is_some() {
            return true;
        }
        match NatsStore::open_existing(self.inner.nats_options(shard, false)) {
            Ok(Some(store)) => {
                followed.after.get_or_insert(store.last_stream_seq());
                followed.store = Some(store);
                true
            }
            Ok(None) => {
                // Not made yet: everything it will hold comes after this point.
                followed.after.get_or_insert(0);
                false
            }
            Err(e) => {
                tracing::debug!(shard, error = %e, "cannot open a shard's stream to follow it");
                false
            }
        }
    }

    /// An announced batch: taken in if it is the next, skipped if already read, and
    /// otherwise the gap before it is read from the stream.
    fn take_announced(&mut self, shard: u32, message: &async_nats::Message) {
        if !self.open(shard) {
            return;
        }
        let after = self.streams[shard as usize].after.unwrap_or(0);
        match Announced::parse(message.headers.as_ref(), &message.payload) {
            Ok(announced) => match step(after, &announced) {
                Step::Skip => {}
                Step::Take => self.take_batch(shard, announced.seq, &announced.batch),
                Step::ReadStream => self.catch_up(shard),
            },
            Err(e) => {
                tracing::warn!(shard, error = %e, "an announcement that does not read; reading the stream");
                self.catch_up(shard);
            }
        }
    }

    /// Reads `shard`'s stream from where this node is to its end, taking every batch in.
    fn catch_up(&mut self, shard: u32) {
        if !self.open(shard) {
            return;
        }
        loop {
            let followed = &self.streams[shard as usize];
            let Some(store) = &followed.store else { return };
            match store.batches_after(followed.after.unwrap_or(0), 256) {
                Ok(batches) if batches.is_empty() => {
                    // Batches this node never read may have been compacted away with no
                    // batch after them to show the hole: the newest snapshot then covers
                    // events it has not seen.
                    let next = followed.next_event;
                    let newest = next.and_then(|_| store.snapshots().ok()?.last().copied());
                    if let (Some(next), Some(newest)) = (next, newest) {
                        if newest >= next {
                            tracing::warn!(
                                shard,
                                expected = next,
                                snapshot = newest,
                                "batches this node never read were compacted into a snapshot: reconciling \
                                 friendships; a watched status changed in them stays stale until \
                                 the user's next change"
                            );
                            self.after_hole(shard);
                            self.streams[shard as usize].next_event = Some(newest + 1);
                        }
                    }
                    return;
                }
                Ok(batches) => {
                    for (seq, batch) in batches {
                        self.take_batch(shard, seq, &batch);
                    }
                }
                Err(e) => {
                    tracing::debug!(shard, error = %e, "cannot follow a shard's stream; reopening it");
                    self.streams[shard as usize].store = None;
                    return;
                }
            }
        }
    }

    /// Takes in the batch at stream sequence `seq` of `shard`, after what a compaction may
    /// have hidden from this node is read again from the owners.
    fn take_batch(&mut self, shard: u32, seq: u64, batch: &StoredBatch) {
        let followed = &self.streams[shard as usize];
        if events_missed(followed.next_event, batch) {
            tracing::warn!(
                shard,
                expected = followed.next_event,
                found = batch.first_seq,
                "batches this node never read were compacted away: reconciling friendships; a \
                 watched status changed in them stays stale until the user's next change"
            );
            self.after_hole(shard);
        }
        self.take_in(shard, &batch.bytes);
        let followed = &mut self.streams[shard as usize];
        followed.after = Some(seq);
        followed.next_event = Some(batch.last_seq() + 1);
    }

    /// After a hole in `from`'s batches: the served shards above `from` make their mirrored
    /// friendships with it what it says (R9.1), as a claim does. The statuses they watch are
    /// not corrected here (see the module's documentation).
    fn after_hole(&mut self, from: u32) {
        self.hand_over();
        for (shard, served) in self.inner.served_all() {
            if shard > from {
                self.runtime.spawn(reconcile_friends(Arc::clone(&self.inner), shard, served));
            }
        }
    }

    /// Hands the status changes taken in to the shards this node serves, each shard the
    /// changes of the others, in one message.
    fn hand_over(&mut self) {
        if self.intake.is_empty() || self.inner.holding.load(Ordering::SeqCst) {
            return;
        }
        for (shard, served) in self.inner.served_all() {
            let changes: Vec<StatusChange> = self
                .intake
                .iter()
                .filter(|(from, _)| *from != shard)
                .flat_map(|(_, changes)| changes.iter().cloned())
                .collect();
            if !changes.is_empty() {
                let _ = served.handle.observe_remote(changes);
            }
        }
        self.intake.clear();
    }

    /// One batch of shard `from`: its status changes join the intake, and each friendship
    /// it ordered goes to the other user's shard if this node serves it (after the changes
    /// before it).
    fn take_in(&mut self, from: u32, bytes: &[u8]) {
        let events = match codec::decode_batch(bytes) {
            Ok((_, events)) => events,
            Err(e) => {
                tracing::warn!(shard = from, error = %e, "a batch that does not decode");
                return;
            }
        };
        let changes = codec::decode_outbox(bytes).unwrap_or_default();
        if !changes.is_empty() {
            self.intake.push((from, changes));
        }
        let inner = Arc::clone(&self.inner);
        for event in events {
            let command = match &event.kind {
                EventKind::FriendAdded { user, friend } => Command::add_friend(user.clone(), friend.clone()),
                EventKind::FriendRemoved { user, friend } => {
                    Command::remove_friend(user.clone(), friend.clone())
                }
                _ => continue,
            };
            let (Command::AddFriend { user, friend } | Command::RemoveFriend { user, friend }) = &command
            else {
                continue;
            };
            let (a, b) = (inner.map.shard_of(user), inner.map.shard_of(friend));
            if a == b || from != a.min(b) {
                continue;
            }
            let other = a.max(b);
            if let Some(served) = inner.served(other) {
                self.hand_over();
                // As for a friendship made here: the friend's status, so that its shard
                // watches it from now on (R9.3).
                let friends = inner.config.engine.friend_notifications;
                let users = remote_users(&command, &inner.map, other, friends);
                let statuses = if users.is_empty() {
                    RemoteStatuses::new()
                } else {
                    self.runtime.block_on(inner.read_remote(users))
                };
                let _ = served.handle.send_with_statuses(command, Some(event.at_ms), statuses);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announced(seq: u64, prev: u64, first_seq: u64) -> Announced {
        Announced { seq, prev, batch: StoredBatch { first_seq, count: 2, bytes: Vec::new() } }
    }

    #[test]
    fn an_announcement_is_taken_skipped_or_shows_a_gap() {
        assert_eq!(step(10, &announced(11, 10, 5)), Step::Take);
        assert_eq!(step(10, &announced(10, 9, 5)), Step::Skip);
        assert_eq!(step(12, &announced(11, 10, 5)), Step::Skip);
        // Something this node was not told of came between (a lost announcement, a claim).
        assert_eq!(step(10, &announced(13, 12, 5)), Step::ReadStream);
    }

    #[test]
    fn only_a_hole_in_the_events_is_missed_events() {
        let batch = |first_seq| announced(1, 0, first_seq).batch;
        assert!(!events_missed(None, &batch(40)), "nothing taken in yet: nothing to compare");
        assert!(!events_missed(Some(40), &batch(40)));
        assert!(events_missed(Some(40), &batch(57)), "a compaction removed 40 to 56");
        assert!(!events_missed(Some(40), &batch(30)), "covered by a re-read that found a snapshot");
    }
}

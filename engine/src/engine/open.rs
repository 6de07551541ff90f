//! Opening an engine over a store (recovery, R8.1), and what the next opening starts from:
//! snapshots and compaction.

use super::{Engine, EngineId};
use crate::codec;
use crate::config::Config;
use crate::error::{Error, StoreError, StoreErrorKind};
use crate::fanout::Marks;
use crate::shard::ShardOf;
use crate::snapshot::Snapshot;
use crate::state::State;
use crate::store::EventStore;

/// How an engine opens: what to do with the sessions it restores, and whether its batches
/// carry an outbox. [`Engine::open`] takes the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// What to do with the sessions the store says are connected (R8.4).
    pub restored_sessions: RestoredSessions,
    /// Whether each batch records the status changes it caused (its outbox), so that a reader
    /// of the log (another node's watch table) learns them without folding the state. Off by
    /// default: it costs bytes in every batch that changes a status, and only a deployment
    /// that reads other shards' logs needs it.
    pub outbox: bool,
    /// In a sharded deployment (R9), which shard this engine is; `None` alone.
    pub shard: Option<ShardOf>,
}

/// What a reopened engine does with the sessions its store says are connected (R8.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestoredSessions {
    /// Keep them connected; each counts as having sent a heartbeat at the recovery time, so it
    /// has a full timeout to come back (R8.2). Right when connections outlive the process
    /// (they are held by gateway nodes that keep running).
    #[default]
    Keep,
    /// Disconnect every one at `at_ms`, logged as events (reason `Restart`), before the
    /// engine takes any command: right when the sockets died with the process, so that
    /// subscribers stop seeing `ONLINE` at once instead of after a heartbeat timeout.
    Disconnect {
        /// The time of the restart: the engine's time for those events (R1.3).
        at_ms: u64,
    },
}

/// What [`Engine::open`] found in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The snapshot recovery started from (0: none, a full replay).
    pub snapshot_seq: u64,
    /// Snapshots that could not be used, newest first, with the reason.
    pub skipped_snapshots: Vec<(u64, String)>,
    /// Events replayed after the snapshot.
    pub events_replayed: u64,
    /// Batches replayed after the snapshot.
    pub batches_replayed: u64,
    /// Sessions disconnected at open ([`RestoredSessions::Disconnect`]) or after it
    /// ([`Engine::disconnect_restored`]).
    pub sessions_disconnected: u64,
}

impl<S: EventStore> Engine<S> {
    /// Opens an engine over `store`, recovering its state: the newest snapshot that decodes
    /// (older ones are tried next, then a full replay), then the batches after it, checked
    /// for contiguity (R8.1).
    ///
    /// Fails with [`Error::InvalidConfig`] for a bad configuration, or one whose ids are so
    /// long that one session event would not fit a batch of the store
    /// ([`EventStore::batch_bytes_max`]); with [`Error::Storage`] naming the sequence number
    /// for a gap or a corrupt batch. (A command whose events the store refuses as too large
    /// fails with code 9000 and changes nothing, R7.1.)
    pub fn open(config: Config, store: S) -> Result<Self, Error> {
        Self::open_with(config, store, EngineOptions::default())
    }

    /// [`Engine::open`] with options: see [`EngineOptions`]. With
    /// [`RestoredSessions::Disconnect`], a store failure while logging the disconnects fails
    /// the open; what was appended before it stays (a later open disconnects the rest).
    pub fn open_with(config: Config, store: S, options: EngineOptions) -> Result<Self, Error> {
        config.validate()?;
        let event_bytes = codec::session_event_bytes_bound(&config);
        let store_bytes = store.batch_bytes_max().saturating_sub(codec::BATCH_OVERHEAD_BYTES_MAX);
        if event_bytes > store_bytes {
            return Err(Error::InvalidConfig(format!(
                "with these id limits one session event may take {event_bytes} bytes, but the store \
                 takes batches of at most {store_bytes}: lower max_user_id_bytes or max_device_id_bytes"
            )));
        }
        let mut recovery = Recovery::default();
        let mut state = restore_newest_snapshot(&store, &mut recovery)?.unwrap_or_default();
        state.shard = options.shard.clone();
        state.deadlines.paused = true;
        replay(&store, &mut state, &mut recovery)?;
        state.deadlines.paused = false;
        state.deadlines.rebuild(&mut state.users);
        let mut engine = Self {
            instance: EngineId::next(),
            config,
            store,
            state,
            recovery,
            recipient_marks: Marks::default(),
            touched_marks: Marks::default(),
            encoded: Vec::new(),
            outbox: options.outbox,
            bytes_appended: 0,
        };
        if let RestoredSessions::Disconnect { at_ms } = options.restored_sessions {
            engine.disconnect_restored(at_ms)?;
        }
        Ok(engine)
    }

    /// Disconnects every connected session at `at_ms` (R8.4), in as many batches as it takes,
    /// as [`RestoredSessions::Disconnect`] does at open: for a host that learns the time of
    /// the restart only after opening (the shards of a deployment, opened with
    /// [`RestoredSessions::Keep`], disconnect at the newest time any of them has seen).
    /// Nobody is left connected to hear of it, so there are no notices to hand out. Returns
    /// how many sessions it disconnected, also added to [`Recovery::sessions_disconnected`].
    /// On a store failure what was appended before it stays (a later call disconnects the
    /// rest) and nothing is counted.
    pub fn disconnect_restored(&mut self, at_ms: u64) -> Result<u64, Error> {
        let mut disconnected = 0;
        loop {
            let mut group = self.group();
            let remaining = group.disconnect_restored(at_ms)?;
            disconnected += group.event_count() as u64;
            group.commit()?;
            if remaining == 0 {
                self.recovery.sessions_disconnected += disconnected;
                return Ok(disconnected);
            }
        }
    }

    /// Saves a snapshot of the current state to the store and returns the sequence number
    /// it covers.
    pub fn snapshot(&mut self) -> Result<u64, Error> {
        // The log the snapshot covers must be durable before the snapshot is: a snapshot
        // ahead of the log could not be recovered from.
        self.store.sync()?;
        let bytes = codec::encode_snapshot_wire(&self.state.to_wire())?;
        self.store.save_snapshot(self.state.last_seq, &bytes)?;
        Ok(self.state.last_seq)
    }

    /// [`Engine::snapshot`] in three steps, so that the costly one needs no engine: this
    /// captures the state as a snapshot will hold it, in no particular order (the only step
    /// that needs the engine, and the cheapest: clones of the ids' shared strings);
    /// [`CapturedSnapshot::encode`] sorts and encodes it, on another thread if need be, while
    /// the engine goes on; [`Engine::save_encoded_snapshot`] then stores it.
    pub fn capture_snapshot(&self) -> CapturedSnapshot {
        CapturedSnapshot {
            engine: self.instance,
            snapshot: Snapshot {
                last_seq: self.state.last_seq,
                now_ms: self.state.now_ms,
                state: self.state.logical_unsorted(),
            },
        }
    }

    /// Stores a snapshot this engine captured ([`Engine::capture_snapshot`]), after making the
    /// log it covers durable, and with `compact` removes what it covers ([`Engine::compact`]).
    /// Fails with `InvalidParameter`, storing nothing, for a snapshot of another engine.
    pub fn save_encoded_snapshot(&mut self, snapshot: &EncodedSnapshot, compact: bool) -> Result<(), Error> {
        if snapshot.engine != self.instance {
            return Err(Error::invalid("this snapshot was captured by another engine"));
        }
        let last_seq = snapshot.last_seq;
        self.store.sync()?;
        self.store.save_snapshot(last_seq, &snapshot.bytes)?;
        if compact {
            self.store.compact(last_seq)?;
        }
        Ok(())
    }

    /// Removes from the store the batches the newest snapshot covers (and older snapshots).
    /// Does nothing without a snapshot.
    pub fn compact(&mut self) -> Result<(), Error> {
        if let Some(&newest) = self.store.snapshots()?.last() {
            self.store.compact(newest)?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable ([`EventStore::sync`]).
    pub fn sync(&mut self) -> Result<(), Error> {
        Ok(self.store.sync()?)
    }
}

/// The state of the newest snapshot that can be used, or `None` (a full replay); the ones
/// that cannot are listed in `recovery` with the reason.
fn restore_newest_snapshot<S: EventStore>(
    store: &S,
    recovery: &mut Recovery,
) -> Result<Option<State>, Error> {
    // A snapshot of format 1 has no status versions: use it only when the log it covers is
    // gone, since replaying the whole log restores them exactly (docs/FORMAT.md).
    let whole_log = store.read_from(1)?.next().transpose()?.is_some_and(|b| b.first_seq == 1);
    for seq in store.snapshots()?.into_iter().rev() {
        let restored = match store.load_snapshot(seq)? {
            None => Err("listed but missing".to_string()),
            Some(bytes) => codec::decode_snapshot_wire_and_version(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|(wire, version)| match (wire.last_seq == seq, version) {
                    (false, _) => Err(format!("it says it covers {} events", wire.last_seq)),
                    (true, 1) if whole_log => Err("written in format 1, without status versions: \
                                                        the whole log is replayed instead"
                        .to_string()),
                    (true, _) => Ok(State::from_wire(&wire)),
                }),
        };
        match restored {
            Ok(state) => {
                recovery.snapshot_seq = seq;
                return Ok(Some(state));
            }
            Err(reason) => recovery.skipped_snapshots.push((seq, reason)),
        }
    }
    Ok(None)
}

/// How many events replay looks up together before applying them ([`State::prefetch_users`]).
const REPLAY_PREFETCH: usize = 64;

/// Folds the store's batches after `state.last_seq` into `state`, checking contiguity.
fn replay<S: EventStore>(store: &S, state: &mut State, recovery: &mut Recovery) -> Result<(), Error> {
    let mut expected = state.last_seq + 1;
    let mut keys = Vec::with_capacity(REPLAY_PREFETCH);
    for batch in store.read_from(expected)? {
        let batch = batch?;
        if batch.first_seq > expected {
            return Err(StoreError::corrupt(format!(
                "events {expected}..{} are missing from the log (compacted without a usable snapshot?)",
                batch.first_seq
            ))
            .into());
        }
        // Name where the batch is stored: a bad version byte or a short header says nothing
        // about its sequence number itself.
        let (header, events) = codec::decode_batch_ref(&batch.bytes).map_err(|e| {
            StoreError::with_source(e.kind(), format!("batch stored at sequence {}", batch.first_seq), e)
        })?;
        if header.first_seq != batch.first_seq || header.count != batch.count {
            return Err(StoreError::corrupt(format!(
                "batch stored at sequence {} says it starts at {} with {} events",
                batch.first_seq, header.first_seq, header.count
            ))
            .into());
        }
        let skip = usize::try_from(expected - batch.first_seq).unwrap_or(usize::MAX);
        for (chunk_at, chunk) in events.get(skip..).unwrap_or(&[]).chunks(REPLAY_PREFETCH).enumerate() {
            // Over many users each event's lookup is a cache miss: the chunk's users first,
            // together, so that those misses overlap; the keys found are kept for applying.
            std::hint::black_box(state.prefetch_events(chunk, &mut keys));
            let first = expected + (chunk_at * REPLAY_PREFETCH) as u64;
            debug_assert_eq!(first, state.last_seq + 1);
            for ((seq, event), &key) in (first..).zip(chunk).zip(&keys) {
                // A user not found then may have been made since, by an event of this chunk.
                let key = key.or_else(|| state.user_key(event.kind.user()));
                state.apply(event, key).map_err(|why| {
                    StoreError::corrupt(format!("event {seq} does not fit the state: {why}"))
                })?;
                state.last_seq = seq;
                recovery.events_replayed += 1;
            }
        }
        expected = expected.max(batch.first_seq + events.len() as u64);
        recovery.batches_replayed += 1;
    }
    if store.next_seq() != expected {
        return Err(StoreError::new(
            StoreErrorKind::Corrupt,
            format!(
                "the store ends at sequence {} but its log ends at {}",
                store.next_seq().saturating_sub(1),
                expected - 1
            ),
        )
        .into());
    }
    Ok(())
}

/// The state of an engine as a snapshot will hold it, not yet in canonical order: what
/// [`Engine::capture_snapshot`] takes between two commands, for [`CapturedSnapshot::encode`]
/// to encode without the engine.
#[derive(Clone, Debug)]
pub struct CapturedSnapshot {
    engine: EngineId,
    snapshot: Snapshot,
}

impl CapturedSnapshot {
    /// The last event the snapshot covers (the engine's [`Engine::last_seq`] when captured).
    pub fn last_seq(&self) -> u64 {
        self.snapshot.last_seq
    }

    /// Puts the state in canonical order and encodes it as [`Engine::snapshot`] would have
    /// (docs/FORMAT.md). Needs no engine: a host may run it on another thread.
    pub fn encode(mut self) -> Result<EncodedSnapshot, StoreError> {
        crate::state::canonicalize(&mut self.snapshot.state);
        let bytes = codec::encode_snapshot(&self.snapshot)?;
        Ok(EncodedSnapshot { engine: self.engine, last_seq: self.snapshot.last_seq, bytes })
    }
}

/// A [`CapturedSnapshot`] encoded, for [`Engine::save_encoded_snapshot`] on the engine that
/// captured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedSnapshot {
    engine: EngineId,
    last_seq: u64,
    bytes: Vec<u8>,
}

impl EncodedSnapshot {
    /// The last event the snapshot covers.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The encoded snapshot, as the store will hold it (docs/FORMAT.md).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

//! [`NatsStore`]: the [`EventStore`] on a JetStream stream.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::{ConnectOptions, HeaderMap, ServerAddr};
use presence_engine::{check_contiguous, codec, EventStore, StoreError, StoreErrorKind, StoredBatch};

use crate::announce;
use crate::api::{
    created_meanwhile, retrying, Api, Failure, MsgGet, RawMsg, Runtime, StreamInfo, ERR_STREAM_NOT_FOUND,
    ERR_WRONG_LAST_SEQUENCE,
};
use crate::layout::BatchPos;
use crate::layout::{
    meta_payload, stored_header, validate_stream_name, SnapshotCommit, SnapshotPart, Subjects, HEADER_CHUNK,
    HEADER_COUNT, HEADER_FIRST_SEQ, HEADER_FORMAT, HEADER_OWNER, HEADER_SNAPSHOT_ID, HEADROOM_BYTES,
    NATS_EXPECTED_LAST_SEQ, NATS_MSG_ID, STORE_FORMAT_VERSION,
};
use crate::options::NatsOptions;
use crate::read::BatchReader;

/// A replicated [`EventStore`] on one NATS JetStream stream: one message per batch,
/// snapshots in chunks with a commit record, every write fenced on the stream's last
/// sequence number.
///
/// Open it with [`NatsStore::open`] and hand it to `Engine::open`, which recovers from the
/// newest snapshot and replays the batches after it. The store is synchronous: it owns a
/// small tokio runtime (one worker thread that keeps the connection alive) and blocks on
/// each request, so call it from a plain thread, not from inside an async runtime.
///
/// **One writer.** Every message the store publishes carries
/// `Nats-Expected-Last-Sequence`: the stream's last sequence number as this store last saw
/// it. When another writer (another process, or another `NatsStore` on the same stream) has
/// published in between, the server refuses the message and the store is *fenced*: that
/// call and every later write fail with [`StoreErrorKind::Fenced`], and the owner must
/// reopen the log to learn what it holds. For each position in the log exactly one writer
/// wins.
///
/// **Durability.** An append returns once JetStream acknowledged the message, which on a
/// replicated stream means a quorum of its replicas stored it; [`EventStore::sync`] has
/// nothing left to do. What that is worth on disk is in the crate documentation.
#[derive(Debug)]
pub struct NatsStore {
    runtime: Runtime,
    api: Api,
    subjects: Subjects,
    options: NatsOptions,
    next_seq: u64,
    /// The stream's last sequence number as this store knows it: the fence of its next
    /// publish.
    last_stream_seq: u64,
    batch_bytes_max: usize,
    max_payload: usize,
    meta_present: bool,
    /// Whether the stream lives in a cluster (so compaction deletes message by message).
    clustered: bool,
    /// This store's id in message ids, random per open.
    writer: String,
    /// Publishes so far (each gets its own message id; retries of one publish share it).
    publishes: u64,
    /// Why this store may not write any more.
    fenced: Option<String>,
}

/// A random id for this writer's message ids: no two opens share one.
fn writer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

fn parse_urls(url: &str) -> Result<Vec<ServerAddr>, StoreError> {
    let addrs: Result<Vec<ServerAddr>, _> =
        url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::parse::<ServerAddr>).collect();
    match addrs {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs),
        Ok(_) => {
            Err(StoreError::new(StoreErrorKind::Contract, "no NATS server URL given (nats://HOST:PORT)"))
        }
        Err(e) => Err(StoreError::with_source(
            StoreErrorKind::Contract,
            format!("{url:?} is not a NATS server URL (nats://HOST:PORT, several separated by commas)"),
            e,
        )),
    }
}

pub(crate) async fn connect(options: &NatsOptions) -> Result<async_nats::Client, StoreError> {
    let addrs = parse_urls(&options.url)?;
    let connect_options = ConnectOptions::new()
        .name("presence-storage-nats")
        .connection_timeout(options.connect_timeout)
        .request_timeout(Some(options.request_timeout));
    let connecting = async_nats::connect_with_options(addrs, connect_options);
    match tokio::time::timeout(options.connect_timeout + Duration::from_secs(1), connecting).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(StoreError::with_source(
            StoreErrorKind::Io,
            format!("cannot connect to NATS at {}: is nats-server running there?", options.url),
            e,
        )),
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Io,
            format!(
                "no NATS server answered at {} within {:?}: is nats-server running there, and reachable?",
                options.url, options.connect_timeout
            ),
        )),
    }
}

impl NatsStore {
    /// Connects to `options.url` and opens the log in stream `options.stream`, creating the
    /// stream when [`NatsOptions::create`] is set. `next_seq` comes from the stream itself:
    /// one past the newest batch, or past the newest snapshot when compaction removed every
    /// batch.
    ///
    /// Fails with [`StoreErrorKind::Io`] when no server answers within
    /// [`NatsOptions::connect_timeout`], when the server has no JetStream, or when the stream
    /// does not exist and `create` is off; with [`StoreErrorKind::Contract`] for a bad URL or
    /// stream name, or a stream that does not capture the store's subjects; with
    /// [`StoreErrorKind::UnsupportedVersion`] for a stream written by a newer layout; and
    /// with [`StoreErrorKind::Corrupt`], naming the sequence numbers, for a newest batch that
    /// is torn, corrupt or not a presence batch.
    pub fn open(options: NatsOptions) -> Result<NatsStore, StoreError> {
        let stream = options.stream.clone();
        let url = options.url.clone();
        NatsStore::open_existing(options)?.ok_or_else(|| {
            StoreError::new(
                StoreErrorKind::Io,
                format!(
                    "stream {stream} does not exist at {url}; check the name, or create it (NatsOptions \
                     {{ create: true, .. }}; `presence simulate` creates it, `inspect` and `replay` never do)"
                ),
            )
        })
    }

    /// [`NatsStore::open`], except that a stream that does not exist (and that
    /// [`NatsOptions::create`] does not ask to create) is `Ok(None)`, not an error: for a
    /// reader that waits for a stream someone else makes.
    pub fn open_existing(options: NatsOptions) -> Result<Option<NatsStore>, StoreError> {
        validate_stream_name(&options.stream)?;
        if !(1..=5).contains(&options.replicas) {
            return Err(StoreError::new(
                StoreErrorKind::Contract,
                format!("{} replicas: JetStream keeps 1 to 5 copies of a stream", options.replicas),
            ));
        }
        let runtime = Runtime::new()?;
        let client = runtime.block_on(connect(&options))??;
        let max_payload = client.server_info().max_payload;
        let api = Api::new(client, &options.stream, options.request_timeout);
        let mut store = NatsStore {
            runtime,
            api,
            subjects: Subjects::new(&options.stream),
            options,
            next_seq: 1,
            last_stream_seq: 0,
            batch_bytes_max: 0,
            max_payload,
            meta_present: false,
            clustered: false,
            writer: writer_id(),
            publishes: 0,
            fenced: None,
        };
        // The stream's last sequence number is read first: everything read after it is at
        // least as new, so a writer that appends in between fences this store rather than
        // being overwritten by it.
        let Some(info) = store.info_or_create()? else { return Ok(None) };
        store.check_subjects(&info)?;
        store.last_stream_seq = info.state.last_seq;
        store.clustered =
            info.cluster.as_ref().and_then(|c| c.name.as_deref()).is_some_and(|n| !n.is_empty());
        let limit = match usize::try_from(info.config.max_msg_size) {
            Ok(size) if size > 0 => size.min(max_payload),
            _ => max_payload,
        };
        store.batch_bytes_max = limit.saturating_sub(HEADROOM_BYTES);
        if info.state.last_seq == 0 {
            // Never written: no marker, batch or snapshot to read. It may also be a stream
            // another process is still creating, which nats-server 2.9 must not be asked for
            // a message (`MSG.GET` on a stream mid-creation panics it in jsMsgGetRequest, seen
            // when a node's follower opened a shard's stream while another node's claim made it).
            return Ok(Some(store));
        }
        store.meta_present = store.read_meta()?;
        let newest_snapshot = store.snapshots()?.last().copied();
        let newest_batch_end = store.newest_batch_end()?;
        if !store.meta_present && (newest_batch_end.is_some() || newest_snapshot.is_some()) {
            return Err(StoreError::corrupt(format!(
                "stream {} holds batches or snapshots but no {} format marker: it was not written by \
                 presence-storage-nats; use another stream",
                store.options.stream,
                store.subjects.meta()
            )));
        }
        store.next_seq =
            newest_batch_end.unwrap_or(1).max(newest_snapshot.map_or(1, |s| s.saturating_add(1)));
        Ok(Some(store))
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.options.stream
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &NatsOptions {
        &self.options
    }

    /// The subjects the store uses in its stream.
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    /// The server's `max_payload` (from its INFO) when the store connected.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Why this store may not write any more, if it was fenced.
    pub fn fenced(&self) -> Option<&str> {
        self.fenced.as_deref()
    }

    /// The stream's last sequence number as this store knows it (the fence of its next
    /// write).
    pub fn last_stream_seq(&self) -> u64 {
        self.last_stream_seq
    }

    /// What the stream holds now, as the server reports it: messages, bytes, and the replica
    /// count. For operators (`presence inspect`).
    pub fn stream_state(&self) -> Result<StreamSummary, StoreError> {
        let info = self.call("read the stream's state", |api| async move { api.info(None).await })?;
        Ok(StreamSummary {
            messages: info.state.messages,
            bytes: info.state.bytes,
            first_stream_seq: info.state.first_seq,
            last_stream_seq: info.state.last_seq,
            replicas: info.config.num_replicas,
            leader: info.cluster.and_then(|c| c.leader),
        })
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.options.operation_timeout
    }

    /// Runs one API call, retrying while the servers do not answer, and turns a failure
    /// into an error saying what was being done.
    fn call<T, F, Fut>(&self, what: &str, attempt: F) -> Result<T, StoreError>
    where
        F: Fn(Api) -> Fut,
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        let deadline = self.deadline();
        let api = &self.api;
        self.runtime
            .block_on(retrying(deadline, || attempt(api.clone())))?
            .map_err(|failure| self.failed(what, &failure))
    }

    fn failed(&self, what: &str, failure: &Failure) -> StoreError {
        let hint = match failure {
            Failure::Unavailable(_) | Failure::Refused(_) if failure.is_transient() => {
                format!(
                    " (no answer within {:?}): check that the NATS servers are up, run with JetStream (-js), \
                     and that the stream has a leader",
                    self.options.operation_timeout
                )
            }
            _ => String::new(),
        };
        StoreError::new(
            StoreErrorKind::Io,
            format!(
                "cannot {what} in stream {} at {}: {failure}{hint}",
                self.options.stream, self.options.url
            ),
        )
    }

    pub(crate) fn get(&self, what: &str, request: MsgGet) -> Result<Option<RawMsg>, StoreError> {
        self.call(what, move |api| {
            let request = request.clone();
            async move { api.get(&request).await }
        })
    }

    /// The stream's last sequence number now, from its information.
    fn stream_last_seq(&self) -> Result<u64, StoreError> {
        let api = &self.api;
        match self.runtime.block_on(retrying(self.deadline(), || api.info(None)))? {
            Ok(info) => Ok(info.state.last_seq),
            Err(failure) => Err(self.failed("read the stream's information", &failure)),
        }
    }

    /// The stream's information, after creating it if it is missing and
    /// [`NatsOptions::create`] is set; `None` if it is missing and not to be created.
    fn info_or_create(&self) -> Result<Option<StreamInfo>, StoreError> {
        let deadline = self.deadline();
        let api = &self.api;
        let info = self.runtime.block_on(retrying(deadline, || api.info(None)))?;
        let failure = match info {
            Ok(info) => return Ok(Some(info)),
            Err(failure) => failure,
        };
        let stream = &self.options.stream;
        let url = &self.options.url;
        if failure.err_code() != Some(ERR_STREAM_NOT_FOUND) {
            if let Failure::Unavailable(m) = &failure {
                if m.contains("no responders") {
                    return Err(StoreError::new(
                        StoreErrorKind::Io,
                        format!(
                            "NATS at {url} has no JetStream (nothing answers its API): start nats-server \
                             with JetStream on (-js)"
                        ),
                    ));
                }
            }
            return Err(self.failed("read the stream's information", &failure));
        }
        if !self.options.create {
            return Ok(None);
        }
        let subjects = self.subjects.stream_subjects();
        let replicas = self.options.replicas;
        let created = self.runtime.block_on(retrying(deadline, || api.create(&subjects, replicas)))?;
        match created {
            Ok(info) => Ok(Some(info)),
            // Another process created it in the meantime (or is creating it: then the first
            // read may not find it yet).
            Err(f) if created_meanwhile(&f) => loop {
                match self.runtime.block_on(retrying(deadline, || api.info(None)))? {
                    Ok(info) => return Ok(Some(info)),
                    Err(again) if Instant::now() < deadline && again.err_code() == Some(ERR_STREAM_NOT_FOUND) => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => {
                        return Err(StoreError::new(
                            StoreErrorKind::Io,
                            format!("cannot create stream {stream} at {url}: {f}"),
                        ))
                    }
                }
            },
            Err(f) => Err(StoreError::new(
                StoreErrorKind::Io,
                format!(
                    "cannot create stream {stream} with {replicas} replicas at {url}: {f} (a cluster needs at \
                     least as many JetStream servers as replicas)"
                ),
            )),
        }
    }

    fn check_subjects(&self, info: &StreamInfo) -> Result<(), StoreError> {
        let wildcard = format!("{}.>", self.options.stream);
        let configured = &info.config.subjects;
        for subject in self.subjects.stream_subjects() {
            if !configured.iter().any(|c| *c == subject || *c == wildcard || c == ">") {
                return Err(StoreError::new(
                    StoreErrorKind::Contract,
                    format!(
                        "stream {} captures {configured:?}, not {subject}: it was not made by \
                         presence-storage-nats; use another stream name",
                        self.options.stream
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Reads the format marker: whether there is one, refusing a newer layout.
    fn read_meta(&self) -> Result<bool, StoreError> {
        let Some(msg) = self.get("read the format marker", MsgGet::last(&self.subjects.meta()))? else {
            return Ok(false);
        };
        let version = msg.header_u64(HEADER_FORMAT)?;
        match u8::try_from(version) {
            Ok(STORE_FORMAT_VERSION) => Ok(true),
            Ok(0) => Err(StoreError::corrupt(format!(
                "stream {} has format version 0 in its marker (stream sequence {})",
                self.options.stream, msg.seq
            ))),
            _ => Err(StoreError::new(
                StoreErrorKind::UnsupportedVersion,
                format!(
                    "stream {} has layout version {version}; this build reads up to {STORE_FORMAT_VERSION} \
                     (open it with a newer build)",
                    self.options.stream
                ),
            )),
        }
    }

    /// One past the newest batch's last event, checking that batch whole (a torn or
    /// foreign newest message fails the open).
    fn newest_batch_end(&self) -> Result<Option<u64>, StoreError> {
        let Some(msg) = self.get("read the newest batch", MsgGet::last(&self.subjects.batch()))? else {
            return Ok(None);
        };
        let pos = BatchPos::of(&msg)?;
        let what = format!("the newest batch, at sequence {} (stream sequence {}),", pos.first_seq, msg.seq);
        let header = stored_header(pos.first_seq, msg.seq, &msg.payload)
            .map_err(|e| StoreError::new(e.kind(), format!("{what} is not readable: {}", e.message())))?;
        if header.count != pos.count {
            return Err(StoreError::corrupt(format!(
                "{what} has {} events in its {HEADER_COUNT} header but {} in its bytes",
                pos.count, header.count
            )));
        }
        codec::decode_batch(&msg.payload).map_err(|e| match e.kind() {
            StoreErrorKind::Corrupt => StoreError::corrupt(format!(
                "{what} is torn or corrupt ({}); the log cannot continue past it (see it with `nats stream get \
                 {} {}`)",
                e.message(),
                self.options.stream,
                msg.seq
            )),
            _ => e,
        })?;
        Ok(Some(pos.first_seq + u64::from(pos.count)))
    }

    /// Where the batch holding event `seq` is: the last batch whose first event is at or
    /// before `seq`, or the first batch when every batch starts after it (`None`: no
    /// batch). A binary search over stream sequence numbers, reading headers only.
    pub(crate) fn find_batch(&self, seq: u64) -> Result<Option<BatchPos>, StoreError> {
        let batch = self.subjects.batch();
        let Some(first) = self.get("read the oldest batch", MsgGet::next(&batch, 1))? else {
            return Ok(None);
        };
        let first = BatchPos::of(&first)?;
        if seq <= first.first_seq {
            return Ok(Some(first));
        }
        let Some(last) = self.get("read the newest batch", MsgGet::last(&batch))? else {
            return Ok(Some(first));
        };
        let last = BatchPos::of(&last)?;
        if last.first_seq <= seq {
            return Ok(Some(last));
        }
        // The answer is at `lo` or between `lo` and `hi`; no batch from `hi` on starts at or
        // before `seq`.
        let (mut lo, mut hi) = (first, last.stream_seq);
        while hi - lo.stream_seq > 1 {
            let mid = lo.stream_seq + (hi - lo.stream_seq) / 2;
            match self.get("search the log", MsgGet::next(&batch, mid))? {
                Some(msg) if msg.seq < hi => {
                    let pos = BatchPos::of(&msg)?;
                    if pos.first_seq <= seq {
                        lo = pos;
                    } else {
                        hi = pos.stream_seq;
                    }
                }
                _ => hi = mid,
            }
        }
        Ok(Some(lo))
    }

    fn check_not_fenced(&self) -> Result<(), StoreError> {
        match &self.fenced {
            Some(reason) => Err(StoreError::new(StoreErrorKind::Fenced, reason.clone())),
            None => Ok(()),
        }
    }

    fn fence(&mut self, reason: String) -> StoreError {
        self.fenced = Some(reason.clone());
        StoreError::new(StoreErrorKind::Fenced, reason)
    }

    /// Publishes one message fenced on the stream's last sequence number and returns its
    /// stream sequence number. A publish that gets no answer is retried with the same
    /// message id and fence until [`NatsOptions::operation_timeout`]; JetStream's
    /// de-duplication answers a retry of a publish it already stored with that message.
    fn publish_fenced(
        &mut self,
        subject: &str,
        mut headers: HeaderMap,
        payload: &[u8],
        what: &str,
    ) -> Result<u64, StoreError> {
        self.check_not_fenced()?;
        self.publishes += 1;
        let msg_id = format!("{}-{}-{}", self.options.stream, self.writer, self.publishes);
        let expected = self.last_stream_seq;
        headers.insert(NATS_MSG_ID, msg_id.as_str());
        headers.insert(NATS_EXPECTED_LAST_SEQ, expected.to_string().as_str());
        let deadline = self.deadline();
        let api = &self.api;
        let mut attempts = 0u32;
        let outcome = self.runtime.block_on(retrying(deadline, || {
            attempts += 1;
            api.publish(subject, headers.clone(), payload)
        }))?;
        match outcome {
            // A duplicate acknowledgement is for this very publish: message ids are unique
            // per publish, retries share one.
            Ok(ack) if ack.stream == self.options.stream => {
                self.last_stream_seq = ack.seq;
                Ok(ack.seq)
            }
            Ok(ack) => Err(StoreError::new(
                StoreErrorKind::Io,
                format!(
                    "{what} was stored in stream {:?}, not {}: another stream captures {subject}",
                    ack.stream, self.options.stream
                ),
            )),
            Err(Failure::Refused(e)) if e.err_code == ERR_WRONG_LAST_SEQUENCE => {
                // A retry can meet its own earlier try, stored after all.
                if attempts > 1 && self.stored_as(expected + 1, &msg_id)? {
                    self.last_stream_seq = expected + 1;
                    return Ok(expected + 1);
                }
                Err(self.fence(format!(
                    "fenced: stream {} moved under this writer ({}; this store expected {expected}) when it \
                     wrote {what}. Another writer appended to the log, or an earlier write of this store that \
                     reported an error was stored after all. This store will not write again: reopen the log to \
                     learn what it holds, and let only one writer append to a stream",
                    self.options.stream, e.description
                )))
            }
            Err(failure) if failure.is_transient() => Err(StoreError::new(
                StoreErrorKind::Io,
                format!(
                    "{what} got no acknowledgement from NATS at {} within {:?} ({failure}); it may or may not be \
                     stored, and the next write finds out (if it was, this store is fenced and the log must be \
                     reopened). Check that the servers are up and the stream has a leader",
                    self.options.url, self.options.operation_timeout
                ),
            )),
            Err(failure) => Err(StoreError::new(
                StoreErrorKind::Io,
                format!("NATS refused {what} in stream {}: {failure}", self.options.stream),
            )),
        }
    }

    /// Whether the message at stream sequence `seq` is the one published with `msg_id`.
    fn stored_as(&self, seq: u64, msg_id: &str) -> Result<bool, StoreError> {
        let msg = self.get("check an earlier try of a write", MsgGet::at(seq))?;
        Ok(msg.is_some_and(|m| m.header(NATS_MSG_ID) == Some(msg_id)))
    }

    /// The batches stored after stream sequence number `after`, at most `max` of them, each
    /// with its stream sequence number: for a reader that follows the log as it grows (a
    /// cluster node learning another shard's status changes from its batches' outboxes,
    /// docs/SPEC.md R9.2). Start from [`NatsStore::last_stream_seq`] to follow from now, or
    /// from 0 for the whole log; pass the last number returned to go on. One request when
    /// nothing is new.
    pub fn batches_after(&self, after: u64, max: usize) -> Result<Vec<(u64, StoredBatch)>, StoreError> {
        // The stream's information first (it costs one request, as a `MSG.GET` that finds
        // nothing does): nothing newer means no message is asked for, so a follower never asks
        // for one from a stream still being created (see `open_existing`).
        if self.stream_last_seq()? <= after {
            return Ok(Vec::new());
        }
        let subject = self.subjects.batch();
        let mut batches = Vec::new();
        let mut next = after.saturating_add(1);
        while batches.len() < max {
            let Some(msg) = self.get("follow the log", MsgGet::next(&subject, next))? else { break };
            next = msg.seq.saturating_add(1);
            let seq = msg.seq;
            let pos = BatchPos::of(&msg)?;
            let header = stored_header(pos.first_seq, msg.seq, &msg.payload)?;
            batches.push((
                seq,
                StoredBatch { first_seq: pos.first_seq, count: header.count, bytes: msg.payload },
            ));
        }
        Ok(batches)
    }

    /// Claims the log for `owner` (a node of a cluster taking a shard over, docs/SPEC.md R9.6):
    /// publishes a format marker naming the owner, fenced like every write, so that any
    /// other writer that opened the stream before this store did is fenced from now on: its
    /// next write fails with [`StoreErrorKind::Fenced`]. Fails with `Fenced` itself when
    /// another writer has appended since this store opened (reopen, replay what it wrote, and
    /// claim again). Returns the claim's stream sequence number.
    pub fn claim(&mut self, owner: &str) -> Result<u64, StoreError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_FORMAT, STORE_FORMAT_VERSION.to_string().as_str());
        headers.insert(HEADER_OWNER, owner);
        let seq =
            self.publish_fenced(&self.subjects.meta(), headers, &meta_payload(), "a claim of the log")?;
        self.meta_present = true;
        Ok(seq)
    }

    /// The owner named by the newest claim of the log ([`NatsStore::claim`]), with its stream
    /// sequence number; `None` if nobody has claimed it.
    pub fn owner(&self) -> Result<Option<(String, u64)>, StoreError> {
        let Some(msg) = self.get("read the log's owner", MsgGet::last(&self.subjects.meta()))? else {
            return Ok(None);
        };
        Ok(msg.header(HEADER_OWNER).map(|owner| (owner.to_string(), msg.seq)))
    }

    /// Writes the format marker before the first batch or snapshot of a new stream.
    fn ensure_meta(&mut self) -> Result<(), StoreError> {
        if self.meta_present {
            return Ok(());
        }
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_FORMAT, STORE_FORMAT_VERSION.to_string().as_str());
        self.publish_fenced(&self.subjects.meta(), headers, &meta_payload(), "the format marker")?;
        self.meta_present = true;
        Ok(())
    }

    /// The newest commit record of the snapshot at `last_seq`, with its stream sequence.
    fn commit_of(&self, last_seq: u64) -> Result<Option<(SnapshotCommit, u64)>, StoreError> {
        let Some(msg) =
            self.get("read a snapshot's commit record", MsgGet::last(&self.subjects.commit(last_seq)))?
        else {
            return Ok(None);
        };
        let commit: SnapshotCommit = serde_json::from_slice(&msg.payload).map_err(|e| {
            StoreError::with_source(
                StoreErrorKind::Corrupt,
                format!(
                    "the commit record of the snapshot at sequence {last_seq} (stream sequence {}) does not parse",
                    msg.seq
                ),
                e,
            )
        })?;
        if commit.last_seq != last_seq {
            return Err(StoreError::corrupt(format!(
                "the commit record at stream sequence {} is on the subject of the snapshot at sequence {last_seq} \
                 but says {}",
                msg.seq, commit.last_seq
            )));
        }
        Ok(Some((commit, msg.seq)))
    }

    /// Subjects in the stream matching `filter` (with a message count each).
    fn subjects_matching(&self, filter: &str) -> Result<Vec<String>, StoreError> {
        let filter = filter.to_string();
        let info = self.call("list the stream's subjects", move |api| {
            let filter = filter.clone();
            async move { api.info(Some(&filter)).await }
        })?;
        Ok(info
            .state
            .subjects
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, _)| s)
            .collect())
    }

    /// Removes the messages on `filter` (no wildcards) below stream sequence `below` (`None`:
    /// all of them), oldest first.
    ///
    /// On a server outside a cluster that is one `STREAM.PURGE`. In a cluster it is one
    /// `STREAM.MSG.DELETE` per message: nats-server before 2.9.18 replays a purge from its
    /// raft log after a restart as a purge of *every* message up to the stream's last
    /// sequence at the time of the purge, ignoring its filter and sequence
    /// (`purgeStreamOp` in `jetstream_cluster.go`), which would wipe the snapshot and the
    /// tail the compaction meant to keep; a delete is replayed exactly.
    fn remove(&self, filter: &str, below: Option<u64>) -> Result<(), StoreError> {
        let below = below.unwrap_or(u64::MAX);
        // A purge below stream sequence 1 (or 0) would purge everything on the subject.
        if below <= 1 {
            return Ok(());
        }
        if !self.clustered {
            let filter_owned = filter.to_string();
            let seq = (below != u64::MAX).then_some(below);
            self.call(&format!("purge {filter}"), move |api| {
                let filter = filter_owned.clone();
                async move { api.purge(&filter, seq).await }
            })?;
            return Ok(());
        }
        let mut next = 1;
        while next < below {
            let Some(msg) = self.get(&format!("list {filter}"), MsgGet::next(filter, next))? else {
                return Ok(());
            };
            if msg.seq >= below {
                return Ok(());
            }
            let seq = msg.seq;
            self.call(&format!("delete the message at stream sequence {seq}"), move |api| async move {
                api.delete(seq).await
            })?;
            next = seq.saturating_add(1);
        }
        Ok(())
    }
}

/// What a stream holds, from [`NatsStore::stream_state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    /// Messages in the stream (batches, snapshot chunks and commits, the format marker).
    pub messages: u64,
    /// Their bytes as the server counts them (per replica).
    pub bytes: u64,
    /// The oldest message's stream sequence number.
    pub first_stream_seq: u64,
    /// The newest message's stream sequence number.
    pub last_stream_seq: u64,
    /// How many servers hold a copy.
    pub replicas: usize,
    /// The server leading the stream (a clustered server only).
    pub leader: Option<String>,
}

impl EventStore for NatsStore {
    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Publishes `bytes` as one message on `<stream>.batch`. Besides the trait's checks it
    /// refuses, with [`StoreErrorKind::Contract`], bytes whose codec header does not say
    /// `first_seq` and `count`, and with [`StoreErrorKind::TooLarge`] (before sending
    /// anything) bytes over [`batch_bytes_max`](EventStore::batch_bytes_max). A store that
    /// was fenced fails with [`StoreErrorKind::Fenced`].
    fn append(&mut self, first_seq: u64, count: u32, bytes: &[u8]) -> Result<(), StoreError> {
        self.check_not_fenced()?;
        check_contiguous(self.next_seq, first_seq, count)?;
        if bytes.len() > self.batch_bytes_max {
            return Err(StoreError::new(
                StoreErrorKind::TooLarge,
                format!(
                    "a batch of {} bytes is over the {} bytes a message may carry here (the server's max_payload \
                     of {} less {HEADROOM_BYTES} for headers); split it, or raise max_payload on the servers",
                    bytes.len(),
                    self.batch_bytes_max,
                    self.max_payload
                ),
            ));
        }
        match stored_header(first_seq, 0, bytes) {
            Ok(header) if header.count == count => {}
            Ok(header) => {
                return Err(StoreError::new(
                    StoreErrorKind::Contract,
                    format!("append of {count} events at {first_seq} whose header says {}", header.count),
                ))
            }
            Err(e) => {
                return Err(StoreError::new(
                    StoreErrorKind::Contract,
                    format!("append at {first_seq} of bytes that are not a codec batch: {}", e.message()),
                ))
            }
        }
        self.ensure_meta()?;
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_FIRST_SEQ, first_seq.to_string().as_str());
        headers.insert(HEADER_COUNT, count.to_string().as_str());
        let subject = self.subjects.batch();
        let prev = self.last_stream_seq;
        let seq =
            self.publish_fenced(&subject, headers, bytes, &format!("the batch at sequence {first_seq}"))?;
        self.next_seq = first_seq + u64::from(count);
        if let Some(announce) = &self.options.announce {
            let headers = announce::headers(first_seq, count, seq, prev);
            self.runtime.block_on(self.api.announce(announce, headers, bytes))?;
        }
        Ok(())
    }

    fn batch_bytes_max(&self) -> usize {
        self.batch_bytes_max
    }

    /// Nothing to do: every append returned only after JetStream acknowledged it, which on a
    /// stream of R replicas means a quorum of them stored it. (nats-server 2.9 writes its
    /// files at once but fsyncs them only every 60 seconds, so with one replica a crash of
    /// the machine, not just of the server process, can lose acknowledged batches.)
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Streams the batches from the one holding `from_seq`, fetched one message at a time
    /// by a task on the store's runtime that stays at most a few messages ahead (memory
    /// stays bounded whatever the log's size).
    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        let start = match self.find_batch(from_seq)? {
            Some(pos) => pos.stream_seq,
            None => return Ok(Box::new(std::iter::empty())),
        };
        let handle = self
            .runtime
            .handle()
            .ok_or_else(|| StoreError::new(StoreErrorKind::Io, "the NATS client's runtime is shut down"))?;
        let reader = BatchReader::spawn(
            handle,
            self.api.clone(),
            self.subjects.batch(),
            start,
            from_seq,
            self.options.operation_timeout,
        );
        Ok(Box::new(reader))
    }

    /// Publishes the snapshot in chunks of at most [`batch_bytes_max`](EventStore::batch_bytes_max)
    /// bytes on `<stream>.snap.<last_seq>.chunk`, then its commit record on
    /// `<stream>.snap.<last_seq>.commit`. Only a committed snapshot is listed; an
    /// interrupted save leaves chunks that compaction removes.
    fn save_snapshot(&mut self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.check_not_fenced()?;
        self.ensure_meta()?;
        let chunk_bytes = self.batch_bytes_max.max(1);
        let chunks = u32::try_from(bytes.len().div_ceil(chunk_bytes)).map_err(|_| {
            StoreError::new(
                StoreErrorKind::TooLarge,
                format!("a snapshot of {} bytes has too many chunks", bytes.len()),
            )
        })?;
        let id = format!("{}-{}", self.writer, self.publishes + 1);
        let chunk_subject = self.subjects.chunk(last_seq);
        let mut first_chunk = 0;
        for (i, chunk) in bytes.chunks(chunk_bytes).enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_SNAPSHOT_ID, id.as_str());
            headers.insert(HEADER_CHUNK, i.to_string().as_str());
            let what = format!("chunk {i} of {chunks} of the snapshot at sequence {last_seq}");
            let seq = self.publish_fenced(&chunk_subject, headers, chunk, &what)?;
            if i == 0 {
                first_chunk = seq;
            } else if Some(seq) != first_chunk.checked_add(i as u64) {
                return Err(self.fence(format!(
                    "fenced: {what} was stored at stream sequence {seq}, not right after the chunk before it \
                     (another writer in between); reopen the log"
                )));
            }
        }
        let commit = SnapshotCommit {
            last_seq,
            id: id.clone(),
            chunks,
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
            first_chunk,
        };
        let payload = serde_json::to_vec(&commit).map_err(|e| {
            StoreError::with_source(StoreErrorKind::Contract, "cannot encode a commit record", e)
        })?;
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_SNAPSHOT_ID, id.as_str());
        let what = format!("the commit record of the snapshot at sequence {last_seq}");
        self.publish_fenced(&self.subjects.commit(last_seq), headers, &payload, &what)?;
        Ok(())
    }

    /// The snapshots with a commit record (from the stream's per-subject counts).
    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        let seqs: BTreeSet<u64> = self
            .subjects_matching(&self.subjects.all_commits())?
            .iter()
            .filter_map(|s| self.subjects.parse_snapshot(s))
            .filter(|(_, part)| *part == SnapshotPart::Commit)
            .map(|(seq, _)| seq)
            .collect();
        Ok(seqs.into_iter().collect())
    }

    /// Reads the newest commit record of the snapshot and its chunks, checking each chunk's
    /// subject, save id and index, then the size and CRC-32 of the whole. Damage is a
    /// [`StoreErrorKind::Corrupt`] error naming the stream sequence numbers.
    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((commit, commit_seq)) = self.commit_of(last_seq)? else {
            return Ok(None);
        };
        let what = format!("the snapshot at sequence {last_seq} (commit at stream sequence {commit_seq})");
        // The size is the peer's word: reserve no more than a chunk's worth up front.
        let mut out =
            Vec::with_capacity(usize::try_from(commit.bytes).unwrap_or(0).min(self.batch_bytes_max));
        let chunk_subject = self.subjects.chunk(last_seq);
        for i in 0..commit.chunks {
            let seq = commit.first_chunk.checked_add(u64::from(i)).unwrap_or(0);
            let msg = self.get("read a snapshot chunk", MsgGet::at(seq))?;
            let chunk = match msg {
                Some(m)
                    if m.subject == chunk_subject
                        && m.header(HEADER_SNAPSHOT_ID) == Some(commit.id.as_str())
                        && m.header(HEADER_CHUNK) == Some(i.to_string().as_str()) =>
                {
                    m
                }
                _ => {
                    return Err(StoreError::corrupt(format!(
                        "{what}: chunk {i} of {} is missing at stream sequence {seq}",
                        commit.chunks
                    )))
                }
            };
            if out.len() as u64 + chunk.payload.len() as u64 > commit.bytes {
                return Err(StoreError::corrupt(format!("{what} is larger than its {} bytes", commit.bytes)));
            }
            out.extend_from_slice(&chunk.payload);
        }
        if out.len() as u64 != commit.bytes || crc32fast::hash(&out) != commit.crc32 {
            return Err(StoreError::corrupt(format!(
                "{what} fails its size or checksum ({} bytes read, {} committed)",
                out.len(),
                commit.bytes
            )));
        }
        Ok(Some(out))
    }

    /// Removes what the trait says, oldest first, in steps that each leave a recoverable
    /// log (a purge per subject on a single server, message deletes in a cluster: see
    /// below):
    /// 1. for each snapshot older than `upto_seq`: its commit records, then its chunks (so a
    ///    listed snapshot always has its chunks);
    /// 2. chunks of saves that never committed, below `upto_seq`;
    /// 3. the batches whose every event is `<= upto_seq` (those on `<stream>.batch` below
    ///    the stream sequence of the first batch still needed), oldest first, so what
    ///    remains is a contiguous tail after the snapshot.
    ///
    /// Refuses with [`StoreErrorKind::Contract`] when no snapshot covers `upto_seq`, and
    /// fences the store (and removes nothing) when the stream moved under it: removals are
    /// not fenced by the server, so the store checks first.
    ///
    /// In a cluster every message is deleted on its own (`STREAM.MSG.DELETE`), one raft
    /// round trip each: nats-server before 2.9.18 replays a purge after a restart as a purge
    /// of everything up to the stream's last sequence at the time, ignoring its filter.
    fn compact(&mut self, upto_seq: u64) -> Result<(), StoreError> {
        self.check_not_fenced()?;
        let snapshots = self.snapshots()?;
        let covered = snapshots.last().is_some_and(|&newest| newest >= upto_seq);
        if !covered {
            return Err(StoreError::new(
                StoreErrorKind::Contract,
                format!("compaction up to {upto_seq} without a snapshot covering it would lose events"),
            ));
        }
        let info = self.call("read the stream's state", |api| async move { api.info(None).await })?;
        if info.state.last_seq != self.last_stream_seq {
            return Err(self.fence(format!(
                "fenced: stream {} moved under this writer (its last sequence is {}, this store expected {}) \
                 before a compaction; nothing was removed. Reopen the log",
                self.options.stream, info.state.last_seq, self.last_stream_seq
            )));
        }
        for &seq in snapshots.iter().filter(|&&s| s < upto_seq) {
            self.remove(&self.subjects.commit(seq), None)?;
            self.remove(&self.subjects.chunk(seq), None)?;
        }
        let committed: BTreeSet<u64> = snapshots.iter().copied().collect();
        for subject in self.subjects_matching(&self.subjects.all_chunks())? {
            if let Some((seq, SnapshotPart::Chunk)) = self.subjects.parse_snapshot(&subject) {
                if seq < upto_seq && !committed.contains(&seq) {
                    self.remove(&subject, None)?;
                }
            }
        }
        let below = match self.find_batch(upto_seq.saturating_add(1))? {
            None => return Ok(()),
            // It holds `upto_seq + 1` (or starts after it): keep it and everything after.
            Some(pos) if pos.last_seq() > upto_seq => pos.stream_seq,
            // Every batch ends at or before `upto_seq`.
            Some(pos) => pos.stream_seq + 1,
        };
        self.remove(&self.subjects.batch(), Some(below))
    }
}

//! [`BatchReader`]: `read_from`'s iterator, which streams batches without loading the log.

use std::time::{Duration, Instant};

use presence_engine::{StoreError, StoreErrorKind, StoredBatch};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::api::{retrying, Api, MsgGet, RawMsg};
use crate::layout::{stored_header, BatchPos};

/// How many messages the fetching task may hold ahead of the caller. With messages of at
/// most `max_payload` bytes (1 MiB by default) a reader holds a few MiB at most.
const PREFETCH_MESSAGES: usize = 4;

/// Batches in stream order from a stream sequence number on. A task on the store's runtime
/// fetches one message at a time (`STREAM.MSG.GET` with `next_by_subj`, served by the
/// stream's leader, so the reader never sees a lagging replica) and queues at most
/// [`PREFETCH_MESSAGES`] of them, so fetching overlaps the caller's decoding. The first
/// error ends the iteration. Dropping the reader stops the task.
pub(crate) struct BatchReader {
    messages: mpsc::Receiver<Result<RawMsg, StoreError>>,
    task: JoinHandle<()>,
    from_seq: u64,
    done: bool,
}

impl BatchReader {
    pub(crate) fn spawn(
        runtime: &tokio::runtime::Handle,
        api: Api,
        subject: String,
        start: u64,
        from_seq: u64,
        operation_timeout: Duration,
    ) -> Self {
        let (sender, messages) = mpsc::channel(PREFETCH_MESSAGES);
        let task = runtime.spawn(fetch(api, subject, start, sender, operation_timeout));
        Self { messages, task, from_seq, done: false }
    }
}

async fn fetch(
    api: Api,
    subject: String,
    mut next: u64,
    sender: mpsc::Sender<Result<RawMsg, StoreError>>,
    operation_timeout: Duration,
) {
    loop {
        let deadline = Instant::now() + operation_timeout;
        let request = MsgGet::next(&subject, next);
        let item = match retrying(deadline, || api.get(&request)).await {
            Ok(Some(msg)) => {
                next = msg.seq.saturating_add(1);
                Ok(msg)
            }
            Ok(None) => return,
            Err(failure) => Err(StoreError::new(
                StoreErrorKind::Io,
                format!(
                    "cannot read stream {} from stream sequence {next}: {failure} (check that the NATS servers \
                     are up and the stream has a leader)",
                    api.stream()
                ),
            )),
        };
        let failed = item.is_err();
        if sender.send(item).await.is_err() || failed {
            return;
        }
    }
}

/// A batch message as the engine gets it: its headers, its codec header and its count must
/// agree, and errors name the event and stream sequence numbers.
fn to_batch(msg: RawMsg) -> Result<StoredBatch, StoreError> {
    let pos = BatchPos::of(&msg)?;
    let header = stored_header(pos.first_seq, msg.seq, &msg.payload)?;
    if header.count != pos.count {
        return Err(StoreError::corrupt(format!(
            "batch at sequence {} (stream sequence {}) has {} events in its headers but {} in its bytes",
            pos.first_seq, msg.seq, pos.count, header.count
        )));
    }
    Ok(StoredBatch { first_seq: pos.first_seq, count: header.count, bytes: msg.payload })
}

impl Iterator for BatchReader {
    type Item = Result<StoredBatch, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if tokio::runtime::Handle::try_current().is_ok() {
            self.done = true;
            return Some(Err(StoreError::new(
                StoreErrorKind::Contract,
                "a NatsStore reader was used inside an async runtime, where it would block it; use it from a \
                 plain thread",
            )));
        }
        while !self.done {
            let batch = match self.messages.blocking_recv() {
                None => return None,
                Some(Err(e)) => Err(e),
                Some(Ok(msg)) => to_batch(msg),
            };
            match batch {
                Ok(batch) if batch.last_seq() < self.from_seq => continue,
                Ok(batch) => return Some(Ok(batch)),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

impl Drop for BatchReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

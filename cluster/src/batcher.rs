//! Commands for one shard from many callers, sent to its owner as batches: a caller's command
//! goes out at once while fewer than [`IN_FLIGHT_MAX`] batches to its shard await their
//! answers, and otherwise waits for the next batch, which takes everything queued meanwhile.
//! So one caller pays one round trip, and many callers share a few messages (docs/DESIGN.md,
//! the cluster's wire).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::ClientError;
use crate::wire::{decode_answers, encode_request, frame_requests, CommandAnswer, CommandRequest, Subjects};
use crate::wire::{BATCH_BYTES_TARGET, BATCH_COMMANDS_MAX};

/// How many batches to one shard may await their answers at once: the owner's runtime
/// group-commits one turn while the next batch travels.
pub(crate) const IN_FLIGHT_MAX: usize = 2;

/// What a command's batch brought back: its answer, `None` if no node listens on the shard's
/// subject, or why the batch failed.
type Outcome = Result<Option<CommandAnswer>, ClientError>;

struct Waiting {
    bytes: Vec<u8>,
    timeout: Duration,
    answer: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// Batches sent, awaiting their answers.
    in_flight: usize,
}

impl Queue {
    /// The next batch: as many of the waiting commands, oldest first, as fit.
    fn take(&mut self) -> Vec<Waiting> {
        let mut bytes = 0;
        let mut count = 0;
        for waiting in &self.waiting {
            if count == BATCH_COMMANDS_MAX || (count > 0 && bytes + waiting.bytes.len() > BATCH_BYTES_TARGET)
            {
                break;
            }
            bytes += waiting.bytes.len();
            count += 1;
        }
        self.waiting.drain(..count).collect()
    }
}

/// The queues of every shard of a deployment.
pub(crate) struct Batcher {
    client: async_nats::Client,
    subjects: Subjects,
    shards: Vec<Mutex<Queue>>,
}

impl Batcher {
    pub(crate) fn new(client: async_nats::Client, subjects: Subjects, shards: u32) -> Self {
        Batcher { client, subjects, shards: (0..shards).map(|_| Mutex::default()).collect() }
    }

    /// Sends `request` to the owner of `shard` in the next batch and waits for its answer.
    /// Must run on a tokio runtime (it spawns the batch's sending).
    pub(crate) async fn ask(
        self: &Arc<Self>,
        shard: u32,
        request: &CommandRequest,
        timeout: Duration,
    ) -> Outcome {
        let Some(queue) = self.shards.get(shard as usize) else {
            return Err(ClientError::Unknown(format!("no shard {shard}")));
        };
        let mut bytes = Vec::with_capacity(48);
        encode_request(request, &mut bytes);
        let (answer, answered) = oneshot::channel();
        let batch = {
            let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push(Waiting { bytes, timeout, answer });
            if queue.in_flight < IN_FLIGHT_MAX {
                queue.in_flight += 1;
                Some(queue.take())
            } else {
                None
            }
        };
        if let Some(batch) = batch {
            tokio::spawn(Arc::clone(self).send(shard, batch));
        }
        answered.await.unwrap_or_else(|_| Err(ClientError::Unknown("the client stopped".into())))
    }

    /// Sends `batch`, hands out its answers, and goes on with what queued meanwhile.
    async fn send(self: Arc<Self>, shard: u32, mut batch: Vec<Waiting>) {
        loop {
            let outcomes = self.round_trip(shard, &batch).await;
            for (waiting, outcome) in batch.drain(..).zip(outcomes) {
                let _ = waiting.answer.send(outcome);
            }
            let mut queue = self.shards[shard as usize].lock().unwrap_or_else(PoisonError::into_inner);
            if queue.waiting.is_empty() {
                queue.in_flight -= 1;
                return;
            }
            batch = queue.take();
        }
    }

    /// One request carrying `batch`, and an outcome for each of its commands.
    async fn round_trip(&self, shard: u32, batch: &[Waiting]) -> Vec<Outcome> {
        let same = |outcome: Outcome| vec![outcome; batch.len()];
        let parts: Vec<&[u8]> = batch.iter().map(|w| w.bytes.as_slice()).collect();
        let body = frame_requests(batch.len(), &parts);
        let timeout = batch.iter().map(|w| w.timeout).max().unwrap_or_default();
        let subject = self.subjects.command(shard);
        let request = async_nats::Request::new().payload(Bytes::from(body)).timeout(Some(timeout));
        let payload = match self.client.send_request(subject.clone(), request).await {
            Ok(message) => message.payload,
            Err(e) => {
                return same(match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => Ok(None),
                    async_nats::RequestErrorKind::TimedOut => {
                        Err(ClientError::Unknown(format!("{subject}: no answer within {timeout:?}")))
                    }
                    _ => Err(ClientError::Unknown(format!("{subject}: {e}"))),
                })
            }
        };
        match decode_answers(&payload) {
            Ok(answers) if answers.len() == batch.len() => answers.into_iter().map(|a| Ok(Some(a))).collect(),
            // The owner could not read the batch at all: one refusal says why.
            Ok(mut answers) if answers.len() == 1 => same(Ok(answers.pop())),
            Ok(answers) => same(Err(ClientError::Unknown(format!(
                "{subject}: {} answers to a batch of {}",
                answers.len(),
                batch.len()
            )))),
            Err(e) => {
                same(Err(ClientError::Unknown(format!("{subject}: an answer that does not parse: {e}"))))
            }
        }
    }
}

//! What the store writes into a stream (docs/FORMAT.md, "NATS JetStream stream"): subject
//! names, headers, message ids, the format marker and the snapshot commit record.

use presence_engine::codec::{self, BatchHeader};
use presence_engine::{StoreError, StoreErrorKind};
use serde::{Deserialize, Serialize};

use crate::api::RawMsg;

/// The version of the stream layout (subjects, headers, commit records) written by this
/// build, in the `<stream>.meta` message. A stream with a higher version is refused with
/// [`StoreErrorKind::UnsupportedVersion`]. The codec's version byte inside every batch and
/// snapshot is versioned separately.
pub const STORE_FORMAT_VERSION: u8 = 1;

/// Bytes kept free under the server's `max_payload` for the headers of a message (message
/// id, expected sequence, the store's own headers): a batch may take `max_payload` minus
/// this, and so may a snapshot chunk. Stream names are at most [`STREAM_NAME_BYTES_MAX`]
/// bytes, so every header block fits.
pub const HEADROOM_BYTES: usize = 1024;

/// The longest stream name accepted (JetStream allows more; the headroom above assumes this).
pub const STREAM_NAME_BYTES_MAX: usize = 128;

/// Header of a batch message: its first event sequence number, in decimal.
pub const HEADER_FIRST_SEQ: &str = "Presence-First-Seq";
/// Header of a batch message: how many events it holds, in decimal.
pub const HEADER_COUNT: &str = "Presence-Count";
/// Header of a snapshot chunk: which save it belongs to (`<writer>-<op>`, as in its commit).
pub const HEADER_SNAPSHOT_ID: &str = "Presence-Snapshot-Id";
/// Header of a snapshot chunk: its index in the snapshot, from 0.
pub const HEADER_CHUNK: &str = "Presence-Chunk";
/// Header of the format marker: [`STORE_FORMAT_VERSION`] in decimal.
pub const HEADER_FORMAT: &str = "Presence-Format";
/// On a claim of the log (a format marker that names its new owner): the owner's name.
pub const HEADER_OWNER: &str = "Presence-Owner";

/// JetStream's de-duplication header.
pub(crate) const NATS_MSG_ID: &str = "Nats-Msg-Id";
/// JetStream's stream-wide fence: the stream's last sequence number must be this.
pub(crate) const NATS_EXPECTED_LAST_SEQ: &str = "Nats-Expected-Last-Sequence";

/// The subjects of one presence log in stream `stream`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    stream: String,
}

/// What a snapshot subject names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotPart {
    Chunk,
    Commit,
}

impl Subjects {
    /// The subjects of stream `stream` (a name [`validate_stream_name`] accepted).
    pub fn new(stream: &str) -> Self {
        Self { stream: stream.to_string() }
    }

    /// `<stream>.batch`: one message per appended batch.
    pub fn batch(&self) -> String {
        format!("{}.batch", self.stream)
    }

    /// `<stream>.meta`: the format marker.
    pub fn meta(&self) -> String {
        format!("{}.meta", self.stream)
    }

    /// `<stream>.snap.>`: every snapshot subject.
    pub fn snapshots(&self) -> String {
        format!("{}.snap.>", self.stream)
    }

    /// `<stream>.snap.<last_seq>.chunk`: the chunks of the snapshot covering `last_seq`.
    pub fn chunk(&self, last_seq: u64) -> String {
        format!("{}.snap.{last_seq}.chunk", self.stream)
    }

    /// `<stream>.snap.<last_seq>.commit`: the commit records of that snapshot (the newest
    /// one is the snapshot).
    pub fn commit(&self, last_seq: u64) -> String {
        format!("{}.snap.{last_seq}.commit", self.stream)
    }

    /// `<stream>.snap.*.commit`: every commit subject.
    pub(crate) fn all_commits(&self) -> String {
        format!("{}.snap.*.commit", self.stream)
    }

    /// `<stream>.snap.*.chunk`: every chunk subject.
    pub(crate) fn all_chunks(&self) -> String {
        format!("{}.snap.*.chunk", self.stream)
    }

    /// The subjects the stream must capture.
    pub fn stream_subjects(&self) -> [String; 3] {
        [self.batch(), self.meta(), self.snapshots()]
    }

    /// Reads `<stream>.snap.<seq>.chunk|commit`.
    pub(crate) fn parse_snapshot(&self, subject: &str) -> Option<(u64, SnapshotPart)> {
        let rest = subject.strip_prefix(&self.stream)?.strip_prefix(".snap.")?;
        let (seq, part) = rest.split_once('.')?;
        let part = match part {
            "chunk" => SnapshotPart::Chunk,
            "commit" => SnapshotPart::Commit,
            _ => return None,
        };
        Some((seq.parse().ok()?, part))
    }
}

/// Checks that `name` can name a stream and prefix its subjects: 1 to
/// [`STREAM_NAME_BYTES_MAX`] bytes of ASCII letters, digits, `_` and `-`.
pub fn validate_stream_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= STREAM_NAME_BYTES_MAX
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        return Ok(());
    }
    Err(StoreError::new(
        StoreErrorKind::Contract,
        format!(
            "{name:?} cannot name a presence stream: use 1 to {STREAM_NAME_BYTES_MAX} ASCII letters, \
             digits, '_' or '-' (it also prefixes the stream's subjects)"
        ),
    ))
}

/// The commit record of a snapshot: the JSON payload of `<stream>.snap.<last_seq>.commit`,
/// published after every chunk was acknowledged. A snapshot without one is not listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCommit {
    /// The last event sequence number the snapshot covers (also in the subject).
    pub last_seq: u64,
    /// Which save wrote it (`<writer>-<op>`); every chunk carries the same id.
    pub id: String,
    /// How many chunks.
    pub chunks: u32,
    /// The snapshot's size in bytes (the chunks concatenated).
    pub bytes: u64,
    /// CRC-32 (IEEE) of the snapshot's bytes.
    pub crc32: u32,
    /// The stream sequence number of chunk 0; chunk `i` is at `first_chunk + i` (a fenced
    /// writer's messages are consecutive). Unused when `chunks` is 0.
    pub first_chunk: u64,
}

/// The format marker's payload.
pub(crate) fn meta_payload() -> Vec<u8> {
    format!("{{\"format\":\"presence-storage-nats\",\"version\":{STORE_FORMAT_VERSION}}}").into_bytes()
}

/// Reads the batch message at stream sequence `stream_seq` whose `Presence-First-Seq`
/// header says `first_seq`: its codec header must agree. The error names both sequence
/// numbers and keeps the codec's kind (a newer version stays
/// [`StoreErrorKind::UnsupportedVersion`]).
pub(crate) fn stored_header(
    first_seq: u64,
    stream_seq: u64,
    bytes: &[u8],
) -> Result<BatchHeader, StoreError> {
    let header = codec::batch_header(bytes).map_err(|e| {
        StoreError::new(
            e.kind(),
            format!("batch at sequence {first_seq} (stream sequence {stream_seq}): {}", e.message()),
        )
    })?;
    if header.first_seq != first_seq
        || header.count == 0
        || first_seq.checked_add(u64::from(header.count)).is_none()
    {
        return Err(StoreError::corrupt(format!(
            "batch at sequence {first_seq} (stream sequence {stream_seq}) says it starts at {} with {} events",
            header.first_seq, header.count
        )));
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_their_parse() {
        let s = Subjects::new("log-1");
        assert_eq!(s.batch(), "log-1.batch");
        assert_eq!(s.chunk(42), "log-1.snap.42.chunk");
        assert_eq!(s.parse_snapshot("log-1.snap.42.commit"), Some((42, SnapshotPart::Commit)));
        assert_eq!(s.parse_snapshot("log-1.snap.42.chunk"), Some((42, SnapshotPart::Chunk)));
        assert_eq!(s.parse_snapshot("log-1.snap.x.chunk"), None);
        assert_eq!(s.parse_snapshot("log-10.snap.1.chunk"), None);
        assert_eq!(s.parse_snapshot("log-1.snap.1.other"), None);
    }

    #[test]
    fn stream_names() {
        assert!(validate_stream_name("presence_1-a").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(129)] {
            assert_eq!(validate_stream_name(bad).unwrap_err().kind(), StoreErrorKind::Contract, "{bad}");
        }
    }
}

/// Where a batch is in the stream, from its headers alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchPos {
    pub stream_seq: u64,
    pub first_seq: u64,
    pub count: u32,
}

impl BatchPos {
    pub(crate) fn of(msg: &RawMsg) -> Result<BatchPos, StoreError> {
        let first_seq = msg.header_u64(HEADER_FIRST_SEQ)?;
        // A count beyond u32 is as wrong as 0: both are refused below.
        let count = u32::try_from(msg.header_u64(HEADER_COUNT)?).unwrap_or(0);
        if count == 0 || first_seq == 0 || first_seq.checked_add(u64::from(count)).is_none() {
            return Err(StoreError::corrupt(format!(
                "batch message at stream sequence {} claims {count} events from sequence {first_seq}",
                msg.seq
            )));
        }
        Ok(BatchPos { stream_seq: msg.seq, first_seq, count })
    }

    pub(crate) fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count) - 1
    }
}

//! Batches announced as they become durable ([`NatsOptions::announce`](crate::NatsOptions)):
//! after JetStream acknowledges a batch, the store also publishes it on a plain NATS subject,
//! with its stream sequence number and the one the stream had before it. A follower that
//! subscribes learns each batch the moment it is durable, with no request of its own, and
//! knows from `prev` whether it missed something: then it reads the gap from the stream
//! ([`NatsStore::batches_after`](crate::NatsStore::batches_after)). The stream stays the
//! truth; an announcement is only news of it.

use async_nats::HeaderMap;
use bytes::Bytes;
use presence_engine::{StoreError, StoredBatch};

use crate::layout::{stored_header, HEADER_COUNT, HEADER_FIRST_SEQ};

/// Header of an announced batch: its stream sequence number, in decimal.
pub const HEADER_STREAM_SEQ: &str = "Presence-Stream-Seq";
/// Header of an announced batch: the stream's last sequence number before it, in decimal
/// (not always a batch's: a claim or a snapshot may come between two batches).
pub const HEADER_PREV_STREAM_SEQ: &str = "Presence-Prev-Stream-Seq";

/// The headers of the announcement of the batch of `count` events from `first_seq` stored at
/// stream sequence `seq`, after `prev`.
pub(crate) fn headers(first_seq: u64, count: u32, seq: u64, prev: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_FIRST_SEQ, first_seq.to_string().as_str());
    headers.insert(HEADER_COUNT, count.to_string().as_str());
    headers.insert(HEADER_STREAM_SEQ, seq.to_string().as_str());
    headers.insert(HEADER_PREV_STREAM_SEQ, prev.to_string().as_str());
    headers
}

/// A batch as a follower receives its announcement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    /// Its stream sequence number.
    pub seq: u64,
    /// The stream's last sequence number before it: a follower that has read up to `prev`
    /// missed nothing.
    pub prev: u64,
    /// The batch, as [`NatsStore::batches_after`](crate::NatsStore::batches_after) would
    /// read it.
    pub batch: StoredBatch,
}

impl Announced {
    /// Reads an announcement: its headers must be whole and agree with the batch's own
    /// header. Anything else is an error (a follower then reads the stream instead).
    pub fn parse(headers: Option<&HeaderMap>, payload: &Bytes) -> Result<Announced, StoreError> {
        let number = |name: &str| -> Result<u64, StoreError> {
            headers
                .and_then(|h| h.get(name))
                .and_then(|v| v.as_str().parse().ok())
                .ok_or_else(|| StoreError::corrupt(format!("an announced batch without a number in {name}")))
        };
        let (seq, prev, first_seq) =
            (number(HEADER_STREAM_SEQ)?, number(HEADER_PREV_STREAM_SEQ)?, number(HEADER_FIRST_SEQ)?);
        if prev >= seq {
            return Err(StoreError::corrupt(format!(
                "an announced batch at stream sequence {seq} after {prev}"
            )));
        }
        let header = stored_header(first_seq, seq, payload)?;
        Ok(Announced {
            seq,
            prev,
            batch: StoredBatch { first_seq, count: header.count, bytes: payload.to_vec() },
        })
    }
}

#[cfg(test)]
mod tests {
    use presence_engine::{codec, Event, EventKind};

    use super::*;

    #[test]
    fn an_announcement_reads_back_and_damage_is_refused() {
        let events = vec![Event {
            at_ms: 5,
            kind: EventKind::SessionOpened { user: "alice".into(), device: "phone".into(), owner: None },
        }];
        let mut bytes = Vec::new();
        codec::encode_batch(7, &events, &mut bytes).unwrap();
        let payload = Bytes::from(bytes.clone());
        let read = Announced::parse(Some(&headers(7, 1, 12, 10)), &payload).unwrap();
        assert_eq!(
            read,
            Announced { seq: 12, prev: 10, batch: StoredBatch { first_seq: 7, count: 1, bytes } }
        );
        // No headers, a sequence that goes backwards, a first sequence the batch contradicts.
        assert!(Announced::parse(None, &payload).is_err());
        assert!(Announced::parse(Some(&headers(7, 1, 12, 12)), &payload).is_err());
        assert!(Announced::parse(Some(&headers(8, 1, 12, 10)), &payload).is_err());
        assert!(Announced::parse(Some(&headers(7, 1, 12, 10)), &Bytes::from_static(b"junk")).is_err());
    }
}

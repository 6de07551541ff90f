//! The one place that reads a store's address and opens the right backend: a sled directory
//! (a path) or a NATS JetStream stream (`nats://HOST:PORT/STREAM`, several servers as
//! `nats://HOST:PORT,HOST:PORT/STREAM`). `inspect` and `replay` open existing stores only;
//! `simulate` creates one.

use std::fmt;
use std::path::{Path, PathBuf};

use presence_engine::{EventStore, StoreError, StoredBatch};
use presence_storage_nats::{NatsOptions, NatsStore};
use presence_storage_sled::{Durability, SledStore};

/// Where a store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreAddress {
    /// A sled store's directory.
    Sled(PathBuf),
    /// A JetStream stream: the servers (`nats://...`, comma-separated) and the stream name.
    Nats {
        /// What the NATS client connects to.
        url: String,
        /// The stream holding the log.
        stream: String,
    },
}

impl StoreAddress {
    /// Reads `nats://HOST:PORT[,HOST:PORT...]/STREAM`, or anything else as a path.
    pub fn parse(text: &str) -> Result<StoreAddress, String> {
        let Some(rest) = text.strip_prefix("nats://") else {
            return Ok(StoreAddress::Sled(PathBuf::from(text)));
        };
        let (servers, stream) = rest.split_once('/').ok_or_else(|| {
            format!("{text}: a NATS store is nats://HOST:PORT/STREAM (the stream name is missing)")
        })?;
        if servers.is_empty() || stream.is_empty() || stream.contains('/') {
            return Err(format!("{text}: a NATS store is nats://HOST:PORT/STREAM"));
        }
        presence_storage_nats::validate_stream_name(stream).map_err(|e| format!("{text}: {e}"))?;
        let url = servers.split(',').map(|s| format!("nats://{s}")).collect::<Vec<_>>().join(",");
        Ok(StoreAddress::Nats { url, stream: stream.to_string() })
    }
}

impl fmt::Display for StoreAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreAddress::Sled(path) => write!(f, "{}", path.display()),
            StoreAddress::Nats { url, stream } => {
                write!(f, "nats://{}/{stream}", url.replace("nats://", ""))
            }
        }
    }
}

/// An opened store of either kind.
#[derive(Debug)]
pub enum OpenedStore {
    /// On sled.
    Sled(SledStore),
    /// On NATS JetStream (boxed: it is far larger than a sled handle).
    Nats(Box<NatsStore>),
}

impl OpenedStore {
    /// The bytes the store takes: sled's files on disk, or the stream's bytes as the server
    /// counts them (one replica's).
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            OpenedStore::Sled(store) => store.size_on_disk().map_err(|e| e.to_string()),
            OpenedStore::Nats(store) => store.stream_state().map(|s| s.bytes).map_err(|e| e.to_string()),
        }
    }
}

/// Opens the store at `address` without creating anything: a sled path must be an existing
/// sled store, a stream must exist.
pub fn open_existing(address: &StoreAddress) -> Result<OpenedStore, String> {
    match address {
        StoreAddress::Sled(path) => open_existing_sled(path).map(OpenedStore::Sled),
        StoreAddress::Nats { url, stream } => NatsStore::open(NatsOptions::new(url, stream))
            .map(|store| OpenedStore::Nats(Box::new(store)))
            .map_err(|e| format!("{address}: cannot open the store: {e}")),
    }
}

/// Opens the store at `address` for writing, creating it if needed: a sled store with
/// `durability`, or a stream with `replicas` replicas.
pub fn open_or_create(
    address: &StoreAddress,
    durability: Durability,
    replicas: usize,
) -> Result<OpenedStore, String> {
    match address {
        StoreAddress::Sled(path) => SledStore::open(path, durability)
            .map(OpenedStore::Sled)
            .map_err(|e| format!("{}: {e}", path.display())),
        StoreAddress::Nats { url, stream } => {
            let options = NatsOptions { replicas, create: true, ..NatsOptions::new(url, stream) };
            NatsStore::open(options)
                .map(|store| OpenedStore::Nats(Box::new(store)))
                .map_err(|e| format!("{address}: {e}"))
        }
    }
}

/// Opens the sled store at `path`, refusing a missing path or a directory that is not a sled
/// store (so that nothing is created where the operator pointed by mistake).
fn open_existing_sled(path: &Path) -> Result<SledStore, String> {
    if !path.exists() {
        return Err(format!("{}: no such file or directory", path.display()));
    }
    if !path.is_dir() || !path.join("conf").is_file() || !path.join("db").is_file() {
        return Err(format!("{}: not a presence store (no sled database files there)", path.display()));
    }
    SledStore::open(path, Durability::Sync)
        .map_err(|e| format!("{}: cannot open the store: {e}", path.display()))
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            OpenedStore::Sled($store) => $call,
            OpenedStore::Nats($store) => $call,
        }
    };
}

impl EventStore for OpenedStore {
    fn next_seq(&self) -> u64 {
        delegate!(self, s => s.next_seq())
    }
    fn append(&mut self, first_seq: u64, count: u32, bytes: &[u8]) -> Result<(), StoreError> {
        delegate!(self, s => s.append(first_seq, count, bytes))
    }
    fn batch_bytes_max(&self) -> usize {
        delegate!(self, s => s.batch_bytes_max())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        delegate!(self, s => s.sync())
    }
    fn read_from(
        &self,
        from_seq: u64,
    ) -> Result<Box<dyn Iterator<Item = Result<StoredBatch, StoreError>> + '_>, StoreError> {
        delegate!(self, s => s.read_from(from_seq))
    }
    fn save_snapshot(&mut self, last_seq: u64, bytes: &[u8]) -> Result<(), StoreError> {
        delegate!(self, s => s.save_snapshot(last_seq, bytes))
    }
    fn snapshots(&self) -> Result<Vec<u64>, StoreError> {
        delegate!(self, s => s.snapshots())
    }
    fn load_snapshot(&self, last_seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        delegate!(self, s => s.load_snapshot(last_seq))
    }
    fn compact(&mut self, upto_seq: u64) -> Result<(), StoreError> {
        delegate!(self, s => s.compact(upto_seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(StoreAddress::parse("data/x").unwrap(), StoreAddress::Sled("data/x".into()));
        let nats = StoreAddress::parse("nats://127.0.0.1:4222/presence").unwrap();
        assert_eq!(
            nats,
            StoreAddress::Nats { url: "nats://127.0.0.1:4222".into(), stream: "presence".into() }
        );
        assert_eq!(nats.to_string(), "nats://127.0.0.1:4222/presence");
        let cluster = StoreAddress::parse("nats://127.0.0.1:1,127.0.0.1:2/p").unwrap();
        assert_eq!(
            cluster,
            StoreAddress::Nats { url: "nats://127.0.0.1:1,nats://127.0.0.1:2".into(), stream: "p".into() }
        );
        assert_eq!(cluster.to_string(), "nats://127.0.0.1:1,127.0.0.1:2/p");
        for bad in [
            "nats://127.0.0.1:4222",
            "nats://127.0.0.1:4222/",
            "nats:///p",
            "nats://h:1/a/b",
            "nats://h:1/a.b",
        ] {
            assert!(StoreAddress::parse(bad).is_err(), "{bad}");
        }
    }
}

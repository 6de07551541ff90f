//! How durable an append is, and the other choices made when opening a store.

/// How durable an acknowledged [`append`](presence_engine::EventStore::append) is.
///
/// Every mode keeps a batch atomic (after a crash it is there whole or not at all), flushes
/// snapshots and compaction before they return, and flushes everything when the store is
/// dropped; the modes differ in what a crash of the process or the machine may lose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `append` returns after sled's `flush()` and an fdatasync (see [`OpenOptions::fsync`]):
    /// every acknowledged batch survives a crash. One sync per batch, so throughput is
    /// bounded by the disk's sync rate (some 250 per second on the development machine); use
    /// it when batches are large or appends are rare.
    Sync,
    /// `append` writes to sled without flushing and [`sync`](presence_engine::EventStore::sync)
    /// flushes: the caller appends many commands' events as one batch and syncs once, and a
    /// batch is durable from the moment a later `sync` returns. What was appended but not
    /// yet synced may be lost by a crash. The runtime (presence-runtime) uses this mode.
    #[default]
    GroupCommit,
    /// Neither `append` nor `sync` flushes; sled's background thread flushes every
    /// [`OpenOptions::flush_every_ms`] (500 ms by default). A crash may lose up to that
    /// interval of acknowledged batches, even ones whose `sync` returned: this mode
    /// deliberately relaxes `EventStore::sync`'s promise, for loads that can be rebuilt.
    /// Snapshots, compaction and [`SledStore::flush`](crate::SledStore::flush) still flush.
    Buffered,
}

impl Durability {
    /// Whether `append` flushes before it returns.
    pub fn flushes_on_append(self) -> bool {
        matches!(self, Durability::Sync)
    }

    /// Whether [`EventStore::sync`](presence_engine::EventStore::sync) flushes.
    pub fn flushes_on_sync(self) -> bool {
        !matches!(self, Durability::Buffered)
    }
}

/// The choices made when opening a [`SledStore`](crate::SledStore) with
/// [`open_with`](crate::SledStore::open_with).
///
/// ```
/// use presence_storage_sled::{Durability, OpenOptions};
///
/// let options = OpenOptions { repair: true, ..OpenOptions::new(Durability::Sync) };
/// assert_eq!(options.flush_every_ms, Some(500));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// How durable an acknowledged append is.
    pub durability: Durability,
    /// Check every batch while opening (header, checksum, decoding, contiguity) and delete
    /// the first bad batch and every batch after it, listing them in the
    /// [`RepairReport`](crate::RepairReport). Without it, a bad newest batch fails the open
    /// and a bad older one fails the engine's replay, both naming the sequence number. A
    /// batch of a newer format version is never dropped: the open fails instead.
    pub repair: bool,
    /// The period of sled's background flush, `None` for none. It bounds what
    /// [`Durability::Buffered`] may lose; in the other modes it only adds early flushes.
    pub flush_every_ms: Option<u64>,
    /// The most memory sled's page cache may use, in bytes.
    pub cache_capacity_bytes: u64,
    /// Whether a durable flush also fdatasyncs sled's files (default true). sled 0.34's own
    /// `flush()` uses `sync_file_range`, which survives a crash of the process but not a
    /// power loss or a kernel crash (spacejam/sled#1452); with `false` every durability
    /// promise above is only that strong, and a sync costs far less (about 0.1 ms instead of
    /// the 3-4 ms of an fdatasync measured on the development machine).
    pub fsync: bool,
}

impl OpenOptions {
    /// sled's default background flush period.
    pub const FLUSH_EVERY_MS_DEFAULT: u64 = 500;

    /// sled's default page cache capacity (1 GiB).
    pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 1 << 30;

    /// The defaults with `durability`: no repair, sled's 500 ms background flush and its
    /// default cache, and fdatasync on every durable flush.
    pub fn new(durability: Durability) -> Self {
        Self {
            durability,
            repair: false,
            flush_every_ms: Some(Self::FLUSH_EVERY_MS_DEFAULT),
            cache_capacity_bytes: Self::CACHE_CAPACITY_BYTES_DEFAULT,
            fsync: true,
        }
    }
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self::new(Durability::default())
    }
}

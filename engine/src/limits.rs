//! Every bound of the engine in one place, named with the qualifier last (`BATCH_BYTES_MAX`),
//! with the relations between them checked when the crate compiles.
//!
//! Configurable limits (a subscription list's length, a batch of targets) are fields of
//! [`Config`](crate::Config); these are the fixed ones: what the encoding accepts, how much
//! one tick may log, how far time goes.

/// The latest time the engine represents, in milliseconds (about 584 million years): a
/// later `at_ms` counts as this one (R1.3). One below `u64::MAX`, so that "stopped being
/// `ONLINE` at the end of time" can still be told from "never" (docs/SPEC.md, R1.3).
pub const TIME_MS_MAX: u64 = u64::MAX - 1;

/// The most bytes one encoded batch's payload may take, and the most a batch decode may
/// allocate. A store may accept less ([`EventStore::batch_bytes_max`](crate::EventStore::batch_bytes_max)).
pub const BATCH_BYTES_MAX: usize = 64 << 20;

/// The most bytes one encoded snapshot may take, and the most its decode may allocate.
pub const SNAPSHOT_BYTES_MAX: usize = 1 << 31;

/// The most events one tick logs (R2.4, R4.5): a tick's events are one batch. What is due
/// beyond it waits for the next tick.
pub const TICK_EVENTS_MAX: usize = 1 << 16;

/// The most subscription-list entries the retention expiries of one tick may name (R4.5).
pub const TICK_TARGETS_MAX: usize = 1 << 20;

/// The most bytes an owner tag of a session may take (R8.5).
pub const OWNER_BYTES_MAX: usize = 64;

/// The most sessions one `disconnect_sessions` command disconnects; a host repeats it while
/// its reply says some remain (R8.5).
pub const DISCONNECT_SESSIONS_MAX: usize = TICK_EVENTS_MAX;

/// The most a configured size limit (a cap, a batch, an id's or a custom status's bytes)
/// may be, so that a configuration cannot ask the engine to hold unbounded strings or lists.
pub const CONFIG_LIMIT_MAX: u32 = 1 << 20;

/// The most bytes a decode may allocate for each byte of its input, besides
/// [`DECODE_SLACK_BYTES_MAX`]. A real value takes at most about eight times its encoded size
/// in memory (a one-byte varint becomes a `u64`), so 32 times never refuses good data, while
/// a 20-byte payload that claims a 2 GiB string is refused before anything is allocated.
pub(crate) const DECODE_BYTES_PER_PAYLOAD_BYTE_MAX: usize = 32;

/// What any decode may allocate on top of [`DECODE_BYTES_PER_PAYLOAD_BYTE_MAX`] per byte.
pub(crate) const DECODE_SLACK_BYTES_MAX: usize = 64 << 10;

// A tick's batch must fit the codec's batch limit with ids of ordinary size (a tick also
// stops early, by its encoded size, when a store accepts less).
const _: () = assert!(TICK_EVENTS_MAX * 64 < BATCH_BYTES_MAX);
const _: () = assert!(TICK_TARGETS_MAX * 32 < BATCH_BYTES_MAX);
// Whatever a batch of the largest size decodes to is within the decode limit's reach.
const _: () = assert!(DECODE_SLACK_BYTES_MAX < BATCH_BYTES_MAX);
// A snapshot may hold far more than a batch.
const _: () = assert!(BATCH_BYTES_MAX < SNAPSHOT_BYTES_MAX);
// Time never reaches u64::MAX, the "never" marker of last-online times.
const _: () = assert!(TIME_MS_MAX < u64::MAX);

//! The fuzzed logic of the targets in `fuzz/`, as ordinary functions, so that
//! `cargo test` replays every corpus file and kept crash on the stable toolchain
//! (`tests/fuzz_corpora.rs`) and the fuzz targets are one-line wrappers.
//!
//! Each function takes the fuzzer's bytes, never fails on what they say, and panics only when
//! a property is violated:
//!
//! - [`commands`]: a configuration and a sequence of commands, ticks, snapshots, reopenings
//!   and store failures, run on the engine over a [`FaultyStore`] and on the model in
//!   [`Lockstep`]: replies, notices, reads and invariants after every step, replay at the end
//!   (R1-R8). A step the store refuses must change nothing (R7.1).
//! - [`codec()`]: bytes decoded as an event, a batch and a snapshot, and opened as a store
//!   holding them: never a panic, and whatever decodes re-encodes to bytes that decode to the
//!   same value. The fuzz target also counts allocations against [`codec_allocation_limit`].
//! - [`trace`]: text parsed and run as a conformance trace on the engine and the model: a
//!   parse error or a verdict, the same on both, never a panic or a hang.
//!
//! ```
//! presence_conformance::fuzzing::commands(b"any bytes at all");
//! presence_conformance::fuzzing::codec(b"\x01\x02\x03");
//! presence_conformance::fuzzing::trace(br#"{"at": 0, "op": "login", "user": "a", "device": "p"}"#);
//! ```

use arbitrary::{Result as ArbitraryResult, Unstructured};
use presence_engine::codec::{self, BATCH_BYTES_MAX, SNAPSHOT_BYTES_MAX};
use presence_engine::{Command, Config, Edition, Engine, EventStore, UserId, CONFIG_LIMIT_MAX};
use presence_storage_mem::{Faults, FaultyStore, MemStore};

use crate::lockstep::{Lockstep, Step};
use crate::trace::{parse, run_on, run_text, Target};

// ---- commands ----

/// The most steps one input runs, so that an input costs milliseconds.
pub const MAX_STEPS: usize = 256;

/// The valid users of the id space; every read is compared for each of them.
const USERS: &[&str] = &["a", "b", "c", "d"];
const BAD_USERS: &[&str] = &["", "e\u{7}", "eeeee", "éé"];
const DEVICES: &[&str] = &["p", "q", "r"];
const BAD_DEVICES: &[&str] = &["", "\n", "ssss"];
const CUSTOMS: &[&str] = &["", "x", "y", "xy", "héé", "\u{0}"];
/// Connection owners (R8.5), one of them invalid (a control character).
const OWNERS: &[&str] = &["gw1", "gw2", "bad\u{1}"];

/// Runs a configuration and a step list drawn from `data` on the engine over a
/// [`FaultyStore<MemStore>`] and on the model in lockstep, and panics with the step and the
/// difference when they disagree, an invariant breaks, a step the store refused changed
/// something, or the state rebuilt from the log differs from the live one.
pub fn commands(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(config) = config(&mut input) else { return };
    let store = FaultyStore::new(MemStore::new());
    let faults = store.faults();
    let mut run = match Lockstep::new(config.clone(), store, USERS.iter().copied()) {
        Ok(run) => run,
        // Only a configuration `validate` refuses can fail to open an empty store.
        Err(e) => {
            assert!(config.validate().is_err(), "a valid configuration failed to open: {e}");
            return;
        }
    };
    run.allow_store_failures(true);
    let mut clock_ms = 0u64;
    let mut done = Vec::new();
    while !input.is_empty() && done.len() < MAX_STEPS {
        let Ok(drawn) = step(&mut input, &mut clock_ms) else { break };
        let step = match drawn {
            // A reopening that disconnects (R8.4) must append, and an engine that cannot open
            // loses its store, so it runs only when the store says no append can fail now.
            Drawn::Step(Step::ReopenDisconnecting { .. }) if faults.appends_may_fail() => Step::Reopen,
            Drawn::Step(step) => step,
            Drawn::Faults(fault) => {
                fault.apply(&faults);
                done.push(format!("{fault:?}"));
                continue;
            }
        };
        if let Err(e) = run.step(&step) {
            panic!("{}", failure(&config, &done, &format!("{step:?}"), &e));
        }
        done.push(format!("{step:?}"));
    }
    // The replay checks read the log through the store, which never fails reads.
    faults.fail_appends(false);
    if let Err(e) = run.finish() {
        panic!("{}", failure(&config, &done, "finish", &e));
    }
}

fn failure(config: &Config, done: &[String], step: &str, error: &str) -> String {
    let mut text = format!("config: {config:?}\n");
    for (index, line) in done.iter().enumerate() {
        text.push_str(&format!("step {index}: {line}\n"));
    }
    text.push_str(&format!("step {} ({step}) failed: {error}", done.len()));
    text
}

/// A change to the store's failure switches between two steps.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Every append fails (true) or succeeds (false) from now on; false also cancels a countdown.
    FailAppends(bool),
    /// `n` more appends succeed, then every append fails.
    FailAfterAppends(u64),
}

impl Fault {
    fn apply(self, faults: &Faults) {
        match self {
            Fault::FailAppends(on) => faults.fail_appends(on),
            Fault::FailAfterAppends(n) => faults.fail_after_appends(n),
        }
    }
}

enum Drawn {
    Step(Step),
    Faults(Fault),
}

/// A configuration: mostly small caps, limits and timeouts so that each is reached often,
/// sometimes SPEC.md's defaults, sometimes any value at all (extremes included).
fn config(input: &mut Unstructured) -> ArbitraryResult<Config> {
    let mode: u8 = input.int_in_range(0..=7)?;
    if mode == 0 {
        return Ok(Config::default());
    }
    let wild = mode == 1;
    let count = |input: &mut Unstructured, small: u32| -> ArbitraryResult<u32> {
        if !wild {
            return input.int_in_range(1..=small);
        }
        Ok(match input.int_in_range(0..=7u8)? {
            0 => 0,
            1 => 1,
            2 => small,
            3 => CONFIG_LIMIT_MAX,
            4 => CONFIG_LIMIT_MAX + 1,
            5 => u32::MAX,
            _ => input.arbitrary()?,
        })
    };
    let duration = |input: &mut Unstructured, small: u64| -> ArbitraryResult<u64> {
        match wild {
            true => match input.int_in_range(0..=3u8)? {
                0 => Ok(u64::MAX),
                1 => Ok(u64::MAX / 2),
                _ => input.arbitrary(),
            },
            false => input.int_in_range(1..=small),
        }
    };
    let edition = if input.ratio(1, 5)? { Edition::Standard } else { Edition::Ultimate };
    let status_feature = !input.ratio(3, 20)?;
    let friend_notifications = input.arbitrary()?;
    let max_devices_per_user = count(input, 3)?;
    let max_subscriptions = count(input, 4)?;
    let max_subscribe_batch = count(input, 4)?;
    let max_query_batch = count(input, 4)?;
    let rate_limit_calls = count(input, 4)?;
    let heartbeat_timeout_ms = duration(input, 40)?;
    let rate_limit_window_ms = duration(input, 30)?;
    let subscription_retention_ms = duration(input, 80)?;
    let max_custom_status_bytes = if wild { count(input, 4)? } else { input.int_in_range(0..=4)? };
    let max_user_id_bytes = if wild { count(input, 5)? } else { *input.choose(&[1, 2, 3, 5, 32])? };
    let max_device_id_bytes = if wild { count(input, 3)? } else { *input.choose(&[1, 2, 3, 64])? };
    Ok(Config {
        edition,
        status_feature,
        friend_notifications,
        heartbeat_timeout_ms,
        max_devices_per_user,
        max_subscriptions,
        max_subscribe_batch,
        max_query_batch,
        rate_limit_calls,
        rate_limit_window_ms,
        subscription_retention_ms,
        max_custom_status_bytes,
        max_user_id_bytes,
        max_device_id_bytes,
    })
}

/// The next step, its time moved from the previous one: often not at all, sometimes
/// backwards (R1.3), now and then to any time at all.
fn step(input: &mut Unstructured, clock_ms: &mut u64) -> ArbitraryResult<Drawn> {
    let delta: u8 = input.arbitrary()?;
    *clock_ms = match delta {
        0..=79 => *clock_ms,
        80..=179 => clock_ms.saturating_add(u64::from(delta - 79) / 10 + 1),
        180..=239 => clock_ms.saturating_add(u64::from(delta - 170)),
        240..=251 => clock_ms.saturating_sub(u64::from(delta - 230)),
        252 => clock_ms.saturating_add(input.arbitrary::<u32>()?.into()),
        253 => u64::MAX - u64::from(input.arbitrary::<u8>()?),
        _ => input.arbitrary()?,
    };
    let at_ms = *clock_ms;
    let kind: u8 = input.arbitrary()?;
    let step = match kind {
        0..=199 => Step::Execute { command: command(input)?, at_ms },
        200..=239 => Step::Tick { at_ms },
        240..=244 => Step::Snapshot { compact: input.arbitrary()? },
        245..=248 => Step::Reopen,
        249 => Step::ReopenDisconnecting { at_ms },
        250..=252 => return Ok(Drawn::Faults(Fault::FailAppends(true))),
        253 => return Ok(Drawn::Faults(Fault::FailAppends(false))),
        _ => return Ok(Drawn::Faults(Fault::FailAfterAppends(input.int_in_range(0..=8)?))),
    };
    Ok(Drawn::Step(step))
}

/// An id from `good` most of the time, else a bad one or a short string of the fuzzer's.
fn id(input: &mut Unstructured, good: &[&str], bad: &[&str]) -> ArbitraryResult<String> {
    match input.int_in_range(0..=15u8)? {
        0 => Ok((*input.choose(bad)?).to_string()),
        1 => fuzzer_string(input, 6),
        _ => Ok((*input.choose(good)?).to_string()),
    }
}

/// Up to `max_len` bytes of the input, as UTF-8 (invalid sequences replaced).
fn fuzzer_string(input: &mut Unstructured, max_len: usize) -> ArbitraryResult<String> {
    let len = input.int_in_range(0..=max_len)?;
    Ok(String::from_utf8_lossy(input.bytes(len)?).into_owned())
}

fn user(input: &mut Unstructured) -> ArbitraryResult<String> {
    id(input, USERS, BAD_USERS)
}

fn device(input: &mut Unstructured) -> ArbitraryResult<String> {
    id(input, DEVICES, BAD_DEVICES)
}

fn targets(input: &mut Unstructured) -> ArbitraryResult<Vec<UserId>> {
    let len = input.int_in_range(0..=5)?;
    (0..len).map(|_| user(input).map(UserId::from)).collect()
}

/// Any command, login-heavy so that sessions exist (the weights of the property tests).
fn command(input: &mut Unstructured) -> ArbitraryResult<Command> {
    let (u, d) = (user(input)?, device(input)?);
    Ok(match input.int_in_range(0..=26u8)? {
        25 => Command::login_with_owner(u, d, *input.choose(OWNERS)?),
        26 => match input.arbitrary()? {
            true => Command::disconnect_owner(*input.choose(OWNERS)?),
            false => Command::disconnect_all(),
        },
        0..=4 => Command::login(u, d),
        5 => Command::logout(u, d),
        6..=7 => Command::disconnect(u, d),
        8..=9 => Command::heartbeat(u, d),
        10..=12 => {
            let custom = match input.ratio(1, 8)? {
                true => fuzzer_string(input, 8)?,
                false => (*input.choose(CUSTOMS)?).to_string(),
            };
            Command::set_status(u, d, custom)
        }
        13..=14 => Command::get_status(u, d, targets(input)?),
        15 => Command::get_status(u.clone(), d, [u]),
        16..=19 => Command::subscribe(u, d, targets(input)?),
        20 => Command::unsubscribe(u, d, targets(input)?),
        21..=22 => Command::add_friend(u, user(input)?),
        _ => Command::remove_friend(u, user(input)?),
    })
}

// ---- codec ----

/// Bytes the codec may allocate beyond its limit during one input: the decoded values, the
/// state built from them and the re-encodings, which are all proportional to the input.
pub const CODEC_SLACK_BYTES: usize = 16 << 20;

/// The most the codec may allocate at once for `data` in [`codec()`]: the snapshot limit when
/// the input can reach the snapshot decoder, else the batch limit (engine/src/codec.rs,
/// `codec::MAX_*_BYTES`), plus [`CODEC_SLACK_BYTES`] and a few times the input's size.
pub fn codec_allocation_limit(data: &[u8]) -> usize {
    let decoder = match data.first().map(|mode| mode % CODEC_MODES) {
        Some(1 | 2) => BATCH_BYTES_MAX,
        _ => SNAPSHOT_BYTES_MAX,
    };
    decoder.saturating_add(CODEC_SLACK_BYTES).saturating_add(data.len().saturating_mul(64))
}

const CODEC_MODES: u8 = 6;

/// Decodes `data` as the codec's values and opens stores holding it. The first byte picks
/// how the rest is used, so that the fuzzer gets past the checksums:
///
/// 0. the bytes as they are, as an event, a batch and a snapshot, each also opened;
/// 1. a batch with its checksum fixed; 2. a batch payload behind a valid header;
/// 3. a snapshot with its checksum fixed; 4. a snapshot payload behind a valid header;
/// 5. a snapshot and a batch after it (a two-byte length splits them), both with valid headers.
///
/// Panics if anything panics, if a decoded value does not survive encode and decode, or if
/// a store that opened gives a different state from its own snapshot.
pub fn codec(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % CODEC_MODES {
        0 => {
            event_round_trip(rest);
            batch_round_trip(rest);
            snapshot_round_trip(rest);
            // Whether or not they decode, the engine must open or refuse, not panic.
            open_store(None, Some(rest));
            open_store(Some(rest), None);
        }
        1 => {
            let batch = fix_batch_checksum(rest);
            batch_round_trip(&batch);
            open_store(None, Some(&batch));
        }
        2 => {
            let batch = batch_from_payload(rest);
            batch_round_trip(&batch);
            open_store(None, Some(&batch));
        }
        3 => {
            let snapshot = fix_snapshot_checksum(rest);
            snapshot_round_trip(&snapshot);
            open_store(Some(&snapshot), None);
        }
        4 => {
            let snapshot = snapshot_from_payload(rest);
            snapshot_round_trip(&snapshot);
            open_store(Some(&snapshot), None);
        }
        _ => {
            let split = rest.get(..2).map_or(0, |n| usize::from(u16::from_le_bytes([n[0], n[1]])));
            let rest = rest.get(2..).unwrap_or_default();
            let (snapshot, batch) = rest.split_at(split.min(rest.len()));
            let snapshot = snapshot_from_payload(snapshot);
            let last_seq = codec::decode_snapshot(&snapshot).map_or(0, |s| s.last_seq);
            let mut batch = batch_from_payload(batch);
            if let Some(first_seq) = batch.get_mut(1..9) {
                first_seq.copy_from_slice(&last_seq.saturating_add(1).to_le_bytes());
            }
            let batch = fix_batch_checksum(&batch);
            open_store(Some(&snapshot), Some(&batch));
        }
    }
}

/// An event that decodes must re-encode to bytes that decode to the same event.
fn event_round_trip(bytes: &[u8]) {
    let Ok(event) = codec::decode_event(bytes) else { return };
    let encoded =
        codec::encode_event(&event).unwrap_or_else(|e| panic!("{event:?} decoded but does not encode: {e}"));
    let again =
        codec::decode_event(&encoded).unwrap_or_else(|e| panic!("{event:?} re-encoded does not decode: {e}"));
    assert_eq!(again, event, "an event changed through encode and decode");
}

/// A batch that decodes must re-encode (in the current format: an older one is upcast) to
/// bytes that decode to the same sequence numbers, events and outbox.
fn batch_round_trip(bytes: &[u8]) {
    let Ok((header, events)) = codec::decode_batch(bytes) else { return };
    let outbox =
        codec::decode_outbox(bytes).unwrap_or_else(|e| panic!("a batch decoded but its outbox not: {e}"));
    let mut encoded = Vec::new();
    codec::encode_batch_with_outbox(header.first_seq, &events, &outbox, &mut encoded)
        .unwrap_or_else(|e| panic!("a batch decoded but does not encode: {e}\n{events:?}"));
    let (again, again_events) =
        codec::decode_batch(&encoded).unwrap_or_else(|e| panic!("a re-encoded batch does not decode: {e}"));
    assert_eq!(again.version, codec::FORMAT_VERSION, "a batch is re-encoded in the current format");
    assert_eq!(
        (again.first_seq, again.count, again_events),
        (header.first_seq, header.count, events),
        "a batch changed through encode and decode"
    );
    let again_outbox = codec::decode_outbox(&encoded).unwrap_or_else(|e| panic!("a re-encoded outbox: {e}"));
    assert_eq!(again_outbox, outbox, "an outbox changed through encode and decode");
}

/// A snapshot that decodes must re-encode to bytes that decode to the same snapshot.
fn snapshot_round_trip(bytes: &[u8]) {
    let Ok(snapshot) = codec::decode_snapshot(bytes) else { return };
    let encoded = codec::encode_snapshot(&snapshot)
        .unwrap_or_else(|e| panic!("a snapshot decoded but does not encode: {e}\n{snapshot:?}"));
    let again = codec::decode_snapshot(&encoded)
        .unwrap_or_else(|e| panic!("a re-encoded snapshot does not decode: {e}"));
    assert_eq!(again, snapshot, "a snapshot changed through encode and decode");
}

fn fix_batch_checksum(bytes: &[u8]) -> Vec<u8> {
    let mut batch = bytes.to_vec();
    if batch.len() >= codec::BATCH_HEADER_BYTES {
        let crc = crc32(&batch[codec::BATCH_HEADER_BYTES..]);
        batch[13..17].copy_from_slice(&crc.to_le_bytes());
    }
    batch
}

/// A valid batch header starting at sequence 1, before `rest`: its first byte is the event
/// count, the others the payload.
fn batch_from_payload(rest: &[u8]) -> Vec<u8> {
    let (count, payload) = rest.split_first().map_or((1, rest), |(&n, p)| (u32::from(n), p));
    let mut batch = vec![codec::FORMAT_VERSION];
    batch.extend_from_slice(&1u64.to_le_bytes());
    batch.extend_from_slice(&count.to_le_bytes());
    batch.extend_from_slice(&crc32(payload).to_le_bytes());
    batch.extend_from_slice(payload);
    batch
}

fn fix_snapshot_checksum(bytes: &[u8]) -> Vec<u8> {
    let mut snapshot = bytes.to_vec();
    if snapshot.len() >= 5 {
        let crc = crc32(&snapshot[5..]);
        snapshot[1..5].copy_from_slice(&crc.to_le_bytes());
    }
    snapshot
}

fn snapshot_from_payload(payload: &[u8]) -> Vec<u8> {
    let mut snapshot = vec![codec::FORMAT_VERSION];
    snapshot.extend_from_slice(&crc32(payload).to_le_bytes());
    snapshot.extend_from_slice(payload);
    snapshot
}

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Opens an engine on a [`MemStore`] holding `snapshot` (at the sequence number it claims,
/// when it decodes and that can be laid out, else at 0) and `batch` after it. The open may
/// fail; if it succeeds, the engine's own snapshot must reopen to the same state, and the
/// engine must take a tick and a command without panicking.
fn open_store(snapshot: Option<&[u8]>, batch: Option<&[u8]>) {
    let mut store = MemStore::new();
    if let Some(bytes) = snapshot {
        let claimed = codec::decode_snapshot(bytes).map_or(0, |s| s.last_seq);
        // A snapshot at sequence n needs the log to continue at n + 1: a placeholder batch
        // of n events, compacted away, moves it there.
        let seq = match u32::try_from(claimed) {
            Ok(count) if count > 0 => match store.append(1, count, &[]).and_then(|()| store.compact(claimed))
            {
                Ok(()) => claimed,
                Err(e) => panic!("laying out the store failed: {e}"),
            },
            _ => 0,
        };
        store.save_snapshot(seq, bytes).unwrap_or_else(|e| panic!("saving a snapshot failed: {e}"));
    }
    if let Some(bytes) = batch {
        let count = codec::batch_header(bytes).map_or(1, |h| h.count.max(1));
        let first_seq = store.next_seq();
        if first_seq.checked_add(u64::from(count)).is_none() {
            return;
        }
        store.append(first_seq, count, bytes).unwrap_or_else(|e| panic!("appending a batch failed: {e}"));
    }
    let Ok(mut engine) = Engine::open(Config::default(), store) else { return };
    let live = engine.logical_state();
    let reopened = match engine.snapshot() {
        Ok(_) => Engine::open(Config::default(), engine.into_store())
            .unwrap_or_else(|e| panic!("a store that opened does not reopen from its own snapshot: {e}")),
        // A state too large to snapshot is a clear error, not a property violation.
        Err(_) => return,
    };
    if let Err(e) = crate::observe::compare_states(
        "state from the engine's own snapshot",
        &reopened.logical_state(),
        &live,
    ) {
        panic!("{e}");
    }
    let mut engine = reopened;
    let now_ms = engine.now_ms();
    let _ = engine.tick(now_ms.saturating_add(1 << 40));
    let _ = engine.execute(Command::login("a", "p"), now_ms);
}

// ---- trace ----

/// Traces longer than this are skipped: a trace's cost grows with its length.
pub const MAX_TRACE_BYTES: usize = 64 << 10;

/// Parses `data` (as UTF-8, invalid sequences replaced) as a conformance trace and runs it on
/// the engine over the in-memory store and on the model. Panics if anything panics, if the
/// runner's exit status does not match the parse, if the replay check fails on the engine
/// (R8.1), or if the engine and the model fail different expectations (they must answer
/// alike, so a trace holds on both or fails at the same lines on both).
pub fn trace(data: &[u8]) {
    if data.len() > MAX_TRACE_BYTES {
        return;
    }
    let text = String::from_utf8_lossy(data);
    let trace = match parse(&text) {
        Ok(trace) => trace,
        Err(error) => {
            let mut out = Vec::new();
            let status = run_text("fuzz.jsonl", &text, &[Target::Mem, Target::Model], &mut out);
            assert_eq!(status, 2, "a trace that does not parse ({error:?}) ran with status {status}");
            let out = String::from_utf8_lossy(&out);
            assert!(out.contains("cannot parse"), "the parse error is not reported: {out}");
            return;
        }
    };
    let on_engine =
        run_on(&trace, Target::Mem).unwrap_or_else(|e| panic!("the mem store does not open: {e}"));
    let on_model = run_on(&trace, Target::Model).unwrap_or_else(|e| panic!("the model does not open: {e}"));
    let replay = "the state rebuilt from the event log to equal the live state";
    if let Some(failure) = on_engine.iter().find(|f| f.expected == replay) {
        panic!("R8.1: replay differs from the live state: {}", failure.got);
    }
    let lines = |failures: &[crate::trace::Failure]| -> Vec<(usize, String)> {
        failures.iter().map(|f| (f.line, f.expected.clone())).collect()
    };
    assert_eq!(
        lines(&on_engine),
        lines(&on_model),
        "the engine and the model fail different expectations:\n  engine: {on_engine:?}\n  model:  {on_model:?}"
    );
}

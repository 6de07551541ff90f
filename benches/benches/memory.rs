//! The memory report: bytes of engine state per session and per subscription (both
//! directions together), measured with a counting global allocator. Not a criterion timing:
//! `cargo bench -p presence-benches --bench memory` prints the figures.
//!
//! The state is loaded from a snapshot, so the figures count what the engine keeps for the
//! state itself (interned ids, sessions, deadline queue, subscription lists and their
//! reverse index), not the garbage of building it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use presence_benches::{bench_config, login_users, run_grouped, user};
use presence_engine::{Command, Engine};
use presence_storage_mem::MemStore;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout, as the caller promised GlobalAlloc's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: ptr came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live bytes held by an engine opened from a snapshot of the state `build` makes.
fn engine_bytes(build: impl FnOnce(&mut Engine<MemStore>)) -> (isize, usize) {
    let mut engine = Engine::open(bench_config(), MemStore::new()).unwrap();
    build(&mut engine);
    engine.snapshot().unwrap();
    engine.compact().unwrap();
    let store = engine.into_store();
    let before = LIVE.load(Ordering::Relaxed);
    let engine = Engine::open(bench_config(), store).unwrap();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    (bytes, engine.stats().subscriptions)
}

fn main() {
    const USERS: u64 = 1_000_000;
    const SUBSCRIBERS: u64 = 100_000;
    const PER_SUBSCRIBER: u64 = 100;
    let (sessions, _) = engine_bytes(|e| login_users(e, USERS, 0));
    let (with_subscriptions, subscriptions) = engine_bytes(|e| {
        login_users(e, USERS, 0);
        let subscribes = (0..SUBSCRIBERS).map(|s| {
            let targets: Vec<String> =
                (1..=PER_SUBSCRIBER).map(|k| user((s * 7919 + k * 104_729) % USERS)).collect();
            Command::subscribe(user(s), "d0", targets)
        });
        run_grouped(e, subscribes, 0);
    });
    let per_session = sessions as f64 / USERS as f64;
    let per_subscription = (with_subscriptions - sessions) as f64 / subscriptions as f64;
    println!("memory/bytes_per_session: {per_session:.1} (1 000 000 users, one connected device each; target <= 128)");
    println!(
        "memory/bytes_per_subscription: {per_subscription:.1} ({subscriptions} subscriptions, both directions; target <= 32)"
    );
}

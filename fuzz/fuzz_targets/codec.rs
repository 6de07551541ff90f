//! Any bytes into the event, batch and snapshot decoders and into `Engine::open`
//! (`presence_conformance::fuzzing::codec`), with every allocation counted: the peak of live
//! heap bytes during one input must stay under the codec's limit plus slack
//! (`codec_allocation_limit`), so a few bytes can never make the decoder allocate beyond
//! `BATCH_BYTES_MAX` or `SNAPSHOT_BYTES_MAX`.

#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use presence_conformance::fuzzing;

/// The system allocator, counting live bytes and their peak since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// The largest peak of any input so far, reported on stderr when it grows past 1 MiB.
static MAX_PEAK: AtomicUsize = AtomicUsize::new(1 << 20);

impl Counting {
    fn grew(size: usize) {
        let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(live, Ordering::Relaxed);
    }

    fn shrank(size: usize) {
        LIVE.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc_zeroed(layout);
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        Self::shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            // Counted as if old and new lived at once, as they do when realloc copies.
            Self::grew(new_size);
            Self::shrank(layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    fuzzing::codec(data);
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    if peak > MAX_PEAK.fetch_max(peak, Ordering::Relaxed) {
        eprintln!("codec: new peak allocation {peak} bytes, for an input of {} bytes", data.len());
    }
    let limit = fuzzing::codec_allocation_limit(data);
    assert!(
        peak <= limit,
        "decoding {} bytes allocated {peak} bytes at once, over the {limit}-byte limit",
        data.len()
    );
});

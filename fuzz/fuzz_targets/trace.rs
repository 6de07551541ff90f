//! Any text into the conformance trace parser and runner
//! (`presence_conformance::fuzzing::trace`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_conformance::fuzzing::trace(data));

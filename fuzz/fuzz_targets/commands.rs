//! Commands, ticks, snapshots, reopenings and store failures on the engine and the model in
//! lockstep (`presence_conformance::fuzzing::commands`).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_conformance::fuzzing::commands(data));

//! What the servers (`presence serve`, `presence node`) log: the libraries' `tracing` events
//! (a runtime that stops and why, a store that refuses a batch, snapshots, shards taken
//! over) as plain lines on stderr, where a supervisor's journal picks them up.
//! `PRESENCE_LOG` sets the level (`error`, `warn`, `info`, `debug`, `trace` or `off`; `info`
//! by default).

use std::str::FromStr;

use tracing_subscriber::filter::LevelFilter;

/// The environment variable that sets the level.
const LEVEL_VARIABLE: &str = "PRESENCE_LOG";

/// Installs the stderr logger for `name`; a bad `PRESENCE_LOG` is said and `info` used.
pub(crate) fn init(name: &str) {
    let level = match std::env::var(LEVEL_VARIABLE) {
        Err(_) => LevelFilter::INFO,
        Ok(text) => LevelFilter::from_str(&text).unwrap_or_else(|_| {
            eprintln!("{name}: {LEVEL_VARIABLE}={text:?} is not a level (error, warn, info, debug, trace, off): using info");
            LevelFilter::INFO
        }),
    };
    // Only the first call in a process installs it (the tests run commands in-process too).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_ansi(false)
        .try_init();
}

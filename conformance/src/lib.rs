//! The conformance suite of the presence engine: a reference model of SPEC.md, the engine and
//! the model in lockstep for model-based tests, the runner of conformance traces
//! (docs/TRACE-FORMAT.md), and the conformance kit that runs the model-based tests against any
//! implementation.
//!
//! - [`model::Model`]: SPEC.md written as plainly as possible (maps, vectors, linear scans),
//!   sharing no logic with the engine, so a bug must be written twice to hide.
//! - [`subject::Subject`]: what a trace drives, implemented by the engine over any store
//!   ([`subject::EngineSubject`]) and by the model. Implement it to check another system.
//! - [`lockstep::Lockstep`]: runs the same steps on the engine and the model and compares
//!   replies, notices and every read after each step, checking the invariants and, at the
//!   end, that replaying the log gives the live state.
//! - [`trace`]: parses, runs and writes traces; `presence conform` is its command line.
//! - [`kit`]: the model-based tests against any [`Subject`] built from a configuration:
//!   random cases compared with the model after every step, the first failure shrunk and
//!   written as a trace; and traces generated with the model's expectations.
//! - [`exec`]: any implementation behind an adapter program that speaks JSON lines
//!   (docs/CONFORMANCE-PROTOCOL.md), as a [`Subject`]; `presence conform --exec`.
//! - [`fuzzing`]: the logic of the fuzz targets in `fuzz/`, replayed by `cargo test`.
//!
//! ```
//! use presence_conformance::trace::{run_text, Target};
//!
//! let trace = r#"
//! {"at": 0, "op": "login", "user": "alice", "device": "phone"}
//! {"expect": "notices", "notices": [{"to": "alice", "device": "phone", "about": "alice", "status": "ONLINE", "custom": ""}]}
//! "#;
//! let mut out = Vec::new();
//! assert_eq!(run_text("login.jsonl", trace, &[Target::Mem, Target::Model], &mut out), 0);
//! assert_eq!(String::from_utf8_lossy(&out).trim(), "1 passed, 0 failed");
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod exec;
pub mod fuzzing;
pub mod kit;
pub mod lockstep;
pub mod model;
pub mod observe;
pub mod sharded;
pub mod subject;
pub mod trace;

pub use model::Model;
pub use observe::{FlatNotice, Refusal, Response, ResultStatus};
pub use subject::{EngineSubject, Subject};

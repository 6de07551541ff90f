//! The part of the `presence` command that its tests use as well: a cluster of nodes in this
//! process as one implementation for the conformance traces and the kit
//! ([`cluster_subject::ClusterSubject`], what `presence conform --store cluster:N` runs).
//! Everything else of the command is in the binary (`src/main.rs`).

#![forbid(unsafe_code)]

pub mod cluster_subject;

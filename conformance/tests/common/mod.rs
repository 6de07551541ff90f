//! Strategies shared by the model-based tests: the library's own
//! (`presence_conformance::kit::strategies`), the one copy the conformance kit uses too.

#![allow(unused_imports)]

pub use presence_conformance::kit::strategies::{cases, command, config, steps, USERS};

//! Filled by its own issue; see the README.

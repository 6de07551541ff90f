#!/usr/bin/env bash
# The project's test command (the README's, and what CI runs): formatting, lints, the whole
# test suite (unit, integration, property, conformance, crash tests and the fuzz corpora
# replayed), the docs without warnings, and the benchmarks built (not run) so they cannot rot.
# Everything it needs comes from Cargo.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo bench --workspace --no-run --quiet

#!/usr/bin/env bash
# The project's test command: formatting, lints, the whole test suite, and the benchmarks
# built (not run) so they cannot rot. Everything it needs comes from Cargo.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace

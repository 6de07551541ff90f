#!/usr/bin/env bash
# The project's test command (the README's, and what CI runs): formatting, lints, the whole
# test suite (unit, integration, property, conformance, crash tests and the fuzz corpora
# replayed, the NATS store on real nats-server processes, the gateway and its page in headless
# Chromium, the load test against a real redis-server, the gateway's metrics checked by
# Prometheus's promtool and scraped by a real Prometheus), the docs without warnings, and the
# benchmarks built (not run) so they cannot rot. Crates come from Cargo; the servers the tests
# start (and promtool) come from Debian, installed by scripts/install-programs.sh when missing.
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/install-programs.sh nats-server redis-server chromium promtool prometheus
cargo test --workspace
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
cargo bench --workspace --no-run --quiet

#!/usr/bin/env bash
# The test command of the README (and of CI, through .ci/run): installs what the tests need,
# then runs formatting, lint and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup component add rustfmt clippy >/dev/null 2>&1 || true
# librdkafka is built with TLS and SASL SCRAM on the system OpenSSL (rdkafka's `ssl` feature).
pkg-config --exists openssl 2>/dev/null || (apt-get update && apt-get install -y libssl-dev pkg-config)
# kafka-python is the independent second client of the interop tests.
python3 -c "import kafka" 2>/dev/null || python3 -m pip install --quiet kafka-python
# Headless Chromium opens the dashboard in crates/keyshift/tests/dashboard.rs.
command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# --all-targets also runs each criterion bench once in test mode, so benches cannot rot.
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked

#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with the Rust toolchain: installs what
# the tests need, then runs formatting and lint checks, every unit and contract test, and
# the end-to-end suite. Idempotent; safe to run again. Exit code: 0 only if all passed.
set -euo pipefail
cd "$(dirname "$0")/.."

# A target dir outside the clone keeps repeated runs (and CI on the same machine) fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ledger/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n== %s ==\n' "$*"; }

step "toolchain"
cargo --version
rustc --version
for component in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
done

step "services"
# shellcheck source=scripts/services.sh
source scripts/services.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --all-targets --locked -- -D warnings

step "tests: unit, contract suites against every adapter, end-to-end"
# Logs of the services under test go to the test output only when a test fails.
cargo test --all-targets --locked -- --test-threads="${TEST_THREADS:-4}"

step "end-to-end suite again, every process on PostgreSQL + Kafka + S3 + Redis"
# (The production:: and outages:: tests pick their backends themselves and ran above.)
LEDGER_TEST_BACKENDS=production cargo test --test it --locked -- \
  --test-threads="${TEST_THREADS:-4}" --skip production:: --skip outages::

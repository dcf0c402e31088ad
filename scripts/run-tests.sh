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
# --workspace: the root package alone is the default; this takes ledger-bench (bench/) in.
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests: unit, contract suites against every adapter, end-to-end"
# Logs of the services under test go to the test output only when a test fails.
cargo test --workspace --all-targets --locked -- --test-threads="${TEST_THREADS:-4}"

step "date-sensitive tests again at other dates (libfaketime, scripts/at-date.sh)"
# Periods open and close with the clock: what is a DRAFT today is FINAL next month. These
# tests must hold on any date, so they run again at a month end, a year end, the night
# Europe's clocks go forward, and in 2030 (cargo runs each test binary through at-date.sh).
runner="CARGO_TARGET_$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')_RUNNER"
for when in 2026-11-30T23:50:00Z 2026-12-31T23:55:00Z 2027-03-28T00:55:00Z 2030-06-15T12:00:00Z; do
  echo "-- at $when"
  # (The contract suites are left out: PostgreSQL's clock is not moved.)
  env "$runner=$PWD/scripts/at-date.sh $when" cargo test --lib --locked -q -- \
    domain:: render:: source:: auth:: api::
  env "$runner=$PWD/scripts/at-date.sh $when" cargo test --test it --locked -q -- \
    --test-threads="${TEST_THREADS:-4}" lifecycle:: security:: api_errors:: documents:: \
    recovery:: helpers::
done

step "end-to-end suite again, every process on PostgreSQL + Kafka + S3 + Redis"
# (The production::, outages:: and tls:: tests pick their backends themselves and ran above.)
LEDGER_TEST_BACKENDS=production cargo test --test it --locked -- \
  --test-threads="${TEST_THREADS:-4}" --skip production:: --skip outages:: --skip tls::

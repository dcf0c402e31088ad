#!/usr/bin/env bash
# Shared by the production benchmark scripts (sourced): builds the release binaries (`ledger`,
# which the worker processes run, and `ledger-bench` beside it), starts the test services and
# defines `on_production RUN COMMAND…`, which runs COMMAND with APP_ENV_*
# pointing at a fresh PostgreSQL database, Kafka topic and consumer group, S3 bucket and the
# shared Redis, all named after RUN.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ledger/target}"
# shellcheck source=scripts/services.sh
source scripts/services.sh
# Two builds: together, the bench's `fixtures` feature would reach the `ledger` binary too.
cargo build --release --locked --quiet
cargo build --release --locked --quiet --package ledger-bench
ledger="$CARGO_TARGET_DIR/release/ledger"
ledger_bench="$CARGO_TARGET_DIR/release/ledger-bench"
bench_key=$("$ledger" keygen)

on_production() {
  local run=$1; shift
  psql "$LEDGER_TEST_DATABASE_URL" -qc "CREATE DATABASE $run"
  curl -fsS -X PUT "$LEDGER_TEST_S3_ENDPOINT/${run//_/-}" >/dev/null
  env \
    APP_ENV_DATABASE_URL="${LEDGER_TEST_DATABASE_URL%/*}/$run" \
    APP_ENV_QUEUE=kafka APP_ENV_KAFKA_BROKERS="$LEDGER_TEST_KAFKA_BROKERS" \
    APP_ENV_KAFKA_TOPIC="ledger.$run" APP_ENV_KAFKA_GROUP_ID="$run" \
    APP_ENV_STORAGE_URL="s3://${run//_/-}/ledgers" APP_ENV_S3_ENDPOINT="$LEDGER_TEST_S3_ENDPOINT" \
    APP_ENV_S3_ACCESS_KEY_ID=bench APP_ENV_S3_SECRET_ACCESS_KEY=bench \
    APP_ENV_LEDGER_ENCRYPTION_KEY="$bench_key" \
    APP_ENV_WEBSOCKET_REDIS_URL="$LEDGER_TEST_REDIS_URL" APP_ENV_REDIS_URL="$LEDGER_TEST_REDIS_URL" \
    APP_ENV_LOG_LEVEL=error \
    "$@"
}

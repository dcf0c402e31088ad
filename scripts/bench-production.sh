#!/usr/bin/env bash
# End-to-end throughput on the production stack: an api-only process plus 1 and then 2
# worker-only processes on PostgreSQL, Kafka (tansu), S3 (moto) and Redis, each run on a
# fresh database, topic, consumer group and bucket. Usage: scripts/bench-production.sh [COUNT]
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ledger/target}"
source scripts/services.sh
cargo build --release --locked --quiet
ledger="$CARGO_TARGET_DIR/release/ledger"
key=$("$ledger" keygen)
for workers in 1 2; do
  run="bench_$(date +%s)_$workers"
  psql "$LEDGER_TEST_DATABASE_URL" -qc "CREATE DATABASE $run"
  curl -fsS -X PUT "$LEDGER_TEST_S3_ENDPOINT/${run//_/-}" >/dev/null
  env \
    APP_ENV_DATABASE_URL="${LEDGER_TEST_DATABASE_URL%/*}/$run" \
    APP_ENV_QUEUE=kafka APP_ENV_KAFKA_BROKERS="$LEDGER_TEST_KAFKA_BROKERS" \
    APP_ENV_KAFKA_TOPIC="ledger.$run" APP_ENV_KAFKA_GROUP_ID="$run" \
    APP_ENV_STORAGE_URL="s3://${run//_/-}/ledgers" APP_ENV_S3_ENDPOINT="$LEDGER_TEST_S3_ENDPOINT" \
    APP_ENV_S3_ACCESS_KEY_ID=bench APP_ENV_S3_SECRET_ACCESS_KEY=bench \
    APP_ENV_LEDGER_ENCRYPTION_KEY="$key" \
    APP_ENV_WEBSOCKET_REDIS_URL="$LEDGER_TEST_REDIS_URL" APP_ENV_REDIS_URL="$LEDGER_TEST_REDIS_URL" \
    APP_ENV_LOG_LEVEL=error \
    "$ledger" bench small --count "$count" --workers "$workers" --concurrency 2
done

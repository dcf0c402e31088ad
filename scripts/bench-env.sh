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
bench_signing_key=$(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 2>/dev/null)

# The benchmarks' S3: s3s-fs (a Rust S3 server over a directory, from crates.io) unless
# BENCH_S3=moto. moto's single Python thread spends ~5 ms of CPU on each PUT and serialised
# them: it bounded the production shape at ~116 ledgers/s (BENCHMARKS.md, 2026-12-05). The
# test suite keeps moto: it checks behaviour, not speed.
bench_s3="${BENCH_S3:-s3s}"
if [ "$bench_s3" = s3s ]; then
  s3s_root="$HOME/.cache/ledger/s3s"
  if [ ! -x "$s3s_root/bin/s3s-fs" ]; then
    echo "bench: building s3s-fs 0.14.1 into $s3s_root (once, a few minutes)" >&2
    CARGO_TARGET_DIR="$HOME/.cache/ledger/s3s-target" \
      cargo install --quiet s3s-fs@0.14.1 --features binary --root "$s3s_root"
  fi
  s3s_data=$(mktemp -d)
  s3s_port=39600
  while (exec 3<>"/dev/tcp/127.0.0.1/$s3s_port") 2>/dev/null; do s3s_port=$((s3s_port + 1)); done
  "$s3s_root/bin/s3s-fs" --host 127.0.0.1 --port "$s3s_port" \
    --access-key bench --secret-key bench "$s3s_data" >"$s3s_data.log" 2>&1 &
  STARTED_PIDS+=($!)
  trap 'stop_started_services; rm -rf "$s3s_data" "$s3s_data.log"' EXIT
  export LEDGER_TEST_S3_ENDPOINT="http://127.0.0.1:$s3s_port"
  wait_for 30 "s3s-fs at $LEDGER_TEST_S3_ENDPOINT" \
    bash -c "exec 3<>/dev/tcp/127.0.0.1/$s3s_port" 2>/dev/null
fi

# A bucket for run $1: s3s-fs keeps each bucket as a directory (and refuses unsigned
# requests); moto takes an unsigned PUT.
make_bucket() {
  if [ "$bench_s3" = s3s ]; then
    mkdir -p "$s3s_data/$1"
  else
    curl -fsS -X PUT "$LEDGER_TEST_S3_ENDPOINT/$1" >/dev/null
  fi
}

on_production() {
  local run=$1; shift
  psql "$LEDGER_TEST_DATABASE_URL" -qc "CREATE DATABASE $run"
  make_bucket "${run//_/-}"
  env \
    APP_ENV_DATABASE_URL="${LEDGER_TEST_DATABASE_URL%/*}/$run" \
    APP_ENV_QUEUE=kafka APP_ENV_KAFKA_BROKERS="$LEDGER_TEST_KAFKA_BROKERS" \
    APP_ENV_KAFKA_TOPIC="ledger.$run" APP_ENV_KAFKA_GROUP_ID="$run" \
    APP_ENV_STORAGE_URL="s3://${run//_/-}/ledgers" APP_ENV_S3_ENDPOINT="$LEDGER_TEST_S3_ENDPOINT" \
    APP_ENV_S3_ACCESS_KEY_ID=bench APP_ENV_S3_SECRET_ACCESS_KEY=bench \
    APP_ENV_LEDGER_ENCRYPTION_KEY="$bench_key" APP_ENV_SIGNING_KEY="$bench_signing_key" \
    APP_ENV_WEBSOCKET_REDIS_URL="$LEDGER_TEST_REDIS_URL" APP_ENV_REDIS_URL="$LEDGER_TEST_REDIS_URL" \
    APP_ENV_LOG_LEVEL=error \
    "$@"
}

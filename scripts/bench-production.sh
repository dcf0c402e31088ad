#!/usr/bin/env bash
# End-to-end throughput on the production stack: an api-only process plus 1 and then 2
# worker-only processes on PostgreSQL, Kafka (tansu), S3 (moto) and Redis, each run on a
# fresh database, topic, consumer group and bucket. Usage: scripts/bench-production.sh [COUNT]
set -euo pipefail
count="${1:-1000}"
# shellcheck source=scripts/bench-env.sh
source "$(dirname "$0")/bench-env.sh"
for workers in 1 2; do
  on_production "bench_$(date +%s)_$workers" \
    "$ledger_bench" small --count "$count" --workers "$workers" --concurrency 2
done

#!/usr/bin/env bash
# Live-event latency, worker emit → WebSocket client receive, on real ledgers: first the
# embedded shape (one process, in-process bus), then the production shape (a worker-only
# process publishing through Redis to this api-only process, on PostgreSQL, Kafka, S3).
# Usage: scripts/bench-live.sh [extra `ledger-bench live` flags, e.g. --clients 10000]
set -euo pipefail
# shellcheck source=scripts/bench-env.sh
source "$(dirname "$0")/bench-env.sh"
APP_ENV_LOG_LEVEL=error "$ledger_bench" live "$@"
on_production "bench_live_$(date +%s)" "$ledger_bench" live --workers 1 "$@"

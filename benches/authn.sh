#!/usr/bin/env bash
# Sign-in (/authn) benchmark: release build of unicred on loopback, rate limiters off, in one run:
#   1. raw pool throughput: `unicred hash bench --threads WORKERS` (same binary)
#   2. end-to-end sign-in throughput: oha POSTing correct credentials at 2 x WORKERS connections
#      for THROUGHPUT_DURATION; ratio to (1)                                    (target >= 0.9)
#   3. overload at 8 x WORKERS connections for OVERLOAD_DURATION: only 200/429/503 allowed, every
#      503 < 20 ms, p99 of 200s <= (queue/workers + 1) x hash time x 1.5, peak RSS (VmHWM)
#      <= 64 MiB + workers x m
#   4. timing equality: median latency of unknown usernames vs known users with a wrong
#      password, sequential and interleaved, TIMING_N each                     (ratio within 5 %)
#   5. tenant fairness: tenant A flooded (FLOOD_CONNS connections, wrong passwords, many
#      usernames) while tenant B signs in sequentially; B median under flood / unloaded (<= 2x)
# on SQLite, then also on PostgreSQL when UNICRED_BENCH_PG_URL is set or PG=1 (throwaway
# cluster started here with initdb/pg_ctl as the postgres user, removed at the end).
# Prints a summary table (PASS/MISS per target) and writes benches/results/<timestamp>-authn/.
#
#   benches/authn.sh                 # SQLite (~2.5 min after the build)
#   PG=1 benches/authn.sh            # SQLite + throwaway PostgreSQL (~5 min)
#   UNICRED_BENCH_PG_URL=postgres://u:p@127.0.0.1:5432/postgres benches/authn.sh
#
# Knobs: WORKERS (hash_workers, default nproc) QUEUE (hash_queue, 64) PORT (18081)
#   THROUGHPUT_DURATION (15s) OVERLOAD_DURATION (20s) WARMUP (2s) TIMING_N (300) FAIR_N (150)
#   FLOOD_CONNS (32) FLOOD_DURATION (15s) FLOOD_QPS (0: closed loop; N: open loop at N requests/s) USERS (64, tenant A) IDLE_WAIT (60 s to wait for a quiet
#   host before each phase) IDLE_THRESHOLD (25 = % of one core) PG_PORT (55433, PG=1)
#   SKIP_BUILD=1 OHA CARGO_TARGET_DIR (/work/target-bench) PG_FRESH=0 (use the named database as is)
#   PHASES (comma-separated subset of throughput,overload,timing,fairness)
# Needs: cargo, oha, jq, curl, python3; PG=1 needs initdb/pg_ctl and a `postgres` user.
# Only 127.0.0.1 is targeted; every load run is bounded by oha -z and a timeout.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

NPROC=$(nproc)
WORKERS=${WORKERS:-$NPROC}
QUEUE=${QUEUE:-64}
PORT=${PORT:-18081}
PG_PORT=${PG_PORT:-55433}
PG_URL=${UNICRED_BENCH_PG_URL:-}
PG_FRESH=${PG_FRESH:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
BIN="$CARGO_TARGET_DIR/release/unicred"
T_START=$(date +%s)

# unicred refuses unknown UNICRED_* variables (UNICRED_BENCH_PG_URL among them): start it
# with a clean UNICRED_* environment.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^UNICRED_' || true)

OHA=${OHA:-$(command -v oha || true)}
[ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ] && OHA="$HOME/.cargo/bin/oha"
[ -n "$OHA" ] || { echo "oha not found: install it with 'cargo install oha --locked'" >&2; exit 1; }
for tool in jq curl python3; do
  command -v $tool >/dev/null || { echo "$tool not found (apt-get install -y $tool)" >&2; exit 1; }
done
if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/"; then
  echo "something already listens on 127.0.0.1:$PORT; refusing to benchmark it" >&2
  exit 1
fi

OUT="$ROOT/benches/results/$(date +%Y%m%d-%H%M%S)-authn"
mkdir -p "$OUT"
WORK=$(mktemp -d)
chmod 755 "$WORK"
SERVER_PID=
PG_DROP=
PG_DIR=
cleanup() {
  stop_server
  if [ -n "$PG_DROP" ]; then psql -q "$PG_URL" -c "drop database if exists $PG_DROP" >/dev/null 2>&1 || true; fi
  if [ -n "$PG_DIR" ]; then
    su postgres -s /bin/sh -c "pg_ctl -D '$PG_DIR/data' -m fast -w stop" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}
trap cleanup EXIT

{
  echo "command: ${BENCH_CMD:-benches/authn.sh} (WORKERS=$WORKERS QUEUE=$QUEUE PG=${PG:-} PG_URL=${PG_URL:+set})"
  echo "date: $(date -Is)"
  echo "nproc: $NPROC (server, oha/python load generator and postgres share these cores)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel: $(uname -r)"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "oha: $("$OHA" --version 2>/dev/null | head -1)"
  echo "python: $(python3 --version 2>&1)"
  echo "unicred: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt"

# ---- build ------------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building unicred (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)..."
  nice -n 5 cargo build --release --quiet --bin unicred
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }
echo "binary: $BIN ($(stat -c '%y' "$BIN" | cut -d. -f1))" | tee -a "$OUT/meta.txt"

host_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }
# Waits up to IDLE_WAIT s for the host to be quiet (other engineers compile on the same cores).
quiet_check() { # label
  local a b busy deadline=$(( $(date +%s) + ${IDLE_WAIT:-60} ))
  while :; do
    a=$(host_ticks); sleep 1; b=$(host_ticks)
    busy=$(awk -v a="$a" -v b="$b" -v ncpu="$NPROC" 'BEGIN { split(a, x, " "); split(b, y, " ")
      printf "%.0f", 100 * ncpu * ((y[1] - x[1]) - (y[2] - x[2])) / (y[1] - x[1]) }')
    [ "$busy" -le "${IDLE_THRESHOLD:-25}" ] && break
    [ "$(date +%s)" -ge "$deadline" ] && break
    echo "  host busy before $1 ($busy% of one core), waiting..." >&2
    sleep 4
  done
  echo "host CPU before $1: $busy% of one core (load $(cut -d' ' -f1 /proc/loadavg))" | tee -a "$OUT/meta.txt"
  [ "$busy" -le "${IDLE_THRESHOLD:-25}" ] || echo "WARNING: the host is busy before $1: figures will be low" | tee -a "$OUT/meta.txt" >&2
}

# ---- 1. raw pool throughput -----------------------------------------------------------
# Once here (for the Argon2 parameters and a first figure), then again by authn_bench.py right
# before each throughput phase, on the same host state: that second figure is the one compared.
quiet_check "hash-bench"
echo "hash bench (--threads $WORKERS)..."
env UNICRED_HASH_WORKERS="$WORKERS" UNICRED_DATA_DIR="$WORK/hb" UNICRED_KEYS_DIR="$WORK/hbk" \
  "$BIN" hash bench --threads "$WORKERS" | tee "$OUT/hash-bench.txt"
HASH_MS=$(sed -nE 's/^1 thread: +median ([0-9.]+) ms.*/\1/p' "$OUT/hash-bench.txt")
HASH_RPS=$(sed -nE "s/^$WORKERS threads: ([0-9.]+) hashes.*/\1/p" "$OUT/hash-bench.txt")
M_KIB=$(sed -nE 's/^argon2id m=([0-9]+) KiB.*/\1/p' "$OUT/hash-bench.txt")
[ -n "$HASH_MS" ] && [ -n "$HASH_RPS" ] && [ -n "$M_KIB" ] || { echo "cannot parse hash bench output" >&2; exit 1; }

wait_ready() { # url log
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null --max-time 1 "$1" && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server died:" >&2; cat "$2" >&2; exit 1; }
    sleep 0.1
  done
  echo "server not ready at $1 within 15s" >&2; cat "$2" >&2; exit 1
}

# ---- 2-5 against a server --------------------------------------------------------------
bench_unicred() { # label [database-url]
  local label=$1 db=${2:-} dir="$OUT/$1" tmp
  mkdir -p "$dir"
  tmp=$(mktemp -d -p "$WORK")
  local base="http://127.0.0.1:$PORT"
  local envs=(UNICRED_DATA_DIR="$tmp/data" UNICRED_KEYS_DIR="$tmp/keys" UNICRED_LISTEN="127.0.0.1:$PORT"
    UNICRED_PUBLIC_URL="http://localhost:$PORT" UNICRED_IP_RATE_PER_SECOND=0 UNICRED_CLIENT_RATE_PER_SECOND=0
    UNICRED_HASH_WORKERS="$WORKERS" UNICRED_HASH_QUEUE="$QUEUE" UNICRED_LOG_FORMAT=json RUST_LOG=warn)
  [ -n "$db" ] && envs+=(UNICRED_DATABASE_URL="$db")
  echo "unicred ($label): starting"
  env "${envs[@]}" "$BIN" serve >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  wait_ready "$base/readyz" "$dir/server.log"
  local boot admin_id admin_secret admin_tok
  boot=$(env "${envs[@]}" "$BIN" bootstrap --json 2>>"$dir/server.log")
  admin_id=$(jq -r .client_id <<<"$boot"); admin_secret=$(jq -r .client_secret <<<"$boot")
  admin_tok=$(curl -sf -u "$admin_id:$admin_secret" -d grant_type=client_credentials "$base/t/system/token" | jq -r .access_token)
  [ -n "$admin_tok" ] && [ "$admin_tok" != null ] || { echo "no admin token" >&2; exit 1; }
  timeout 900 python3 "$ROOT/benches/authn_bench.py" --base "$base" --admin-token "$admin_tok" --pid "$SERVER_PID" \
    --oha "$OHA" --out "$dir" --label "$label" --workers "$WORKERS" --queue "$QUEUE" \
    --hash-ms "$HASH_MS" --hash-rps "$HASH_RPS" --m-kib "$M_KIB" --bin "$BIN" --users "${USERS:-64}" \
    --warmup "${WARMUP:-2s}" --throughput-duration "${THROUGHPUT_DURATION:-15s}" \
    --overload-duration "${OVERLOAD_DURATION:-20s}" --timing-n "${TIMING_N:-300}" --fair-n "${FAIR_N:-150}" \
    --flood-conns "${FLOOD_CONNS:-32}" --flood-duration "${FLOOD_DURATION:-15s}" --flood-qps "${FLOOD_QPS:-0}" \
    --idle-wait "${IDLE_WAIT:-60}" --idle-threshold "${IDLE_THRESHOLD:-25}" \
    --phases "${PHASES:-throughput,overload,timing,fairness}"
  local n500
  n500=$(grep -c '"message":"internal error"' "$dir/server.log" || true)
  [ "$n500" -gt 0 ] && echo "  note: the server logged $n500 internal errors (500s), see $label/server.log:" \
    && grep '"message":"internal error"' "$dir/server.log" | grep -o '"error":"[^"]*"' | sort | uniq -c | sed 's/^/    /'
  true
  stop_server
}

start_throwaway_pg() {
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null || { echo "PG=1 needs initdb and pg_ctl" >&2; exit 1; }
  PG_DIR=$(mktemp -d -p "$WORK")
  chown postgres "$PG_DIR"
  echo "postgres: throwaway cluster in $PG_DIR on 127.0.0.1:$PG_PORT"
  su postgres -s /bin/sh -c "initdb -D '$PG_DIR/data' -U bench --auth=trust >'$PG_DIR/initdb.log' 2>&1" \
    || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
  su postgres -s /bin/sh -c "pg_ctl -D '$PG_DIR/data' -l '$PG_DIR/pg.log' -w \
    -o \"${PG_OPTS:-} -c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='$PG_DIR'\" start" >/dev/null \
    || { cat "$PG_DIR/pg.log" >&2; exit 1; }
  echo "postgres: $(su postgres -s /bin/sh -c 'postgres --version')" >>"$OUT/meta.txt"
  PG_URL="postgres://bench@127.0.0.1:$PG_PORT/postgres"
  PG_FRESH=0
}

bench_unicred sqlite
if [ -n "${PG:-}" ] && [ -z "$PG_URL" ]; then start_throwaway_pg; fi
if [ -n "$PG_URL" ]; then
  pg_db=$PG_URL
  if [ "$PG_FRESH" = 1 ]; then
    command -v psql >/dev/null || { echo "psql not found (or set PG_FRESH=0 with an empty database)" >&2; exit 1; }
    PG_DROP="unicred_bench_$$"
    psql -q "$PG_URL" -c "create database $PG_DROP" >/dev/null
    pg_db=$(sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\1/$PG_DROP#" <<<"$PG_URL")
  fi
  bench_unicred postgres "$pg_db"
  if [ -n "$PG_DROP" ]; then psql -q "$PG_URL" -c "drop database if exists $PG_DROP" >/dev/null; PG_DROP=; fi
fi

# ---- report ---------------------------------------------------------------------------
python3 "$ROOT/benches/authn_report.py" "$OUT" "$HASH_MS" "$HASH_RPS" "$WORKERS" "$(( $(date +%s) - T_START ))"
echo "results: ${OUT#"$ROOT"/} (meta.txt, hash-bench.txt, summary.md, <backend>/results.json, oha JSON/SQLite, server.log)"

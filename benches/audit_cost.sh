#!/usr/bin/env bash
# What the audit trail costs token issuance (issue 7's target: < 10 % of throughput).
#
# Builds two release binaries of the current tree: unicred as it is, and the same source with
# only the client_credentials grant's `token.issued` audit event removed (patched in a
# temporary git worktree; the production code has no switch to turn auditing off). Then,
# alternating the two ROUNDS times, each on a fresh SQLite database: oha POSTs
# client_credentials at CONNS connections for DURATION. Prints per round req/s, p50 and the
# server's CPU per request (and on PostgreSQL the database's), and the medians' ratio (audited / unaudited).
#
#   benches/audit_cost.sh            # ~3 min after the builds
#   UNICRED_BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres benches/audit_cost.sh
#                                    # on PostgreSQL (a throwaway database per round)
#
# SPLIT=1 runs unicred on CPU 0 and oha and the local PostgreSQL on CPU 1 (taskset; PostgreSQL's
# processes are moved back to every CPU at the end): unicred's CPU is then the limit for both
# binaries, as when the database has a host of its own, and the ratio is unicred's own cost.
#
# Knobs: DURATION (8s) CONNS (32) ROUNDS (3) PORT (18090) SKIP_BUILD=1 SPLIT=1 OHA
#        CARGO_TARGET_DIR (/work/target-bench)
# Needs: cargo, git, oha, jq, curl (psql for PostgreSQL). Only 127.0.0.1 is targeted; every
# load run is bounded by oha -z and `timeout`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-8s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-18090}
PG_URL=${UNICRED_BENCH_PG_URL:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
OHA=${OHA:-$(command -v oha || echo "$HOME/.cargo/bin/oha")}
[ -x "$OHA" ] || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^UNICRED_' || true)

OUT="$ROOT/benches/results/$(date +%Y%m%d-%H%M%S)-audit"
mkdir -p "$OUT"
WORK=$(mktemp -d)
SERVER_PID=
PG_DB=
SERVER_CPU=() LOAD_CPU=()
if [ -n "${SPLIT:-}" ]; then
  SERVER_CPU=(taskset -c 0) LOAD_CPU=(taskset -c 1)
  [ -n "$PG_URL" ] && for p in $(pgrep -x postgres); do taskset -a -p -c 1 "$p" >/dev/null; done
fi
cleanup() {
  stop_server
  [ -n "${SPLIT:-}" ] && [ -n "$PG_URL" ] && for p in $(pgrep -x postgres); do
    taskset -a -p -c "0-$(($(nproc --all) - 1))" "$p" >/dev/null 2>&1 || true
  done
  [ -n "$PG_DB" ] && psql -q "$PG_URL" -c "drop database if exists $PG_DB" >/dev/null 2>&1 || true
  git -C "$ROOT" worktree remove --force "$WORK/unaudited" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=
}
trap cleanup EXIT

# ---- the two binaries ----------------------------------------------------------------
AUDITED="$OUT/unicred-audited"
UNAUDITED="$OUT/unicred-unaudited"
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building audited (release)..."
  nice -n 5 cargo build --release --quiet --bin unicred
  cp "$CARGO_TARGET_DIR/release/unicred" "$AUDITED"
  echo "building unaudited (the same tree without the client_credentials token.issued event)..."
  git worktree add --detach --quiet "$WORK/unaudited" HEAD
  if ! git diff --quiet HEAD; then git diff HEAD | (cd "$WORK/unaudited" && git apply); fi
  python3 - "$WORK/unaudited/src/oidc/token.rs" <<'EOF'
import re, sys
p = sys.argv[1]
s = open(p).read()
pat = re.compile(r'    super::audit\(\n(?:        [^\n]*\n)*?        "token\.issued",\n'
                 r'        serde_json::json!\(\{"grant": "client_credentials"[^\n]*\n    \)\n    \.await\?;\n')
s, n = pat.subn('', s, count=1)
if n != 1:
    sys.exit("benches/audit_cost.sh: the client_credentials audit call was not found in src/oidc/token.rs")
open(p, 'w').write(s)
EOF
  (cd "$WORK/unaudited" && nice -n 5 cargo build --release --quiet --bin unicred)
  cp "$CARGO_TARGET_DIR/release/unicred" "$UNAUDITED"
  # Put the audited binary back: cargo does not copy a fresh artifact out again, and other
  # benches run target/release/unicred with SKIP_BUILD=1.
  cp "$AUDITED" "$CARGO_TARGET_DIR/release/unicred"
else
  cp "$CARGO_TARGET_DIR/release/unicred" "$AUDITED"
  [ -x "${UNAUDITED_BIN:-}" ] || { echo "SKIP_BUILD needs UNAUDITED_BIN=path" >&2; exit 1; }
  cp "$UNAUDITED_BIN" "$UNAUDITED"
fi

{
  echo "command: benches/audit_cost.sh (DURATION=$DURATION CONNS=$CONNS ROUNDS=$ROUNDS SPLIT=${SPLIT:-})"
  echo "date: $(date -Is)  nproc: $(nproc)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "unicred: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (+ uncommitted changes)')  database: ${PG_URL:+PostgreSQL}${PG_URL:-SQLite}"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT/meta.txt"

# CPU ticks of every PostgreSQL process on this host (0 on SQLite, which runs in unicred).
db_cpu() {
  local t=0 p
  if [ -n "$PG_URL" ]; then
    for p in $(pgrep -x postgres || true); do
      t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
  fi
  echo "$t"
}

# ---- one round: fresh database, bootstrap, a client, warm-up, measured load ------------------
round() { # label binary
  local label=$1 bin=$2 tmp base="http://127.0.0.1:$PORT"
  tmp=$(mktemp -d -p "$WORK")
  local envs=(UNICRED_DATA_DIR="$tmp/data" UNICRED_KEYS_DIR="$tmp/keys" UNICRED_LISTEN="127.0.0.1:$PORT"
    UNICRED_PUBLIC_URL="http://localhost:$PORT" UNICRED_IP_RATE_PER_SECOND=0 UNICRED_LOG_FORMAT=json RUST_LOG=warn)
  if [ -n "$PG_URL" ]; then
    PG_DB="unicred_audit_$$_$RANDOM"
    psql -q "$PG_URL" -c "create database $PG_DB" >/dev/null
    envs+=(UNICRED_DATABASE_URL="${PG_URL%/*}/$PG_DB")
  fi
  env "${envs[@]}" "${SERVER_CPU[@]}" "$bin" serve >"$tmp/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 150); do curl -sf -o /dev/null --max-time 1 "$base/readyz" && break; sleep 0.1; done
  local boot aid asec at client cid csec auth
  boot=$(env "${envs[@]}" "$bin" bootstrap --json 2>/dev/null)
  aid=$(jq -r .client_id <<<"$boot"); asec=$(jq -r .client_secret <<<"$boot")
  at=$(curl -sf -u "$aid:$asec" -d grant_type=client_credentials "$base/t/system/token" | jq -r .access_token)
  curl -sf -o /dev/null -H "Authorization: Bearer $at" -H 'Content-Type: application/json' \
    -d '{"slug":"bench","name":"Bench"}' "$base/admin/v1/tenants"
  client=$(curl -sf -H "Authorization: Bearer $at" -H 'Content-Type: application/json' \
    -d '{"name":"bench","scopes":["read"]}' "$base/admin/v1/tenants/bench/clients")
  cid=$(jq -r .client_id <<<"$client"); csec=$(jq -r .client_secret <<<"$client")
  auth="Authorization: Basic $(printf '%s:%s' "$cid" "$csec" | base64 -w0)"
  local args=(--no-tui -c "$CONNS" -m POST -H "$auth" -H "Content-Type: application/x-www-form-urlencoded"
    -d grant_type=client_credentials)
  timeout 60 "${LOAD_CPU[@]}" "$OHA" "${args[@]}" -z 2s "$base/t/bench/token" >/dev/null
  local c0 c1 n d0 d1
  c0=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
  d0=$(db_cpu)
  timeout 120 "${LOAD_CPU[@]}" "$OHA" "${args[@]}" -z "$DURATION" --output-format json "$base/t/bench/token" >"$OUT/$label.json"
  c1=$(awk '{print $14 + $15}' "/proc/$SERVER_PID/stat")
  d1=$(db_cpu)
  curl -s "$base/metrics" | grep -E '^unicred_audit_batch_(events|seconds)_(sum|count)' >"$OUT/$label.metrics" || true
  stop_server
  if [ -n "$PG_DB" ]; then psql -q "$PG_URL" -c "drop database if exists $PG_DB" >/dev/null; PG_DB=; fi
  n=$(jq '[.statusCodeDistribution[]] | add' "$OUT/$label.json")
  local non200
  non200=$(jq '[.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0' "$OUT/$label.json")
  [ "$non200" = 0 ] || echo "WARNING: $label: $non200 non-200 responses" >&2
  local hz
  hz=$(getconf CLK_TCK)
  printf '%s %.0f %.3f %.1f %.1f\n' "$label" "$(jq .summary.requestsPerSec "$OUT/$label.json")" \
    "$(jq '.latencyPercentiles.p50 * 1000' "$OUT/$label.json")" \
    "$(awk -v c="$((c1 - c0))" -v hz="$hz" -v n="$n" 'BEGIN { print c * 1e6 / hz / n }')" \
    "$(awk -v c="$((d1 - d0))" -v hz="$hz" -v n="$n" 'BEGIN { print c * 1e6 / hz / n }')" \
    | tee -a "$OUT/rounds.txt"
}

echo "label req/s p50_ms server_cpu_us_per_req db_cpu_us_per_req" | tee "$OUT/rounds.txt"
for i in $(seq 1 "$ROUNDS"); do
  round "unaudited-$i" "$UNAUDITED"
  round "audited-$i" "$AUDITED"
done

python3 - "$OUT/rounds.txt" <<'EOF' | tee "$OUT/summary.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
med = lambda k, i: statistics.median(float(r[i]) for r in rows if r[0].startswith(k + "-"))
a, u = med("audited", 1), med("unaudited", 1)
ca, cu = med("audited", 3), med("unaudited", 3)
print(f"median req/s: audited {a:.0f}, unaudited {u:.0f} -> audited/unaudited {a / u:.3f} "
      f"(throughput cost {100 * (1 - a / u):.1f} %; target < 10 %)")
print(f"median server CPU per token: audited {ca:.1f} us, unaudited {cu:.1f} us "
      f"(+{ca - cu:.1f} us per audited event)")
da, du = med("audited", 4), med("unaudited", 4)
if da or du:
    print(f"median PostgreSQL CPU per token: audited {da:.1f} us, unaudited {du:.1f} us")
EOF
echo "results: $OUT"

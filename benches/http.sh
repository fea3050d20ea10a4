#!/usr/bin/env bash
# HTTP benchmark: unicred (release build) side by side with panva's node-oidc-provider
# (/work/shared/peers/node-oidc-provider), on loopback, with oha: CONNS connections,
# WARMUP of warm-up then DURATION of load per endpoint, on
#   discovery, jwks, token (client_credentials, ES256 JWT) and introspection (of a valid token).
# The servers run one after the other, never together. Prints req/s, p50/p99, non-2xx and
# the unicred/peer ratio per endpoint; writes everything to benches/results/<timestamp>/.
#
#   benches/http.sh                                   # SQLite + peer (~2 min after the build)
#   UNICRED_BENCH_PG_URL=postgres://u:p@127.0.0.1:5432/postgres benches/http.sh
#                                                     # also unicred on PostgreSQL
#
# Knobs: DURATION (10s) CONNS (32) WARMUP (2s, 0 to skip) PORT (18080, unicred)
#        PEER_PORT (3001) OHA (path to oha) CARGO_TARGET_DIR (/work/target-bench)
#        SKIP_BUILD=1 (use the existing binary) SKIP_PEER=1 (unicred only)
#        PEER_SRC (/work/shared/peers/node-oidc-provider, read-only: it is copied)
#        PEER_DIR (where the copy lives and `npm ci` runs; default $TMPDIR/unicred-bench-peer)
#        UNICRED_BENCH_PG_URL: a PostgreSQL URL. The script creates a throwaway database
#          unicred_bench_<pid> next to the one named (needs CREATEDB and psql) and drops it
#          afterwards; with PG_FRESH=0 it uses the named database as is (must be empty: the
#          master key is generated afresh in a temp keys dir on every run).
# Needs: cargo, node/npm, oha (cargo install oha --locked), jq, curl.
# Only 127.0.0.1 is targeted; every load run is bounded by oha -z and `timeout`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
WARMUP=${WARMUP:-2s}
PORT=${PORT:-18080}
PEER_PORT=${PEER_PORT:-3001}
PEER_SRC=${PEER_SRC:-/work/shared/peers/node-oidc-provider}
PEER_DIR=${PEER_DIR:-${TMPDIR:-/tmp}/unicred-bench-peer}
PG_URL=${UNICRED_BENCH_PG_URL:-}
PG_FRESH=${PG_FRESH:-1}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
BIN="$CARGO_TARGET_DIR/release/unicred"
FORM="Content-Type: application/x-www-form-urlencoded"
T_START=$(date +%s)

# unicred refuses unknown UNICRED_* variables (UNICRED_BENCH_PG_URL among them): start it
# with a clean UNICRED_* environment.
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^UNICRED_' || true)

OHA=${OHA:-$(command -v oha || true)}
[ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ] && OHA="$HOME/.cargo/bin/oha"
[ -n "$OHA" ] || { echo "oha not found: install it with 'cargo install oha --locked'" >&2; exit 1; }
for tool in jq curl node; do
  command -v $tool >/dev/null || { echo "$tool not found (apt-get install -y $tool)" >&2; exit 1; }
done

for p in "$PORT" "$PEER_PORT"; do
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$p/"; then
    echo "something already listens on 127.0.0.1:$p; refusing to benchmark it" >&2
    exit 1
  fi
done

OUT="$ROOT/benches/results/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
WORK=$(mktemp -d)
SERVER_PID=
PG_DROP=
cleanup() {
  stop_server
  if [ -n "$PG_DROP" ]; then psql -q "$PG_URL" -c "drop database if exists $PG_DROP" >/dev/null 2>&1 || true; fi
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
  echo "command: ${BENCH_CMD:-benches/http.sh} (DURATION=$DURATION CONNS=$CONNS WARMUP=$WARMUP)"
  echo "date: $(date -Is)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "kernel: $(uname -r)"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "oha: $("$OHA" --version 2>/dev/null | head -1)"
  echo "node: $(node --version)"
  echo "unicred: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (+ uncommitted changes)')"
  echo "peer: oidc-provider $(jq -r '.dependencies["oidc-provider"]' "$PEER_SRC/package.json")"
} >"$OUT/meta.txt"
cat "$OUT/meta.txt"

# ---- build ------------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
  echo "building unicred (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)..."
  nice -n 5 cargo build --release --quiet --bin unicred
fi
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }

# ---- load runner (same oha arguments and CPU accounting as the peer's bench.sh) -------
CLK_TCK=$(getconf CLK_TCK)
case $DURATION in *s) DUR_S=${DURATION%s};; *m) DUR_S=$(( ${DURATION%m} * 60 ));; *) DUR_S=$DURATION;; esac
LIMIT=$(( ${DUR_S%.*} + 30 ))   # hard cap per oha run, in seconds
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
host_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6 }' /proc/stat; }

run() { # dir name url method [auth-header body]
  local dir=$1 name=$2 url=$3 method=$4 auth=${5:-} body=${6:-}
  local args=(--no-tui -c "$CONNS" -m "$method" --output-format json)
  if [ -n "$body" ]; then args+=(-H "$auth" -H "$FORM" -d "$body"); fi
  if [ "$WARMUP" != "0" ]; then
    timeout "$LIMIT" "$OHA" "${args[@]}" -z "$WARMUP" "$url" >/dev/null
  fi
  local t0 c0 h0 t1 c1 h1 oha_cpu
  t0=$(date +%s.%N); c0=$(cpu_ticks); h0=$(host_ticks)
  oha_cpu=$( { TIMEFORMAT='%U %S'; time timeout "$LIMIT" "$OHA" "${args[@]}" -z "$DURATION" "$url" >"$dir/$name.json" 2>/dev/null; } 2>&1 )
  t1=$(date +%s.%N); c1=$(cpu_ticks); h1=$(host_ticks)
  # server / oha / host CPU, in percent of one core (200 = both cores of a 2-core machine)
  awk -v n="$name" -v c="$((c1 - c0))" -v hz="$CLK_TCK" -v a="$t0" -v b="$t1" -v o="$oha_cpu" \
      -v h0="$h0" -v h1="$h1" -v ncpu="$(nproc)" 'BEGIN {
    split(o, u, " "); split(h0, x, " "); split(h1, y, " "); w = b - a
    printf "%s %.0f %.0f %.0f\n", n, 100 * c / hz / w, 100 * (u[1] + u[2]) / w,
      100 * ncpu * ((y[1] - x[1]) - (y[2] - x[2])) / (y[1] - x[1]) }' >>"$dir/cpu.txt"
  printf '  %-14s %s req/s\n' "$name" "$(jq -r '.summary.requestsPerSec | floor' "$dir/$name.json")"
}

# The servers share the cores with oha: anything else busy on the host skews the figures.
quiet_check() { # label
  local a b
  a=$(host_ticks); sleep 1; b=$(host_ticks)
  awk -v l="$1" -v a="$a" -v b="$b" -v ncpu="$(nproc)" 'BEGIN { split(a, x, " "); split(b, y, " ")
    busy = 100 * ncpu * ((y[1] - x[1]) - (y[2] - x[2])) / (y[1] - x[1])
    printf "host CPU before %s: %.0f%% of one core\n", l, busy
    if (busy > 25) printf "WARNING: the host is busy before %s (%.0f%% of one core): figures will be low\n", l, busy > "/dev/stderr" }' \
    | tee -a "$OUT/meta.txt"
}

wait_ready() { # url log
  for _ in $(seq 1 150); do
    curl -sf -o /dev/null --max-time 1 "$1" && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server died:" >&2; cat "$2" >&2; exit 1; }
    sleep 0.1
  done
  echo "server not ready at $1 within 15s" >&2; cat "$2" >&2; exit 1
}

# ---- unicred ----------------------------------------------------------------------
bench_unicred() { # label [database-url]
  local label=$1 db=${2:-} dir="$OUT/unicred-$1" tmp
  mkdir -p "$dir"
  tmp=$(mktemp -d -p "$WORK")
  local base="http://127.0.0.1:$PORT"
  local envs=(UNICRED_DATA_DIR="$tmp/data" UNICRED_KEYS_DIR="$tmp/keys" UNICRED_LISTEN="127.0.0.1:$PORT"
    UNICRED_PUBLIC_URL="http://localhost:$PORT" UNICRED_IP_RATE_PER_SECOND=0 UNICRED_LOG_FORMAT=json RUST_LOG=warn)
  [ -n "$db" ] && envs+=(UNICRED_DATABASE_URL="$db")
  quiet_check "unicred-$label"
  echo "unicred ($label): starting"
  env "${envs[@]}" "$BIN" serve >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  wait_ready "$base/readyz" "$dir/server.log"

  local boot admin_id admin_secret admin_tok client cid csec auth tok
  boot=$(env "${envs[@]}" "$BIN" bootstrap --json 2>>"$dir/server.log")
  admin_id=$(jq -r .client_id <<<"$boot"); admin_secret=$(jq -r .client_secret <<<"$boot")
  admin_tok=$(curl -sf -u "$admin_id:$admin_secret" -d grant_type=client_credentials "$base/t/system/token" | jq -r .access_token)
  curl -sf -o /dev/null -H "Authorization: Bearer $admin_tok" -H 'Content-Type: application/json' \
    -d '{"slug":"bench","name":"Bench"}' "$base/admin/v1/tenants" \
    || { echo "cannot create tenant bench" >&2; exit 1; }
  client=$(curl -sf -H "Authorization: Bearer $admin_tok" -H 'Content-Type: application/json' \
    -d '{"name":"bench","scopes":["read"]}' "$base/admin/v1/tenants/bench/clients")
  cid=$(jq -r .client_id <<<"$client"); csec=$(jq -r .client_secret <<<"$client")
  auth="Authorization: Basic $(printf '%s:%s' "$cid" "$csec" | base64 -w0)"

  local t="$base/t/bench"
  tok=$(curl -sf -H "$auth" -d grant_type=client_credentials "$t/token" | jq -r .access_token)
  jq -R 'split(".")[0] | @base64d | fromjson' <<<"$tok" | jq -ce 'select(.alg == "ES256" and .typ == "at+jwt")' \
    | sed 's/^/  check: client_credentials -> JWT access token /' \
    || { echo "unicred token is not an ES256 at+jwt" >&2; exit 1; }
  check_active() {
    curl -sf -H "$auth" --data-urlencode "token=$tok" "$t/introspect" | jq -e '.active == true' >/dev/null \
      || { echo "unicred introspection is not active:true ($1)" >&2; exit 1; }
    echo "  check: introspection active:true ($1)"
  }
  check_active before
  run "$dir" discovery     "$t/.well-known/openid-configuration" GET
  run "$dir" jwks          "$t/jwks.json" GET
  run "$dir" token_cc      "$t/token" POST "$auth" "grant_type=client_credentials"
  run "$dir" introspection "$t/introspect" POST "$auth" "token=$tok"
  check_active after
  stop_server
}

# ---- peer ---------------------------------------------------------------------------
bench_peer() {
  local dir="$OUT/peer" base="http://127.0.0.1:$PEER_PORT"
  mkdir -p "$dir" "$PEER_DIR"
  cp "$PEER_SRC"/server.mjs "$PEER_SRC"/package.json "$PEER_SRC"/package-lock.json "$PEER_DIR"/
  if [ ! -d "$PEER_DIR/node_modules/oidc-provider" ] || ! cmp -s "$PEER_SRC/package-lock.json" "$PEER_DIR/node_modules/.package-lock.json.src"; then
    echo "peer: npm ci in $PEER_DIR"
    (cd "$PEER_DIR" && npm ci --no-audit --no-fund --silent) && cp "$PEER_SRC/package-lock.json" "$PEER_DIR/node_modules/.package-lock.json.src"
  fi
  quiet_check peer
  echo "peer (oidc-provider): starting"
  (cd "$PEER_DIR" && NODE_ENV=production HOST=127.0.0.1 PORT="$PEER_PORT" exec node server.mjs) >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  wait_ready "$base/.well-known/openid-configuration" "$dir/server.log"
  local auth tok opaque
  auth="Authorization: Basic $(printf '%s' 'bench-client:bench-secret' | base64 -w0)"
  tok=$(curl -sf -H "$auth" -d grant_type=client_credentials "$base/token" | jq -r .access_token)
  jq -R 'split(".")[0] | @base64d | fromjson' <<<"$tok" | jq -ce 'select(.alg == "ES256" and .typ == "at+jwt")' \
    | sed 's/^/  check: client_credentials -> JWT access token /' \
    || { echo "peer token is not an ES256 at+jwt" >&2; exit 1; }
  # oidc-provider refuses to introspect JWT access tokens: introspect an opaque one.
  opaque=$(curl -sf -H "$auth" -d grant_type=client_credentials -d resource=urn:bench:opaque "$base/token" | jq -r .access_token)
  check_active() {
    curl -sf -H "$auth" --data-urlencode "token=$opaque" "$base/token/introspection" | jq -e '.active == true' >/dev/null \
      || { echo "peer introspection is not active:true ($1)" >&2; exit 1; }
    echo "  check: introspection active:true ($1)"
  }
  check_active before
  run "$dir" discovery     "$base/.well-known/openid-configuration" GET
  run "$dir" jwks          "$base/jwks" GET
  run "$dir" token_cc      "$base/token" POST "$auth" "grant_type=client_credentials"
  run "$dir" introspection "$base/token/introspection" POST "$auth" "token=$opaque"
  check_active after
  stop_server
}

# ---- run ------------------------------------------------------------------------------
bench_unicred sqlite
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
[ -z "${SKIP_PEER:-}" ] && bench_peer

# ---- report ---------------------------------------------------------------------------
node --input-type=module -e '
  import fs from "node:fs";
  const [dir, elapsed] = process.argv.slice(1);
  const eps = [["discovery", 3], ["jwks", 3], ["token_cc", 5], ["introspection", 5]];
  const sides = ["unicred-sqlite", "unicred-postgres", "peer"].filter((s) => fs.existsSync(`${dir}/${s}`));
  const load = (side, ep) => {
    const j = JSON.parse(fs.readFileSync(`${dir}/${side}/${ep}.json`, "utf8"));
    const cpu = Object.fromEntries(fs.readFileSync(`${dir}/${side}/cpu.txt`, "utf8").trim().split("\n")
      .map((l) => { const [n, ...v] = l.split(" "); return [n, v.map(Number)]; }))[ep];
    const codes = j.statusCodeDistribution ?? {};
    const non2xx = Object.entries(codes).filter(([c]) => !c.startsWith("2")).reduce((a, [, n]) => a + n, 0);
    const ok = Object.entries(codes).filter(([c]) => c.startsWith("2")).reduce((a, [, n]) => a + n, 0);
    // oha counts requests cut off by the -z deadline as errors; keep them apart
    const errors = Object.entries(j.errorDistribution ?? {}).filter(([e]) => !/deadline/i.test(e)).reduce((a, [, n]) => a + n, 0);
    const rps = j.summary.requestsPerSec;
    return { rps, ok, non2xx, errors, p50: j.latencyPercentiles.p50 * 1000, p99: j.latencyPercentiles.p99 * 1000,
      cpu: cpu[0], oha: cpu[1], host: cpu[2], usPerReq: (cpu[0] / 100) * 1e6 / rps };
  };
  const r = {}; for (const s of sides) { r[s] = {}; for (const [e] of eps) r[s][e] = load(s, e); }
  const table = (rows) => {
    const w = rows[0].map((_, i) => Math.max(...rows.map((x) => String(x[i]).length)));
    const line = (x) => "| " + x.map((c, i) => String(c).padEnd(w[i])).join(" | ") + " |";
    return [line(rows[0]), "|" + w.map((n) => "-".repeat(n + 2)).join("|") + "|", ...rows.slice(1).map(line)].join("\n");
  };
  const f0 = (x) => x.toFixed(0), f2 = (x) => x.toFixed(2);
  let md = "";
  // ratios
  const us = sides.filter((s) => s.startsWith("unicred"));
  if (r.peer) {
    const head = ["endpoint", "peer req/s"];
    for (const s of us) head.push(`${s} req/s`, `ratio ${s.slice(8)}`);
    head.push("target", "met");
    const rows = [head];
    for (const [e, target] of eps) {
      const row = [e, f0(r.peer[e].rps)]; let met = true;
      for (const s of us) {
        const ratio = r[s][e].rps / r.peer[e].rps;
        row.push(f0(r[s][e].rps), f2(ratio) + "x");
        met &&= ratio >= target && r[s][e].non2xx === 0 && r[s][e].errors === 0;
      }
      row.push(`>= ${target}x, 0 non-2xx`, met ? "yes" : "NO");
      rows.push(row);
    }
    md += "### Throughput and ratio unicred/peer\n\n" + table(rows) + "\n\n";
  }
  const rows = [["side", "endpoint", "req/s", "p50 ms", "p99 ms", "2xx", "non-2xx", "conn errors",
    "server CPU %", "oha CPU %", "host CPU %", "server CPU us/req"]];
  for (const s of sides) for (const [e] of eps) {
    const x = r[s][e];
    rows.push([s, e, f0(x.rps), f2(x.p50), f2(x.p99), x.ok, x.non2xx, x.errors, f0(x.cpu), f0(x.oha), f0(x.host), f0(x.usPerReq)]);
  }
  md += "### Per side (CPU % = percent of one core; 200 = both cores)\n\n" + table(rows) + "\n\n";
  md += `run time: ${elapsed} s\n`;
  fs.writeFileSync(`${dir}/summary.md`, md);
  fs.writeFileSync(`${dir}/summary.json`, JSON.stringify(r, null, 2));
  console.log("\n" + md);
' "$OUT" "$(( $(date +%s) - T_START ))"
echo "results: ${OUT#"$ROOT"/} (meta.txt, summary.md, summary.json, <side>/<endpoint>.json, <side>/server.log)"

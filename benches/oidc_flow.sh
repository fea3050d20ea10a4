#!/usr/bin/env bash
# Requests per second of the full OIDC code flow (authorize → login → token) and of refresh-token
# rotation, release build, loopback, SQLite. Usage: benches/oidc_flow.sh (SKIP_BUILD=1 to reuse
# the binary; THREADS, SECONDS, PORT).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-bench}
BIN="$CARGO_TARGET_DIR/release/unicred"
PORT=${PORT:-18090}; THREADS=${THREADS:-4}; SECS=${SECONDS_EACH:-10}; USERS=$THREADS
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^UNICRED_' || true)
[ -n "${SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --quiet --bin unicred)
WORK=$(mktemp -d); PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
export UNICRED_DATA_DIR=$WORK/data UNICRED_KEYS_DIR=$WORK/keys UNICRED_LISTEN=127.0.0.1:$PORT \
  UNICRED_PUBLIC_URL=http://localhost:$PORT UNICRED_IP_RATE_PER_SECOND=0 UNICRED_LOG_FORMAT=json RUST_LOG=warn
"$BIN" serve 2>"$WORK/server.log" & PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
BOOT=$("$BIN" bootstrap --json 2>/dev/null)
ADMIN=$(curl -s -u "$(jq -r .client_id <<<"$BOOT"):$(jq -r .client_secret <<<"$BOOT")" -d grant_type=client_credentials \
  "http://127.0.0.1:$PORT/t/system/token" | jq -r .access_token)
api() { curl -sf -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d "$2" "http://127.0.0.1:$PORT/admin/v1$1"; }
api /tenants '{"slug":"flow","name":"Flow"}' >/dev/null
PW=violet-harbour-lantern-42
for i in $(seq 0 $((USERS - 1))); do api /tenants/flow/users "{\"username\":\"user$i\",\"password\":\"$PW\"}" >/dev/null; done
C=$(api /tenants/flow/clients '{"name":"web","grant_types":["authorization_code","refresh_token"],"redirect_uris":["http://127.0.0.1:9/cb"]}')
echo "argon2 path: $("$BIN" hash bench --threads 1 2>/dev/null | head -1)"
python3 "$ROOT/benches/oidc_flow.py" "http://127.0.0.1:$PORT" "http://localhost:$PORT/t/flow" \
  "$(jq -r .client_id <<<"$C")" "$(jq -r .client_secret <<<"$C")" "$PW" "$USERS" "$SECS" "$THREADS"

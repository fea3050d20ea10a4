#!/usr/bin/env bash
# Argon2 benchmark: patched vendor/argon2 (each backend) vs upstream argon2 0.5.3
# vs the reference C implementation (argon2-kdf) built with -mavx512f and -mavx2.
#
#   benches/argon2.sh            # full run (~1-2 min)
#   QUICK=1 benches/argon2.sh    # fewer rounds
#   THP=1 benches/argon2.sh      # also measure madvise(MADV_HUGEPAGE)
#
# Needs libclang (bindgen, used by argon2-kdf's build script): installed with
# apt-get if missing. Builds go to $CARGO_TARGET_DIR (default /work/target-argon2).
set -euo pipefail
cd "$(dirname "$0")/argon2-ref"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/target-argon2}"
BIN="$CARGO_TARGET_DIR/release/argon2-ref-bench"

if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || \
   ! ls /usr/lib/llvm-*/lib/clang/*/include/stddef.h >/dev/null 2>&1; then
  echo "installing libclang for bindgen..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
fi

# Confirms the C compression code of a build really uses the requested
# registers: counts zmm / ymm operands in the C fill_segment / fill_block (opt.c).
check_c_isa() {
  local bin=$1 want=$2
  local asm zmm ymm
  asm=$(objdump -d --no-show-raw-insn "$bin" | awk '/<(fill_segment|fill_block)>:/,/^$/')
  zmm=$(grep -c zmm <<<"$asm" || true)
  ymm=$(grep -c ymm <<<"$asm" || true)
  echo "C fill_segment/fill_block in $(basename "$bin"): $zmm zmm / $ymm ymm operands"
  case $want in
    avx512) [ "$zmm" -gt 0 ] || { echo "ERROR: -mavx512f did not reach the C build" >&2; exit 1; } ;;
    avx2) [ "$zmm" -eq 0 ] && [ "$ymm" -gt 0 ] || { echo "ERROR: -mavx2 build is not AVX2" >&2; exit 1; } ;;
  esac
}

for isa in avx2 avx512; do
  flags=-m$isa; [ $isa = avx512 ] && flags=-mavx512f
  ARGON2_KDF_C_COMPILER_FLAGS=$flags nice -n 10 cargo build --release --quiet
  cp "$BIN" "$BIN-c$isa"
  check_c_isa "$BIN-c$isa" $isa
done

ARGS=()
[ -n "${QUICK:-}" ] && ARGS+=(--rounds-small 9 --rounds-large 5)
EXTRA=$(mktemp)
trap 'rm -f "$EXTRA"' EXIT
echo "running C avx2 build..."
"$BIN-cavx2" --c-only "${ARGS[@]}" > "$EXTRA"
grep -E "^(verify|C reference)" "$EXTRA"
[ -n "${THP:-}" ] && ARGS+=(--thp)
"$BIN-cavx512" --extra "$EXTRA" "${ARGS[@]}"

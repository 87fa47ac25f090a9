#!/usr/bin/env bash
# Hardening checks too slow for the unit tests, in bounded time.
# 1. valgrind memcheck over openssl speed with async jobs, with the engine and
#    with the provider: no invalid access and no definite leak may come from
#    swiftasync.
# 2. The soak: SOAK_OPS (default 300000) mixed operations in random
#    interleavings, each checked against default OpenSSL, each run exactly
#    once; then half as many through the provider.
set -euo pipefail
engine=${ENGINE_SO:?path of swiftasync.so}
loader=${ENGINE_LOADER:?path of engine-loader}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
command -v valgrind >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }

# The .so exactly as `make install` installs it, debug info and all: its C is
# compiled to DWARF 4 (scripts/build-engine.sh), which valgrind 3.19 reads.
# valgrind's virtual CPU has no AVX-512, so the engine computes scalar here.
sed "s|^module = .*|module = $engine|" "$(dirname "$0")/../openssl-provider.cnf" > "$work/provider.cnf"
memcheck() {   # memcheck NAME openssl-speed-arguments...
    local name=$1 status=0; shift
    timeout 900 valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite \
        --show-leak-kinds=definite --num-callers=30 \
        openssl speed "$@" -async_jobs 16 -seconds 1 rsa2048 ecdhp256 \
        > "$work/speed.txt" 2> "$work/valgrind.txt" || status=$?
    grep -E "ERROR SUMMARY|definitely lost" "$work/valgrind.txt" || true
    if grep -q "Giving up" "$work/valgrind.txt"; then status=1; fi
    if [ "$status" -ne 0 ]; then
        cat "$work/valgrind.txt" >&2
        echo "valgrind memcheck ($name): 0 passed, 1 failed"
        exit 1
    fi
    echo "valgrind memcheck ($name): 1 passed, 0 failed"
}
memcheck engine -engine "$engine"
OPENSSL_CONF=$work/provider.cnf memcheck provider

operations=${SOAK_OPS:-300000}
if ! timeout 1200 "$loader" soak --engine "$engine" --operations "$operations"; then
    echo "soak: 0 passed, 1 failed"
    exit 1
fi
echo "soak: 1 passed, 0 failed"
if ! timeout 1200 "$loader" soak --provider --engine "$engine" --operations $((operations / 2)); then
    echo "soak (provider): 0 passed, 1 failed"
    exit 1
fi
echo "soak (provider): 1 passed, 0 failed"

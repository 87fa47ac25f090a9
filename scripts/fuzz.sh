#!/usr/bin/env bash
# libFuzzer over the engine's RSA and EC entry points and the provider's
# private-key steps (Fuzz/engine_fuzzer.c), differential against default
# OpenSSL, for FUZZ_SECONDS (default 60; CI's bound). `make fuzz
# FUZZ_SECONDS=3600` runs longer. The engine is built with
# ASan, UBSan and coverage for libFuzzer; the corpus grows in build/fuzz-corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-60}
source scripts/sanitized-build.sh
flags=("${address_flags[@]}" -Xcc -fsanitize=fuzzer-no-link)

quietly env SWIFT="$swift" scripts/build-engine.sh .build-fuzz-engine build/swiftasync-fuzz.so "${flags[@]}"
mkdir -p build/fuzz-corpus
# Exported, the fuzzer's runtimes serve the engine it loads.
# shellcheck disable=SC2046
quietly "$toolchain/bin/clang" -g -O1 -DOPENSSL_API_COMPAT=0x10101000L -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Wl,--export-dynamic Fuzz/engine_fuzzer.c $(pkg-config --cflags --libs openssl) -o build/engine-fuzzer

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
# Lanes for any fill: every offloaded RSA-2048 and X25519 input goes through the 8-lane path.
SWIFTASYNC_SO=$PWD/build/swiftasync-fuzz.so SWIFTASYNC_STATS_FILE=$work/stats SWIFTASYNC_MULTIBUFFER_MIN_FILL=1 \
ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    build/engine-fuzzer -max_total_time="$seconds" -timeout=30 -rss_limit_mb=8192 -detect_leaks=0 \
    -print_final_stats=1 -artifact_prefix=build/fuzz- build/fuzz-corpus > build/fuzz.log 2>&1 || status=$?
grep -E "^#[0-9]+ +(INITED|DONE)|stat::number_of_executed_units|stat::peak_rss|ERROR|swiftasync fuzz:|SUMMARY" build/fuzz.log || true
inputs=$(sed -n 's/^stat::number_of_executed_units: *//p' build/fuzz.log)
touch "$work/stats"   # written at exit; absent if the fuzzer died
echo "engine counters over the run:"
grep -E "^(rsa|ec|ecdh|ecdsa|x25519|x448)" "$work/stats" | awk '{print "  " $1, $2, $3, $4, $6, $7, $8}' || true
# Every algorithm must have reached a worker: a fuzzer that quietly ran
# without the engine proves nothing.
missing=$(awk '$1 ~ /^(rsa_private_encrypt|rsa_private_decrypt|ec_keygen|ecdh_derive|ecdsa_sign|ecdsa_sign_setup|x25519_derive|x448_derive)$/ && $2 == "offloaded=0" {print $1}' "$work/stats")
# Where this build and CPU run lanes, the batched paths must have run too.
if grep -q "multibuffer=in_use" "$work/stats"; then
    missing="$missing$(awk '$1 ~ /^(rsa_private_encrypt|rsa_private_decrypt|ec_keygen|ecdh_derive|ecdsa_sign|ecdsa_sign_setup|x25519_derive)$/ && $7 == "lanes=0" {print " " $1 " in lanes"}' "$work/stats")"
fi
# The provider's steps must have been compared, in jobs too.
provider_jobs=$(sed -n 's/^swiftasync fuzz: provider steps compared: [0-9]*, in async jobs: \([0-9]*\)$/\1/p' build/fuzz.log | tail -1)
if [ "${provider_jobs:-0}" -eq 0 ]; then missing="$missing provider steps in jobs"; fi
if [ "$status" -ne 0 ] || [ -z "$inputs" ] || [ ! -s "$work/stats" ] || [ -n "$missing" ]; then
    grep -v -E "^INFO|^#[0-9]+ +(NEW|REDUCE|pulse|INITED)|^During symbol" build/fuzz.log | tail -150
    # CI shows only the last lines: the cause goes last, with the top of the first stack.
    echo "fuzz: why it stopped:"
    # The harness's failure line with the step it names before it and OpenSSL's errors after it.
    grep -v "steps compared" build/fuzz.log | grep -B1 -A2 "^swiftasync fuzz: " | head -8 || true
    grep -E "^==[0-9]+== ?ERROR|^SUMMARY|runtime error|Fatal error" build/fuzz.log | head -4 || true
    awk '/^ *#[0-9]+ 0x/ && !/fuzzer::|__sanitizer|sanitizer_common|libc\.so/ { print; if (++frames == 12) exit }' build/fuzz.log
    [ -n "$missing" ] && echo "never offloaded: $missing"
    echo "fuzz: ${inputs:-0} inputs, exit status $status"
    echo "fuzz: 0 passed, 1 failed"
    exit 1
fi
echo "fuzz: $inputs inputs in $seconds s, no crash, hang or mismatch; corpus $(ls build/fuzz-corpus | wc -l) inputs"
echo "fuzz: 1 passed, 0 failed"

#!/usr/bin/env bash
# The engine and the whole test suite under a sanitizer:
#   scripts/sanitize.sh address   AddressSanitizer (C and Swift) + UBSan (C)
#   scripts/sanitize.sh thread    ThreadSanitizer (C and Swift)
# A second argument picks tests, as XCTest's filter does (e.g. EngineTests.QueueFullTests).
# The engine .so keeps its shipping form (static Swift runtime, nodelete,
# version script); programs built without the sanitizer (openssl, nginx,
# HAProxy) get its runtime through LD_PRELOAD. Every process writes its
# reports under one folder: any report there fails the run, whoever wrote it.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizer=${1:?address or thread}
extra_filter=${2:-}
source scripts/sanitized-build.sh

case "$sanitizer" in
address)
    flags=("${address_flags[@]}")
    runtime_name=asan ;;
thread)
    flags=(--sanitize=thread)
    runtime_name=tsan ;;
*) echo "unknown sanitizer $sanitizer" >&2; exit 2 ;;
esac

runtime=$(ls "$toolchain"/lib/clang/*/lib/linux/libclang_rt.$runtime_name-x86_64.so | head -1)
# The toolchain's TSan runtime refers to libdispatch: load it beside.
[ "$sanitizer" = thread ] && runtime="$runtime $toolchain/lib/swift/linux/libdispatch.so"
tests_build=.build-$sanitizer
so=$PWD/build/swiftasync-$sanitizer.so

quietly env SWIFT="$swift" scripts/build-engine.sh ".build-$sanitizer-engine" "$so" "${flags[@]}"
# Exported, the runtime in the test binary and engine-loader serves the .so they load.
quietly "$swift" build --build-tests --scratch-path "$tests_build" "${flags[@]}" -Xlinker --export-dynamic
tests=$("$swift" build --scratch-path "$tests_build" "${flags[@]}" --show-bin-path)/swiftasyncPackageTests.xctest

reports=$(mktemp -d /tmp/swiftasync-$sanitizer.XXXXXX)
chmod 1777 "$reports"   # servers drop privileges and still write their reports here
common="log_path=$reports/report:print_suppressions=0"
export SWIFTASYNC_SO=$so
# The key-store tests' pkcs11-provider, in the form the sanitizers can load.
if module=$(scripts/fetch-pkcs11-provider.sh 2>/dev/null); then
    SWIFTASYNC_PKCS11_PROVIDER=$(scripts/pkcs11-provider-for-sanitizers.sh "$module" \
        "$PWD/.build-pkcs11-provider/sanitizers/pkcs11.so")
    export SWIFTASYNC_PKCS11_PROVIDER
fi
export SWIFTASYNC_SANITIZER_RUNTIME=$runtime
export SWIFTASYNC_SANITIZER=$sanitizer
export UBSAN_OPTIONS="$common:print_stacktrace=1:halt_on_error=1"
# Leaks are left to valgrind (scripts/stress.sh): paused jobs that an
# application abandons, and XCTest's own, are not the engine's to free.
export ASAN_OPTIONS="$common:detect_leaks=0:abort_on_error=0:handle_abort=1"
export TSAN_OPTIONS="$common:halt_on_error=0:die_after_fork=0:suppressions=$PWD/scripts/tsan.supp"

status=0
# shellcheck disable=SC2086
"$tests" $extra_filter > "$reports/xctest.log" 2>&1 || status=$?
grep -E "^Test Case .*(passed|failed)|error:|Executed" "$reports/xctest.log" || true
# ASan warns once per process about OpenSSL's fibre stacks (its jobs swap stacks): not a finding.
for report in "$reports"/report*; do
    [ -e "$report" ] || continue
    if ! grep -v -E "ignoring requested __asan_handle_no_return|False positive error reports may follow|google/sanitizers/issues/189" "$report" | grep -q .; then
        rm -f "$report"
    fi
done
found=$(find "$reports" -name 'report*' | wc -l)
for report in "$reports"/report*; do
    [ -e "$report" ] && { echo "== $report"; head -80 "$report"; }
done
echo "$sanitizer sanitizer: test status $status, $found report(s) in $reports"
if [ "$status" -ne 0 ] || [ "$found" -ne 0 ]; then
    # CI shows only the end of the output: the failures once more, last.
    grep -E "error:|^Test Case .*failed" "$reports/xctest.log" | tail -40 | cut -c1-1500 || true
    echo "$sanitizer sanitizer: 0 passed, 1 failed"
    exit 1
fi
rm -rf "$reports"
echo "$sanitizer sanitizer: 1 passed, 0 failed"

#!/usr/bin/env bash
# Builds the engine .so in its shipping form and copies it to OUTPUT: the
# Swift runtime linked in statically, `-z nodelete` (OpenSSL dlcloses engines),
# only the ENGINE ABI exported, no RUNPATH, and the C compiled to DWARF 4
# (the toolchain's clang writes DWARF 5, which Debian 12's valgrind cannot
# read). Extra `swift build` flags (the sanitizers) come after; the plain
# engine, the sanitized ones and the fuzzed one differ only in those.
#   scripts/build-engine.sh SCRATCH_PATH OUTPUT [swift build flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
swift=${SWIFT:-swift}
scratch=${1:?scratch path}
output=${2:?path of the .so to write}
shift 2
flags=(-c release --scratch-path "$scratch" "$@")
"$swift" build "${flags[@]}" --product swiftasync --disable-local-rpath \
    -Xswiftc -static-stdlib -Xlinker -z -Xlinker nodelete -Xcc -gdwarf-4 \
    -Xlinker --version-script="$PWD/Sources/CEngineShim/exports.map"
mkdir -p "$(dirname "$output")"
cp "$("$swift" build "${flags[@]}" --show-bin-path)/libswiftasync.so" "$output"

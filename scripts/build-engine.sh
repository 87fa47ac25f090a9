#!/usr/bin/env bash
# Builds the engine .so in its shipping form and copies it to OUTPUT: the
# Swift runtime linked in statically, `-z nodelete` (OpenSSL dlcloses engines),
# only the ENGINE and provider entry points exported, no RUNPATH, and the C
# compiled to DWARF 4 (the toolchain's clang writes DWARF 5, which Debian 12's
# valgrind cannot read). Extra `swift build` flags (the sanitizers) come
# after; the plain engine, the sanitized ones and the fuzzed one differ only
# in those.
#
# SWIFTASYNC_OPENSSL=FOLDER (one made by scripts/fetch-openssl.sh) builds
# against that OpenSSL's headers and libraries instead of the system's; where
# its headers have no ENGINE API (4.0) the .so is the provider alone.
#   scripts/build-engine.sh SCRATCH_PATH OUTPUT [swift build flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
swift=${SWIFT:-swift}
scratch=${1:?scratch path}
output=${2:?path of the .so to write}
shift 2
flags=(-c release --scratch-path "$scratch" "$@")
exports=$PWD/Sources/CEngineShim/exports.map
link=()
if [ -n "${SWIFTASYNC_OPENSSL:-}" ]; then
    export PKG_CONFIG_PATH=$SWIFTASYNC_OPENSSL/pkgconfig
    # That libcrypto wants a newer glibc than this machine's: resolved where it runs.
    link=(-Xlinker --allow-shlib-undefined)
    if grep -qs '# *define OPENSSL_NO_ENGINE' "$SWIFTASYNC_OPENSSL"/root/usr/include/*/openssl/configuration.h; then
        export SWIFTASYNC_FRONT_ENDS=provider
        exports=$PWD/Sources/CEngineShim/exports-provider.map
    fi
fi
"$swift" build "${flags[@]}" --product swiftasync --disable-local-rpath \
    -Xswiftc -static-stdlib -Xlinker -z -Xlinker nodelete -Xcc -gdwarf-4 \
    -Xlinker --version-script="$exports" "${link[@]}"
mkdir -p "$(dirname "$output")"
cp "$("$swift" build "${flags[@]}" --show-bin-path)/libswiftasync.so" "$output"

#!/usr/bin/env bash
# Fetches Intel's crypto_mb (the static archive and its headers) from PyPI
# into an ignored folder, pinned, and unpacks the wheels there: nothing is
# installed into the system's Python. Prints the folder. Idempotent.
#   scripts/fetch-crypto-mb.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
version=2026.2.0
folder=${1:-$PWD/.build-crypto-mb}
if [ -f "$folder/lib/libcrypto_mb.a" ] && [ -f "$folder/include/crypto_mb/rsa.h" ] \
    && [ "$(cat "$folder/version" 2>/dev/null)" = "$version" ]; then
    echo "$folder"
    exit 0
fi
rm -rf "$folder"
mkdir -p "$folder/wheels" "$folder/unpacked"
python3 -m pip download --quiet --no-deps --dest "$folder/wheels" \
    "ipp-crypto-static==$version" "ipp-crypto-include==$version" >&2
for wheel in "$folder"/wheels/*.whl; do
    python3 -m zipfile -e "$wheel" "$folder/unpacked"
done
data=$folder/unpacked
mkdir -p "$folder/lib" "$folder/include"
cp "$data/ipp_crypto_static-$version.data/data/lib/libcrypto_mb.a" "$folder/lib/"
cp -r "$data/ipp_crypto_include-$version.data/data/include/aggregator/crypto_mb" "$folder/include/"
rm -rf "$folder/wheels" "$data"
echo "$version" > "$folder/version"
echo "$folder"

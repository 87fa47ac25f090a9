#!/usr/bin/env bash
# Fetches trixie's pkcs11-provider (the OpenSSL 3 provider for PKCS#11
# tokens) into an ignored folder without installing it: the mirror serves no
# source packages, and the binary needs only OPENSSL_3.0.0/3.0.3 symbols and
# glibc <= 2.34, so it loads into bookworm's OpenSSL 3.0. Prints the module's
# path. Idempotent.
#   scripts/fetch-pkcs11-provider.sh [FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
folder=${1:-$PWD/.build-pkcs11-provider}
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
module=$folder/root/usr/lib/$multiarch/ossl-modules/pkcs11.so
if [ ! -f "$module" ]; then
    rm -rf "$folder"
    scripts/debian-download.sh "$folder/root" pkcs11-provider/trixie
fi
[ -f "$module" ] || { echo "fetch-pkcs11-provider: no $module" >&2; exit 1; }
echo "$module"

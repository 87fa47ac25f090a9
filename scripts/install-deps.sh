#!/usr/bin/env bash
# What the build and the tests need beyond the Swift toolchain, including the
# real servers the tests drive (HAProxy, nginx, Traffic Server, h2load) and the package
# tools its test uses (dpkg-dev, lintian, gdb, valgrind), `ss`, and the
# token the key-store tests use (SoftHSM, pkcs11-tool, p11-kit, and the headers
# their faulty-device fixture is compiled with); idempotent.
set -euo pipefail
packages="libssl-dev openssl pkg-config binutils gcc procps haproxy nginx trafficserver nghttp2-client dpkg-dev lintian gdb valgrind iproute2 man-db softhsm2 opensc p11-kit p11-kit-modules libp11-kit-dev"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing
fi

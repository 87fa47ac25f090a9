#!/usr/bin/env bash
# What the build and the tests need beyond the Swift toolchain, including the
# real servers the tests drive (HAProxy, nginx, h2load) and the package
# tools its test uses (dpkg-dev, lintian, gdb, valgrind), and `ss`; idempotent.
set -euo pipefail
packages="libssl-dev openssl pkg-config binutils haproxy nginx nghttp2-client dpkg-dev lintian gdb valgrind iproute2 man-db"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing
fi

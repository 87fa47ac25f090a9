#!/usr/bin/env bash
# What the build and the tests need beyond the Swift toolchain; idempotent.
set -euo pipefail
packages="libssl-dev openssl pkg-config binutils"
missing=""
for package in $packages; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing="$missing $package"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $missing
fi

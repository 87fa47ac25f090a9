#!/usr/bin/env bash
# The Debian packages as an operator meets them: installed with dpkg -i, the
# engine found by id, signatures counted as offloaded by the engine's own
# counters, engine-loader on PATH, gdb and valgrind reading the debug file;
# lintian shows no error; removed with dpkg --purge, nothing of them left.
#   scripts/test-deb.sh PACKAGE.deb DBGSYM.deb
set -euo pipefail
package=${1:?swiftasync .deb}
dbgsym=${2:?swiftasync-dbgsym .deb}
enginesdir=$(openssl version -e | sed -n 's/^ENGINESDIR: "\(.*\)"/\1/p')
modulesdir=$(openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"/\1/p')
target=$enginesdir/swiftasync.so
provider=$modulesdir/swiftasync.so
work=$(mktemp -d)
for tool in gdb valgrind lintian; do
    command -v "$tool" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
done

# What `make install` put there belongs to no package: set it aside for the
# test (the installed engine-loader would shadow the package's on PATH), and
# put it back after.
installed_by_make="$target $provider /usr/local/bin/engine-loader /usr/local/share/man/man1/engine-loader.1"
mkdir "$work/aside"
set_aside=""
for path in $installed_by_make; do
    if { [ -e "$path" ] || [ -L "$path" ]; } && ! dpkg -S "$path" >/dev/null 2>&1; then
        mv "$path" "$work/aside/$(echo "$path" | tr / _)"
        set_aside="$set_aside $path"
    fi
done
finish() {
    dpkg --purge swiftasync-dbgsym swiftasync >/dev/null 2>&1 || true
    for path in $set_aside; do mv "$work/aside/$(echo "$path" | tr / _)" "$path"; done
    rm -rf "$work"
}
trap finish EXIT

passed=0 failed=0
check() {
    if eval "$2" >"$work/check.log" 2>&1; then
        echo "ok   deb: $1"; passed=$((passed + 1))
    else
        echo "FAIL deb: $1"; sed 's/^/     /' "$work/check.log" | tail -20; failed=$((failed + 1))
    fi
}

lintian --tag-display-limit 0 "$package" "$dbgsym" > "$work/lintian.txt" 2>&1 || true
sed 's/^/     lintian: /' "$work/lintian.txt"
check "lintian reports no error" '! grep -q "^E: " "$work/lintian.txt"'
check "lintian finds a manual page for engine-loader" '! grep -q "no-manual-page" "$work/lintian.txt"'

check "dpkg -i installs both packages" 'dpkg -i "$package" "$dbgsym"'
dpkg -L swiftasync swiftasync-dbgsym | while read -r path; do [ -d "$path" ] || echo "$path"; done > "$work/files"
check "the engine is at $target" '[ -f "$target" ] && grep -qx "$target" "$work/files"'
check "openssl engine -t -c swiftasync finds it by id" 'openssl engine -t -c swiftasync | grep -q "\[ available \]"'
check "openssl speed -engine swiftasync: signatures counted as offloaded" '
    SWIFTASYNC_STATS_FILE=$work/stats openssl speed -engine swiftasync -async_jobs 4 -seconds 1 rsa2048 >/dev/null 2>&1
    offloaded=$(awk "\$1 == \"rsa_private_encrypt\" { split(\$2, kv, \"=\"); print kv[2] }" "$work/stats" | tail -1)
    echo "offloaded: ${offloaded:-none}"; [ "${offloaded:-0}" -gt 0 ]'
check "openssl list -provider swiftasync finds the provider by name" '
    openssl list -providers -provider swiftasync | grep -A2 "^  swiftasync" | grep -q "status: active"'
check "engine-loader on PATH describes the installed engine" 'engine-loader info --engine "$target" | grep -q "^engine: *swiftasync"'
check "man engine-loader: the manual page generated from its argument parser" '
    man -w engine-loader && [ "$(man -w engine-loader)" = /usr/share/man/man1/engine-loader.1.gz ] &&
    MANWIDTH=80 man engine-loader > "$work/man.txt" 2>&1 && grep -q "^NAME" "$work/man.txt" &&
    for command in info check stats serve soak; do grep -q "^     $command " "$work/man.txt" || echo "no $command"; done > "$work/missing" &&
    cat "$work/missing" && [ ! -s "$work/missing" ]'
check "the sample openssl.cnf loads it" '
    OPENSSL_CONF=/usr/share/doc/swiftasync/examples/openssl.cnf openssl engine -t swiftasync | grep -q "\[ available \]"'
check "gdb finds our functions and source lines through the debug file" '
    gdb -batch -ex "info line sa_record_run" "$target" | grep -q "async_job.c"'
check "valgrind reads the installed engine and its debug file" '
    valgrind --error-exitcode=9 openssl engine -t swiftasync > "$work/vg.txt" 2>&1; ! grep -q "Giving up" "$work/vg.txt" && grep -q "ERROR SUMMARY: 0 errors" "$work/vg.txt"'

check "dpkg --purge removes both" 'dpkg --purge swiftasync-dbgsym swiftasync'
check "nothing of them is left" '
    left=$(while read -r path; do if [ -e "$path" ]; then echo "left: $path"; fi; done < "$work/files"); echo "$left"; [ -z "$left" ]'
check "dpkg knows neither any more" '! dpkg -s swiftasync && ! dpkg -s swiftasync-dbgsym'
echo "deb: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

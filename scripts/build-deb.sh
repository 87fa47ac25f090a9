#!/usr/bin/env bash
# Builds the Debian packages with dpkg-deb, as Debian lays them out:
#   swiftasync_<version>_<arch>.deb         the engine in OpenSSL's engines directory (and,
#                                           by a link, the provider in its modules directory),
#                                           engine-loader in /usr/bin and its manual page,
#                                           the README and a sample openssl.cnf under /usr/share/doc
#   swiftasync-dbgsym_<version>_<arch>.deb  their debug info, under /usr/lib/debug/.build-id
# Depends comes from dpkg-shlibdeps: the libraries and versions these binaries
# were linked against on this machine.
#   scripts/build-deb.sh VERSION ENGINE_SO ENGINE_LOADER MANUAL_PAGE OUTPUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?version}
engine=${2:?path of swiftasync.so}
loader=${3:?path of a statically linked engine-loader}
manpage=${4:?engine-loader.1}
output=${5:?output folder}
arch=$(dpkg --print-architecture)
enginesdir=$(openssl version -e | sed -n 's/^ENGINESDIR: "\(.*\)"/\1/p')
# Who made it: $MAINTAINER, else the author of the commit it is built from.
maintainer=${MAINTAINER:-$(git log -1 --format='%an <%ae>' 2>/dev/null || echo "swiftasync developers <root@$(hostname -f)>")}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
main=$work/swiftasync
debug=$work/swiftasync-dbgsym

# Strips a binary into the package and keeps its debug info, by build id, for the dbgsym package.
ship() {
    local from=$1 to=$2 id
    id=$(readelf -n "$from" | sed -n 's/^ *Build ID: *//p')
    [ -n "$id" ] || { echo "$from has no build id" >&2; exit 1; }
    install -d "$debug/usr/lib/debug/.build-id/${id:0:2}" "$(dirname "$to")"
    objcopy --only-keep-debug --compress-debug-sections "$from" "$debug/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug"
    chmod 0644 "$debug/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug"
    objcopy --strip-unneeded --remove-section=.comment --remove-section=.note \
        --add-gnu-debuglink="$debug/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug" "$from" "$to"
    build_ids="$build_ids $id"
}

build_ids=""
ship "$engine" "$main$enginesdir/swiftasync.so"
chmod 0644 "$main$enginesdir/swiftasync.so"
# The same file is the provider: OpenSSL looks for providers in its modules directory.
modulesdir=$(openssl version -m | sed -n 's/^MODULESDIR: "\(.*\)"/\1/p')
install -d "$main$modulesdir"
ln -s "$(realpath --relative-to="$modulesdir" "$enginesdir")/swiftasync.so" "$main$modulesdir/swiftasync.so"
ship "$loader" "$main/usr/bin/engine-loader"
chmod 0755 "$main/usr/bin/engine-loader"
install -D -m 0644 "$manpage" "$main/usr/share/man/man1/engine-loader.1"
gzip -9n "$main/usr/share/man/man1/engine-loader.1"

doc=$main/usr/share/doc/swiftasync
install -d "$doc/examples" "$debug/usr/share/doc"
install -m 0644 openssl.cnf "$doc/examples/openssl.cnf"
sed -i "s|^dynamic_path = .*|dynamic_path = $enginesdir/swiftasync.so|" "$doc/examples/openssl.cnf"
install -m 0644 README.md "$doc/README.md"
gzip -9n "$doc/README.md"
printf 'swiftasync (%s) unstable; urgency=medium\n\n  * Built from the swiftasync repository.\n\n -- %s  %s\n' \
    "$version" "$maintainer" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")" \
    | gzip -9n > "$doc/changelog.gz"
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: swiftasync

Files: *
Copyright: 2026 swiftasync developers
License: Apache-2.0

Files: usr/lib/*/engines-3/swiftasync.so
Copyright: 2026 swiftasync developers
           2019-2026 Intel Corporation (crypto_mb, linked statically)
License: Apache-2.0

License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
ln -s swiftasync "$debug/usr/share/doc/swiftasync-dbgsym"

# Depends: what dpkg-shlibdeps finds these binaries linked against.
mkdir -p "$work/shlibs/debian"
touch "$work/shlibs/debian/control"
depends=$(cd "$work/shlibs" && dpkg-shlibdeps -O "$main$enginesdir/swiftasync.so" "$main/usr/bin/engine-loader" 2>/dev/null \
    | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "dpkg-shlibdeps found no dependencies" >&2; exit 1; }
size() { du -sk --exclude=DEBIAN "$1" | cut -f1; }

install -d "$main/DEBIAN" "$debug/DEBIAN"
cat > "$main/DEBIAN/control" <<EOF
Package: swiftasync
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(size "$main")
Depends: $depends
Section: libs
Priority: optional
Description: OpenSSL engine running RSA and EC on a worker pool
 swiftasync is an OpenSSL 3 engine whose private-key operations (RSA, EC,
 X25519, X448) run on a pool of worker threads, so that one TLS event loop
 in async mode can use every core. Where the CPU has AVX-512 IFMA, like
 operations queued together share 8-lane multi-buffer calls.
 .
 Load it with openssl.cnf (see /usr/share/doc/swiftasync/examples) or
 "openssl ... -engine swiftasync"; engine-loader describes, checks and
 benchmarks it and shows the counters of running servers.
EOF
cat > "$debug/DEBIAN/control" <<EOF
Package: swiftasync-dbgsym
Source: swiftasync
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(size "$debug")
Depends: swiftasync (= $version)
Section: debug
Priority: optional
Description: debug symbols for swiftasync
Build-Ids:$build_ids
EOF
mkdir -p "$output"
dpkg-deb --root-owner-group -Zxz --build "$main" "$output/swiftasync_${version}_${arch}.deb" >/dev/null
dpkg-deb --root-owner-group -Zxz --build "$debug" "$output/swiftasync-dbgsym_${version}_${arch}.deb" >/dev/null
echo "$output/swiftasync_${version}_${arch}.deb"
echo "$output/swiftasync-dbgsym_${version}_${arch}.deb"

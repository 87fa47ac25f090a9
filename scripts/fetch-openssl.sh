#!/usr/bin/env bash
# Fetches a newer OpenSSL from Debian's own archive into an ignored folder,
# without installing anything (scripts/debian-download.sh). The folder gets
# root/ (the unpacked packages), run (runs a program of that root with that
# root's loader and libraries), and pkgconfig/ (openssl.pc and friends
# pointing into root/). Prints the folder.
# Idempotent.
#   scripts/fetch-openssl.sh SERIES [FOLDER]      SERIES: 3.5 | 3.6 | 4.0
set -euo pipefail
cd "$(dirname "$0")/.."
series=${1:?series: 3.5, 3.6 or 4.0}
folder=${2:-$PWD/.build-openssl-$series}
case $series in
    # The suite openssl comes from, and the one its libc comes from.
    3.5) suite=trixie;       libc_suite=trixie; libssl=libssl3t64 ;;
    3.6) suite=sid;          libc_suite=sid;    libssl=libssl3t64 ;;
    4.0) suite=experimental; libc_suite=sid;    libssl=libssl4 ;;
    *) echo "fetch-openssl: unknown series $series (3.5, 3.6, 4.0)" >&2; exit 2 ;;
esac
if [ -x "$folder/run" ] && "$folder/run" openssl version 2>/dev/null | grep -q "^OpenSSL $series\."; then
    echo "$folder"
    exit 0
fi

rm -rf "$folder"
scripts/debian-download.sh "$folder/root" \
    "openssl/$suite" "libssl-dev/$suite" "$libssl/$suite" "libc6/$libc_suite" "libzstd1/$libc_suite" \
    "zlib1g/$libc_suite"

root=$folder/root
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
libs=$root/usr/lib/$multiarch:$root/lib/$multiarch
loader=$(ls "$root"/usr/lib/"$multiarch"/ld-linux-*.so.* "$root"/lib/"$multiarch"/ld-linux-*.so.* \
         "$root"/usr/lib64/ld-linux-*.so.* "$root"/lib64/ld-linux-*.so.* 2>/dev/null | head -n 1 || true)
[ -n "$loader" ] || { echo "fetch-openssl: no dynamic loader in $root" >&2; exit 1; }
# run PROGRAM [ARGS...]: PROGRAM is a path, or a name in root's /usr/bin.
# Programs of the host (haproxy, nginx) run too: against this root's libc and OpenSSL.
cat > "$folder/run" <<EOF
#!/bin/sh
program=\$1; shift
case \$program in */*) ;; *) program=$root/usr/bin/\$program ;; esac
exec "$loader" --library-path "$libs\${SWIFTASYNC_EXTRA_LIBRARY_PATH:+:\$SWIFTASYNC_EXTRA_LIBRARY_PATH}" "\$program" "\$@"
EOF
chmod +x "$folder/run"

# pkg-config files that point into root/, for building against this version.
mkdir -p "$folder/pkgconfig"
for pc in "$root"/usr/lib/"$multiarch"/pkgconfig/*.pc; do
    sed -e "s|^prefix=.*|prefix=$root/usr|" \
        -e "s|^libdir=.*|libdir=$root/usr/lib/$multiarch|" \
        -e "s|^includedir=.*|includedir=$root/usr/include|" \
        -e "s|^Cflags:\(.*\)|Cflags:\1 -I$root/usr/include/$multiarch|" \
        "$pc" > "$folder/pkgconfig/$(basename "$pc")"
done
"$folder/run" openssl version >&2
echo "$folder"

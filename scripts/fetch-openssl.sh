#!/usr/bin/env bash
# Fetches a newer OpenSSL from Debian's own archive into an ignored folder,
# without installing anything: `apt-get download` under a private APT_CONFIG
# whose sources name the suite on the mirror this machine's apt already uses,
# then `dpkg-deb -x`. The folder gets root/ (the unpacked packages), run (runs
# a program of that root with that root's loader and libraries), and
# pkgconfig/ (openssl.pc and friends pointing into root/). Prints the folder.
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

# The mirror: the first URI of this machine's Debian sources (deb822 or one-line).
mirror=$( { awk '/^URIs:/ { print $2 }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
            awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
          | grep -v -- '-security' | head -n 1 || true)
[ -n "$mirror" ] || { echo "fetch-openssl: no Debian mirror in /etc/apt/sources*" >&2; exit 1; }

rm -rf "$folder"
apt_root=$folder/apt
mkdir -p "$apt_root/etc/apt.conf.d" "$apt_root/etc/preferences.d" "$apt_root/etc/sources.list.d" \
    "$apt_root/lists/partial" "$apt_root/cache/archives/partial" "$folder/debs" "$folder/root"
touch "$apt_root/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
for s in $(printf '%s\n' "$suite" "$libc_suite" | sort -u); do
    echo "deb [signed-by=$keyring] $mirror $s main"
done > "$apt_root/etc/sources.list"
cat > "$apt_root/apt.conf" <<EOF
Dir::Etc "$apt_root/etc";
Dir::Etc::main "/dev/null";
Dir::Etc::Parts "$apt_root/etc/apt.conf.d";
Dir::Etc::SourceList "$apt_root/etc/sources.list";
Dir::Etc::SourceParts "$apt_root/etc/sources.list.d";
Dir::Etc::Preferences "$apt_root/etc/preferences";
Dir::Etc::PreferencesParts "$apt_root/etc/preferences.d";
Dir::State "$apt_root";
Dir::State::Lists "$apt_root/lists";
Dir::State::status "$apt_root/status";
Dir::Cache "$apt_root/cache";
APT::Architecture "$(dpkg --print-architecture)";
APT::Architectures { "$(dpkg --print-architecture)"; };
// The archive as mirrored here may be a dated snapshot: its Release files look expired.
Acquire::Check-Valid-Until "false";
Acquire::Languages "none";
// Downloads land in the caller's folder, which apt's own user may not reach.
APT::Sandbox::User "root";
EOF
export APT_CONFIG=$apt_root/apt.conf
apt-get update -qq >&2
(cd "$folder/debs" && apt-get download -qq \
    "openssl/$suite" "libssl-dev/$suite" "$libssl/$suite" "libc6/$libc_suite" "libzstd1/$libc_suite" \
    "zlib1g/$libc_suite" >&2)
for deb in "$folder"/debs/*.deb; do
    dpkg-deb -x "$deb" "$folder/root"
done
rm -rf "$apt_root" "$folder/debs"

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

#!/usr/bin/env bash
# Unpacks Debian packages of other suites into a folder without installing
# them: `apt-get download` under a private APT_CONFIG whose sources name the
# suites on the mirror this machine's apt already uses (no host name in the
# repository), then `dpkg-deb -x` of each into FOLDER.
#   scripts/debian-download.sh FOLDER PACKAGE/SUITE...
set -euo pipefail
folder=${1:?folder to unpack into}; shift
[ $# -gt 0 ] || { echo "debian-download: no packages" >&2; exit 2; }

# The mirror: the first URI of this machine's Debian sources (deb822 or one-line).
mirror=$( { awk '/^URIs:/ { print $2 }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
            awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; break } }' \
                /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } \
          | grep -v -- '-security' | head -n 1 || true)
[ -n "$mirror" ] || { echo "debian-download: no Debian mirror in /etc/apt/sources*" >&2; exit 1; }

mkdir -p "$folder"
work=$(mktemp -d "$folder/.apt.XXXXXX")
trap 'rm -rf "$work"' EXIT
apt_root=$work/apt
mkdir -p "$apt_root/etc/apt.conf.d" "$apt_root/etc/preferences.d" "$apt_root/etc/sources.list.d" \
    "$apt_root/lists/partial" "$apt_root/cache/archives/partial" "$work/debs"
touch "$apt_root/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
for package in "$@"; do echo "${package#*/}"; done | sort -u | while read -r suite; do
    echo "deb [signed-by=$keyring] $mirror $suite main"
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
(cd "$work/debs" && apt-get download -qq "$@" >&2)
for deb in "$work"/debs/*.deb; do
    dpkg-deb -x "$deb" "$folder"
done

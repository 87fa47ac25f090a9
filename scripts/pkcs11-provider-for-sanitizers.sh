#!/usr/bin/env bash
# A copy of pkcs11-provider whose dlopen of the token's module leaves out
# RTLD_DEEPBIND, for the sanitizer runs only: ASan and TSan refuse any
# dlopen with that flag (google/sanitizers#611), and pkcs11-provider sets it
# at build time. Finds the one `mov $RTLD_NOW|RTLD_DEEPBIND, %esi` right
# before the call to dlopen@plt, checks the executable segment maps file
# offsets one to one, and clears the flag's bit in the copy. Prints the
# copy's path.
#   scripts/pkcs11-provider-for-sanitizers.sh MODULE COPY
set -euo pipefail
module=${1:?pkcs11-provider module}
copy=${2:?where the copy goes}
sites=$(objdump -d "$module" | awk '
    /mov +\$0xa,%esi/ { address = $1; sub(":", "", address); next }
    /call .*<dlopen@plt>/ { if (address != "") print address }
    { address = "" }')
[ "$(echo "$sites" | grep -c .)" = 1 ] || { echo "pkcs11-provider-for-sanitizers: not one dlopen site: $sites" >&2; exit 1; }
readelf -lW "$module" | awk '$1 == "LOAD" && $7 ~ /E/ && $2 != $3 { bad = 1 } END { exit bad }' \
    || { echo "pkcs11-provider-for-sanitizers: text segment not mapped one to one" >&2; exit 1; }
mkdir -p "$(dirname "$copy")"
cp "$module" "$copy"
offset=$((0x$sites))
[ "$(od -An -tx1 -j "$offset" -N 5 "$copy" | tr -d ' ')" = be0a000000 ] \
    || { echo "pkcs11-provider-for-sanitizers: unexpected bytes at $sites" >&2; exit 1; }
printf '\x02' | dd of="$copy" bs=1 seek=$((offset + 1)) conv=notrunc status=none
echo "$copy"

#!/usr/bin/env bash
# The provider (and, where that OpenSSL still has ENGINE, the engine) built
# against a newer OpenSSL fetched by scripts/fetch-openssl.sh, run by that
# version's own openssl: it loads; every private-key step gives what that
# version's default provider gives (byte-equal where deterministic, verified
# where not; the same errors for bad input); `openssl speed -async_jobs 64`
# and `s_server -async` handshakes (TLS 1.3 and 1.2, RSA and ECDSA
# certificates, X25519, P-256 and, from 3.5, X25519MLKEM768) are counted as
# offloaded by the provider's own counters.
# Every check runs the provider twice: with lanes for any fill
# (MULTIBUFFER_MIN_FILL=1), so each eligible operation goes through the 8-lane
# math where the CPU has it, and with MULTIBUFFER=0, the target's own code.
#   scripts/test-openssl-version.sh OPENSSL_FOLDER|system SWIFTASYNC_SO
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
so=$(cd "$(dirname "${2:?the .so built against it}")" && pwd)/$(basename "$2")
if [ "${1:?folder made by scripts/fetch-openssl.sh, or system}" = system ]; then
    run=$(mktemp); printf '#!/bin/sh\nprogram=$1; shift\nexec "$(command -v "$program" || echo "$program")" "$@"\n' > "$run"
    chmod +x "$run"; headers=/usr/include; libraries=
else
    folder=$(cd "$1" && pwd); run=$folder/run; headers=$folder/root/usr/include
    libraries="-L$folder/root/usr/lib/x86_64-linux-gnu -Wl,--allow-shlib-undefined"
fi
version=$("$run" openssl version | awk '{ print $2 }')
series=${version%.*}
work=$(mktemp -d)
finish() {
    pkill -f "s_server -async -accept 127.0.0.1:" 2>/dev/null || true
    rm -rf "$work"
}
trap finish EXIT

# Two configurations: the provider's (openssl-provider.cnf, module made absolute) and plain OpenSSL's.
sed "s|^module = .*|module = $so|" openssl-provider.cnf > "$work/provider.cnf"
: > "$work/plain.cnf"
plain() { OPENSSL_CONF=$work/plain.cnf "$run" openssl "$@"; }
# Outside async jobs the provider computes inline; SYNC_OFFLOAD sends those calls to the pool too.
through() { OPENSSL_CONF=$work/provider.cnf SWIFTASYNC_SYNC_OFFLOAD=1 SWIFTASYNC_STATS_FILE=$work/stats "$run" openssl "$@"; }
in_lanes() { SWIFTASYNC_MULTIBUFFER_MIN_FILL=1 through "$@"; }
scalar() { SWIFTASYNC_MULTIBUFFER=0 through "$@"; }
counter() {   # counter ALGORITHM FIELD: from the last run's counters
    awk -v a="$1" -v f="$2" '$1 == a { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }' \
        "$work/stats" 2>/dev/null | tail -n 1
}
offloaded() { [ "$(counter "$1" offloaded)" -gt 0 ] 2>/dev/null || { echo "$1 not offloaded:"; cat "$work/stats"; return 1; }; }
# Where this build and CPU run lanes, the operation must have gone through them.
laned() {
    offloaded "$1" || return 1
    grep -q "multibuffer=in_use" "$work/stats" || return 0
    [ "$(counter "$1" lanes)" -gt 0 ] 2>/dev/null || { echo "$1 not in lanes:"; cat "$work/stats"; return 1; }
}

passed=0 failed=0
check() {
    if (eval "$2") >"$work/check.log" 2>&1; then
        echo "ok   openssl $version: $1"; passed=$((passed + 1))
    else
        echo "FAIL openssl $version: $1"; sed 's/^/     /' "$work/check.log" | tail -25; failed=$((failed + 1))
    fi
}

check "its openssl runs with its own libraries" '"$run" openssl version | grep -q "^OpenSSL $series\."'
check "a wait ctx counts the fds added since the last pause (the engine withdraws fds no pause announced)" '
    cc -o "$work/wait-ctx-counts" scripts/wait-ctx-counts.c -I"$headers" -I"$headers/x86_64-linux-gnu" $libraries -lcrypto
    "$run" "$work/wait-ctx-counts"'
check "the provider loads through openssl-provider.cnf" '
    OPENSSL_CONF=$work/provider.cnf "$run" openssl list -providers | tee "$work/list"
    grep -A3 "^  swiftasync" "$work/list" | grep -q "status: active"'
check "the provider loads by path (-provider-path, -provider swiftasync)" '
    plain list -providers -provider-path "$(dirname "$so")" -provider swiftasync -provider default \
        | grep -A3 "^  swiftasync" | grep -q "status: active"'
if grep -qs '# *define OPENSSL_NO_ENGINE' "$headers"/*/openssl/configuration.h; then
    check "no ENGINE in this OpenSSL: the .so is the provider alone" '
        readelf --dyn-syms "$so" | grep -q " OSSL_provider_init$" && ! readelf --dyn-syms "$so" | grep -q " bind_engine$"'
else
    check "the engine loads too (openssl engine -t -c)" 'plain engine -t -c "$so" | grep -q "\[ available \]"'
    check "the engine under openssl speed -engine -async_jobs 64 rsa2048: offloaded" '
        SWIFTASYNC_STATS_FILE=$work/stats plain speed -engine "$so" -seconds 1 -async_jobs 64 rsa2048 > /dev/null 2>&1
        cat "$work/stats"; offloaded rsa_private_encrypt'
fi

# ---- Differential checks against this version's default provider ----
cd "$work"
head -c 32 /dev/urandom > digest32
head -c 48 /dev/urandom > digest48
head -c 64 /dev/urandom > digest64
head -c 20 /dev/urandom > digest20
head -c 40 /dev/urandom > message
for bits in 2048 3072 4096; do plain genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:$bits -out rsa$bits.pem 2>/dev/null; done
for curve in P-256 P-384 P-521; do
    plain genpkey -algorithm EC -pkeyopt ec_paramgen_curve:$curve -out ec$curve.pem
    plain genpkey -algorithm EC -pkeyopt ec_paramgen_curve:$curve -out peer$curve.pem
done
for kind in X25519 X448; do plain genpkey -algorithm $kind -out $kind.pem; plain genpkey -algorithm $kind -out peer$kind.pem; done
for key in *.pem; do plain pkey -in "$key" -pubout -out "${key%.pem}.pub"; done

# same_as_default NAME COUNTER pkeyutl-args...: exit status, output and errors
# (library, function, reason, place) as the default provider's; COUNTER "-" for
# failures caught before the private-key step.
same_as_default() {
    local name=$1 algorithm=$2; shift 2
    arguments=("$@")
    check "$name: as the default provider" '
        set +e
        plain pkeyutl "${arguments[@]}" -out plain.out 2> plain.err; plain_status=$?
        set -e
        normalise() { grep -o "error:[^ ]*" "$1" | cut -d: -f2- | sort; }
        for route in in_lanes scalar; do
            set +e; $route pkeyutl "${arguments[@]}" -out ours.out 2> ours.err; our_status=$?; set -e
            echo "$route: status: default $plain_status, provider $our_status"
            normalise plain.err; echo --; normalise ours.err
            [ "$plain_status" = "$our_status" ] && cmp -s <(normalise plain.err) <(normalise ours.err) || exit 1
            if [ "$plain_status" = 0 ]; then cmp plain.out ours.out; fi
            [ "$algorithm" = - ] || offloaded "${algorithm%:lanes}"
            if [ "$route" = in_lanes ] && [ "${algorithm%:lanes}" != "$algorithm" ]; then laned "${algorithm%:lanes}"; fi
        done'
}
for bits in 2048 3072 4096; do
    same_as_default "RSA-$bits PKCS#1 v1.5 signature" rsa_private_encrypt:lanes \
        -sign -inkey rsa$bits.pem -in digest32 -pkeyopt digest:sha256
    plain pkeyutl -encrypt -pubin -inkey rsa$bits.pub -in message -pkeyopt rsa_padding_mode:oaep \
        -pkeyopt rsa_oaep_md:sha256 -out oaep$bits
    same_as_default "RSA-$bits OAEP decryption" rsa_private_decrypt \
        -decrypt -inkey rsa$bits.pem -in oaep$bits -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256
    plain pkeyutl -encrypt -pubin -inkey rsa$bits.pub -in message -pkeyopt rsa_padding_mode:pkcs1 -out pkcs$bits
    same_as_default "RSA-$bits PKCS#1 v1.5 decryption" rsa_private_decrypt \
        -decrypt -inkey rsa$bits.pem -in pkcs$bits -pkeyopt rsa_padding_mode:pkcs1
done
# Raw RSA: an input below n (a leading zero byte).
{ printf '\0'; head -c 255 /dev/urandom; } > raw2048
same_as_default "RSA-2048 raw (no padding) signature" rsa_private_encrypt:lanes \
    -sign -inkey rsa2048.pem -in raw2048 -pkeyopt rsa_padding_mode:none
same_as_default "RSA-2048 PKCS#1 v1.5 signature without a digest (as openssl speed signs)" \
    rsa_private_encrypt:lanes -sign -inkey rsa2048.pem -in message
same_as_default "RSA-2048 raw (no padding) decryption" rsa_private_decrypt \
    -decrypt -inkey rsa2048.pem -in raw2048 -pkeyopt rsa_padding_mode:none
check "RSA-2048 PSS signature: verified by the default provider" '
    in_lanes pkeyutl -sign -inkey rsa2048.pem -in digest32 -pkeyopt digest:sha256 \
        -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest -out pss.sig
    offloaded rsa_private_encrypt
    plain pkeyutl -verify -pubin -inkey rsa2048.pub -in digest32 -sigfile pss.sig -pkeyopt digest:sha256 \
        -pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:digest'
check "RSA-3072 signature of a message (digest-sign): verified by the default provider" '
    through pkeyutl -sign -rawin -digest sha384 -inkey rsa3072.pem -in message -out rawin.sig
    offloaded rsa_private_encrypt
    plain pkeyutl -verify -rawin -digest sha384 -pubin -inkey rsa3072.pub -in message -sigfile rawin.sig'
for curve in P-256 P-384 P-521; do
    digest=digest32; [ $curve = P-384 ] && digest=digest48; [ $curve = P-521 ] && digest=digest64
    check "ECDSA $curve: verified by the default provider" '
        for route in in_lanes scalar; do
            $route pkeyutl -sign -inkey ec$curve.pem -in $digest -out ecdsa$curve.sig
            if [ $route = in_lanes ]; then laned ecdsa_sign; else offloaded ecdsa_sign; fi
            plain pkeyutl -verify -pubin -inkey ec$curve.pub -in $digest -sigfile ecdsa$curve.sig
        done'
    same_as_default "ECDH $curve" ecdh_derive:lanes -derive -inkey ec$curve.pem -peerkey peer$curve.pub
done
same_as_default "X25519" x25519_derive:lanes -derive -inkey X25519.pem -peerkey peerX25519.pub
same_as_default "X448" x448_derive -derive -inkey X448.pem -peerkey peerX448.pub
for kind in EC:P-256 EC:P-384 X25519 X448; do
    algorithm=${kind%%:*}; curve=${kind#*:}
    name=$kind; counter=$(echo "$algorithm" | tr A-Z a-z)_keygen
    options=(); if [ "$algorithm" = EC ]; then options=(-pkeyopt ec_paramgen_curve:$curve); fi
    peer=peer$curve.pub
    check "$name key generation: a key pair the default provider agrees with" '
        in_lanes genpkey -algorithm $algorithm "${options[@]}" -out generated.pem
        if [ $algorithm = X448 ]; then offloaded $counter; else laned $counter; fi
        plain pkey -in generated.pem -check -noout
        plain pkey -in generated.pem -pubout -out generated.pub
        plain pkeyutl -derive -inkey generated.pem -peerkey $peer -out ours.secret
        plain pkeyutl -derive -inkey peer$curve.pem -peerkey generated.pub -out theirs.secret
        cmp ours.secret theirs.secret'
done

# Bad input: the same errors as the default provider, on the caller's queue.
cp oaep2048 bad-oaep; printf '\x01' | dd of=bad-oaep bs=1 seek=100 conv=notrunc 2>/dev/null
same_as_default "bad input: a corrupted OAEP ciphertext" rsa_private_decrypt \
    -decrypt -inkey rsa2048.pem -in bad-oaep -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256
head -c 256 /dev/urandom > bad-pkcs
same_as_default "bad input: a random PKCS#1 v1.5 ciphertext" rsa_private_decrypt \
    -decrypt -inkey rsa2048.pem -in bad-pkcs -pkeyopt rsa_padding_mode:pkcs1
head -c 256 /dev/zero | tr '\0' '\377' > above-n
same_as_default "bad input: a raw RSA input above the modulus" rsa_private_decrypt \
    -decrypt -inkey rsa2048.pem -in above-n -pkeyopt rsa_padding_mode:none
same_as_default "bad input: a raw RSA signature input above the modulus" rsa_private_encrypt \
    -sign -inkey rsa2048.pem -in above-n -pkeyopt rsa_padding_mode:none
same_as_default "bad input: a digest of the wrong length for SHA-256" - \
    -sign -inkey rsa2048.pem -in digest20 -pkeyopt digest:sha256
same_as_default "bad input: an ECDH peer on another curve" - -derive -inkey ecP-256.pem -peerkey peerP-384.pub
head -c 32 /dev/zero > zero-point
plain pkey -in X25519.pem -pubout -outform DER -out x25519.der
{ head -c 12 x25519.der; cat zero-point; } > low-order.der
plain pkey -pubin -inform DER -in low-order.der -out low-order.pub
same_as_default "bad input: an X25519 peer of low order" x25519_derive -derive -inkey X25519.pem -peerkey low-order.pub

# ---- openssl speed -async_jobs 64: private-key steps offloaded ----
check "openssl speed -async_jobs 64 rsa2048 ecdhp256 ecdhx25519 ecdsap256: offloaded" '
    OPENSSL_CONF=$work/provider.cnf SWIFTASYNC_STATS_FILE=$work/stats \
        "$run" openssl speed -seconds 1 -async_jobs 64 rsa2048 ecdhp256 ecdhx25519 ecdsap256 > speed.out 2>&1
    tail -n 12 speed.out; cat stats
    for algorithm in rsa_private_encrypt ecdh_derive x25519_derive ecdsa_sign; do
        offloaded $algorithm; [ "$(counter $algorithm failed)" = 0 ]
        [ "$(counter $algorithm offloaded)" = "$(counter $algorithm completed)" ]
    done'

# ---- s_server -async: each handshake's private-key steps counted ----
plain req -x509 -new -key rsa2048.pem -subj /CN=localhost -days 2 -out rsa-cert.pem 2>/dev/null
plain req -x509 -new -key ecP-256.pem -subj /CN=localhost -days 2 -out ec-cert.pem 2>/dev/null
handshakes=3
port=$((20000 + RANDOM % 20000))
server_conf=$work/provider.cnf
# handshakes_offloaded NAME KEY CERT "server options" "client options" ALGORITHM=COUNT[:lanes]...
# The server runs lanes for any fill: ":lanes" steps must all have gone through them.
handshakes_offloaded() {
    local name=$1 key=$2 cert=$3 server_options=$4 client_options=$5; shift 5
    expectations=("$@")
    port=$((port + 1))
    # A port something else listens on would be taken for ours.
    while [ -n "$(ss -Hltn "sport = :$port")" ]; do port=$((port + 1)); done
    check "s_server -async, $name: every handshake offloaded" '
        rm -f stats
        OPENSSL_CONF=$server_conf SWIFTASYNC_STATS_FILE=$work/stats SWIFTASYNC_MULTIBUFFER_MIN_FILL=1 \
            "$run" openssl s_server -async \
            -accept 127.0.0.1:$port -key "$key" -cert $cert -naccept $handshakes -quiet $server_options < /dev/null > server.log 2>&1 &
        server_pid=$!
        for _ in $(seq 200); do [ -n "$(ss -Hltn "sport = :$port")" ] && break; sleep 0.05; done
        for _ in $(seq $handshakes); do
            plain s_client -brief -connect 127.0.0.1:$port $client_options < /dev/null > client.log 2>&1
            grep -E "^(Protocol|Ciphersuite|Negotiated|Peer signature type|Server Temp Key)" client.log | sort -u
            grep -q "^CONNECTION ESTABLISHED" client.log || { cat client.log server.log; exit 1; }
        done
        wait $server_pid || { cat server.log; exit 1; }
        cat stats
        for expected in "${expectations[@]}"; do
            algorithm=${expected%=*}; count=${expected#*=}; count=${count%:lanes}
            [ "$(counter $algorithm offloaded)" = "$count" ] && [ "$(counter $algorithm inline)" = 0 ] \
                || { echo "expected $expected offloaded, none inline"; exit 1; }
            if [ "${expected%:lanes}" != "$expected" ] && grep -q "multibuffer=in_use" stats; then
                [ "$(counter $algorithm lanes)" = "$count" ] || { echo "expected $expected in lanes"; exit 1; }
            fi
        done'
}
handshakes_offloaded "TLS 1.3, RSA certificate, X25519" rsa2048.pem rsa-cert.pem "-groups X25519" "-tls1_3" \
    rsa_private_encrypt=$handshakes:lanes x25519_keygen=$handshakes:lanes x25519_derive=$handshakes:lanes
handshakes_offloaded "TLS 1.3, ECDSA certificate, P-256" ecP-256.pem ec-cert.pem "-groups P-256" "-tls1_3" \
    ecdsa_sign=$handshakes:lanes ec_keygen=$handshakes:lanes ecdh_derive=$handshakes:lanes
handshakes_offloaded "TLS 1.2, RSA certificate, ECDHE P-256" rsa2048.pem rsa-cert.pem "-groups P-256" \
    "-tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256" \
    rsa_private_encrypt=$handshakes:lanes ec_keygen=$handshakes:lanes ecdh_derive=$handshakes:lanes
handshakes_offloaded "TLS 1.2, ECDSA certificate, X25519" ecP-256.pem ec-cert.pem "-groups X25519" \
    "-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256" \
    ecdsa_sign=$handshakes:lanes x25519_keygen=$handshakes:lanes x25519_derive=$handshakes:lanes
handshakes_offloaded "TLS 1.2, RSA key exchange (pre-master secret decryption)" rsa2048.pem rsa-cert.pem \
    "-cipher AES128-SHA:@SECLEVEL=0" "-tls1_2 -cipher AES128-SHA:@SECLEVEL=0" rsa_private_decrypt=$handshakes
if [ "${series%%.*}" -gt 3 ] || [ "${series#*.}" -ge 5 ]; then
    # The hybrid key share: its X25519 half is a key generation and a derivation of
    # the X25519 key manager and key exchange, and reaches the pool; its ML-KEM
    # half (an encapsulation) stays inline in the forward target.
    handshakes_offloaded "TLS 1.3, RSA certificate, X25519MLKEM768 (the default key share)" rsa2048.pem \
        rsa-cert.pem "" "-tls1_3" \
        rsa_private_encrypt=$handshakes:lanes x25519_keygen=$handshakes:lanes x25519_derive=$handshakes:lanes
    check "the hybrid key share was X25519MLKEM768" 'grep -q "group: X25519MLKEM768" client.log'
fi

# ---- A PKCS#11 token's key through swiftasync-pkcs11 (openssl-pkcs11.cnf) ----
# pkcs11-provider comes from trixie, built for libcrypto.so.3 (3.0 to 3.6);
# no Debian suite has one for libcrypto.so.4.
pkcs11_module=${SWIFTASYNC_PKCS11_PROVIDER:-$("$repo"/scripts/fetch-pkcs11-provider.sh 2>/dev/null || true)}
softhsm=/usr/lib/softhsm/libsofthsm2.so
if [ "${series%%.*}" != 3 ]; then
    echo "skip openssl $version: PKCS#11 token (no pkcs11-provider for libcrypto.so.${series%%.*} in Debian's suites)"
elif [ ! -f "$pkcs11_module" ] || [ ! -f "$softhsm" ] || ! command -v pkcs11-tool > /dev/null; then
    echo "skip openssl $version: PKCS#11 token (no pkcs11-provider, SoftHSM or pkcs11-tool here)"
else
    mkdir -p tokens
    printf 'directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$work" > softhsm2.conf
    export SOFTHSM2_CONF=$work/softhsm2.conf SWIFTASYNC_PKCS11_PROVIDER=$pkcs11_module
    export SWIFTASYNC_PKCS11_MODULE=$softhsm SWIFTASYNC_PKCS11_PIN=1234
    softhsm2-util --init-token --free --label versions --pin 1234 --so-pin 5678 > /dev/null
    plain pkey -in rsa2048.pem -outform DER -out token.der
    plain pkey -in rsa2048.pem -pubout -outform DER -out token-pub.der
    for object in "token.der privkey --usage-sign" "token-pub.der pubkey"; do
        set -- $object
        pkcs11-tool --module "$softhsm" --token-label versions --login --pin 1234 --id 01 --label rsa \
            --write-object "$1" --type "$2" ${3:-} > /dev/null
    done
    uri='pkcs11:token=versions;object=rsa;type=private'
    sed "s|^module = .*/swiftasync.so|module = $so|" "$repo/openssl-pkcs11.cnf" > pkcs11.cnf
    check "a token's RSA key signs on the token's workers (pkeyutl, URI), verified by default" '
        rm -f stats
        OPENSSL_CONF=$work/pkcs11.cnf SWIFTASYNC_SYNC_OFFLOAD=1 SWIFTASYNC_STATS_FILE=$work/stats \
            "$run" openssl pkeyutl -sign -inkey "$uri" -in digest32 -pkeyopt digest:sha256 -out token.sig
        plain pkeyutl -verify -pubin -inkey rsa2048.pub -in digest32 -pkeyopt digest:sha256 -sigfile token.sig
        offloaded swiftasync-pkcs11.rsa_private_encrypt
        [ "$(counter rsa_private_encrypt offloaded)" = "" ] || [ "$(counter rsa_private_encrypt offloaded)" = 0 ]'
    plain req -x509 -new -key rsa2048.pem -subj /CN=localhost -days 2 -out token-cert.pem 2>/dev/null
    server_conf=$work/pkcs11.cnf
    handshakes_offloaded "TLS 1.3, a token's RSA key by URI, X25519" "$uri" token-cert.pem "-groups X25519" "-tls1_3" \
        swiftasync-pkcs11.rsa_private_encrypt=$handshakes x25519_keygen=$handshakes:lanes x25519_derive=$handshakes:lanes
fi

echo "openssl $version: $passed passed, $failed failed"
[ "$failed" = 0 ]

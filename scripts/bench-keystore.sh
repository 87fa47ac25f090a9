#!/usr/bin/env bash
# make bench-keystore: full TLS 1.3 handshakes/s with the certificate's
# RSA-2048 key in a SoftHSM token, each device call (C_Sign*, C_Decrypt,
# C_DeriveKey) delayed +0, +5, +20 and +100 ms by the slow-pkcs11 fixture
# (scripts/slow-pkcs11.c, a forwarding PKCS#11 module), through
# pkcs11-provider alone and through swiftasync (openssl-pkcs11.cnf), for
# `engine-loader serve` (one event-loop thread) and HAProxy nbthread 1 in
# ssl-mode-async. h2load shares the machine's cores. Ends with one line per
# server and delay, and per delay the p99 latency of keep-alive requests on
# HAProxy while the handshakes run:
#   keystore SERVER +MS ms: alone R1 hs/s, swiftasync R2 hs/s, ratio X, of own +0 ms Y
#   keepalive haproxy +MS ms: alone p99 A ms, swiftasync p99 B ms
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${ENGINE_SO:?path of swiftasync.so}
loader=${ENGINE_LOADER:?path of engine-loader}
handshakes=${BENCH_HANDSHAKES:-400}
clients=${BENCH_CLIENTS:-64}
delays=${BENCH_DELAYS:-0 5 20 100}
provider_module=$(scripts/fetch-pkcs11-provider.sh)
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
source scripts/bench-lib.sh

# The token, its key, the certificate, and HAProxy's crt (certificate + URI block).
export SOFTHSM2_CONF=$work/softhsm2.conf
mkdir "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" > "$SOFTHSM2_CONF"
softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 5678 > /dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/key.pem" 2>/dev/null
openssl pkey -in "$work/key.pem" -outform DER -out "$work/key.der"
openssl pkey -in "$work/key.pem" -pubout -outform DER -out "$work/pub.der"
for half in "key.der --type privkey --usage-sign" "pub.der --type pubkey"; do
    # shellcheck disable=SC2086
    pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label bench --login --pin 1234 \
        --id 01 --label rsa --write-object "$work"/$half > /dev/null
done
openssl req -x509 -new -key "$work/key.pem" -subj /CN=localhost -days 2 -out "$work/cert.pem" 2>/dev/null
rm -f "$work/key.pem" "$work/key.der"
uri="pkcs11:token=bench;object=rsa;type=private"
cat > "$work/uri.gen" <<EOF
asn1 = SEQUENCE:uri
[uri]
desc = VISIBLESTRING:PKCS\#11 Provider URI v1.0
uri = UTF8:$uri
EOF
openssl asn1parse -genconf "$work/uri.gen" -noout -out "$work/uri.der"
{ cat "$work/cert.pem"; echo "-----BEGIN PKCS#11 PROVIDER URI-----"; base64 -w 64 "$work/uri.der"
  echo "-----END PKCS#11 PROVIDER URI-----"; } > "$work/crt.pem"

# The fixture: SoftHSM behind a delay per device call.
cc -shared -fPIC -O2 -I/usr/include/p11-kit-1 -o "$work/slow-pkcs11.so" scripts/slow-pkcs11.c -ldl -lpthread
export SLOW_PKCS11_MODULE=/usr/lib/softhsm/libsofthsm2.so
export SWIFTASYNC_PKCS11_PROVIDER=$provider_module SWIFTASYNC_PKCS11_MODULE=$work/slow-pkcs11.so SWIFTASYNC_PKCS11_PIN=1234
sed "s|^module = .*swiftasync\.so$|module = $engine|" openssl-pkcs11.cnf > "$work/swiftasync.cnf"
cat > "$work/alone.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
providers = provider_section
[provider_section]
default = default_section
pkcs11 = pkcs11_section
[default_section]
activate = 1
[pkcs11_section]
module = $provider_module
pkcs11-module-path = $work/slow-pkcs11.so
pkcs11-module-token-pin = 1234
pkcs11-module-quirks = no-deinit no-operation-state
pkcs11-module-cache-sessions = 64
activate = 1
EOF

# engine-loader serve, swiftasync as its provider or pkcs11-provider alone (blocking).
serve_rate() {
    local configuration=$1 flag=$2 port
    port=$(free_port)
    OPENSSL_CONF=$configuration "$loader" serve $flag --no-engine --certificate "$work/cert.pem" \
        --private-key "$uri" --port "$port" --handshakes "$handshakes" > "$work/serve.txt" 2>&1 &
    wait_port "$port" || { cat "$work/serve.txt" >&2; return 1; }
    drive "$port" --h1 || { echo failed; pkill -P $$ -f "serve" 2>/dev/null || true; }
    wait
}

# HAProxy's rate; beside the handshakes, keep-alive requests on 4 connections
# opened before them (scripts/keepalive-probe.py, one every 10 ms on a second
# frontend that keeps connections open): their latency goes to $work/keepalive.txt.
haproxy_rate() {
    local configuration=$1 port keepalive_port pid probe
    port=$(free_port)
    keepalive_port=$(free_port)
    printf '%s\n' "global" "    nbthread 1" "    ssl-mode-async" "    tune.ssl.cachesize 0" \
        "defaults" "    mode http" "    timeout connect 5s" "    timeout client 60s" \
        "    timeout server 60s" "frontend tls" "    option httpclose" \
        "    bind 127.0.0.1:$port ssl crt $work/crt.pem alpn http/1.1 no-tls-tickets ssl-min-ver TLSv1.3" \
        "    http-request return status 200 content-type text/plain string ok" \
        "frontend keepalive" "    option http-keep-alive" "    timeout http-keep-alive 60s" \
        "    bind 127.0.0.1:$keepalive_port ssl crt $work/crt.pem alpn http/1.1 ssl-min-ver TLSv1.3" \
        "    http-request return status 200 content-type text/plain string ok" > "$work/haproxy.cfg"
    OPENSSL_CONF=$configuration haproxy -W -db -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
    pid=$!
    wait_port "$port" || { cat "$work/haproxy.log" >&2; return 1; }
    rm -f "$work/probe-ready" "$work/load-started" "$work/load-done"
    python3 scripts/keepalive-probe.py "$keepalive_port" "$work/probe-ready" "$work/load-started" "$work/load-done" \
        > "$work/keepalive.txt" 2>&1 &
    probe=$!
    for _ in $(seq 600); do [ -e "$work/probe-ready" ] || ! kill -0 "$probe" 2>/dev/null && break; sleep 0.05; done
    touch "$work/load-started"
    drive "$port" --h1 || echo failed
    touch "$work/load-done"
    wait "$probe" || true
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

# "p99 X ms" of the last probe, or "failed".
keepalive_p99() {
    sed -n 's/.*p99 \([0-9.]*\) ms.*/\1/p' "$work/keepalive.txt" | grep . || { sed "s/^/keepalive-probe: /" "$work/keepalive.txt" >&2; echo failed; }
}

echo "full TLS 1.3 handshakes, RSA-2048 key in a SoftHSM token, $handshakes per run over $clients connections"
echo "each device call delayed by scripts/slow-pkcs11.c; $(nproc) cores shared with h2load"
changelog=${provider_module%/lib/*}/share/doc/pkcs11-provider/changelog.Debian.gz
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(openssl version), $(zcat "$changelog" | head -1 | cut -d';' -f1)"
declare -A base
summary=()
for delay in $delays; do
    export SLOW_PKCS11_DELAY_MS=$delay
    for server in serve haproxy; do
        if [ "$server" = serve ]; then
            alone=$(serve_rate "$work/alone.cnf" "")
            through=$(serve_rate "$work/swiftasync.cnf" --provider)
        else
            alone=$(haproxy_rate "$work/alone.cnf")
            alone_keepalive=$(keepalive_p99)
            through=$(haproxy_rate "$work/swiftasync.cnf")
            through_keepalive=$(keepalive_p99)
        fi
        [ "$delay" = 0 ] && base[$server]=$through
        line="keystore $server +$delay ms: alone $alone hs/s, swiftasync $through hs/s, ratio $(ratio "$through" "$alone"), of own +0 ms $(ratio "$through" "${base[$server]:-0}")"
        echo "$line"
        summary+=("$line")
        if [ "$server" = haproxy ]; then
            line="keepalive haproxy +$delay ms: alone p99 $alone_keepalive ms, swiftasync p99 $through_keepalive ms"
            echo "$line"
            summary+=("$line")
        fi
    done
done
echo
echo "targets: at +20 ms swiftasync >= 10x alone; at +5 and +20 ms >= 0.8 of its own +0 ms;"
echo "keep-alive requests on HAProxy during the handshakes: p99 < 5 ms with swiftasync"
printf '%s\n' "${summary[@]}"

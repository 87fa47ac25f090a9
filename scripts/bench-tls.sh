#!/usr/bin/env bash
# Full TLS handshakes per second, with and without the engine, in one run:
# h2load (one request per connection, so every request is a new handshake)
# against `engine-loader serve` (one event-loop thread) and against HAProxy
# (ssl-mode-async, one thread). h2load shares the machine's cores.
set -euo pipefail
engine=${ENGINE_SO:?path of swiftasync.so}
loader=${ENGINE_LOADER:?path of engine-loader}
handshakes=${BENCH_HANDSHAKES:-4000}
clients=${BENCH_CLIENTS:-64}
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

# h2load with $clients connections; the server closes each after one response
# and h2load reconnects, so every request is a full handshake. Prints handshakes/s.
drive() {
    local port=$1 extra=$2
    h2load $extra -n "$handshakes" -c "$clients" "https://127.0.0.1:$port/" > "$work/h2load.txt" 2>&1
    grep -q "$handshakes succeeded, 0 failed" "$work/h2load.txt" || { echo "h2load failed:" >&2; cat "$work/h2load.txt" >&2; return 1; }
    sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' "$work/h2load.txt" | awk '{ printf "%.0f", $1 }'
}

# engine-loader serve: handshakes/s and the loop thread's CPU per handshake.
serve() {
    local tls=$1 engine_flag=$2 port out rate
    port=$(free_port)
    out="$work/serve-$tls$engine_flag.txt"
    "$loader" serve --engine "$engine" $engine_flag --tls "$tls" --port "$port" \
        --handshakes "$handshakes" > "$out" 2>&1 &
    wait_port "$port"
    rate=$(drive "$port" --h1)
    wait
    echo "$rate $(sed -n 's/.*loop_cpu_us_per_handshake=\([0-9.]*\).*/\1/p' "$out")"
}

haproxy_rate() {
    local use_engine=$1 port config pid rate
    port=$(free_port)
    config="$work/haproxy.cfg"
    cat "$work/server.crt" "$work/server.key" > "$work/server.pem"
    printf '%s\n' "global" "    nbthread 1" "    ssl-mode-async" "    tune.ssl.cachesize 0" \
        "defaults" "    mode http" "    option httpclose" "    timeout connect 5s" "    timeout client 30s" "    timeout server 30s" \
        "frontend tls" "    bind 127.0.0.1:$port ssl crt $work/server.pem alpn h2,http/1.1 no-tls-tickets" \
        "    http-request return status 200 content-type text/plain string ok" > "$config"
    if [ "$use_engine" = yes ]; then
        sed "s|./build/swiftasync.so|$engine|" openssl.cnf > "$work/openssl.cnf"
        OPENSSL_CONF="$work/openssl.cnf" haproxy -W -db -f "$config" > "$work/haproxy.log" 2>&1 &
    else
        OPENSSL_CONF=/dev/null haproxy -W -db -f "$config" > "$work/haproxy.log" 2>&1 &
    fi
    pid=$!
    wait_port "$port"
    rate=$(drive "$port" --h1)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$rate"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$work/server.key" -out "$work/server.crt" 2>/dev/null
echo "full handshakes, RSA 2048 certificate, $handshakes per run over $clients connections, $(nproc) cores shared with h2load"
printf '%-40s %14s %14s %22s\n' "server" "no engine" "engine" "engine / no engine"
for tls in 1.3 1.2; do
    read -r plain plain_cpu <<< "$(serve "$tls" --no-engine)"
    read -r async async_cpu <<< "$(serve "$tls" "")"
    printf '%-40s %14s %14s %22s\n' "engine-loader serve, TLS $tls (hs/s)" "$plain" "$async" "$(ratio "$async" "$plain") (goal >= 1.5)"
    printf '%-40s %14s %14s %22s\n' "  loop thread CPU per handshake (us)" "$plain_cpu" "$async_cpu" "$(ratio "$async_cpu" "$plain_cpu")"
done
plain=$(haproxy_rate no)
async=$(haproxy_rate yes)
printf '%-40s %14s %14s %22s\n' "HAProxy nbthread 1, TLS 1.3 (hs/s)" "$plain" "$async" "$(ratio "$async" "$plain")"

#!/usr/bin/env bash
# Full TLS handshakes per second, with and without the engine, in one run:
# h2load (one request per connection, so every request is a new handshake)
# against `engine-loader serve` (one event-loop thread) and against HAProxy
# (ssl-mode-async, one and two threads), with RSA-2048, RSA-4096 and P-256
# certificates. h2load shares the machine's cores. Next to each rate: the
# server's CPU per handshake on its own threads (serve: the loop thread).
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

# engine-loader serve: "handshakes/s loop-CPU-µs-per-handshake lanes".
serve() {
    local key=$1 tls=$2 engine_flag=$3 port out rate
    port=$(free_port)
    out="$work/serve-$key-$tls$engine_flag.txt"
    "$loader" serve --engine "$engine" $engine_flag --key "$key" --tls "$tls" --port "$port" \
        --handshakes "$handshakes" > "$out" 2>&1 &
    wait_port "$port"
    rate=$(drive "$port" --h1)
    wait
    echo "$rate $(sed -n 's/.*loop_cpu_us_per_handshake=\([0-9.]*\).*/\1/p' "$out") $(lanes "$out")"
}

# Operations the engine ran in 8-lane calls, over all algorithms, from a STATS report.
lanes() {
    awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^lanes=/) { split($i, kv, "="); sum += kv[2] } } END { print sum + 0 }' "$1"
}

# A certificate and key for HAProxy: rsa2048, rsa4096 or p256.
certificate() {
    local key=$1
    [ -f "$work/$key.pem" ] && return
    case $key in
        p256) openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
                  -keyout "$work/$key.key" -out "$work/$key.crt" 2>/dev/null ;;
        *)    openssl req -x509 -newkey "rsa:${key#rsa}" -nodes -days 2 -subj /CN=localhost \
                  -keyout "$work/$key.key" -out "$work/$key.crt" 2>/dev/null ;;
    esac
    cat "$work/$key.crt" "$work/$key.key" > "$work/$key.pem"
}

# HAProxy (master-worker, ssl-mode-async): "handshakes/s worker-CPU-µs-per-handshake".
haproxy_rate() {
    local key=$1 threads=$2 use_engine=$3 port config pid rate worker ticks
    port=$(free_port)
    config="$work/haproxy.cfg"
    certificate "$key"
    printf '%s\n' "global" "    nbthread $threads" "    ssl-mode-async" "    tune.ssl.cachesize 0" \
        "defaults" "    mode http" "    option httpclose" "    timeout connect 5s" "    timeout client 30s" "    timeout server 30s" \
        "frontend tls" "    bind 127.0.0.1:$port ssl crt $work/$key.pem alpn h2,http/1.1 no-tls-tickets" \
        "    http-request return status 200 content-type text/plain string ok" > "$config"
    if [ "$use_engine" = yes ]; then
        sed "s|./build/swiftasync.so|$engine|" openssl.cnf > "$work/openssl.cnf"
        OPENSSL_CONF="$work/openssl.cnf" haproxy -W -db -f "$config" > "$work/haproxy.log" 2>&1 &
    else
        OPENSSL_CONF=/dev/null haproxy -W -db -f "$config" > "$work/haproxy.log" 2>&1 &
    fi
    pid=$!
    wait_port "$port"
    worker=$(pgrep -P "$pid" haproxy | head -1)
    rate=$(drive "$port" --h1)
    ticks=$(haproxy_threads_cpu "$worker")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$rate $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$handshakes" 'BEGIN { printf "%.0f", t / hz / n * 1e6 }')"
}

# CPU ticks (user + system) of a HAProxy worker's own threads, the engine's left out.
haproxy_threads_cpu() {
    local total=0 task
    for task in /proc/"$1"/task/*; do
        grep -q '^swiftasync' "$task/comm" && continue
        total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "$task/stat")))
    done
    echo "$total"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() { printf '%-44s %10s %10s %7s %-14s %18s %8s\n' "$@"; }

echo "full handshakes, $handshakes per run over $clients connections, $(nproc) cores shared with h2load"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(openssl version)"
row "server (hs/s)" "no engine" "engine" "ratio" "goal" "CPU us/hs no/eng" "in lanes"
for case in "rsa2048 1.3 1.3" "rsa2048 1.2 1.3" "rsa4096 1.3 3" "p256 1.3 -"; do
    read -r key tls goal <<< "$case"
    read -r plain plain_cpu _ <<< "$(serve "$key" "$tls" --no-engine)"
    read -r async async_cpu async_lanes <<< "$(serve "$key" "$tls" "")"
    row "serve, $key, TLS $tls" "$plain" "$async" "$(ratio "$async" "$plain")" ">= $goal" "$plain_cpu / $async_cpu" "$async_lanes"
done
for case in "rsa2048 1 -" "rsa4096 1 -" "rsa2048 2 1.2" "rsa4096 2 -"; do
    read -r key threads goal <<< "$case"
    read -r plain plain_cpu <<< "$(haproxy_rate "$key" "$threads" no)"
    read -r async async_cpu <<< "$(haproxy_rate "$key" "$threads" yes)"
    row "HAProxy nbthread $threads, $key, TLS 1.3" "$plain" "$async" "$(ratio "$async" "$plain")" ">= $goal" "$plain_cpu / $async_cpu" "-"
done

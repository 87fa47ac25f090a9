#!/usr/bin/env bash
# Full TLS handshakes per second, with and without the engine, in one run:
# h2load (one request per connection, so every request is a new handshake)
# against `engine-loader serve` (one event-loop thread) and against HAProxy
# (ssl-mode-async, one and two threads) and Traffic Server (async handshakes,
# the engine and the provider), with RSA-2048, RSA-4096 and P-256
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

source "$(dirname "$0")/bench-lib.sh"

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
    ticks=$(server_threads_cpu "$worker")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$rate $(per_handshake_us "$ticks")"
}

# Traffic Server (one net thread, async handshakes) with swiftasync as an ENGINE
# (its engine.conf_file) or as the provider (OPENSSL_CONF), or neither:
# "handshakes/s server-CPU-µs-per-handshake".
trafficserver_rate() {
    local key=$1 front=$2 port pid rate ticks engine_cnf=- conf=/dev/null
    port=$(free_port)
    certificate "$key"
    case $front in
        engine)   engine_cnf="$work/openssl.cnf"; sed "s|./build/swiftasync.so|$engine|" openssl.cnf > "$engine_cnf" ;;
        provider) conf="$work/openssl-provider.cnf"; sed "s|^module = .*|module = $engine|" openssl-provider.cnf > "$conf" ;;
    esac
    rm -rf "$work/ats"
    OPENSSL_CONF=$conf scripts/trafficserver.sh "$work/ats" "$port" "$work/$key.crt" "$work/$key.key" "$engine_cnf" \
        > "$work/ats.log" 2>&1 &
    pid=$!
    wait_port "$port"
    rate=$(drive "$port" --h1)
    ticks=$(server_threads_cpu "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$rate $(per_handshake_us "$ticks")"
}

# CPU ticks spread over the run's handshakes, in µs each.
per_handshake_us() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$handshakes" 'BEGIN { printf "%.0f", t / hz / n * 1e6 }'; }

# CPU ticks (user + system) of a server process's own threads, the engine's left out.
server_threads_cpu() {
    local total=0 task
    for task in /proc/"$1"/task/*; do
        grep -q '^swiftasync' "$task/comm" && continue
        total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "$task/stat")))
    done
    echo "$total"
}

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
for key in rsa2048 rsa4096; do
    read -r plain plain_cpu <<< "$(trafficserver_rate "$key" none)"
    for front in engine provider; do
        read -r async async_cpu <<< "$(trafficserver_rate "$key" "$front")"
        row "Traffic Server 1 thread, $key, $front" "$plain" "$async" "$(ratio "$async" "$plain")" ">= -" "$plain_cpu / $async_cpu" "-"
    done
done

#!/usr/bin/env bash
# make bench-latency: handshake latency under an open-loop load. For each
# server (engine-loader serve; HAProxy ssl-mode-async nbthread 1 and 2) and
# certificate key (RSA-2048, RSA-4096, P-256), the plain server's capacity is
# measured first (h2load, closed loop); then full handshakes are offered at
# fixed rates (scripts/open-loop-client.c) of 10 ... 120% of that capacity,
# and on up to the engine's or the provider's own capacity where higher,
# with no engine, the engine and the provider. Each point's latencies (from
# when a handshake was due to its response's end) give one line:
#   latency SERVER KEY CONFIG LOAD%: offered R/s, p50 A ms, p90 B ms, p99 C ms, p99.9 D ms
# and per server and key a data file and a plot (p50 and p99 against the
# offered rate) in OUTPUT. The client shares the machine's cores with the
# server; nothing is pinned (pinning the server to one core would keep the
# pool from the other). For the engine and the provider each point also
# gives the server's own pool latencies (submit to wake-up, from its live
# counters). BENCH_SERVERS, BENCH_KEYS, BENCH_LOADS and BENCH_CONFIGS pick
# part of the grid; a config may carry pool settings (engine+NOTIFY_DELAY_USEC=0)
# or be "before", the build BENCH_BEFORE_SO names.
# The configurations' servers run side by side and take turns at each load,
# BENCH_REPEAT times each (default 1): a point's percentiles come from all its
# turns' samples, so every configuration meets the same neighbours (on a shared
# machine they move a lone run's p99 by 2x from one minute to the next).
# Past 120%, a configuration whose median already took a second is not driven
# further: it only queues more.
#   scripts/bench-latency.sh OUTPUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${ENGINE_SO:?path of swiftasync.so}
loader=${ENGINE_LOADER:?path of engine-loader}
output=$(mkdir -p "${1:?output folder}" && cd "$1" && pwd)
seconds=${BENCH_SECONDS:-10}
servers=${BENCH_SERVERS:-serve haproxy1 haproxy2}
keys=${BENCH_KEYS:-rsa2048 rsa4096 p256}
loads=${BENCH_LOADS:-10 25 50 75 90 100 120}
configs=${BENCH_CONFIGS:-none engine provider}
handshakes=${BENCH_HANDSHAKES:-2000}
repeat=${BENCH_REPEAT:-1}
clients=64
stats_dir=${SWIFTASYNC_STATS_DIR:-/dev/shm/swiftasync}
work=$(mktemp -d)
trap 'pkill -P $$ 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
source scripts/bench-lib.sh
command -v gnuplot >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null; }

cc -O2 -o "$work/open-loop-client" scripts/open-loop-client.c -lssl -lcrypto
sed "s|^dynamic_path = .*|dynamic_path = $engine|" openssl.cnf > "$work/engine.cnf"
sed "s|^module = .*|module = $engine|" openssl-provider.cnf > "$work/provider.cnf"
before=${BENCH_BEFORE_SO:-}
[ -z "$before" ] || sed "s|^dynamic_path = .*|dynamic_path = $before|" openssl.cnf > "$work/before.cnf"
cpu=$(lscpu | sed -n 's/^Model name: *//p')
version=$(openssl version | cut -d' ' -f1-2)

# start_server SERVER KEY CONFIG PORT: in the background; its pid in $server_pid.
# CONFIG is none, engine, provider or before (the engine BENCH_BEFORE_SO names:
# another build, for a before/after in one run), optionally with settings of the pool:
# engine+NOTIFY_DELAY_USEC=0+THREADS=1 runs the engine with those (SWIFTASYNC_NAME=VALUE).
start_server() {
    local server=$1 key=$2 config=${3%%+*} port=$4 conf=/dev/null settings=()
    local setting
    for setting in $(tr '+' ' ' <<< "${3#"$config"}"); do settings+=("SWIFTASYNC_$setting"); done
    [ "$config" = engine ] && conf=$work/engine.cnf
    [ "$config" = before ] && conf=$work/before.cnf
    [ "$config" = provider ] && conf=$work/provider.cnf
    case $server in
    serve)
        local flag=--no-engine
        [ "$config" = engine ] && flag="--engine $engine"
        [ "$config" = before ] && flag="--engine $before"
        [ "$config" = provider ] && flag=--provider
        # shellcheck disable=SC2086
        env "${settings[@]}" OPENSSL_CONF=$conf "$loader" serve $flag --key "$key" --port "$port" > "$work/server-$3.log" 2>&1 &
        ;;
    haproxy*)
        certificate "$key"
        printf '%s\n' "global" "    nbthread ${server#haproxy}" "    ssl-mode-async" "    tune.ssl.cachesize 0" \
            "defaults" "    mode http" "    option httpclose" "    timeout connect 5s" "    timeout client 30s" \
            "    timeout server 30s" "frontend tls" \
            "    bind 127.0.0.1:$port ssl crt $work/$key.pem alpn http/1.1 no-tls-tickets" \
            "    http-request return status 200 content-type text/plain string ok" > "$work/haproxy-$3.cfg"
        env "${settings[@]}" OPENSSL_CONF=$conf haproxy -W -db -f "$work/haproxy-$3.cfg" > "$work/server-$3.log" 2>&1 &
        ;;
    esac
    server_pid=$!
    wait_port "$port" || { cat "$work/server-$3.log" >&2; return 1; }
}

# pool_latency PID: the server's own recent pool latencies (its live counters, the last
# 5-10 s) for each algorithm it offloaded: from submit to wake-up, p50/p99/p99.9 in µs.
pool_latency() {
    local pid files=()
    for pid in "$1" $(pgrep -P "$1"); do
        [ -f "$stats_dir/$pid.stats" ] && files+=("$stats_dir/$pid.stats")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    awk '$2 ~ /^offloaded=/ && $2 != "offloaded=0" {
        for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%s%s wake %s/%s/%s", sep, $1, v["wake_p50_us"], v["wake_p99_us"], v["wake_p999_us"]; sep = ", "
    }' "${files[@]}"
}

stop_server() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# offer CONFIG RATE PORT: one open-loop turn; its latencies join the point's samples.
offer() {
    local summary
    summary=$("$work/open-loop-client" 127.0.0.1 "$3" "$2" "$seconds" "$work/turn" 4000 2> "$work/progress")
    cat "$work/turn" >> "$work/samples-$1"
    echo "$(tail -n 1 "$work/progress") ($1: $summary)" >&2
}

# point SERVER KEY CONFIG LOAD RATE PID: the point's line from all its turns' samples; appends the data.
point() {
    local server=$1 key=$2 config=$3 load=$4 rate=$5 stats
    stats=$(sort -n "$work/samples-$config" | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "- - - -"; exit }
        split("0.50 0.90 0.99 0.999", q, " ")
        for (i = 1; i <= 4; i++) { k = int(q[i] * NR); if (k < 1) k = 1; printf "%.2f ", v[k] / 1000 }
    }')
    read -r p50 p90 p99 p999 <<< "$stats"
    echo "latency $server $key $config $load%: offered $rate/s, p50 $p50 ms, p90 $p90 ms, p99 $p99 ms, p99.9 $p999 ms"
    [ "$config" = none ] || echo "pool $server $key $config $load%: $(pool_latency "$6") (us, p50/p99/p99.9)"
    echo "$config $load $rate $p50 $p90 $p99 $p999" >> "$output/latency-$server-$key.dat"
}

plot() {
    local server=$1 key=$2 data=$output/latency-$server-$key.dat lines="" config color=0
    for config in $configs; do
        grep -q "^$config " "$data" || continue
        color=$((color + 1))
        lines+="${lines:+, }\"< grep '^$config ' $data\" using 3:4 with linespoints lw 2 lc $color title \"$config p50\", "
        lines+="\"< grep '^$config ' $data\" using 3:6 with linespoints lw 2 dt 2 lc $color title \"$config p99\""
    done
    gnuplot <<EOF
set terminal pngcairo noenhanced size 900,560 font "sans,11"
set output "$output/latency-$server-$key.png"
set title "$server, $key: full TLS handshake latency, open-loop load\n$cpu, $(nproc) cores shared with the client, $version"
set xlabel "offered handshakes/s"
set ylabel "latency (ms)"
set logscale y
set grid
set key left top
plot $lines
EOF
}

echo "open-loop full TLS handshakes, $seconds s per turn, $repeat turn(s) per point; $(nproc) cores shared by the client and the server"
echo "cpu: $cpu, $version"
summary=()
for server in $servers; do
    for key in $keys; do
        : > "$output/latency-$server-$key.dat"
        declare -A capacity=() port=() pid=() saturated=()
        for config in $configs; do
            port[$config]=$(free_port)
            start_server "$server" "$key" "$config" "${port[$config]}"
            capacity[$config]=$(drive "${port[$config]}" --h1 || echo 0)
            stop_server "$server_pid"
            echo "capacity $server $key $config: ${capacity[$config]} hs/s (h2load, $clients connections)" >&2
        done
        plain=${capacity[none]:-0}
        best=$plain
        for config in $configs; do [ "${capacity[$config]}" -gt "$best" ] && best=${capacity[$config]}; done
        # 10 ... 120% of plain, then on in steps of 25% up to the best capacity.
        points=$loads
        load=145
        while [ $((plain * load / 100)) -le "$best" ] && [ "$plain" -gt 0 ]; do points+=" $load"; load=$((load + 25)); done
        for config in $configs; do
            start_server "$server" "$key" "$config" "${port[$config]}"
            pid[$config]=$server_pid
            saturated[$config]=0
        done
        for load in $points; do
            rate=$((plain * load / 100))
            [ "$rate" -gt 0 ] || continue
            driven=()
            for config in $configs; do
                if [ "${saturated[$config]}" = 1 ] && [ "$load" -gt 120 ]; then
                    echo "latency $server $key $config $load%: skipped, saturated (p50 over 1 s at a lower load)" >&2
                else
                    driven+=("$config")
                    : > "$work/samples-$config"
                fi
            done
            for turn in $(seq "$repeat"); do
                for config in "${driven[@]}"; do offer "$config" "$rate" "${port[$config]}"; sleep 1; done
            done
            for config in "${driven[@]}"; do
                line=$(point "$server" "$key" "$config" "$load" "$rate" "${pid[$config]}")
                echo "$line"
                summary+=("$line")
                # The point's data line: config load rate p50 p90 p99 p99.9.
                tail -n 1 "$output/latency-$server-$key.dat" | awk '{ exit !($4 + 0 > 1000) }' && saturated[$config]=1
            done
        done
        for config in $configs; do stop_server "${pid[$config]}"; done
        plot "$server" "$key"
    done
done
echo
printf '%s\n' "${summary[@]}"

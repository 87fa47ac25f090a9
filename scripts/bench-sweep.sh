#!/usr/bin/env bash
# How throughput grows with concurrency: `openssl speed -elapsed` through the
# engine at -async_jobs 1, 2, 4, ... 128 for each algorithm, against plain
# OpenSSL on one core and with -multi <cores>, all in one run. Writes
# OUTPUT/sweep-<algorithm>.dat and a PNG plot per algorithm (gnuplot).
# SWEEP_PLOT_ONLY=1 draws the plots again from the .dat files, measuring nothing.
#   scripts/bench-sweep.sh OUTPUT_DIR
set -euo pipefail
engine=${ENGINE_SO:?path of swiftasync.so}
output=${1:?output folder}
seconds=${SWEEP_SECONDS:-3}
algorithms=${SWEEP_ALGORITHMS:-rsa2048 ecdhx25519 ecdsap256}
jobs=${SWEEP_JOBS:-1 2 4 8 16 32 64 128}
cores=$(nproc)
cpu=$(lscpu | sed -n 's/^Model name: *//p')
version=$(openssl version | cut -d' ' -f1-2)
command -v gnuplot >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null; }
mkdir -p "$output"

source "$(dirname "$0")/speed-rate.sh"

runs=$(( $(echo "$algorithms" | wc -w) * ($(echo "$jobs" | wc -w) + 2) ))
run=0
progress() { run=$((run + 1)); printf '[%2d/%d] %-12s %-24s' "$run" "$runs" "$algorithm" "$1" >&2; }

# One plot from its .dat file, whose first line holds the machine and the two baselines.
plot() {
    local data=$output/sweep-$algorithm.dat unit header one multi machine
    case $algorithm in rsa*|ecdsa*) unit="signatures/s" ;; *) unit="key exchanges/s" ;; esac
    header=$(head -1 "$data")
    one=$(echo "$header" | sed -n 's/.*one core \([0-9.]*\).*/\1/p')
    multi=$(echo "$header" | sed -n 's/.*-multi [0-9]* \([0-9.]*\)).*/\1/p')
    machine=$(echo "$header" | sed -n 's/^# async_jobs engine_ops_per_s ([^,]*, \(.*\); one core.*/\1/p')
    gnuplot <<EOF
set terminal pngcairo noenhanced size 900,560 font "sans,11"
set output "$output/sweep-$algorithm.png"
set title "$algorithm: swiftasync against plain OpenSSL\n$machine, $cores cores"
set xlabel "openssl speed -async_jobs (operations in flight)"
set ylabel "$unit (openssl speed -elapsed)"
set logscale x 2
set xrange [0.8:160]
set yrange [0:*]
set grid
set key left top
plot "$data" using 1:2 with linespoints lw 2 pt 7 title "engine, -async_jobs N", \
     $one with lines lw 2 dt 2 title "plain OpenSSL, 1 core ($one)", \
     $multi with lines lw 2 dt 3 title "plain OpenSSL, -multi $cores ($multi)"
EOF
    echo "wrote $output/sweep-$algorithm.png" >&2
}

for algorithm in $algorithms; do
    if [ "${SWEEP_PLOT_ONLY:-0}" = 1 ]; then plot; continue; fi
    progress "1 core";          one=$(rate);                   echo " $one" >&2
    progress "-multi $cores";   multi=$(rate -multi "$cores"); echo " $multi" >&2
    data=$output/sweep-$algorithm.dat
    echo "# async_jobs engine_ops_per_s ($algorithm, $cpu, $version; one core $one, -multi $cores $multi)" > "$data"
    for count in $jobs; do
        progress "engine -async_jobs $count"
        value=$(rate -engine "$engine" -async_jobs "$count")
        echo " $value" >&2
        echo "$count $value" >> "$data"
    done
    plot
done

#!/usr/bin/env bash
# Side by side, in one run: `openssl speed` without the engine (one core and
# -multi <cores>) and with swiftasync (no async jobs, -async_jobs 1, 8 and 64,
# and -async_jobs 64 with the 8-lane path switched off: by default, with the
# callers never computing (CALLER_RUNS_DEPTH=0) and with a worker fewer), then the provider
# at -async_jobs 64 (openssl-provider.cnf); then, on each newer OpenSSL built
# by `make versions` (BENCH_OPENSSL_SERIES, default 4.0), that version's own
# speed (one core, -multi) against the provider built for it. Wall-clock rates
# (-elapsed): without it speed divides by the process's CPU time, which
# counts the engine's worker threads too. The engine's own counters give the
# operations offloaded and how many ran in 8-lane calls, with the average fill.
set -euo pipefail
engine=${ENGINE_SO:?path of swiftasync.so}
seconds=${BENCH_SECONDS:-5}
cores=$(nproc)
# Workers for the caller-runs row with one fewer: the caller takes the last core.
fewer=$((cores > 1 ? cores - 1 : 1))
algorithms=${BENCH_ALGORITHMS:-rsa2048 rsa4096 ecdhx25519 ecdhp256 ecdsap256}
stats=$(mktemp)

source "$(dirname "$0")/speed-rate.sh"

# "rate offloaded lanes average-fill": the rate `"$@"` measures, and the
# engine's counters over that run.
counted_rate() {
    : > "$stats"
    local value
    value=$(SWIFTASYNC_STATS_FILE=$stats "$@")
    awk -v value="$value" '
        { for (i = 2; i <= NF; i++) { split($i, kv, "=")
              if (kv[1] == "offloaded") offloaded += kv[2]
              if (kv[1] == "lanes") lanes += kv[2]
              if (kv[1] == "lane_calls") calls += kv[2] } }
        END { fill = calls > 0 ? sprintf("%.1f", lanes / calls) : "-"; printf "%s %d %d %s\n", value, offloaded, lanes, fill }' "$stats"
}

# The same through the provider: openssl-provider.cnf with the module's path made absolute.
provider_cnf=$(mktemp)
trap 'rm -f "$stats" "$provider_cnf"' EXIT
sed "s|^module = .*|module = $engine|" "$(dirname "$0")/../openssl-provider.cnf" > "$provider_cnf"
engine_rate() { counted_rate rate -engine "$engine" "$@"; }
provider_rate() { OPENSSL_CONF=$provider_cnf counted_rate rate "$@"; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t) ? "met" : "NOT MET" }'; }
row() { printf '%-36s %10s %11s %10s %6s\n' "$@"; }

echo "openssl speed, ${seconds}s per run, $cores cores, $(openssl version)"
echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
echo "engine: $engine"
SWIFTASYNC_STATS_FILE=$stats openssl engine -t "$engine" >/dev/null 2>&1 || true
echo "multi-buffer: $(grep -o 'multibuffer=[a-z_0-9]*' "$stats" | head -1 | cut -d= -f2)"
for algorithm in $algorithms; do
    case $algorithm in
        rsa*)        target64=2.5 ;;
        ecdhx25519)  target64=2.0 ;;
        *)           target64=1.5 ;;
    esac
    software=$(rate)
    multi=$(rate -multi "$cores")
    echo
    row "$algorithm" "ops/s" "offloaded" "in lanes" "fill"
    row "software, 1 core" "$software" - - -
    row "software, -multi $cores" "$multi" - - -
    read -r inline inline_offloaded _ _ <<< "$(engine_rate)"
    row "engine, no async jobs" "$inline" "$inline_offloaded" - -
    read -r jobs1 jobs1_offloaded jobs1_lanes jobs1_fill <<< "$(engine_rate -async_jobs 1)"
    row "engine, -async_jobs 1" "$jobs1" "$jobs1_offloaded" "$jobs1_lanes" "$jobs1_fill"
    if [ "$algorithm" = rsa2048 ]; then
        read -r jobs8 jobs8_offloaded jobs8_lanes jobs8_fill <<< "$(engine_rate -async_jobs 8)"
        row "engine, -async_jobs 8" "$jobs8" "$jobs8_offloaded" "$jobs8_lanes" "$jobs8_fill"
    fi
    read -r jobs64 jobs64_offloaded jobs64_lanes jobs64_fill <<< "$(engine_rate -async_jobs 64)"
    row "engine, -async_jobs 64" "$jobs64" "$jobs64_offloaded" "$jobs64_lanes" "$jobs64_fill"
    # Without lanes (as on a CPU without IFMA) the callers compute when the pool is saturated
    # (by default, at four operations queued per worker): against never, and with one worker
    # fewer than the cores (the caller is the last core's).
    read -r scalar64 scalar64_offloaded _ _ <<< "$(SWIFTASYNC_MULTIBUFFER=0 engine_rate -async_jobs 64)"
    row "engine, -async_jobs 64, MULTIBUFFER=0" "$scalar64" "$scalar64_offloaded" 0 -
    read -r never64 never64_offloaded _ _ <<< "$(SWIFTASYNC_MULTIBUFFER=0 SWIFTASYNC_CALLER_RUNS_DEPTH=0 engine_rate -async_jobs 64)"
    row "  ... CALLER_RUNS_DEPTH=0 (never)" "$never64" "$never64_offloaded" 0 -
    read -r fewer64 fewer64_offloaded _ _ <<< "$(SWIFTASYNC_MULTIBUFFER=0 SWIFTASYNC_THREADS=$fewer engine_rate -async_jobs 64)"
    row "  ... THREADS=$fewer" "$fewer64" "$fewer64_offloaded" 0 -
    read -r provider64 provider64_offloaded provider64_lanes provider64_fill <<< "$(provider_rate -async_jobs 64)"
    row "provider, -async_jobs 64" "$provider64" "$provider64_offloaded" "$provider64_lanes" "$provider64_fill"
    r64=$(ratio "$jobs64" "$multi")
    echo "ratio engine -async_jobs 64 / software -multi $cores: $r64 (target >= $target64: $(verdict "$r64" "$target64"))"
    for shape in ":$scalar64" " CALLER_RUNS_DEPTH=0:$never64" " THREADS=$fewer:$fewer64"; do
        rs=$(ratio "${shape##*:}" "$multi")
        echo "ratio engine -async_jobs 64, MULTIBUFFER=0${shape%%:*} / software -multi $cores: $rs (target >= 0.97: $(verdict "$rs" 0.97))"
    done
    rp=$(ratio "$provider64" "$jobs64")
    echo "ratio provider -async_jobs 64 / engine -async_jobs 64: $rp (target >= 0.95: $(verdict "$rp" 0.95))"
    if [ "$algorithm" = rsa2048 ]; then
        r1=$(ratio "$jobs1" "$software")
        echo "ratio engine -async_jobs 1 / software 1 core: $r1 (target >= 0.9: $(verdict "$r1" 0.9))"
        echo "ratio engine -async_jobs 8 / software -multi $cores: $(ratio "$jobs8" "$multi")"
    else
        echo "ratio engine -async_jobs 1 / software 1 core: $(ratio "$jobs1" "$software")"
    fi
    echo "ratio engine no async jobs / software 1 core: $(ratio "$inline" "$software")"
done

# Newer OpenSSL: that version's own speed against the provider built for it.
for series in ${BENCH_OPENSSL_SERIES-4.0}; do
    folder=$(dirname "$0")/../.build-openssl-$series
    module=$(dirname "$0")/../build/openssl-$series/swiftasync.so
    if [ ! -x "$folder/run" ] || [ ! -f "$module" ]; then
        echo; echo "OpenSSL $series: not built (make versions OPENSSL_SERIES=$series)"; continue
    fi
    OPENSSL="$folder/run openssl"
    sed "s|^module = .*|module = $(cd "$(dirname "$module")" && pwd)/swiftasync.so|" \
        "$(dirname "$0")/../openssl-provider.cnf" > "$provider_cnf"
    echo; echo "$($OPENSSL version), the provider built for it"
    for algorithm in $algorithms; do
        software=$(OPENSSL_CONF=/dev/null rate)
        multi=$(OPENSSL_CONF=/dev/null rate -multi "$cores")
        read -r provider64 provider64_offloaded provider64_lanes provider64_fill <<< "$(provider_rate -async_jobs 64)"
        echo
        row "$algorithm ($series)" "ops/s" "offloaded" "in lanes" "fill"
        row "software, 1 core" "$software" - - -
        row "software, -multi $cores" "$multi" - - -
        row "provider, -async_jobs 64" "$provider64" "$provider64_offloaded" "$provider64_lanes" "$provider64_fill"
        echo "ratio provider -async_jobs 64 / software -multi $cores ($series): $(ratio "$provider64" "$multi")"
    done
done
unset OPENSSL

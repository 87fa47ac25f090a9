#!/usr/bin/env bash
# Side by side, in one run: `openssl speed` without the engine (one core and
# -multi <cores>) and with swiftasync (no async jobs, -async_jobs 1 and 64).
# Wall-clock rates (-elapsed): without it speed divides by the process's CPU
# time, which counts the engine's worker threads too.
set -euo pipefail
engine=${ENGINE_SO:?path of swiftasync.so}
seconds=${BENCH_SECONDS:-5}
cores=$(nproc)
algorithms=${BENCH_ALGORITHMS:-rsa2048 ecdhp256 ecdhx25519 ecdsap256}
stats=$(mktemp)
trap 'rm -f "$stats"' EXIT

# The first rate on $algorithm's result line: sign/s, or op/s for ECDH.
rate() {
    openssl speed -elapsed -seconds "$seconds" "$@" "$algorithm" 2>/dev/null | awk -v alg="$algorithm" '
        alg ~ /^rsa/   && $1 == "rsa" && $2 == substr(alg, 4) { value = $(NF-1) }
        alg ~ /^ecdsa/ && $0 ~ /ecdsa \(/                     { value = $(NF-1) }
        alg ~ /^ecdh/  && $0 ~ /ecdh \(/                      { value = $NF }
        END { print value + 0 }'
}

# Same, through the engine, with the operations its counters saw offloaded.
engine_rate() {
    : > "$stats"
    local value offloaded
    value=$(SWIFTASYNC_STATS_FILE=$stats rate -engine "$engine" "$@")
    offloaded=$(awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^offloaded=/) { split($i, kv, "="); sum += kv[2] } } END { print sum + 0 }' "$stats")
    echo "$value $offloaded"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t) ? "met" : "NOT MET" }'; }
# Microseconds an operation spends handed off (submit to resume), beyond the math itself.
handoff() { awk -v e="$1" -v s="$2" 'BEGIN { if (e > 0 && s > 0) printf "%.1f", 1e6 / e - 1e6 / s; else print "n/a" }'; }

echo "openssl speed, ${seconds}s per run, $cores cores, $(openssl version)"
echo "engine: $engine"
for algorithm in $algorithms; do
    case $algorithm in
        rsa*) target64=0.95 target1=0.90 ;;
        *)    target64=0.85 target1=0.85 ;;
    esac
    software=$(rate)
    multi=$(rate -multi "$cores")
    read -r inline inline_offloaded <<< "$(engine_rate)"
    read -r jobs1 jobs1_offloaded <<< "$(engine_rate -async_jobs 1)"
    read -r jobs64 jobs64_offloaded <<< "$(engine_rate -async_jobs 64)"
    echo
    printf '%-34s %12s %14s\n' "$algorithm" "ops/s" "offloaded"
    printf '%-34s %12s %14s\n' "software, 1 core" "$software" "-"
    printf '%-34s %12s %14s\n' "software, -multi $cores" "$multi" "-"
    printf '%-34s %12s %14s\n' "engine, no async jobs" "$inline" "$inline_offloaded"
    printf '%-34s %12s %14s\n' "engine, -async_jobs 1" "$jobs1" "$jobs1_offloaded"
    printf '%-34s %12s %14s\n' "engine, -async_jobs 64" "$jobs64" "$jobs64_offloaded"
    r64=$(ratio "$jobs64" "$multi"); r1=$(ratio "$jobs1" "$software"); r0=$(ratio "$inline" "$software")
    echo "ratio engine -async_jobs 64 / software -multi $cores: $r64 (target >= $target64: $(verdict "$r64" "$target64"))"
    echo "ratio engine -async_jobs 1  / software 1 core:     $r1 (target >= $target1: $(verdict "$r1" "$target1"))"
    if [ "${algorithm#rsa}" != "$algorithm" ]; then
        echo "ratio engine no async jobs  / software 1 core:     $r0 (target >= 0.97: $(verdict "$r0" 0.97))"
    else
        echo "ratio engine no async jobs  / software 1 core:     $r0"
    fi
    echo "hand-off per operation at -async_jobs 1 (submit to resume, beyond the math): $(handoff "$jobs1" "$software") us"
done

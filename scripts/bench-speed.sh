#!/usr/bin/env bash
# Side by side, in one run: `openssl speed` without the engine (one core and
# -multi <cores>) and with swiftasync (no async jobs, -async_jobs 1 and 64).
# Wall-clock rates (-elapsed): without it speed divides by the process's CPU
# time, which counts the engine's worker threads too.
set -euo pipefail
engine=${ENGINE_SO:?path of swiftasync.so}
seconds=${BENCH_SECONDS:-5}
cores=$(nproc)
algorithms=${BENCH_ALGORITHMS:-rsa2048}
stats=$(mktemp)
trap 'rm -f "$stats"' EXIT

# Prints the ops/s of the first column (sign, or the op itself) for $algorithm.
rate() {
    local output
    output=$(openssl speed -elapsed -seconds "$seconds" "$@" "$algorithm" 2>/dev/null)
    case $algorithm in
        rsa*) echo "$output" | awk -v bits="${algorithm#rsa}" '$1 == "rsa" && $2 == bits { print $(NF-1) }' | tail -1 ;;
    esac
}

# Same, through the engine; also checks the engine's counters saw the work.
engine_rate() {
    : > "$stats"
    local value
    value=$(SWIFTASYNC_STATS_FILE=$stats rate -engine "$engine" "$@")
    local offloaded
    offloaded=$(awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^offloaded=/) { split($i, kv, "="); sum += kv[2] } } END { print sum + 0 }' "$stats")
    echo "$value $offloaded"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t) ? "met" : "NOT MET" }'; }

echo "openssl speed, ${seconds}s per run, $cores cores, $(openssl version)"
echo "engine: $engine"
for algorithm in $algorithms; do
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
    echo "ratio engine -async_jobs 64 / software -multi $cores: $r64 (target >= 0.95: $(verdict "$r64" 0.95))"
    echo "ratio engine -async_jobs 1  / software 1 core:     $r1 (target >= 0.90: $(verdict "$r1" 0.90))"
    echo "ratio engine no async jobs  / software 1 core:     $r0 (target >= 0.97: $(verdict "$r0" 0.97))"
done

#!/usr/bin/env bash
# The latency targets of make bench-latency, from its data files
# (OUTPUT/latency-SERVER-KEY.dat: config load% offered p50 p90 p99 p99.9):
# at loads up to 50% of plain capacity, p99 with the engine (and the
# provider) <= 1.1x plain's; at 90% with RSA-4096, <= 0.3x plain's. One line each:
#   target SERVER KEY CONFIG LOAD%: p99 A ms against plain B ms, ratio R (goal G): met|missed
#   scripts/latency-targets.sh OUTPUT_DIR
set -euo pipefail
output=${1:?folder of latency-*.dat}
for data in "$output"/latency-*.dat; do
    name=$(basename "$data" .dat); name=${name#latency-}
    server=${name%-*}; key=${name##*-}
    awk -v server="$server" -v key="$key" '
        { p99[$1 " " $2] = $6; if ($1 != "none") configs[$1] = 1; loads[$2] = 1 }
        END {
            for (config in configs) for (load in loads) {
                goal = 0
                if (load + 0 <= 50) goal = 1.1
                if (load + 0 == 90 && key == "rsa4096") goal = 0.3
                if (goal == 0 || !((config " " load) in p99) || !(("none " load) in p99) || p99["none " load] <= 0) continue
                ratio = p99[config " " load] / p99["none " load]
                printf "target %s %s %s %s%%: p99 %s ms against plain %s ms, ratio %.2f (goal %s): %s\n",
                    server, key, config, load, p99[config " " load], p99["none " load], ratio, goal,
                    ratio <= goal ? "met" : "missed"
            }
        }' "$data" | sort -t' ' -k4,4 -k5,5n
done

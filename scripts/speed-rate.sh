# The first rate on $algorithm's result line of `openssl speed -elapsed`:
# sign/s, or op/s for ECDH. Sourced by the benchmark scripts; wants $seconds.
# $OPENSSL runs another openssl (a fetched version's `run openssl`). From 3.5
# RSA prints a KEM line (encaps/decaps) before the sign line: the last counts;
# and ECDSA's line says "EC (prime256v1)".
rate() {
    ${OPENSSL:-openssl} speed -elapsed -seconds "$seconds" "$@" "$algorithm" 2>/dev/null | awk -v alg="$algorithm" '
        alg ~ /^rsa/   && $1 == "rsa" && $2 == substr(alg, 4) { value = $(NF-1) }
        alg ~ /^rsa/   && $1 == alg                          { value = $(NF-1) }
        alg ~ /^ecdsa/ && $0 ~ /(ecdsa|EC) \(/                { value = $(NF-1) }
        alg ~ /^ecdh/  && $0 ~ /ecdh \(/                      { value = $NF }
        END { print value + 0 }'
}

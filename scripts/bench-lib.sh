# Helpers of the TLS benchmarks (sourced): a free loopback port, waiting for
# a listener, h2load driving full handshakes, and a certificate per key. They
# use $work, $handshakes and $clients of the script that sources them.

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

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# certificate KEY (rsa2048, rsa3072, rsa4096, p256): $work/KEY.crt, .key and .pem (both, for HAProxy).
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

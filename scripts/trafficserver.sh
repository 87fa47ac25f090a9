#!/usr/bin/env bash
# Apache Traffic Server (Debian's trafficserver 9.2) on 127.0.0.1 with async
# TLS handshakes, in a folder of its own (a runroot: nothing of /etc or /var),
# answering every request itself (the generator plugin, no origin server):
#   scripts/trafficserver.sh DIR PORT CERT KEY [ENGINE_CNF] [GROUPS] [THREADS]
# ENGINE_CNF: swiftasync as an ENGINE through proxy.config.ssl.engine.conf_file
# ("-": none; for the provider, set OPENSSL_CONF instead). GROUPS: the key
# exchange groups offered (default OpenSSL's). THREADS: net threads (1).
# Execs traffic_server in the foreground: its pid is this script's.
set -euo pipefail
dir=${1:?folder} port=${2:?port} cert=${3:?certificate} key=${4:?key}
engine_cnf=${5:--} groups=${6:-} threads=${7:-1}
mkdir -p "$dir"/{etc,run,log,cache,var}
cat > "$dir/runroot.yaml" <<EOF
prefix: /usr
exec_prefix: /usr
bindir: /usr/bin
sbindir: /usr/sbin
includedir: /usr/include
libdir: /usr/lib/trafficserver
libexecdir: /usr/lib/trafficserver/modules
sysconfdir: $dir/etc
datadir: $dir/cache
localstatedir: $dir/var
runtimedir: $dir/run
logdir: $dir/log
cachedir: $dir/cache
EOF
{
    # "#-1": stay the user that started it (tests and benchmarks run as root).
    echo "CONFIG proxy.config.admin.user_id STRING #-1"
    echo "CONFIG proxy.config.exec_thread.autoconfig INT 0"
    echo "CONFIG proxy.config.exec_thread.limit INT $threads"
    echo "CONFIG proxy.config.accept_threads INT 0"
    echo "CONFIG proxy.config.task_threads INT 1"
    echo "CONFIG proxy.config.http.server_ports STRING 127.0.0.1:$port:ssl"
    echo "CONFIG proxy.config.http.cache.http INT 0"
    echo "CONFIG proxy.config.log.logging_enabled INT 0"
    # Every request a full handshake: one request per connection, no resumption.
    echo "CONFIG proxy.config.http.keep_alive_enabled_in INT 0"
    echo "CONFIG proxy.config.ssl.session_cache INT 0"
    echo "CONFIG proxy.config.ssl.server.session_ticket.enable INT 0"
    # The handshake's private-key work in OpenSSL async jobs.
    echo "CONFIG proxy.config.ssl.async.handshake.enabled INT 1"
    [ "$engine_cnf" != - ] && echo "CONFIG proxy.config.ssl.engine.conf_file STRING $engine_cnf"
    [ -n "$groups" ] && echo "CONFIG proxy.config.ssl.server.groups_list STRING $groups"
    true
} > "$dir/etc/records.config"
echo "dest_ip=* ssl_cert_name=$cert ssl_key_name=$key" > "$dir/etc/ssl_multicert.config"
echo "map / http://127.0.0.1/nocache/2/ @plugin=generator.so" > "$dir/etc/remap.config"
printf '%s\n' "ip_allow:" "  - apply: in" "    ip_addrs: 127.0.0.1" "    action: allow" > "$dir/etc/ip_allow.yaml"
: > "$dir/etc/storage.config"
for empty in plugin.config cache.config parent.config volume.config; do : > "$dir/etc/$empty"; done
exec traffic_server --run-root="$dir/runroot.yaml"

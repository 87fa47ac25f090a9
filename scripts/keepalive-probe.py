#!/usr/bin/env python3
"""Latency of requests on already-open keep-alive TLS connections, while
something else loads the server (make bench-keystore: handshakes waiting on
a token). Opens CONNECTIONS connections to 127.0.0.1:PORT (and makes
READY_FILE once they are open), then sends one request on each in turn
every INTERVAL ms until STOP_FILE exists (or MAX_SECONDS pass), and prints
"p50 A ms, p99 B ms, max C ms, N requests". Only requests sent after
START_FILE exists are counted: the load's own time.

    keepalive-probe.py PORT READY_FILE START_FILE STOP_FILE [CONNECTIONS] [INTERVAL_MS] [MAX_SECONDS]
"""
import http.client
import os
import ssl
import sys
import time


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    port, ready_file, start_file, stop_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    interval = (float(sys.argv[6]) if len(sys.argv) > 6 else 10.0) / 1000
    max_seconds = float(sys.argv[7]) if len(sys.argv) > 7 else 300
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connections = [http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30) for _ in range(count)]
    for connection in connections:
        connection.request("GET", "/")
        connection.getresponse().read()
    open(ready_file, "w").close()
    samples, began, turn = [], time.monotonic(), 0
    while not os.path.exists(stop_file) and time.monotonic() - began < max_seconds:
        connection = connections[turn % count]
        turn += 1
        counted = os.path.exists(start_file)
        sent = time.monotonic()
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            sys.exit(f"keepalive-probe: status {response.status}")
        if counted:
            samples.append((time.monotonic() - sent) * 1000)
        time.sleep(max(0.0, interval - (time.monotonic() - sent)))
    if not samples:
        sys.exit("keepalive-probe: no request during the load")
    print(f"p50 {percentile(samples, 0.50):.2f} ms, p99 {percentile(samples, 0.99):.2f} ms, "
          f"max {max(samples):.2f} ms, {len(samples)} requests")


if __name__ == "__main__":
    main()

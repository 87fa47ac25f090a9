#!/usr/bin/env python3
"""Connections torn down at every point of an offloaded handshake, against
HAProxy in ssl-mode-async with the engine and with the provider (a slow
worker keeps each operation on the pool for a while):

  hello      a TLS 1.3 ClientHello, then close at once
  in-flight  a TLS 1.3 ClientHello, then close 0-15 ms later, while the key
             generation, key exchange or signature is on the pool
  done       a TLS 1.3 ClientHello, then close as the server's flight (its
             signature done) arrives
  decrypt    TLS 1.2 RSA key exchange: a ClientKeyExchange, ChangeCipherSpec
             and Finished, then close while the decryption is on the pool
  failed     TLS 1.2 RSA key exchange with the modulus as the encrypted
             premaster (a decryption that fails at once): close at once, or
             after the server's alert

Half the closes are resets (SO_LINGER 0). Afterwards HAProxy must be alive,
hold no connection and no job of its own (`show info`), have the fds it had
before, have handed back every offloaded operation, and serve full
handshakes again. Loopback only; bounded in count and time. Standard
library only.
"""
import argparse
import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from local_servers import PLAIN_OPENSSL, free_port, read_stats, repository_cnf, self_signed

POINTS = ["hello", "in-flight", "done", "decrypt", "failed"]


def record(content_type, body, version=0x0301):
    return struct.pack("!BHH", content_type, version, len(body)) + body


def handshake(message_type, body):
    return struct.pack("!B", message_type) + len(body).to_bytes(3, "big") + body


def extension(kind, body):
    return struct.pack("!HH", kind, len(body)) + body


def vector(body, length_bytes):
    return len(body).to_bytes(length_bytes, "big") + body


def client_hello(tls13):
    signature_schemes = [0x0804, 0x0805, 0x0403, 0x0401, 0x0501]
    extensions = extension(13, vector(b"".join(struct.pack("!H", s) for s in signature_schemes), 2))
    if tls13:
        suites = [0x1301, 0x1302]
        extensions += extension(43, vector(struct.pack("!H", 0x0304), 1))
        extensions += extension(10, vector(struct.pack("!HH", 0x001D, 0x0017), 2))
        share = struct.pack("!H", 0x001D) + vector(os.urandom(32), 2)
        extensions += extension(51, vector(share, 2))
    else:
        suites = [0x009C]   # TLS_RSA_WITH_AES_128_GCM_SHA256: RSA key exchange
    body = (struct.pack("!H", 0x0303) + os.urandom(32) + vector(os.urandom(32), 1)
            + vector(b"".join(struct.pack("!H", s) for s in suites), 2) + b"\x01\x00" + vector(extensions, 2))
    return record(22, handshake(1, body))


def read_handshake_until(sock, wanted_type, deadline):
    """Reads records until a handshake message of wanted_type (or an alert)."""
    buffered, messages = b"", b""
    while time.time() < deadline:
        sock.settimeout(max(0.01, deadline - time.time()))
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buffered += chunk
        while len(buffered) >= 5:
            content_type, _, length = struct.unpack("!BHH", buffered[:5])
            if len(buffered) < 5 + length:
                break
            fragment, buffered = buffered[5:5 + length], buffered[5 + length:]
            if content_type == 21:
                return False
            if content_type == 22:
                messages += fragment
                while len(messages) >= 4:
                    size = int.from_bytes(messages[1:4], "big")
                    if len(messages) < 4 + size:
                        break
                    if messages[0] == wanted_type:
                        return True
                    messages = messages[4 + size:]
    return False


def first_bytes(sock, deadline):
    sock.settimeout(max(0.01, deadline - time.time()))
    return bool(sock.recv(1))


def client_key_exchange(premaster):
    return (record(22, handshake(16, vector(premaster, 2)), 0x0303)
            + record(20, b"\x01", 0x0303) + record(22, os.urandom(40), 0x0303))


def tear_down(port, point, modulus, rng):
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return False
    try:
        if rng.random() < 0.5:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        deadline = time.time() + 5
        if point in ("hello", "in-flight", "done"):
            sock.sendall(client_hello(tls13=True))
            if point == "in-flight":
                time.sleep(rng.uniform(0, 0.015))
            elif point == "done":
                first_bytes(sock, deadline)
        else:
            sock.sendall(client_hello(tls13=False))
            if not read_handshake_until(sock, 14, deadline):   # ServerHelloDone
                return False
            premaster = os.urandom(len(modulus)) if point == "decrypt" else modulus
            sock.sendall(client_key_exchange(premaster))
            if point == "failed" and rng.random() < 0.5:
                try:
                    first_bytes(sock, deadline)   # the server's alert
                except OSError:
                    pass
        return True
    except OSError:
        return False
    finally:
        sock.close()


def full_handshake(port):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return b" 200" in tls.recv(64).split(b"\r\n")[0]


def show_info(socket_path):
    with socket.socket(socket.AF_UNIX) as cli:
        cli.connect(socket_path)
        cli.sendall(b"show info\n")
        text = b""
        while True:
            chunk = cli.recv(65536)
            if not chunk:
                break
            text += chunk
    return dict(line.split(": ", 1) for line in text.decode().splitlines() if ": " in line)


def counters(stats_dir, pid):
    """The header's counters by name, and each algorithm's as ALGORITHM.NAME."""
    header, algorithms = read_stats(stats_dir, pid)
    return {**header, **{f"{algorithm}.{key}": value
                         for algorithm, values in algorithms.items() for key, value in values.items()}}


def in_flight(values):
    offloaded = sum(v for k, v in values.items() if k.endswith(".offloaded"))
    completed = sum(v for k, v in values.items() if k.endswith(".completed"))
    return offloaded - completed, offloaded


def open_fds(pid):
    """The fewest fds seen over half a second: the stats file being rewritten
    and our own `show info` come and go; a leaked fd stays."""
    seen = []
    for _ in range(10):
        seen.append(len(os.listdir(f"/proc/{pid}/fd")))
        time.sleep(0.05)
    return min(seen)


def resident_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def modulus_of(cert):
    text = subprocess.run(["openssl", "x509", "-noout", "-modulus", "-in", cert], check=True,
                          stdout=subprocess.PIPE, env=PLAIN_OPENSSL).stdout.decode()
    return bytes.fromhex(text.strip().split("=", 1)[1])


def run_config(options, name, cnf, delay_usec, work):
    stats_dir = os.path.join(work, f"stats-{name}")
    os.makedirs(stats_dir, exist_ok=True)
    port, cli = free_port(), os.path.join(work, f"haproxy-{name}.sock")
    config = os.path.join(work, f"haproxy-{name}.cfg")
    with open(config, "w") as out:
        out.write(f"""global
    nbthread 2
    ssl-mode-async
    tune.ssl.cachesize 0
    stats socket {cli} level admin
defaults
    mode http
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend teardown
    bind 127.0.0.1:{port} ssl crt {options.pem} no-tls-tickets ssl-min-ver TLSv1.2 ciphers ALL:@SECLEVEL=0
    http-request return status 200
""")
    environment = {**os.environ, "OPENSSL_CONF": cnf, "SWIFTASYNC_STATS_DIR": stats_dir,
                   "SWIFTASYNC_WORKER_DELAY_USEC": str(delay_usec)}
    log_path = os.path.join(work, f"haproxy-{name}.log")
    server = subprocess.Popen(["haproxy", "-db", "-f", config], env=environment,
                              stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    problems = []
    try:
        wait_for(lambda: os.path.exists(cli) and can_connect(port), 20, "HAProxy to listen")
        for _ in range(4):   # lazily made fds (workers, the stats file) exist from here on
            full_handshake(port)
        wait_for(lambda: in_flight(counters(stats_dir, server.pid))[0] == 0
                 and show_info(cli).get("CurrConns") == "0", 10, "the warm-up to settle")
        time.sleep(0.5)
        fds_before, info_before, rss_before = open_fds(server.pid), show_info(cli), resident_kib(server.pid)
        modulus = modulus_of(options.cert)
        tally = {point: 0 for point in POINTS}
        lock = threading.Lock()
        stop_at = time.time() + options.seconds

        def client(seed):
            rng = random.Random(seed)
            done = 0
            while done < options.closes // options.clients and time.time() < stop_at:
                point = POINTS[done % len(POINTS)]
                tear_down(port, point, modulus, rng)
                done += 1
                with lock:
                    tally[point] += 1
            return done

        started = time.time()
        with ThreadPoolExecutor(options.clients) as pool:
            total = sum(pool.map(client, range(options.clients)))
        elapsed = time.time() - started
        if server.poll() is not None:
            problems.append(f"HAProxy died (exit {server.returncode})")
            return problems
        def at_rest():
            values = counters(stats_dir, server.pid)
            return (show_info(cli).get("CurrConns") == "0" and in_flight(values)[0] == 0
                    and values.get("records_alive") == values.get("jobs_abandoned")
                    and open_fds(server.pid) <= fds_before)
        settled = wait_for(at_rest, 30, None)
        values, info_after, fds_after = counters(stats_dir, server.pid), show_info(cli), open_fds(server.pid)
        left, offloaded = in_flight(values)
        print(f"  {name}: {total} connections torn down in {elapsed:.1f} s ({tally}); "
              f"{offloaded} operations offloaded, {left} not handed back; HAProxy fds {fds_before} -> {fds_after}, "
              f"CurrConns {info_after.get('CurrConns')}, Jobs {info_before.get('Jobs')} -> {info_after.get('Jobs')}, "
              f"jobs HAProxy abandoned paused {values.get('jobs_abandoned')}, operation records alive "
              f"{values.get('records_alive')}, wake-ups withheld {values.get('wakeups_withheld')}; "
              f"resident {rss_before // 1024} -> {resident_kib(server.pid) // 1024} MiB", flush=True)
        if total < options.closes and time.time() >= stop_at:
            print(f"  {name}: stopped at the {options.seconds} s limit", flush=True)
        if not settled:
            problems.append("did not settle in 30 s")
        if left:
            problems.append(f"{left} operations never handed back")
        if fds_after != fds_before:
            problems.append(f"HAProxy's open fds went from {fds_before} to {fds_after}")
        if info_after.get("Jobs") != info_before.get("Jobs"):
            problems.append(f"HAProxy's jobs went from {info_before.get('Jobs')} to {info_after.get('Jobs')}")
        # HAProxy frees a connection whose job is paused once the job's fd
        # fires, without resuming it (its issue #3453): OpenSSL never frees
        # that job. Each such job holds one record; any other live record is ours.
        if "records_alive" not in values or values["records_alive"] != values.get("jobs_abandoned"):
            problems.append(f"{values.get('records_alive')} operation records alive, "
                            f"{values.get('jobs_abandoned')} held by abandoned jobs")
        if offloaded == 0:
            problems.append("nothing was offloaded")
        served = sum(1 for _ in range(20) if succeeds(full_handshake, port))
        after = in_flight(counters_after_publish(stats_dir, server.pid))[1]
        if served != 20 or after <= offloaded:
            problems.append(f"afterwards {served}/20 full handshakes served, offloaded {offloaded} -> {after}")
        fatal = [line for line in open(log_path, errors="replace") if "FATAL" in line or "bug condition" in line]
        problems += fatal
        if server.poll() is not None:
            problems.append(f"HAProxy died (exit {server.returncode})")
        return problems
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(10)


def succeeds(function, *arguments):
    try:
        return function(*arguments)
    except OSError:
        return False


def counters_after_publish(stats_dir, pid):
    time.sleep(0.5)   # published at most every 200 ms
    return counters(stats_dir, pid)


def can_connect(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for(condition, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if condition():
                return True
        except OSError:
            pass
        time.sleep(0.1)
    if what:
        raise SystemExit(f"teardown: timed out waiting for {what}")
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--closes", type=int, default=3000, help="connections torn down per configuration")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=120, help="at most this long per configuration")
    parser.add_argument("--delay-usec", type=int, default=3000, help="the worker's delay per operation")
    options = parser.parse_args()
    work = os.path.abspath(options.work)
    os.makedirs(work, exist_ok=True)
    module = os.path.abspath(options.module)
    certificate = self_signed(work, "rsa", ["-newkey", "rsa:2048"])
    options.cert, options.pem = certificate["cert"], certificate["pem"]
    # A slow worker keeps operations on the pool while connections close; a
    # quick one finishes failed operations before their jobs pause.
    configs = [(front_end + speed, source, delay)
               for front_end, source in (("engine", "openssl.cnf"), ("provider", "openssl-provider.cnf"))
               for speed, delay in (("", options.delay_usec), ("-quick", 0))]
    failed = 0
    for name, source, delay in configs:
        problems = run_config(options, name, repository_cnf(options.repo, source, module, work), delay, work)
        for problem in problems:
            print(f"  {name}: PROBLEM: {problem}", flush=True)
        failed += bool(problems)
    print(f"teardown under fire: {len(configs) - failed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

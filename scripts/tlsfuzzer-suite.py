#!/usr/bin/env python3
"""A peer's TLS test suite, tlsfuzzer, against the servers our users run in
async mode: HAProxy (ssl-mode-async, nbthread 1 and 2) and openssl s_server
-async, each with plain OpenSSL, the engine and the provider (and, on
HAProxy, both again with a slow worker). Every configuration runs the same
probes. It passes when no server dies, when nothing the engine or the
provider does makes a probe fail that passes with plain OpenSSL, and when
the servers' own counters show the handshakes' private-key work offloaded.

Only loopback is used; every script run and the whole suite are bounded in
time. Standard library only: tlsfuzzer itself runs under --python.
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from local_servers import PLAIN_OPENSSL, free_port, read_stats, repository_cnf, self_signed

# (script, certificate it needs, extra arguments). All run with -n 0: every
# probe, no random sampling.
SCRIPTS = [
    ("test-tls13-rsa-signatures", "rsa", []),
    ("test-tls13-rsapss-signatures", "rsapss", []),
    ("test-sig-algs", "rsa", []),
    ("test-tls13-ecdsa-support", "ecdsa", []),
    ("test-ecdsa-sig-flexibility", "ecdsa", []),
    ("test-tls13-ecdhe-curves", "rsa", []),
    ("test-x25519", "rsa", []),
    ("test-ecdhe-rsa-key-exchange-with-bad-messages", "rsa", []),
    ("test-ecdhe-padded-shared-secret", "rsa", []),
    ("test-bleichenbacher-workaround", "rsa", ["--no-sni", "-t", "0.1"]),
    ("test-invalid-rsa-key-exchange-messages", "rsa", []),
    ("test-tls13-conversation", "rsa", []),
    ("test-conversation", "rsa", []),
]

# s_server -www sleeps a whole second whenever a read meets a paused job
# (apps/s_server.c, www_body), so with the engine every probe costs seconds.
# There the Bleichenbacher probes run for one cipher suite of the twenty,
# and the padded-secret script, whose probes repeat handshakes until a
# secret has leading zeros (hundreds per probe), does not run.
S_SERVER_BLEICHENBACHER_SUITE = "TLS_RSA_WITH_AES_128_GCM_SHA256"
S_SERVER_SKIPS = {"test-ecdhe-padded-shared-secret"}

# A script with more probes runs as several invocations at once, each naming
# its probes: the Bleichenbacher probes mostly wait (-t) for a server that
# rightly says nothing.
PROBES_PER_RUN = 25

# What a handshake's private-key work is, in the counters' names.
EXPECTED_OFFLOADED = ["rsa_private_encrypt", "rsa_private_decrypt", "ecdsa_sign",
                      "ecdh_derive", "x25519_derive"]

# Offloading is pointless for an RSA input longer than the modulus, which
# OpenSSL refuses at once: the engine leaves the two such probes of
# test-invalid-rsa-key-exchange-messages ("all zero (384)" and "(512)" against
# a 2048-bit key) on the calling thread. Nothing else may stay there.
INLINE_ALLOWED = {"rsa_private_decrypt": 2}

SCRIPT_TIMEOUT = 300


class SuiteError(Exception):
    pass


def log(text):
    print(text, flush=True)


def wait_for_port(port, process, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise SuiteError(f"server exited with {process.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SuiteError(f"nothing listened on {port} in {seconds} s")


def make_certificates(work):
    """RSA-2048 (rsaEncryption), RSA-PSS 2048 and P-256 ECDSA, self-signed."""
    keys = {"rsa": ["-newkey", "rsa:2048"],
            "rsapss": ["-newkey", "rsa-pss", "-pkeyopt", "rsa_keygen_bits:2048"],
            "ecdsa": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]}
    return {name: self_signed(work, name, newkey) for name, newkey in keys.items()}


def write_configurations(repo, module, work):
    """The repository's openssl.cnf and openssl-provider.cnf with an absolute module path."""
    return {name: repository_cnf(repo, source, module, work)
            for name, source in (("engine", "openssl.cnf"), ("provider", "openssl-provider.cnf"))}


def configurations(cnf, stats_dir, slow):
    """name -> environment additions. Lanes for any fill (a CPU with AVX-512
    IFMA then mixes invalid lanes among valid ones); the slow variants keep
    operations on the pool while connections close."""
    lanes = {"SWIFTASYNC_MULTIBUFFER_MIN_FILL": "1", "SWIFTASYNC_STATS_DIR": stats_dir}
    result = {"plain": {"OPENSSL_CONF": "/dev/null"},
              "engine": {"OPENSSL_CONF": cnf["engine"], **lanes},
              "provider": {"OPENSSL_CONF": cnf["provider"], **lanes}}
    if slow:
        delay = {"SWIFTASYNC_WORKER_DELAY_USEC": "20000"}
        result["engine-slow"] = {**result["engine"], **delay}
        result["provider-slow"] = {**result["provider"], **delay}
    return result


class Server:
    """One server process and the ports of its certificates."""

    def __init__(self, process, ports, log_path):
        self.process, self.ports, self.log_path = process, ports, log_path

    def alive(self):
        return self.process.poll() is None

    def stop(self):
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def fatal_lines(self):
        text = open(self.log_path, errors="replace").read()
        return [line for line in text.splitlines() if "FATAL" in line or "bug condition" in line]


def start_haproxy(work, certs, threads, environment, tag):
    ports = {name: free_port() for name in certs}
    binds = "\n".join(f"    bind 127.0.0.1:{ports[name]} ssl crt {certs[name]['pem']} no-tls-tickets "
                      f"ssl-min-ver TLSv1.2 ciphers ALL:@SECLEVEL=0" for name in certs)
    config = os.path.join(work, f"haproxy-{tag}.cfg")
    with open(config, "w") as out:
        out.write(f"""global
    nbthread {threads}
    ssl-mode-async
    tune.ssl.cachesize 0
defaults
    mode http
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend tlsfuzzer
{binds}
    http-request return status 200
""")
    log_path = os.path.join(work, f"haproxy-{tag}.log")
    process = subprocess.Popen(["haproxy", "-db", "-f", config], env={**os.environ, **environment},
                               stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    server = Server(process, ports, log_path)
    for port in ports.values():
        wait_for_port(port, process)
    return server


def start_s_server(work, cert, environment, tag):
    port = free_port()
    log_path = os.path.join(work, f"s_server-{tag}.log")
    process = subprocess.Popen(["openssl", "s_server", "-async", "-www", "-quiet", "-accept", f"127.0.0.1:{port}",
                                "-cert", cert["cert"], "-key", cert["key"], "-no_ticket",
                                "-cipher", "ALL:@SECLEVEL=0"],
                               env={**os.environ, **environment}, stdin=subprocess.PIPE,
                               stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    server = Server(process, {"only": port}, log_path)
    wait_for_port(port, process)
    return server


PROBE_LINE = re.compile(r'^(?:"(?P<quoted>.+)" repeat \d+\.\.\.|(?P<plain>.+) \.\.\.)$')


def parse_tlsfuzzer(output, reasons=None):
    """(probes that ran, probes that failed) from a script's output; each
    probe's last error line goes into `reasons`."""
    ran, failed, in_failed, current = set(), set(), False, None
    for line in output.splitlines():
        match = PROBE_LINE.match(line)
        if match:
            current = match.group("quoted") or match.group("plain")
            ran.add(current)
        elif reasons is not None and current and re.match(r"^[A-Za-z]*(Error|Exception)\b", line):
            reasons[current] = line
        if line.startswith("FAILED:") or line.startswith("XPASSED:"):
            in_failed = True
            continue
        if in_failed:
            if line.startswith("\t'") and line.endswith("'"):
                failed.add(line[2:-1])
            elif line.strip():
                in_failed = False
    return ran, failed


def run_script(options, script, port, arguments, probes=None):
    command = [options.python, os.path.join(options.tlsfuzzer, "scripts", f"{script}.py"),
               "-h", "127.0.0.1", "-p", str(port), "-n", "0", *arguments, *(probes or [])]
    environment = {**PLAIN_OPENSSL, "PYTHONPATH": options.tlsfuzzer}
    try:
        completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment,
                                   timeout=SCRIPT_TIMEOUT, cwd=options.tlsfuzzer)
        output = completed.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode(errors="replace") + f"\nTIMED OUT after {SCRIPT_TIMEOUT} s\n"
    ran, failed = parse_tlsfuzzer(output)
    if not ran:
        raise SuiteError(f"{script} ran no probe:\n{output[-2000:]}")
    return ran, failed, output


def read_counters(stats_dir, pid):
    """algorithm -> {counter: value} from the live counters a server publishes."""
    return read_stats(stats_dir, pid)[1]


def add_counters(total, more):
    for algorithm, values in more.items():
        into = total.setdefault(algorithm, {})
        for key, value in values.items():
            into[key] = into.get(key, 0) + value


class Results:
    """What each (server, configuration, script) run saw."""

    def __init__(self):
        self.lock = threading.Lock()
        self.runs = {}
        self.reasons = {}
        self.problems = []

    def record(self, server, config, script, ran, failed):
        with self.lock:
            self.runs[(server, config, script)] = (ran, failed)

    def problem(self, text):
        with self.lock:
            self.problems.append(text)
            log(f"PROBLEM: {text}")


def list_probes(options, script, arguments):
    """Every probe a script has, in its order: run against a port where
    nothing listens, each probe prints its name and fails at once."""
    ran, _, output = run_script(options, script, free_port(), arguments)
    names = []
    for line in output.splitlines():
        match = PROBE_LINE.match(line)
        if match and (match.group("quoted") or match.group("plain")) not in names:
            names.append(match.group("quoted") or match.group("plain"))
    return names


def probes_for(server_kind, script, names):
    if server_kind == "s_server" and script == "test-bleichenbacher-workaround":
        return [name for name in names if name == "sanity" or name.endswith(" - " + S_SERVER_BLEICHENBACHER_SUITE)]
    return names


def jobs_for(server_kind, listings):
    """(script, cert, arguments, probes) runs for this kind of server: the
    same for each of its configurations."""
    jobs = []
    for script, cert, arguments in SCRIPTS:
        if server_kind == "s_server" and script in S_SERVER_SKIPS:
            continue
        probes = probes_for(server_kind, script, listings[script])
        for first in range(0, len(probes), PROBES_PER_RUN):
            jobs.append((script, cert, arguments, probes[first:first + PROBES_PER_RUN]))
    return jobs


def run_jobs(options, results, server_name, config, jobs, on_job, streams):
    """Runs every job; a script's chunks add up to one result."""
    merged = {}
    lock = threading.Lock()

    def job(entry):
        script, _, _, _ = entry
        ran, failed, output = on_job(entry)
        save_output(options, server_name, config, script, output)
        with lock:
            into = merged.setdefault(script, (set(), set(), {}))
            into[0].update(ran)
            into[1].update(failed)
            parse_tlsfuzzer(output, into[2])

    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(job, jobs))
    for script, (ran, failed, reasons) in merged.items():
        results.record(server_name, config, script, ran, failed)
        results.reasons[(server_name, config, script)] = reasons


def run_on_haproxy(options, certs, threads, config, environment, results, listings, stats_dir):
    server_name = f"haproxy-nbthread{threads}"
    server = start_haproxy(options.work, certs, threads, environment, f"{threads}-{config}")
    try:
        def on_job(entry):
            script, cert, arguments, probes = entry
            outcome = run_script(options, script, server.ports[cert], arguments, probes)
            if not server.alive():
                results.problem(f"{server_name} {config}: HAProxy died during {script}")
            return outcome
        run_jobs(options, results, server_name, config, jobs_for("haproxy", listings), on_job, options.streams)
        time.sleep(0.5)   # the counters are published at most every 200 ms
        counters = read_counters(stats_dir, server.process.pid)
        if not server.alive():
            results.problem(f"{server_name} {config}: HAProxy is not running at the end "
                            f"(exit {server.process.returncode})")
        for line in server.fatal_lines():
            results.problem(f"{server_name} {config}: {line}")
        return counters
    finally:
        server.stop()


def run_on_s_server(options, certs, config, environment, results, listings, stats_dir):
    """s_server serves one connection at a time: each run gets one of its own."""
    totals = {}
    lock = threading.Lock()

    def on_job(entry):
        script, cert, arguments, probes = entry
        server = start_s_server(options.work, certs[cert], environment, f"{config}-{script}-{probes[0][:20]}")
        try:
            outcome = run_script(options, script, server.ports["only"], arguments, probes)
            time.sleep(0.5)
            with lock:
                add_counters(totals, read_counters(stats_dir, server.process.pid))
            if not server.alive():
                results.problem(f"s_server {config}: died during {script} (exit {server.process.returncode})")
            return outcome
        finally:
            server.stop()

    run_jobs(options, results, "s_server", config, jobs_for("s_server", listings), on_job, options.streams * 2)
    return totals


def save_output(options, server, config, script, output):
    folder = os.path.join(options.work, "output", server, config)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{script}.log"), "w") as out:
        out.write(output)


def check_counters(results, server, config, counters):
    offloaded = {algorithm: counters.get(algorithm, {}).get("offloaded", 0) for algorithm in EXPECTED_OFFLOADED}
    inline = {algorithm: counters.get(algorithm, {}).get("inline", 0) for algorithm in EXPECTED_OFFLOADED}
    unfinished = {algorithm: values.get("offloaded", 0) - values.get("completed", 0)
                  for algorithm, values in counters.items() if values.get("offloaded", 0) != values.get("completed", 0)}
    lanes = sum(values.get("lanes", 0) for values in counters.values())
    log(f"  counters {server} {config}: offloaded {offloaded}, inline {inline}, in lanes {lanes}")
    for algorithm, count in offloaded.items():
        if count == 0:
            results.problem(f"{server} {config}: no {algorithm} offloaded (counters: {counters.get(algorithm)})")
    for algorithm, count in inline.items():
        if count > INLINE_ALLOWED.get(algorithm, 0):
            results.problem(f"{server} {config}: {count} {algorithm} computed inline, outside the pool "
                            f"({offloaded[algorithm]} offloaded)")
    if unfinished:
        results.problem(f"{server} {config}: operations offloaded but never handed back: {unfinished}")


def compare(results, server, configs):
    """The same probes ran in each configuration, and none fails with
    swiftasync that passes with plain OpenSSL."""
    for script, _, _ in SCRIPTS:
        plain = results.runs.get((server, "plain", script))
        if plain is None:
            continue
        plain_ran, plain_failed = plain
        summary = [f"plain {len(plain_ran) - len(plain_failed)}/{len(plain_ran)}"]
        for config in configs[1:]:
            ran, failed = results.runs.get((server, config, script), (set(), set()))
            summary.append(f"{config} {len(ran) - len(failed)}/{len(ran)}")
            if ran != plain_ran:
                results.problem(f"{server} {config} {script}: ran {len(ran)} probes, plain OpenSSL "
                                f"{len(plain_ran)}; differing: {sorted(ran ^ plain_ran)[:5]}")
            newly_failing = sorted(failed - plain_failed)
            if newly_failing:
                results.problem(f"{server} {config} {script}: fails {len(newly_failing)} probes plain OpenSSL "
                                f"passes: {newly_failing[:5]}{' ...' if len(newly_failing) > 5 else ''}")
        log(f"  {server} {script}: passed " + ", ".join(summary))
        reasons = results.reasons.get((server, "plain", script), {})
        for probe in sorted(plain_failed):
            log(f"    plain OpenSSL fails '{probe}': {reasons.get(probe, '?')[:160]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tlsfuzzer", required=True, help="a folder with tlsfuzzer's scripts/ and tlsfuzzer/")
    parser.add_argument("--python", required=True, help="a Python with tlslite-ng and ecdsa")
    parser.add_argument("--module", required=True, help="swiftasync.so, absolute path")
    parser.add_argument("--repo", required=True, help="the repository (for openssl.cnf, openssl-provider.cnf)")
    parser.add_argument("--work", required=True, help="a scratch folder")
    parser.add_argument("--servers", default="haproxy1,haproxy2,s_server")
    parser.add_argument("--configs", default="plain,engine,provider")
    parser.add_argument("--slow-on", default="haproxy2", help="servers that also run the slow-worker variants")
    parser.add_argument("--streams", type=int, default=3, help="scripts at once against one server")
    parser.add_argument("--time-limit", type=int, default=900, help="seconds for the whole suite")
    options = parser.parse_args()
    for name in ("module", "tlsfuzzer", "python", "work", "repo"):
        setattr(options, name, os.path.abspath(getattr(options, name)))
    os.makedirs(options.work, exist_ok=True)
    stats_dir = os.path.join(options.work, "stats")
    os.makedirs(stats_dir, exist_ok=True)

    def out_of_time(*_):
        raise SuiteError(f"the suite ran past its {options.time_limit} s limit")
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(options.time_limit)
    started = time.time()
    certs = make_certificates(options.work)
    cnf = write_configurations(options.repo, options.module, options.work)
    results = Results()
    listings = {script: list_probes(options, script, arguments) for script, _, arguments in SCRIPTS}
    log("probes: " + ", ".join(f"{script} {len(names)}" for script, names in listings.items()))
    for server in options.servers.split(","):
        configs = configurations(cnf, stats_dir, slow=server in options.slow_on.split(","))
        wanted = [name for name in configs if name.split("-")[0] in options.configs.split(",")]
        server_name = "s_server" if server == "s_server" else f"haproxy-nbthread{server[-1]}"
        for config in wanted:
            log(f"{server_name} with {config} ({time.time() - started:.0f} s)")
            if server == "s_server":
                counters = run_on_s_server(options, certs, config, configs[config], results, listings, stats_dir)
            else:
                counters = run_on_haproxy(options, certs, int(server[-1]), config, configs[config], results,
                                          listings, stats_dir)
            if config != "plain":
                check_counters(results, server_name, config, counters)
        compare(results, server_name, wanted)
    signal.alarm(0)
    elapsed = time.time() - started
    scripts_run = len(results.runs)
    failed = len(results.problems)
    log(f"tlsfuzzer suite: {scripts_run} script runs in {elapsed:.0f} s, {failed} problems")
    for problem in results.problems:
        log(f"  {problem}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SuiteError as error:
        log(f"tlsfuzzer suite: {error}")
        sys.exit(1)

"""What the Python test drivers (tlsfuzzer-suite.py, teardown-under-fire.py)
share: loopback ports, certificates, the repository's cnf files made to load
a given .so, and the live counters a server publishes. Standard library only."""
import os
import re
import socket
import subprocess

PLAIN_OPENSSL = {**os.environ, "OPENSSL_CONF": "/dev/null"}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def self_signed(work, name, newkey):
    """A self-signed certificate for localhost: {key, cert, pem (both)} paths."""
    key, cert, both = (os.path.join(work, f"{name}.{kind}") for kind in ("key", "crt", "pem"))
    subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", cert, "-days", "30",
                    "-subj", "/CN=localhost"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=PLAIN_OPENSSL)
    with open(both, "w") as out:
        out.write(open(cert).read() + open(key).read())
    return {"key": key, "cert": cert, "pem": both}


def repository_cnf(repo, source, module, work):
    """The repository's `source` (openssl.cnf, openssl-provider.cnf) in
    `work`, its module path (the engine's dynamic_path, the provider's
    module) made `module`; returns its path."""
    path = os.path.join(work, source)
    text = open(os.path.join(repo, source)).read()
    text = re.sub(r"^(dynamic_path|module) = .*swiftasync\.so$", lambda m: f"{m.group(1)} = {module}",
                  text, flags=re.MULTILINE)
    with open(path, "w") as out:
        out.write(text)
    return path


def read_stats(stats_dir, pid):
    """(header, algorithms) from <stats_dir>/<pid>.stats: the header's numeric
    key=value pairs, and algorithm -> {counter: value}. Empty if absent."""
    try:
        lines = open(os.path.join(stats_dir, f"{pid}.stats")).read().splitlines()
    except OSError:
        return {}, {}
    header, algorithms = {}, {}
    for number, line in enumerate(lines):
        fields = line.split()
        pairs = dict(field.split("=", 1) for field in fields[1:] if "=" in field)
        numeric = {key: int(value) for key, value in pairs.items() if value.isdigit()}
        if number == 0:
            header = numeric
        elif pairs:
            algorithms[fields[0]] = numeric
    return header, algorithms

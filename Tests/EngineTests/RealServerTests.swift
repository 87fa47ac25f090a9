import EngineHarness
import Foundation
import XCTest

/// HAProxy (async mode, master-worker) and nginx (sync mode, forked workers)
/// from Debian, with the engine, driven by h2load making full handshakes.
/// The servers give no ctrl access: their counters are read from outside.
class RealServerTests: XCTestCase {
    let enginePath = LoadedEngine.defaultPath()
    /// The repository's cnf the servers load through OPENSSL_CONF (ProviderRealServerTests: the provider's).
    var repositoryConf: String { "openssl.cnf" }
    var directory = ""
    /// What a server started with swiftasync gets in its environment.
    var serverEnvironment: [String: String] { ["OPENSSL_CONF": "\(directory)/openssl.cnf"] }
    var servers: [Process] = []
    /// Where the last server started writes its output: shown when its clients fail.
    var serverLog = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "swiftasync-real-\(getpid())-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let status = try run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                              "-keyout", "\(directory)/server.key", "-out", "\(directory)/server.crt"]).status
        XCTAssertEqual(status, 0)
        let pem = try String(contentsOfFile: "\(directory)/server.crt", encoding: .utf8)
            + String(contentsOfFile: "\(directory)/server.key", encoding: .utf8)
        try pem.write(toFile: "\(directory)/server.pem", atomically: true, encoding: .utf8)
        try Commands.writeRepositoryConf(repositoryConf, to: "\(directory)/openssl.cnf", modulePath: enginePath)
    }

    override func tearDown() {
        for server in servers where server.isRunning {
            kill(server.processIdentifier, SIGTERM)
            server.waitUntilExit()
        }
        servers.removeAll()
        try? FileManager.default.removeItem(atPath: directory)
    }

    var repositoryRoot: String { Commands.repositoryRoot }

    @discardableResult
    func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let result = try Commands.run(arguments)
        return (result.status, result.output)
    }

    func start(_ arguments: [String], environment: [String: String] = [:], port: Int) throws -> Process {
        let log = "\(directory)/\(arguments[0])-\(port).log"
        serverLog = log
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let server = try Commands.launch(arguments, environment: environment,
                                         output: try FileHandle(forWritingTo: URL(fileURLWithPath: log)))
        servers.append(server)
        XCTAssertTrue(listens(server, on: port), "\(arguments[0]) is not listening on \(port):\n"
                      + ((try? String(contentsOfFile: log, encoding: .utf8)) ?? ""))
        return server
    }

    /// h2load with `count` connections of one request each: every one a full handshake.
    func fullHandshakes(port: Int, count: Int) throws -> Int {
        let (_, output) = try run(["h2load", "-n", String(count), "-c", String(count), "https://127.0.0.1:\(port)/"])
        let line = output.split(separator: "\n").first { $0.hasPrefix("requests:") } ?? ""
        let log = (try? String(contentsOfFile: serverLog, encoding: .utf8)) ?? ""
        // The first line of a failure is what CI's excerpt keeps: h2load's complaints and the server's last words on it.
        let complaints = output.split(separator: "\n").filter { !$0.hasPrefix("requests:")
            && ($0.localizedCaseInsensitiveContains("error") || $0.localizedCaseInsensitiveContains("fail")) }.prefix(6)
        // The message is built only on failure (an autoclosure): reading the counters costs nothing otherwise.
        XCTAssertTrue(line.contains("\(count) succeeded, 0 failed, 0 errored, 0 timeout"),
                      "h2load: \(line) | \(complaints.joined(separator: " | ")) | counters: \(troubles(of: servers.last)) | server: "
                      + "\(log.split(separator: "\n").suffix(4).joined(separator: " | "))\n\(output)\nserver output:\n\(log)")
        return line.contains("\(count) succeeded") ? count : 0
    }

    /// The counters of the server's processes that say what went wrong (the nonzero
    /// failures, deadlines, replacements, retries, operations still out), one line.
    func troubles(of master: Process?) -> String {
        guard let master else { return "no server" }
        let watched = ["failed", "retried", "deadlines_missed", "workers_replaced", "in_flight", "wait_fds_refused", "jobs_abandoned"]
        let found = family(of: master).flatMap { process in
            let lines = [("swiftasync", process.stats.header)]
                + process.stats.algorithms.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            return lines.compactMap { name, counters -> String? in
                let telling = watched.compactMap { key in counters[key].flatMap { $0 != 0 ? "\(key)=\($0)" : nil } }
                return telling.isEmpty ? nil : "\(process.pid) \(name) " + telling.joined(separator: " ")
            }
        }
        return found.isEmpty ? "none telling" : found.joined(separator: "; ")
    }

    /// The server's master and the workers it forked, as they publish counters.
    func family(of master: Process) -> [LiveStats.Process] {
        LiveStats.read().filter { $0.pid == master.processIdentifier || parentPid(of: $0.pid) == master.processIdentifier }
    }

    /// What each full handshake (TLS 1.3, RSA certificate, X25519) asks of the engine.
    var handshakeAlgorithms: [String] { ["rsa_private_encrypt", "x25519_keygen", "x25519_derive"] }

    /// Counters summed over the server's processes, with the callers' own computations of a
    /// saturated pool (`caller_ran`) under "caller_ran", once every handshake's operations are
    /// counted on `route` (or after 5 s).
    func counters(of master: Process, route: String, reaching expected: Int) -> [String: [String: Int]] {
        var totals: [String: [String: Int]] = [:]
        for _ in 0..<50 {
            let processes = family(of: master)
            totals = LiveStats.totals(processes)
            totals["caller_ran"] = ["count": processes.reduce(0) { $0 + ($1.stats.header["caller_ran"] ?? 0) }]
            if handled(totals, route) >= expected * handshakeAlgorithms.count { break }
            usleep(100_000)
        }
        return totals
    }

    /// The handshakes' operations counted on `route`. An async server's take in what the
    /// callers of a saturated pool computed themselves (by default they do once every worker
    /// is busy with four more operations waiting for each): inline, and in `caller_ran`.
    func handled(_ totals: [String: [String: Int]], _ route: String) -> Int {
        handshakeAlgorithms.reduce(0) { $0 + (totals[$1]?[route] ?? 0) }
            + (route == "offloaded" ? totals["caller_ran"]?["count"] ?? 0 : 0)
    }

    func assertEveryHandshakeCounted(_ totals: [String: [String: Int]], route: String, handshakes: Int,
                                     file: StaticString = #filePath, line: UInt = #line) {
        // Only the handshake's algorithms: the whole table is too long for CI's excerpt of a failure.
        let shown = handshakeAlgorithms.map { "\($0): \(totals[$0]?.filter { $0.value != 0 } ?? [:])" }.joined(separator: "; ")
            + "; caller_ran \(totals["caller_ran"]?["count"] ?? 0)"
        let counted = handshakeAlgorithms.map { totals[$0]?[route] ?? 0 }
        if route == "offloaded" {
            XCTAssertTrue(EngineStats.countedOnceInJobs(offloaded: counted, callerRan: totals["caller_ran"]?["count"] ?? 0,
                                                        expected: handshakes), "\(route): \(shown)", file: file, line: line)
        } else {
            XCTAssertEqual(counted, Array(repeating: handshakes, count: counted.count), "\(route): \(shown)", file: file, line: line)
        }
        for algorithm in handshakeAlgorithms {
            XCTAssertEqual(totals[algorithm]?["failed"] ?? 0, 0, "\(algorithm) failed", file: file, line: line)
        }
    }

    func testHAProxyAsyncModeOneAndTwoThreads() throws {
        for threads in [1, 2] {
            let port = try freeLoopbackPort()
            let config = """
                global
                    nbthread \(threads)
                    ssl-mode-async
                    tune.ssl.cachesize 0
                    pidfile \(directory)/haproxy-\(threads).pid
                defaults
                    mode http
                    timeout connect 5s
                    timeout client 30s
                    timeout server 30s
                frontend tls
                    bind 127.0.0.1:\(port) ssl crt \(directory)/server.pem alpn h2,http/1.1 no-tls-tickets
                    http-request return status 200 content-type text/plain string ok
                """
            let path = "\(directory)/haproxy-\(threads).cfg"
            try (config + "\n").write(toFile: path, atomically: true, encoding: .utf8)
            let server = try start(["haproxy", "-W", "-db", "-f", path], environment: serverEnvironment, port: port)
            let handshakes = try fullHandshakes(port: port, count: 200)
            guard handshakes == 200 else { break }   // h2load's failure says why; the counts would only repeat it
            let totals = counters(of: server, route: "offloaded", reaching: handshakes)
            assertEveryHandshakeCounted(totals, route: "offloaded", handshakes: handshakes)
            kill(server.processIdentifier, SIGTERM)
            server.waitUntilExit()
            for _ in 0..<50 where canConnect(port) { usleep(50_000) }
        }
    }

    /// HAProxy at its fd limit. HAProxy budgets two fds per connection (the client's and the
    /// server's) and, loading us through OPENSSL_CONF, knows nothing of the eventfd each paused
    /// handshake's wait ctx holds (it reserves fds only per ENGINE it loaded itself). With the
    /// process limit at exactly HAProxy's own need for `maxconn 20`, 100 clients over
    /// keep-alive connections to a backend exhaust it: an operation whose eventfd cannot be
    /// made is computed on HAProxy's thread, as without swiftasync, and counted; no handshake
    /// fails, nothing crashes or is left behind, and HAProxy serves again once the load drops.
    /// (What does fail is HAProxy's own: "Cannot get a server socket", 503s for requests.)
    func testHAProxyAtItsFDLimit() throws {
        let port = try freeLoopbackPort(), backendPort = try freeLoopbackPort()
        let common = """
            defaults
                mode http
                timeout connect 5s
                timeout client 5s
                timeout server 5s
            """
        let backendConfig = "\(directory)/backend.cfg", config = "\(directory)/haproxy-fd-limit.cfg"
        try ("global\n    nbthread 1\n" + common + """

            frontend plain
                bind 127.0.0.1:\(backendPort)
                http-request return status 200 content-type text/plain string ok

            """).write(toFile: backendConfig, atomically: true, encoding: .utf8)
        let limit = 54   // what HAProxy 2.6 needs for maxconn 20 (it refuses to start with less)
        try ("""
            global
                nbthread 1
                ssl-mode-async
                tune.ssl.cachesize 0
                maxconn 20
                fd-hard-limit \(limit)

            """ + common + """

            frontend tls
                bind 127.0.0.1:\(port) ssl crt \(directory)/server.pem alpn http/1.1 no-tls-tickets
                default_backend plain
            backend plain
                server backend 127.0.0.1:\(backendPort)

            """).write(toFile: config, atomically: true, encoding: .utf8)
        _ = try start(["haproxy", "-db", "-f", backendConfig], port: backendPort)
        // The engine's workers are slowed so that handshakes stay paused while requests flow.
        let server = try start(["prlimit", "--nofile=\(limit):\(limit)", "haproxy", "-db", "-f", config],
                               environment: serverEnvironment.merging(["SWIFTASYNC_WORKER_DELAY_USEC": "5000"]) { $1 },
                               port: port)
        let pid = server.processIdentifier   // prlimit execs HAProxy
        let fds = { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1 }
        /// Ours are eventfds: HAProxy's own fds are sockets, pipes and its poller.
        let eventfds = {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).filter {
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) == "anon_inode:[eventfd]"
            }.count
        }
        func settledFDs() -> Int { settledCount(within: 10, fds) }
        XCTAssertEqual(try fullHandshakes(port: port, count: 5), 5, "warm: the pool and the backend connection made")
        let before = settledFDs(), eventfdsBefore = eventfds()
        var refused = 0, load = ""
        for _ in 0..<3 where refused == 0 {
            load = try run(["h2load", "--h1", "-n", "4000", "-c", "100", "https://127.0.0.1:\(port)/"]).output
            XCTAssertTrue(load.contains(" 0 errored, 0 timeout"), "no handshake failed:\n\(load)")
            refused = LiveStats.read(pid: pid).first?.stats.header["wait_fds_refused"] ?? 0
        }
        XCTAssertGreaterThan(refused, 0, "the fds ran out when an eventfd was made:\n\(load)")
        XCTAssertTrue(server.isRunning, "HAProxy survived")
        // At rest every record is handed back, but for the one each job HAProxy abandons
        // holds (a connection it frees while its job is paused: see make test-teardown);
        // a connection still parked is cut by the client timeout (5 s).
        var stats = LiveStats.read(pid: pid).first?.stats
        func atRest() -> Bool { (stats?.header["records_alive"] ?? -1) == (stats?.header["jobs_abandoned"] ?? -2) }
        for _ in 0..<150 where !atRest() {
            usleep(100_000)
            stats = LiveStats.read(pid: pid).first?.stats
        }
        XCTAssertTrue(atRest(), "records alive == jobs abandoned: \(String(describing: stats))")
        for algorithm in handshakeAlgorithms {
            let counters = stats?.algorithms[algorithm] ?? [:]
            XCTAssertGreaterThan(counters["inline"] ?? 0, 0, "\(algorithm): some computed on HAProxy's thread")
            XCTAssertGreaterThan(counters["offloaded"] ?? 0, 0, "\(algorithm): the rest on the pool")
            XCTAssertEqual(counters["failed"] ?? 0, 0, "\(algorithm): none failed")
        }
        // Fewer at once than maxconn: each holds a client socket, a server socket and our eventfd.
        let again = try run(["h2load", "--h1", "-n", "20", "-c", "5", "https://127.0.0.1:\(port)/"]).output
        XCTAssertTrue(again.contains("20 succeeded, 0 failed, 0 errored"), "HAProxy serves again once the load drops:\n\(again)")
        // Its idle connections to the backend come and go (HAProxy reuses them), maxconn at most.
        let after = settledFDs()
        XCTAssertTrue(((before - 20)...(before + 20)).contains(after), "fds \(before) before, \(after) after")
        XCTAssertEqual(eventfds(), eventfdsBefore, "no eventfd of ours left behind")
    }

    /// nginx's workers, forked after it loaded the key (0: master_process off, one process).
    var nginxForkedWorkers: Int { 2 }

    func nginxConfig(port: Int, engineDirective: String) -> String {
        """
        \(engineDirective)
        \(nginxForkedWorkers > 0 ? "worker_processes \(nginxForkedWorkers);" : "master_process off;")
        daemon off;
        pid \(directory)/nginx.pid;
        error_log \(directory)/error.log;
        events { worker_connections 1024; }
        http {
            access_log off;
            client_body_temp_path \(directory)/body;
            proxy_temp_path \(directory)/proxy;
            fastcgi_temp_path \(directory)/fastcgi;
            uwsgi_temp_path \(directory)/uwsgi;
            scgi_temp_path \(directory)/scgi;
            server {
                listen 127.0.0.1:\(port) ssl http2;
                ssl_certificate \(directory)/server.crt;
                ssl_certificate_key \(directory)/server.key;
                ssl_session_cache off;
                ssl_session_tickets off;
                location / { return 200 "ok"; }
            }
        }
        """
    }

    func runNginx(engineDirective: String, environment: [String: String]) throws {
        let port = try freeLoopbackPort()
        let path = "\(directory)/nginx.conf"
        try nginxConfig(port: port, engineDirective: engineDirective).write(toFile: path, atomically: true, encoding: .utf8)
        let server = try start(["nginx", "-c", path, "-p", directory], environment: environment, port: port)
        let handshakes = try fullHandshakes(port: port, count: 100)
        let totals = counters(of: server, route: "inline", reaching: handshakes)
        // nginx does not use async mode: the forked workers compute inline, through the engine.
        assertEveryHandshakeCounted(totals, route: "inline", handshakes: handshakes)
        let workers = family(of: server).filter { $0.pid != server.processIdentifier }
        XCTAssertEqual(workers.count, nginxForkedWorkers, "each forked worker publishes counters")
        XCTAssertTrue(workers.allSatisfy { $0.command == "nginx" })
        kill(server.processIdentifier, SIGQUIT)
        server.waitUntilExit()
    }

    func testNginxWithSSLEngineDirective() throws {
        try runNginx(engineDirective: "ssl_engine \(enginePath);", environment: [:])
    }

    func testNginxWithOpenSSLConf() throws {
        try runNginx(engineDirective: "", environment: serverEnvironment)
    }
}

/// HAProxy (async mode) and nginx again, with swiftasync as their provider
/// through openssl-provider.cnf: every handshake's signature, key share and
/// secret counted by the provider's counters (nginx: inline, it has no async mode).
final class ProviderRealServerTests: RealServerTests {
    override var repositoryConf: String { "openssl-provider.cnf" }

    // Named here so that test discovery on Linux runs them in this class too.
    override func testHAProxyAsyncModeOneAndTwoThreads() throws { try super.testHAProxyAsyncModeOneAndTwoThreads() }
    override func testHAProxyAtItsFDLimit() throws { try super.testHAProxyAtItsFDLimit() }
    override func testNginxWithOpenSSLConf() throws { try super.testNginxWithOpenSSLConf() }
    override func testNginxWithSSLEngineDirective() throws {
        throw XCTSkip("ssl_engine names the engine, not the provider")
    }
}

/// A count (a process's fds) once it has stood still for a second, waiting `seconds` at most.
func settledCount(within seconds: Double, _ count: () -> Int) -> Int {
    var value = count(), since = Date(), began = Date()
    while Date().timeIntervalSince(since) < 1 && Date().timeIntervalSince(began) < seconds {
        usleep(50_000)
        let now = count()
        if now != value { value = now; since = Date() }
    }
    return value
}

/// The parent of a process, from /proc.
func parentPid(of pid: Int32) -> Int32? {
    guard let fields = LiveStats.statFields(pid), fields.count > 1 else { return nil }
    return Int32(fields[1])
}

/// engine-loader serve: the one-thread epoll server with SSL_MODE_ASYNC and
/// SSL_CTX_set_async_callback, under h2load.
final class ServeTests: XCTestCase {
    func serve(tls: String, key: String, extra: [String] = [], handshakes: Int = 60) throws -> (h2load: String, server: String) {
        let port = try freeLoopbackPort()
        let output = Pipe()
        let server = try Commands.launch([Commands.engineLoader, "serve", "--engine", LoadedEngine.defaultPath(), "--port", String(port),
                                          "--tls", tls, "--key", key, "--handshakes", String(handshakes)] + extra, output: output)
        XCTAssertTrue(listens(server, on: port), "engine-loader serve is not listening on \(port)")
        let h2load = try Commands.run(["h2load", "--h1", "-n", String(handshakes), "-c", String(handshakes), "https://127.0.0.1:\(port)/"]).output
        return (h2load, Commands.finish(server, output))
    }

    func testServesFullHandshakesThroughTheAsyncCallback() throws {
        for (tls, key, signature, exchange) in [("1.3", "rsa2048", "rsa_private_encrypt", "x25519"),
                                                ("1.2", "p256", "ecdsa_sign", "x25519")] {
            let (h2load, server) = try serve(tls: tls, key: key)
            XCTAssertTrue(h2load.contains("60 succeeded, 0 failed, 0 errored"), "TLS \(tls):\n\(h2load)")
            XCTAssertTrue(server.contains("handshakes=60 "), server)
            let stats = EngineStats(parsing: server.split(separator: "\n").filter { !$0.hasPrefix("serving") && !$0.hasPrefix("handshakes=") }.joined(separator: "\n"))
            // 60 at once: a saturated pool's callers compute some themselves (caller_ran).
            let algorithms = [signature, "\(exchange)_keygen", "\(exchange)_derive"]
            XCTAssertTrue(EngineStats.countedOnceInJobs(offloaded: algorithms.map { stats.count($0, "offloaded") },
                                                        callerRan: stats.header["caller_ran"] ?? 0, expected: 60),
                          "TLS \(tls): each once:\n\(server)")
            for algorithm in algorithms { XCTAssertEqual(stats.count(algorithm, "failed"), 0) }
        }
    }

    /// 10,000 clients send a ClientHello and hang up while the server's
    /// signature and key share are on the pool: its open fds return to where they were.
    func testClientsHangingUpMidHandshakeLeaveNoFds() throws {
        let port = try freeLoopbackPort()
        let server = try Commands.launch([Commands.engineLoader, "serve", "--engine", LoadedEngine.defaultPath(), "--port", String(port)])
        defer { server.terminate(); server.waitUntilExit() }
        XCTAssertTrue(listens(server, on: port), "engine-loader serve is not listening on \(port)")
        let fds = { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.processIdentifier)/fd").count) ?? -1 }
        let hello = try TLSHandshakes.clientHello()
        func hangUpMidHandshake() {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = UInt16(port).bigEndian
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            _ = hello.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(fd)
        }
        hangUpMidHandshake()
        // The first connection makes what the server keeps (its pool's fds);
        // a slow server (ASan) is still holding that connection 300 ms later.
        let before = settledCount(within: 20, fds)
        XCTAssertGreaterThan(before, 0)
        for _ in 0..<10_000 { hangUpMidHandshake() }
        // A slow server (a sanitizer, a loaded machine) is still working through
        // them: wait while the count moves; a leak is where it stands still.
        // Under TSan a server with thousands of connections can stall for
        // seconds (seen once in CI: 10 s at 15,617 fds, passing alone in 22 s).
        let stillFor: Double = EngineTestCase.sanitizer == nil ? 10 : 40
        var after = fds(), lastMove = Date()
        while after != before && Date().timeIntervalSince(lastMove) < stillFor {
            usleep(50_000)
            let now = fds()
            if now != after { lastMove = Date() }
            after = now
        }
        XCTAssertEqual(after, before, "the server's open fds after 10,000 clients hung up mid-handshake; its counters: "
                       + String(describing: LiveStats.read(pid: server.processIdentifier).first?.stats))
        XCTAssertTrue(server.isRunning, "the server survived")
        let stats = LiveStats.read(pid: server.processIdentifier).first?.stats
        XCTAssertGreaterThan(stats?.count("x25519_keygen", "offloaded") ?? 0, 1000, "the hang-ups came while the engine worked: \(String(describing: stats))")
    }

    /// One worker and a one-slot queue: the callback reports EAGAIN and the
    /// loop retries (SSL_get_async_status's retry case); nothing fails.
    func testRetriesWhenTheEngineIsBusy() throws {
        let (h2load, server) = try serve(tls: "1.3", key: "rsa4096", extra: ["--set", "THREADS=1", "--set", "QUEUE_DEPTH=1"], handshakes: 40)
        XCTAssertTrue(h2load.contains("40 succeeded, 0 failed, 0 errored"), h2load)
        let stats = EngineStats(parsing: server.split(separator: "\n").filter { !$0.hasPrefix("serving") && !$0.hasPrefix("handshakes=") }.joined(separator: "\n"))
        XCTAssertGreaterThan(stats.count("rsa_private_encrypt", "retried"), 0, server)
        XCTAssertEqual(stats.count("rsa_private_encrypt", "offloaded"), 40, server)
    }
}

import EngineHarness
import Foundation
import XCTest

/// The .so as applications meet it: the openssl command line, openssl.cnf,
/// environment variables, the engines directory, and engine-loader.
final class ApplicationTests: XCTestCase {
    let enginePath = LoadedEngine.defaultPath()
    var repositoryRoot: String { Commands.repositoryRoot }

    func run(_ arguments: [String], environment: [String: String] = [:], directory: String? = nil) throws -> Commands.Result {
        try Commands.run(arguments, environment: environment, directory: directory)
    }

    func temporaryPath(_ name: String) -> String {
        let path = NSTemporaryDirectory() + "swiftasync-\(getpid())-\(name)"
        try? FileManager.default.removeItem(atPath: path)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: path) }
        return path
    }

    func statsWritten(to path: String) throws -> EngineStats {
        EngineStats(parsing: try String(contentsOfFile: path, encoding: .utf8))
    }

    func testSharedObjectNeedsNoSwiftRuntimeAndExportsOnlyTheEngineAndProviderABI() throws {
        let ldd = try run(["ldd", enginePath])
        XCTAssertEqual(ldd.status, 0)
        XCTAssertTrue(ldd.output.contains("libcrypto.so.3"), ldd.output)
        XCTAssertFalse(ldd.output.contains("libswift"), "the Swift runtime must be linked in statically:\n\(ldd.output)")
        XCTAssertFalse(ldd.output.contains("libFoundation"), ldd.output)
        let exported = try run(["nm", "-D", "--defined-only", enginePath]).output
            .split(separator: "\n").compactMap { $0.split(separator: " ").last.map(String.init) }
        XCTAssertEqual(Set(exported), ["bind_engine", "v_check", "OSSL_provider_init"], "the engine's and the provider's entry points")
        let dynamic = try run(["readelf", "-d", enginePath]).output
        XCTAssertTrue(dynamic.contains("NODELETE"), "linked -z nodelete")
        XCTAssertFalse(dynamic.contains("RUNPATH") || dynamic.contains("RPATH"), "it needs no search path of its own")
    }

    func testOpenSSLSpeedWithAsyncJobsOffloadsTheSigns() throws {
        let stats = temporaryPath("speed.txt")
        let speed = try run(["openssl", "speed", "-engine", enginePath, "-async_jobs", "8", "-seconds", "1", "rsa2048"],
                            environment: ["SWIFTASYNC_STATS_FILE": stats])
        XCTAssertEqual(speed.status, 0, speed.output)
        XCTAssertTrue(speed.output.contains("rsa 2048 bits"), speed.output)
        let counters = try statsWritten(to: stats)
        XCTAssertGreaterThan(counters.count("rsa_private_encrypt", "offloaded"), 500, counters.text)
        XCTAssertEqual(counters.count("rsa_private_encrypt", "failed"), 0)
    }

    /// The repository's openssl-provider.cnf (its module path made absolute):
    /// openssl speed through the provider, each algorithm offloaded.
    func testOpenSSLSpeedThroughTheProviderConf() throws {
        let stats = temporaryPath("speed-provider.txt")
        let configuration = try Commands.writeRepositoryConf("openssl-provider.cnf", to: temporaryPath("openssl-provider.cnf"),
                                                             modulePath: enginePath)
        let speed = try run(["openssl", "speed", "-async_jobs", "16", "-seconds", "1", "rsa2048", "ecdhp256", "ecdhx25519", "ecdsap256"],
                            environment: ["SWIFTASYNC_STATS_FILE": stats, "OPENSSL_CONF": configuration])
        XCTAssertEqual(speed.status, 0, speed.output)
        let counters = try statsWritten(to: stats)
        for algorithm in ["rsa_private_encrypt", "ecdh_derive", "x25519_derive", "ecdsa_sign"] {
            XCTAssertGreaterThan(counters.count(algorithm, "offloaded"), 200, "\(algorithm):\n\(counters.text)")
            XCTAssertEqual(counters.count(algorithm, "failed"), 0, algorithm)
        }
    }

    func testOpenSSLSpeedRunsEllipticCurvesThroughTheEngine() throws {
        let stats = temporaryPath("speed-ec.txt")
        let speed = try run(["openssl", "speed", "-engine", enginePath, "-async_jobs", "64", "-seconds", "1",
                             "ecdhp256", "ecdhp384", "ecdhx25519", "ecdhx448", "ecdsap256", "ecdsap384"],
                            environment: ["SWIFTASYNC_STATS_FILE": stats])
        XCTAssertEqual(speed.status, 0, speed.output)
        for line in ["ecdh (nistp256)", "ecdh (nistp384)", "ecdh (X25519)", "ecdh (X448)", "ecdsa (nistp256)", "ecdsa (nistp384)"] {
            XCTAssertTrue(speed.output.contains(line), "speed printed no \(line)")
        }
        let counters = try statsWritten(to: stats)
        for algorithm in ["ecdh_derive", "x25519_derive", "x448_derive", "ecdsa_sign"] {
            XCTAssertGreaterThan(counters.count(algorithm, "offloaded"), 500, "\(algorithm):\n\(counters.text)")
            XCTAssertEqual(counters.count(algorithm, "failed"), 0, algorithm)
        }
    }

    func testRepositoryOpenSSLConfLoadsTheEngine() throws {
        let stats = temporaryPath("conf.txt")
        let speed = try run(["openssl", "speed", "-async_jobs", "8", "-seconds", "1", "rsa2048"],
                            environment: ["OPENSSL_CONF": "openssl.cnf", "SWIFTASYNC_STATS_FILE": stats],
                            directory: repositoryRoot)
        XCTAssertEqual(speed.status, 0, speed.output)
        XCTAssertGreaterThan(try statsWritten(to: stats).count("rsa_private_encrypt", "offloaded"), 500)
    }

    func testCtrlsFromOpenSSLConfAndEnvironment() throws {
        let conf = temporaryPath("openssl.cnf")
        let text = try String(contentsOfFile: repositoryRoot + "/openssl.cnf", encoding: .utf8)
            .replacingOccurrences(of: "./build/swiftasync.so", with: enginePath)
            .replacingOccurrences(of: "THREADS = 0", with: "THREADS = 3")
            .replacingOccurrences(of: "QUEUE_DEPTH = 1024", with: "QUEUE_DEPTH = 77")
        try text.write(toFile: conf, atomically: true, encoding: .utf8)
        let fromConf = try run(["openssl", "engine", "-t", "-post", "STATS", "swiftasync"],
                               environment: ["OPENSSL_CONF": conf])
        XCTAssertTrue(fromConf.output.contains("threads=3 "), fromConf.output)
        XCTAssertTrue(fromConf.output.contains("queue_depth=77 "), fromConf.output)

        let fromEnvironment = try run(["openssl", "engine", "-t", "-post", "STATS", enginePath],
                                      environment: ["SWIFTASYNC_THREADS": "5", "SWIFTASYNC_QUEUE_DEPTH": "55",
                                                    "SWIFTASYNC_SYNC_OFFLOAD": "1"])
        XCTAssertTrue(fromEnvironment.output.contains("threads=5 "), fromEnvironment.output)
        XCTAssertTrue(fromEnvironment.output.contains("queue_depth=55 "), fromEnvironment.output)
        XCTAssertTrue(fromEnvironment.output.contains("sync_offload=1"), fromEnvironment.output)
    }

    /// What `make install` provides: loading by id from the engines directory.
    func testLoadsByIdFromTheEnginesDirectory() throws {
        let directory = URL(fileURLWithPath: enginePath).deletingLastPathComponent().path
        let byId = try run(["openssl", "engine", "-t", "-c", "swiftasync"], environment: ["OPENSSL_ENGINES": directory])
        XCTAssertEqual(byId.status, 0, byId.output)
        XCTAssertTrue(byId.output.contains("[RSA, X25519, X448]"), byId.output)
        XCTAssertTrue(byId.output.contains("[ available ]"), byId.output)
    }

    var loader: String { Commands.engineLoader }

    /// Fork with signatures in flight: parent, child and grandchild each finish
    /// theirs and sign afresh; none hangs (each waits at most 30 s).
    func testForkWithOperationsInFlight() throws {
        for round in 1...3 {
            let check = try run([loader, "check", "--engine", enginePath, "--only", "fork"])
            XCTAssertEqual(check.status, 0, "round \(round):\n\(check.output)")
            XCTAssertEqual(check.output.components(separatedBy: "ok   fork:").count - 1, 4, check.output)
        }
    }

    /// `engine-loader check --provider`: 13 steps, three routes each, all agreeing and counted where they ran.
    func testEngineLoaderChecksTheProvider() throws {
        let check = try run([loader, "check", "--provider", "--engine", enginePath, "--count", "4"])
        XCTAssertEqual(check.status, 0, check.output)
        XCTAssertEqual(check.output.components(separatedBy: "ok   provider:").count - 1, 39, check.output)
        XCTAssertTrue(check.output.contains("all checks passed"), check.output)
    }

    func testEngineLoaderInfoAndCheck() throws {
        let info = try run([loader, "info", "--engine", enginePath])
        XCTAssertEqual(info.status, 0, info.output)
        for expected in ["swiftasync", "RSA", "EC (keygen, ECDH, ECDSA)", "X25519", "X448", "THREADS", "QUEUE_DEPTH", "SYNC_OFFLOAD", "STATS", "OpenSSL 3"] {
            XCTAssertTrue(info.output.contains(expected), "info lacks \(expected):\n\(info.output)")
        }
        for name in ["NOTIFY_DELAY_USEC ", "WORKER_DELAY_USEC ", "MULTIBUFFER_MIN_FILL "] {
            XCTAssertTrue(info.output.contains(name), "ctrl names printed whole: \(name)\n\(info.output)")
        }
        XCTAssertTrue(info.output.contains("8-lane path: "), info.output)
        let provider = try run([loader, "info", "--provider", "--engine", enginePath, "--set", "THREADS=3"])
        XCTAssertEqual(provider.status, 0, provider.output)
        XCTAssertTrue(provider.output.contains("provider:    swiftasync"), provider.output)
        XCTAssertTrue(provider.output.contains("pool:        3 worker threads"), "settings reach the provider:\n\(provider.output)")
        let check = try run([loader, "check", "--engine", enginePath, "--bits", "2048", "--count", "2"])
        XCTAssertEqual(check.status, 0, check.output)
        XCTAssertTrue(check.output.contains("all checks passed"), check.output)
        XCTAssertFalse(check.output.contains("FAIL"), check.output)
    }
}

import EngineHarness
import Foundation
import XCTest

/// The engine under `openssl s_server -async`, driven by `openssl s_time -new`
/// (full handshakes). The server's counters are read from outside, as
/// `engine-loader stats` reads them: the server offers no ctrl access.
class ServerTests: XCTestCase {
    let enginePath = LoadedEngine.defaultPath()
    var directory = ""

    /// How the server gets swiftasync: here `-engine`; ProviderServerTests uses OPENSSL_CONF.
    func frontEnd() throws -> (arguments: [String], environment: [String: String]) {
        (["-engine", enginePath], [:])
    }

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "swiftasync-servers-\(getpid())"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for (name, algorithm) in [("rsa", ["-newkey", "rsa:2048"]), ("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])]
        where !FileManager.default.fileExists(atPath: "\(directory)/\(name).crt") {
            let made = try Commands.run(["openssl", "req", "-x509"] + algorithm + ["-nodes", "-days", "2", "-subj", "/CN=localhost",
                                        "-keyout", "\(directory)/\(name).key", "-out", "\(directory)/\(name).crt"])
            XCTAssertEqual(made.status, 0, "certificate \(name): \(made.output)")
        }
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// What s_server's -key names for a certificate's key.
    func keyArgument(_ certificate: String) -> String { "\(directory)/\(certificate).key" }

    /// Counted as offloaded at least once per handshake, beyond the signature and the key exchange.
    var alsoOffloaded: [String] { [] }

    /// The server's name in `engine-loader stats`.
    var serverName: String { "openssl" }

    /// The counter a certificate's signatures are counted under.
    func signatureCounter(_ signature: String) -> String { signature }

    /// s_server -async with the engine, listening on 127.0.0.1; stopped by the caller.
    /// `extra`: s_server's options (the tests name only `-groups`).
    func startServer(certificate: String, extra: [String]) throws -> (Process, Int) {
        let port = try freeLoopbackPort()
        let (arguments, environment) = try frontEnd()
        let server = try Commands.launch(["openssl", "s_server", "-async"] + arguments
                                         + ["-cert", "\(directory)/\(certificate).crt", "-key", keyArgument(certificate),
                                            "-accept", "127.0.0.1:\(port)", "-no_ticket", "-quiet"] + extra,
                                         environment: environment, keepStandardInputOpen: true)
        XCTAssertTrue(listens(server, on: port), "s_server did not start listening")
        return (server, port)
    }

    /// Full handshakes for `seconds`; returns how many completed.
    func handshakes(port: Int, extra: [String], seconds: Int = 2) throws -> Int {
        let text = try Commands.run(["openssl", "s_time", "-connect", "127.0.0.1:\(port)", "-new", "-time", String(seconds)] + extra).output
        let line = text.split(separator: "\n").first { $0.contains("connections in") && $0.contains("real seconds") }
        return line.flatMap { Int($0.split(separator: " ")[0]) } ?? 0
    }

    /// The server's published counters once every one of `algorithms` has
    /// caught up with `atLeast` operations (a publication can fall between a
    /// handshake's signature and its key exchange).
    func serverStats(pid: Int32, algorithms: [String], atLeast: Int) -> EngineStats? {
        var latest: EngineStats?
        for _ in 0..<40 {
            latest = LiveStats.read(pid: pid).first?.stats
            if let latest, algorithms.allSatisfy({ latest.count($0, "offloaded") >= atLeast }) { return latest }
            usleep(100_000)
        }
        return latest
    }

    func check(certificate: String, serverOptions: [String], clientOptions: [String],
               signature: String, keyExchange: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (server, port) = try startServer(certificate: certificate, extra: serverOptions)
        defer { server.terminate(); server.waitUntilExit() }
        let completed = try handshakes(port: port, extra: clientOptions)
        XCTAssertGreaterThan(completed, 20, "s_time completed \(completed) handshakes", file: file, line: line)
        let algorithms = [signatureCounter(signature), "\(keyExchange)_keygen", keyExchange == "ec" ? "ecdh_derive" : "\(keyExchange)_derive"]
            + alsoOffloaded
        let stats = serverStats(pid: server.processIdentifier, algorithms: algorithms, atLeast: completed)
        XCTAssertNotNil(stats, "the server published no counters", file: file, line: line)
        guard let stats else { return }
        // What a person would run: engine-loader stats for the server's pid.
        let shown = try Commands.run([Commands.engineLoader, "stats", "--pid", String(server.processIdentifier)])
        let text = shown.output
        XCTAssertEqual(shown.status, 0, text, file: file, line: line)
        XCTAssertTrue(text.contains("pid \(server.processIdentifier) (\(serverName))") && text.contains(signature), text, file: file, line: line)
        if let store = signatureCounter(signature).split(separator: ".").dropLast().first {
            XCTAssertTrue(text.contains("key store \(store): "), "its own section:\n\(text)", file: file, line: line)
        }
        for algorithm in algorithms {
            XCTAssertGreaterThanOrEqual(stats.count(algorithm, "offloaded"), completed, "\(algorithm):\n\(stats)", file: file, line: line)
            XCTAssertEqual(stats.count(algorithm, "failed"), 0, "\(algorithm)", file: file, line: line)
        }
    }

    func testTLS12ECDHERSA() throws {
        try check(certificate: "rsa", serverOptions: [], clientOptions: ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"],
                  signature: "rsa_private_encrypt", keyExchange: "x25519")
    }

    func testTLS13P256WithRSACertificate() throws {
        try check(certificate: "rsa", serverOptions: ["-groups", "P-256"], clientOptions: ["-tls1_3"],
                  signature: "rsa_private_encrypt", keyExchange: "ec")
    }

    func testTLS13X25519WithECDSACertificate() throws {
        try check(certificate: "ecdsa", serverOptions: ["-groups", "X25519"], clientOptions: ["-tls1_3"],
                  signature: "ecdsa_sign", keyExchange: "x25519")
    }

    func testTLS12ECDHEECDSAOnP256() throws {
        try check(certificate: "ecdsa", serverOptions: ["-groups", "P-256"],
                  clientOptions: ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
                  signature: "ecdsa_sign", keyExchange: "ec")
    }
}

/// The same handshakes with swiftasync as the server's provider
/// (openssl-provider.cnf through OPENSSL_CONF): TLS 1.3 and 1.2, RSA and
/// ECDSA certificates, X25519 and P-256, each handshake's signature, key
/// share and secret counted as offloaded.
final class ProviderServerTests: ServerTests {
    override func frontEnd() throws -> (arguments: [String], environment: [String: String]) {
        let configuration = try Commands.writeRepositoryConf("openssl-provider.cnf", to: "\(directory)/openssl-provider.cnf",
                                                             modulePath: enginePath)
        return ([], ["OPENSSL_CONF": configuration])
    }

    // Named here so that test discovery on Linux, which lists a class's own methods, runs them again.
    override func testTLS12ECDHERSA() throws { try super.testTLS12ECDHERSA() }
    override func testTLS13P256WithRSACertificate() throws { try super.testTLS13P256WithRSACertificate() }
    override func testTLS13X25519WithECDSACertificate() throws { try super.testTLS13X25519WithECDSACertificate() }
    override func testTLS12ECDHEECDSAOnP256() throws { try super.testTLS12ECDHEECDSAOnP256() }
}

/// A port on 127.0.0.1 nothing listens on right now.
func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw HarnessError("no free port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Whether `server` comes to listen on 127.0.0.1:`port` within `seconds`; false as soon as it exits.
/// The bound is long because it costs nothing when the server starts: one that
/// generates an RSA-4096 key under ASan has been seen to take 5.5 s.
func listens(_ server: Process, on port: Int, within seconds: Double = 30) -> Bool {
    for _ in 0..<Int(seconds * 40) where !canConnect(port) && server.isRunning { usleep(25_000) }
    return canConnect(port)
}

func canConnect(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
}

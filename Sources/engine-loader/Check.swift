import ArgumentParser
import COpenSSL
import EngineHarness
import Foundation

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every supported operation through the engine and compare with default OpenSSL.",
        discussion: """
            RSA (every padding and key size), EC keygen/ECDH/ECDSA, X25519 and X448, each in sync, \
            wait-fd and callback modes; the 8-lane path (every fill, padding and size, eight keys, \
            bad inputs among good ones, kinds mixed); then TLS handshakes. Exit status 0 only if every result matched \
            default OpenSSL and the engine's counters show each operation ran where it should.
            """)

    @OptionGroup var options: EngineOptions

    @Option(help: "RSA key sizes to check.")
    var bits: [Int] = [1024, 2048, 3072, 4096]

    @Option(help: "Random inputs per case, key size and mode.")
    var count = 8

    @Flag(help: "Check every built-in named curve (wait-fd mode), not only the TLS curves.")
    var allCurves = false

    enum Section: String, CaseIterable, ExpressibleByArgument {
        case rsa, ec, x25519, lanes, tls, fork, cancel
    }

    @Option(help: "Only these sections (\(Section.allCases.map(\.rawValue).joined(separator: ", "))).")
    var only: [Section] = Section.allCases

    @Flag(help: "Check the .so as an OpenSSL provider instead: every private-key step in a plain call, wait-fd and callback jobs, against the default provider, in lanes where they run.")
    var provider = false

    func run() throws {
        if provider { return try checkProvider() }
        let engine = try options.load()
        defer { engine.close() }
        print("checking \(engine.path) against \(String(cString: OpenSSL_version(OPENSSL_VERSION)))")
        var failures = 0
        func report(_ label: String, _ mode: ExecutionMode, counters: [String], _ body: () throws -> CheckResult) throws {
            let route = mode == .sync ? "inline" : "offloaded"
            let before = try engine.stats()
            let check = try body()
            let after = try engine.stats()
            let routed = counters.reduce(0) { $0 + after.count($1, route) - before.count($1, route) }
            var problems = check.mismatches
            let routedRight = mode == .sync ? routed >= check.operations : routed == check.operations
            if !routedRight {
                problems.append("expected \(check.operations) operations \(route), the engine counted \(routed)")
            }
            failures += problems.isEmpty ? 0 : 1
            print("\(problems.isEmpty ? "ok  " : "FAIL") \(label) \(mode.rawValue): \(check.compared) results agree with default OpenSSL, \(routed) operations \(route)")
            for problem in problems { print("     \(problem)") }
        }

        let rsa = ["rsa_private_encrypt", "rsa_private_decrypt"]
        for bits in bits where only.contains(.rsa) {
            let key = try RSAKeyPair(bits: bits)
            for mode in ExecutionMode.allCases {
                try report("RSA \(bits)", mode, counters: rsa) { try SelfCheck.rsa(key: key, mode: mode, count: count) }
            }
        }
        let ec = ["ec_keygen", "ecdh_derive", "ecdsa_sign", "ecdsa_sign_setup"]
        for curve in ECCurves.tls where only.contains(.ec) {
            for mode in ExecutionMode.allCases {
                try report("EC \(curve)", mode, counters: ec) { try SelfCheck.ec(curve: curve, mode: mode, count: count) }
            }
        }
        if allCurves && only.contains(.ec) {
            for curve in ECCurves.all where SelfCheck.softwareSupports(curve) {
                try report("EC \(curve)", .waitFD, counters: ec) { try SelfCheck.ec(curve: curve, mode: .waitFD, count: 2) }
            }
        }
        for vector in ECXVector.all where only.contains(.x25519) {
            let prefix = vector.name.lowercased()
            for mode in ExecutionMode.allCases {
                try report(vector.name, mode, counters: ["\(prefix)_keygen", "\(prefix)_derive"]) {
                    try SelfCheck.ecx(vector, mode: mode, count: count)
                }
            }
        }
        if only.contains(.lanes) {
            let report = try LaneCheck.runAll(engine: engine)
            report.lines.forEach { print($0) }
            failures += report.failures
        }
        if only.contains(.tls) { failures += try checkHandshakes(engine) }
        if only.contains(.fork) {
            let report = try ForkCheck.run(key: try RSAKeyPair(bits: 2048))
            report.lines.forEach { print($0) }
            failures += report.failures
        }
        if only.contains(.cancel) {   // last: it leaves the pool slow, and jobs abandoned
            let report = try CancelCheck.run(engine: engine)
            report.lines.forEach { print($0) }
            failures += report.failures
        }
        print(failures == 0 ? "all checks passed" : "\(failures) check(s) failed")
        if failures > 0 { throw ExitCode.failure }
    }

    /// The provider, loaded as openssl-provider.cnf loads it, with lanes for any fill.
    func checkProvider() throws {
        let loaded = try LoadedProvider(path: options.path, settings: [("MULTIBUFFER_MIN_FILL", "1")] + options.pairs())
        defer { loaded.close() }
        print("checking \(loaded.path) as a provider against \(String(cString: OpenSSL_version(OPENSSL_VERSION)))'s default provider")
        let report = try ProviderCheck.run(provider: loaded, count: count)
        report.lines.forEach { print($0) }
        print(report.failures == 0 ? "all checks passed" : "\(report.failures) check(s) failed")
        if report.failures > 0 { throw ExitCode.failure }
    }

    /// TLS handshakes whose server key exchange and signature run on the pool, both wake modes.
    func checkHandshakes(_ engine: LoadedEngine) throws -> Int {
        let rsa = try TLSIdentity(rsaBits: 2048)
        let ecdsa = try TLSIdentity(ecGroup: "P-256")
        let cases: [(String, Int32, String?, String, TLSIdentity, [String])] = [
            ("TLS 1.3 X25519 RSA", TLS1_3_VERSION, nil, "X25519", rsa, ["x25519_keygen", "x25519_derive", "rsa_private_encrypt"]),
            ("TLS 1.3 P-256 ECDSA", TLS1_3_VERSION, nil, "P-256", ecdsa, ["ec_keygen", "ecdh_derive", "ecdsa_sign"]),
            ("TLS 1.2 ECDHE-RSA P-384", TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256", "P-384", rsa, ["ec_keygen", "ecdh_derive", "rsa_private_encrypt"]),
        ]
        var failures = 0
        for (label, version, ciphers, group, identity, algorithms) in cases {
            for wake in WakeMode.allCases {
                var options = TLSHandshakes.Options()
                options.connections = 8
                options.maxVersion = version
                options.cipherList = ciphers
                options.groups = group
                options.wake = wake
                let before = try engine.stats()
                let outcome = try TLSHandshakes.run(identity: identity, options: options)
                let after = try engine.stats()
                let offloaded = algorithms.map { after.count($0, "offloaded") - before.count($0, "offloaded") }
                // A saturated pool has some computed by their jobs themselves (caller_ran), never all.
                let callerRan = (after.header["caller_ran"] ?? 0) - (before.header["caller_ran"] ?? 0)
                let ok = outcome.completed == options.connections
                    && EngineStats.countedOnceInJobs(offloaded: offloaded, callerRan: callerRan, expected: options.connections)
                failures += ok ? 0 : 1
                let detail = zip(algorithms, offloaded).map { "\($0) \($1)" }.joined(separator: ", ")
                print("\(ok ? "ok  " : "FAIL") \(label) handshakes, \(wake.rawValue): \(outcome.completed)/\(options.connections) completed; "
                      + "offloaded: \(detail); computed by their jobs: \(callerRan)")
            }
        }
        return failures
    }
}

import ArgumentParser
import COpenSSL
import EngineHarness
import Foundation

@main
struct EngineLoader: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine-loader",
        abstract: "Load the swiftasync OpenSSL engine, describe it, and check it against default OpenSSL.",
        subcommands: [Info.self, Check.self])
}

struct EngineOptions: ParsableArguments {
    @Option(name: .long, help: "Path of swiftasync.so (default: $SWIFTASYNC_SO or build/swiftasync.so).")
    var engine: String?

    @Option(name: .customLong("set"), help: "A ctrl command NAME=VALUE applied before init (repeatable).")
    var settings: [String] = []

    func load() throws -> LoadedEngine {
        let pairs = try settings.map { setting -> (String, String) in
            let parts = setting.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--set wants NAME=VALUE, got \(setting)") }
            return (parts[0], parts[1])
        }
        return try LoadedEngine(path: engine ?? LoadedEngine.defaultPath(), settings: pairs)
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load the engine as OpenSSL's dynamic engine does and print what it offers.")

    @OptionGroup var options: EngineOptions

    func run() throws {
        let engine = try options.load()
        defer { engine.close() }
        let stats = try engine.stats()
        print("engine:      \(engine.id) (\(engine.name))")
        print("path:        \(engine.path)")
        print("openssl:     \(String(cString: OpenSSL_version(OPENSSL_VERSION)))")
        print("algorithms:  \(engine.algorithms.joined(separator: ", "))")
        print("pool:        \(stats.header["threads"] ?? 0) worker threads, queue depth \(stats.header["queue_depth"] ?? 0), sync offload \(stats.header["sync_offload"] == 1 ? "on" : "off")")
        print("ctrl commands:")
        for command in engine.commands() {
            print("  \(command.name.padding(toLength: 14, withPad: " ", startingAt: 0)) \(command.help)")
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every supported operation through the engine and compare with default OpenSSL.",
        discussion: "Exit status 0 only if every result matched and the engine's counters show the work ran where it should.")

    @OptionGroup var options: EngineOptions

    @Option(help: "RSA key sizes to check.")
    var bits: [Int] = [1024, 2048, 3072, 4096]

    @Option(help: "Random inputs per padding, key size and mode.")
    var count = 8

    func run() throws {
        let engine = try options.load()
        defer { engine.close() }
        print("checking \(engine.path) against \(String(cString: OpenSSL_version(OPENSSL_VERSION)))")
        var failures = 0
        for bits in bits {
            let key = try RSAKeyPair(bits: bits)
            for mode in ExecutionMode.allCases {
                let before = try engine.stats()
                let check = try SelfCheck.rsa(key: key, mode: mode, count: count)
                let after = try engine.stats()
                var problems = check.mismatches
                let expectedRoute = mode == .sync ? "inline" : "offloaded"
                let routed = ["rsa_private_encrypt", "rsa_private_decrypt"].reduce(0) {
                    $0 + after.count($1, expectedRoute) - before.count($1, expectedRoute)
                }
                if routed != check.compared {
                    problems.append("expected \(check.compared) operations \(expectedRoute), the engine counted \(routed)")
                }
                failures += problems.isEmpty ? 0 : 1
                print("\(problems.isEmpty ? "ok  " : "FAIL") RSA \(bits) \(mode.rawValue): \(check.compared) operations (\(SelfCheck.rsaCases.count) paddings) byte-equal with default OpenSSL, \(routed) \(expectedRoute)")
                for problem in problems { print("     \(problem)") }
            }
        }
        failures += try checkHandshakes(engine)
        print(failures == 0 ? "all checks passed" : "\(failures) check(s) failed")
        if failures > 0 { throw ExitCode.failure }
    }

    /// TLS 1.3 and 1.2 handshakes with the server's signature on the pool, both wake modes.
    func checkHandshakes(_ engine: LoadedEngine) throws -> Int {
        let identity = try TLSIdentity(rsaBits: 2048)
        var failures = 0
        for (label, version, ciphers) in [("TLS 1.3", TLS1_3_VERSION, nil), ("TLS 1.2 ECDHE-RSA", TLS1_2_VERSION, "ECDHE-RSA-AES128-GCM-SHA256")] {
            for wake in WakeMode.allCases {
                var options = TLSHandshakes.Options()
                options.connections = 8
                options.maxVersion = version
                options.cipherList = ciphers
                options.wake = wake
                let before = try engine.stats().count("rsa_private_encrypt", "offloaded")
                let outcome = try TLSHandshakes.run(identity: identity, options: options)
                let offloaded = try engine.stats().count("rsa_private_encrypt", "offloaded") - before
                let ok = outcome.completed == options.connections && offloaded == options.connections
                failures += ok ? 0 : 1
                print("\(ok ? "ok  " : "FAIL") \(label) handshakes, \(wake.rawValue): \(outcome.completed)/\(options.connections) completed, \(offloaded) signatures offloaded")
            }
        }
        return failures
    }
}

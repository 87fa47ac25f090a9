import ArgumentParser
import COpenSSL
import EngineHarness
import Foundation

@main
struct EngineLoader: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "engine-loader",
        abstract: "Load the swiftasync OpenSSL engine, describe it, and check it against default OpenSSL.",
        subcommands: [Info.self, Check.self, Stats.self, Serve.self, SoakCommand.self])
}

struct EngineOptions: ParsableArguments {
    @Option(name: .long, help: "Path of swiftasync.so (default: $SWIFTASYNC_SO or build/swiftasync.so).")
    var engine: String?

    @Option(name: .customLong("set"), help: "A ctrl command NAME=VALUE applied before init (repeatable).")
    var settings: [String] = []

    /// The --set settings as (NAME, VALUE).
    func pairs() throws -> [(String, String)] {
        try settings.map { setting -> (String, String) in
            let parts = setting.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw ValidationError("--set wants NAME=VALUE, got \(setting)") }
            return (parts[0], parts[1])
        }
    }

    var path: String { engine ?? LoadedEngine.defaultPath() }

    func load() throws -> LoadedEngine {
        try LoadedEngine(path: path, settings: pairs())
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load the engine as OpenSSL's dynamic engine does and print what it offers.")

    @OptionGroup var options: EngineOptions

    @Flag(help: "Load the .so as an OpenSSL provider (openssl-provider.cnf's way), not as an engine.")
    var provider = false

    func run() throws {
        if provider { return try describeProvider() }
        let engine = try options.load()
        defer { engine.close() }
        let stats = try engine.stats()
        print("engine:      \(engine.id) (\(engine.name))")
        print("path:        \(engine.path)")
        print("openssl:     \(String(cString: OpenSSL_version(OPENSSL_VERSION)))")
        print("algorithms:  \(engine.algorithms.joined(separator: ", "))")
        print("pool:        \(stats.header["threads"] ?? 0) worker threads, queue depth \(stats.header["queue_depth"] ?? 0), sync offload \(stats.header["sync_offload"] == 1 ? "on" : "off")")
        print("8-lane path: \(Self.describe(multibuffer: stats.multibuffer))")
        print("ctrl commands:")
        let commands = engine.commands()
        let width = commands.map(\.name.count).max() ?? 0
        for command in commands {
            print("  \(command.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(command.help)")
        }
    }

    /// The provider, loaded into a library context of its own with default, swiftasync preferred.
    func describeProvider() throws {
        let loaded = try LoadedProvider(path: options.path, settings: options.pairs())
        defer { loaded.close() }
        let stats = try loaded.stats()
        print("provider:    \(loaded.name), forwarding to the default provider")
        print("path:        \(loaded.path)")
        print("openssl:     \(String(cString: OpenSSL_version(OPENSSL_VERSION)))")
        print("offloaded:   RSA sign and decrypt; ECDSA sign; ECDH, X25519 and X448 derive; EC, X25519 and X448 key generation")
        print("pool:        \(stats.header["threads"] ?? 0) worker threads, queue depth \(stats.header["queue_depth"] ?? 0), sync offload \(stats.header["sync_offload"] == 1 ? "on" : "off")")
        print("8-lane path: \(Self.describe(multibuffer: stats.multibuffer)); through the provider: RSA sign and digest-sign (PKCS#1 v1.5, PSS, none), ECDSA, ECDH, X25519 derive, EC and X25519 key generation")
        print("settings:    the engine's ctrl names, as lines of the provider's openssl.cnf section, or SWIFTASYNC_<NAME>; forward = provider=NAME")
    }

    /// The engine's one-word multibuffer status as a sentence for an operator.
    static func describe(multibuffer: String) -> String {
        switch multibuffer {
        case "in_use":
            "in use: like RSA-2048/3072/4096, X25519 and P-256/P-384/P-521 operations queued together share AVX-512 IFMA calls (crypto_mb)"
        case "off_by_ctrl":
            "not in use: switched off (MULTIBUFFER=0 or SWIFTASYNC_MULTIBUFFER=0); every operation is scalar"
        case "not_built":
            "not in use: this build has no crypto_mb (built with make MULTIBUFFER=0); every operation is scalar"
        case "cpu_lacks_avx512_ifma":
            "not in use: this CPU has no AVX-512 IFMA; every operation is scalar, with identical results"
        default:
            "unknown (\(multibuffer))"
        }
    }
}

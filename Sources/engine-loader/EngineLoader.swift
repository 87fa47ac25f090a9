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

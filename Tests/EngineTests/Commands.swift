import EngineHarness
import Foundation

/// Running the programs the tests drive. OPENSSL_CONF is cleared unless a
/// test sets it: the engine is loaded only where a test asks for it.
enum Commands {
    struct Result {
        var status: Int32
        var output: String
    }

    static var engineLoader: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("engine-loader").path
    }

    static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    /// The repository's `name` (openssl.cnf, openssl-provider.cnf, openssl-pkcs11.cnf)
    /// written to `path` with its module path (the engine's dynamic_path, each
    /// provider instance's module) made `modulePath`; returns `path`.
    @discardableResult
    static func writeRepositoryConf(_ name: String, to path: String, modulePath: String) throws -> String {
        let lines = try String(contentsOfFile: repositoryRoot + "/" + name, encoding: .utf8)
            .split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
                for key in ["dynamic_path", "module"] where line.hasPrefix("\(key) = ") && line.hasSuffix("/swiftasync.so") {
                    return "\(key) = \(modulePath)"
                }
                return String(line)
            }
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Third-party programs the tests make load the engine (engine-loader is built with the tests).
    /// prlimit execs the program it limits (HAProxy, in the fd-limit test); trafficserver.sh execs Traffic Server.
    static let programsLoadingTheEngine: Set<String> = ["openssl", "haproxy", "nginx", "prlimit", "trafficserver.sh"]

    /// Starts `arguments` (looked up on PATH, or a path); stdout and stderr go to `output`.
    static func launch(_ arguments: [String], environment: [String: String] = [:], directory: String? = nil,
                       output: Any? = nil, keepStandardInputOpen: Bool = false) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        merged["OPENSSL_CONF"] = nil
        if let runtime = merged["SWIFTASYNC_SANITIZER_RUNTIME"], let program = arguments.first,
           programsLoadingTheEngine.contains(URL(fileURLWithPath: program).lastPathComponent) {
            merged["LD_PRELOAD"] = runtime   // a sanitized engine needs its runtime in programs built without it
        }
        merged.merge(environment) { $1 }
        process.environment = merged
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        process.standardOutput = output ?? FileHandle.nullDevice
        process.standardError = output ?? FileHandle.nullDevice
        if keepStandardInputOpen { process.standardInput = Pipe() }   // s_server stops when its stdin closes
        try process.run()
        return process
    }

    /// Runs `arguments` to the end; its stdout and stderr together.
    static func run(_ arguments: [String], environment: [String: String] = [:], directory: String? = nil) throws -> Result {
        let pipe = Pipe()
        let process = try launch(arguments, environment: environment, directory: directory, output: pipe)
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return Result(status: process.terminationStatus, output: output)
    }

    /// The output of a process started with a Pipe, once it has exited (or been stopped after `timeout`).
    static func finish(_ process: Process, _ pipe: Pipe, timeout: Double = 30) -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { process.terminate() }
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return output
    }
}

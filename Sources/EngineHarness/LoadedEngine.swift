import COpenSSL
import Foundation

public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description + OpenSSLErrors.drain() }
}

/// OpenSSL's error queue as text, emptied.
public enum OpenSSLErrors {
    public static func drain() -> String {
        var text = ""
        while case let code = ERR_get_error(), code != 0 {
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            text += "\n  " + cString(buffer)
        }
        return text
    }

    /// The (library, reason) of every error on the queue, oldest first; the queue is emptied.
    public static func codes() -> [(library: Int32, reason: Int32)] {
        var codes: [(Int32, Int32)] = []
        while case let code = ERR_get_error(), code != 0 {
            codes.append((Int32((code >> 23) & 0xFF), Int32(code & 0x7FFFFF)))
        }
        return codes
    }
}

/// swiftasync loaded the way OpenSSL's dynamic engine loads any engine,
/// initialised, and registered as the default for everything it implements.
public final class LoadedEngine {
    public let engine: OpaquePointer
    public let path: String
    private var closed = false

    /// The .so the tests and tools use: $SWIFTASYNC_SO, else build/swiftasync.so
    /// under the package root (found from this file's location), else ./build.
    public static func defaultPath(relativeTo file: String = #filePath) -> String {
        if let path = ProcessInfo.processInfo.environment["SWIFTASYNC_SO"] { return path }
        var root = URL(fileURLWithPath: file)
        for _ in 0..<3 { root.deleteLastPathComponent() }
        let candidate = root.appendingPathComponent("build/swiftasync.so").path
        if FileManager.default.fileExists(atPath: candidate) { return candidate }
        return FileManager.default.currentDirectoryPath + "/build/swiftasync.so"
    }

    /// `settings` are ctrl commands applied after loading and before init.
    public init(path: String = LoadedEngine.defaultPath(), settings: [(String, String)] = [],
                makeDefault: Bool = true) throws {
        self.path = path
        guard let dynamic = ENGINE_by_id("dynamic") else { throw HarnessError("no dynamic engine") }
        guard ENGINE_ctrl_cmd_string(dynamic, "SO_PATH", path, 0) == 1,
              ENGINE_ctrl_cmd_string(dynamic, "ID", "swiftasync", 0) == 1,
              ENGINE_ctrl_cmd_string(dynamic, "LOAD", nil, 0) == 1 else {
            ENGINE_free(dynamic)
            throw HarnessError("cannot load \(path)")
        }
        engine = dynamic
        for (name, value) in settings {
            guard ENGINE_ctrl_cmd_string(engine, name, value, 0) == 1 else {
                ENGINE_free(engine)
                throw HarnessError("ctrl \(name)=\(value) refused")
            }
        }
        guard ENGINE_init(engine) == 1 else {
            ENGINE_free(engine)
            throw HarnessError("ENGINE_init failed")
        }
        if makeDefault && ENGINE_set_default(engine, harness_engine_method_all()) != 1 {
            ENGINE_finish(engine)
            ENGINE_free(engine)
            throw HarnessError("ENGINE_set_default failed")
        }
    }

    public var id: String { String(cString: ENGINE_get_id(engine)) }

    /// What the engine implements, as OpenSSL sees it.
    public var algorithms: [String] {
        var names: [String] = []
        if ENGINE_get_RSA(engine) != nil { names.append("RSA") }
        if ENGINE_get_EC(engine) != nil { names.append("EC (keygen, ECDH, ECDSA)") }
        var nids: UnsafePointer<Int32>?
        if let pkeyMethods = ENGINE_get_pkey_meths(engine) {
            let count = pkeyMethods(engine, nil, &nids, 0)
            for index in 0..<Int(max(count, 0)) {
                names.append(String(cString: OBJ_nid2sn(nids![index])))
            }
        }
        return names
    }
    public var name: String { String(cString: ENGINE_get_name(engine)) }

    public func set(_ name: String, _ value: String) throws {
        guard ENGINE_ctrl_cmd_string(engine, name, value, 0) == 1 else {
            throw HarnessError("ctrl \(name)=\(value) refused")
        }
    }

    /// The engine's own counters, through its STATS control command.
    public func stats() throws -> EngineStats {
        var buffer = [CChar](repeating: 0, count: 8192)
        guard ENGINE_ctrl_cmd(engine, "STATS", buffer.count, &buffer, nil, 0) == 1 else {
            throw HarnessError("STATS refused")
        }
        return EngineStats(parsing: cString(buffer))
    }

    /// True once every offloaded operation has been handed back by a worker.
    public func waitUntilNothingInFlight(timeout: Double = 30) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let stats = try? stats(), stats.inFlight == 0 { return true }
            usleep(20_000)
        }
        return false
    }

    /// The control commands the engine lists, with their descriptions.
    public func commands() -> [(name: String, help: String)] {
        var result: [(String, String)] = []
        func text(_ lengthQuery: Int32, _ query: Int32, _ number: Int) -> String {
            let length = ENGINE_ctrl(engine, lengthQuery, number, nil, nil)
            guard length > 0 else { return "" }
            var buffer = [CChar](repeating: 0, count: Int(length) + 1)
            ENGINE_ctrl(engine, query, number, &buffer, nil)
            return cString(buffer)
        }
        var number = ENGINE_ctrl(engine, ENGINE_CTRL_GET_FIRST_CMD_TYPE, 0, nil, nil)
        while number > 0 {
            let name = text(Int32(ENGINE_CTRL_GET_NAME_LEN_FROM_CMD), Int32(ENGINE_CTRL_GET_NAME_FROM_CMD), Int(number))
            let help = text(Int32(ENGINE_CTRL_GET_DESC_LEN_FROM_CMD), Int32(ENGINE_CTRL_GET_DESC_FROM_CMD), Int(number))
            result.append((name, help))
            number = ENGINE_ctrl(engine, ENGINE_CTRL_GET_NEXT_CMD_TYPE, Int(number), nil, nil)
        }
        return result
    }

    /// Runs body with default OpenSSL as the default again: keys made inside
    /// use the software methods (the reference side of differential tests).
    public func withSoftwareDefaults<T>(_ body: () throws -> T) rethrows -> T {
        unregisterDefaults()
        defer { ENGINE_set_default(engine, harness_engine_method_all()) }
        return try body()
    }

    private func unregisterDefaults() {
        ENGINE_unregister_RSA(engine)
        ENGINE_unregister_EC(engine)
        ENGINE_unregister_pkey_meths(engine)
    }

    /// Undoes init: no longer the default, functional and structural references dropped.
    public func close() {
        guard !closed else { return }
        closed = true
        unregisterDefaults()
        ENGINE_finish(engine)
        ENGINE_free(engine)
    }

    deinit { close() }
}

/// A parsed STATS report: `swiftasync key=value ...` then `algorithm key=value ...` lines.
public struct EngineStats: CustomStringConvertible {
    public let text: String
    public var header: [String: Int] = [:]
    public var algorithms: [String: [String: Int]] = [:]

    public init(parsing text: String) {
        self.text = text
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            guard let first = words.first else { continue }
            if first == "end" { break }   // anything after is a longer report's leftover
            var values: [String: Int] = [:]
            for word in words.dropFirst() {
                let parts = word.split(separator: "=", maxSplits: 1)
                if parts.count == 2, let value = Int(parts[1]) { values[String(parts[0])] = value }
            }
            if first == "swiftasync" { header = values } else { algorithms[String(first)] = values }
        }
    }

    /// Whether 8-lane calls run ("in_use") or why not ("off_by_ctrl", "not_built", "cpu_lacks_avx512_ifma").
    public var multibuffer: String {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" })
            .first { $0.hasPrefix("multibuffer=") }.map { String($0.dropFirst(12)) } ?? "unknown"
    }

    public func count(_ algorithm: String, _ counter: String) -> Int {
        algorithms[algorithm]?[counter] ?? 0
    }

    /// Whether `expected` operations of each algorithm (`offloaded`: each one's count) were each
    /// counted once in jobs: offloaded (at least one of each kind, at most all), or computed by
    /// their own job where the pool was saturated (`callerRan`, from the header's `caller_ran`).
    public static func countedOnceInJobs(offloaded: [Int], callerRan: Int, expected: Int) -> Bool {
        offloaded.allSatisfy { (1...expected).contains($0) } && offloaded.reduce(callerRan, +) == expected * offloaded.count
    }

    /// Offloaded and not yet handed back by a worker, over every algorithm.
    public var inFlight: Int {
        algorithms.values.reduce(0) { $0 + ($1["offloaded"] ?? 0) - ($1["completed"] ?? 0) }
    }

    public var description: String { text }
}

/// A NUL-terminated C buffer as a String.
func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

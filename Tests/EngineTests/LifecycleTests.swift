import COpenSSL
import EngineHarness
import Foundation
import XCTest

/// Control commands, configuration, and the engine's life in one process:
/// load, use, free, load again; the last finish joins the pool's threads.
final class LifecycleTests: EngineTestCase {
    /// Runs body so that its keys are freed (and their engine references dropped) on return.
    func scoped(_ body: () throws -> Void) rethrows { try body() }

    /// The names of this process's threads, from /proc.
    func threadNames() -> [String] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.compactMap {
            try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8).trimmingCharacters(in: .newlines)
        }
    }

    /// The engine's own threads (workers and the stats publisher are named
    /// "swiftasync-…"); the host's other threads come and go on their own.
    func engineThreads() -> [String] {
        threadNames().filter { $0.hasPrefix("swiftasync-") }
    }

    /// A joined thread can linger in /proc for a moment after pthread_join returns.
    func engineThreads(settlingAt expected: Int) -> [String] {
        for _ in 0..<100 where engineThreads().count != expected { usleep(10_000) }
        return engineThreads()
    }

    func signInJob(_ key: RSAKeyPair) throws {
        let check = try SelfCheck.run([RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key)],
                                      on: key, mode: .waitFD)
        XCTAssertEqual(check[0].result, Int32(key.size))
    }

    func testLoadUseFreeAndLoadAgain() throws {
        engine.close()
        XCTAssertEqual(engineThreads(settlingAt: 0), [])
        for cycle in 1...3 {
            let loaded = try LoadedEngine(settings: [("THREADS", "2")])
            try scoped {
                let key = try RSAKeyPair(bits: 1024)
                XCTAssertTrue(key.engineKeyUsesEngine, "cycle \(cycle)")
                try signInJob(key)
                XCTAssertEqual(try loaded.stats().header["running_threads"], 2, "cycle \(cycle)")
                XCTAssertEqual(engineThreads().sorted(), ["swiftasync-0", "swiftasync-1", "swiftasync-stat"],
                               "cycle \(cycle): the pool's two workers and the stats publisher")
            }
            loaded.close()
            XCTAssertEqual(engineThreads(settlingAt: 0), [], "cycle \(cycle): finish must join the workers")
        }
    }

    /// Resident memory in KiB, from /proc.
    func residentKiB() -> Int {
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
        return (Int(statm.split(separator: " ").dropFirst().first ?? "0") ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024
    }

    /// 1,000 times load, use (a signature in a job, so the pool starts), free:
    /// no crash, and neither threads nor memory grow.
    func testThousandLoadUseFreeCycles() throws {
        engine.close()
        let key = try RSAKeyPair.der(bits: 1024)
        XCTAssertFalse(key.isEmpty)
        let baseline = threadNames().count
        var residentAfterWarmUp = 0
        for cycle in 1...1000 {
            let loaded = try LoadedEngine(settings: [("THREADS", "2")])
            try scoped {
                let pair = try RSAKeyPair(bits: 1024)
                try signInJob(pair)
            }
            loaded.close()
            if cycle == 100 { residentAfterWarmUp = residentKiB() }
        }
        XCTAssertEqual(engineThreads(settlingAt: 0), [], "every cycle's threads are joined")
        XCTAssertLessThanOrEqual(threadNames().count, baseline, "no thread outlives its cycle")
        guard Self.sanitizer == nil else { return }   // its allocator quarantines freed memory by design
        let growth = residentKiB() - residentAfterWarmUp
        XCTAssertLessThan(growth, 4096, "900 cycles grew the process by \(growth) KiB")
    }

    func testControlCommandsAreListedWithDescriptions() {
        let commands = Dictionary(uniqueKeysWithValues: engine.commands().map { ($0.name, $0.help) })
        for name in ["THREADS", "QUEUE_DEPTH", "SYNC_OFFLOAD", "NOTIFY_BATCH", "NOTIFY_DELAY_USEC", "IDLE_SPIN_USEC", "WORKER_DELAY_USEC", "STATS", "STATS_FILE", "STATS_DIR"] {
            XCTAssertFalse(commands[name]?.isEmpty ?? true, "\(name) must be listed with a description")
        }
    }

    func testInvalidValuesAreRefusedOnTheErrorQueue() {
        for (name, value) in [("THREADS", "-1"), ("THREADS", "100000"), ("QUEUE_DEPTH", "0"), ("SYNC_OFFLOAD", "2"), ("NO_SUCH", "1")] {
            ERR_clear_error()
            XCTAssertEqual(ENGINE_ctrl_cmd_string(engine.engine, name, value, 0), 0, "\(name)=\(value)")
            XCTAssertFalse(OpenSSLErrors.codes().isEmpty, "\(name)=\(value) must leave an error")
        }
    }

    func testThreadsAndQueueDepthReshapeThePool() throws {
        try engine.set("THREADS", "3")
        try engine.set("QUEUE_DEPTH", "5")
        let key = try RSAKeyPair(bits: 1024)
        try signInJob(key)
        let stats = try engine.stats()
        XCTAssertEqual(stats.header["threads"], 3)
        XCTAssertEqual(stats.header["running_threads"], 3)
        XCTAssertEqual(stats.header["queue_depth"], 5)
    }

    func testStatsFileIsWrittenWhenTheEngineFinishes() throws {
        let path = NSTemporaryDirectory() + "swiftasync-stats-\(getpid()).txt"
        try? FileManager.default.removeItem(atPath: path)
        try engine.set("STATS_FILE", path)
        let before = try engine.stats().count("rsa_private_encrypt", "offloaded")
        try scoped { try signInJob(try RSAKeyPair(bits: 1024)) }
        engine.close()
        let written = EngineStats(parsing: try String(contentsOfFile: path, encoding: .utf8))
        XCTAssertEqual(written.count("rsa_private_encrypt", "offloaded"), before + 1)
        try? FileManager.default.removeItem(atPath: path)
    }
}

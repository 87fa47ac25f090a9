import ArgumentParser
import EngineHarness
import Foundation

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the live counters of every process running the engine on this machine.",
        discussion: """
            Each process that uses swiftasync publishes its counters in the STATS_DIR directory \
            (default \(LiveStats.defaultDirectory)) a few times a second while they change. \
            Counters that stay at zero show up when a server does not use the engine.
            """)

    @Option(help: "Only this process.")
    var pid: Int32?

    @Option(help: "Where the engine publishes (its STATS_DIR).")
    var directory = LiveStats.defaultDirectory

    @Flag(help: "Show algorithms whose counters are all zero too.")
    var all = false

    func run() throws {
        let processes = LiveStats.read(directory: directory, pid: pid)
        guard !processes.isEmpty else {
            print("no process is running swiftasync\(pid.map { " as pid \($0)" } ?? "") (looked in \(directory))")
            throw ExitCode(1)
        }
        for process in processes {
            print("pid \(process.pid) (\(process.command)): " + process.stats.header
                .filter { $0.key != "pid" }.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
                + " multibuffer=\(process.stats.multibuffer)")
            printTable(process.stats.algorithms)
        }
        if processes.count > 1 {
            print("all \(processes.count) processes:")
            printTable(LiveStats.totals(processes))
        }
    }

    /// The engine pool's counters, then each key store's (`NAME.pool` and `NAME.ALGORITHM` lines) under its name.
    func printTable(_ algorithms: [String: [String: Int]]) {
        let stores = Set(algorithms.keys.compactMap { name in name.firstIndex(of: ".").map { String(name[..<$0]) } })
        printCounters(algorithms.filter { !$0.key.contains(".") })
        for store in stores.sorted() {
            let pool = algorithms["\(store).pool"] ?? [:]
            print("  key store \(store): " + pool.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
            printCounters(Dictionary(uniqueKeysWithValues: algorithms.compactMap { name, counters in
                name.hasPrefix(store + ".") && name != "\(store).pool"
                    ? (String(name.dropFirst(store.count + 1)), counters) : nil
            }))
        }
    }

    /// The counters, the average fill of the 8-lane calls (lanes / lane_calls), and the
    /// recent latencies of offloaded operations: in the queue, and until their wake-up (p50/p99, µs).
    func printCounters(_ algorithms: [String: [String: Int]]) {
        let columns = ["offloaded", "inline", "retried", "failed", "lanes", "lane_calls"]
        print("  " + "algorithm".padding(toLength: 22, withPad: " ", startingAt: 0)
              + columns.map { $0.leftPadded(12) }.joined() + "fill".leftPadded(6)
              + "queue p50/p99 us".leftPadded(18) + "wake p50/p99 us".leftPadded(18))
        for (algorithm, counters) in algorithms.sorted(by: { $0.key < $1.key })
        where all || counters.values.contains(where: { $0 != 0 }) {
            let calls = counters["lane_calls"] ?? 0
            let fill = calls > 0 ? String(format: "%.1f", Double(counters["lanes"] ?? 0) / Double(calls)) : "-"
            let latency = { (name: String) -> String in
                counters["\(name)_p50_us"].map { "\($0)/\(counters["\(name)_p99_us"] ?? 0)" } ?? "-"
            }
            print("  " + algorithm.padding(toLength: 22, withPad: " ", startingAt: 0)
                  + columns.map { String(counters[$0] ?? 0).leftPadded(12) }.joined() + fill.leftPadded(6)
                  + latency("queue").leftPadded(18) + latency("wake").leftPadded(18))
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}

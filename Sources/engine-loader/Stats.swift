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

    /// The counters, and the average fill of the 8-lane calls (lanes / lane_calls).
    func printTable(_ algorithms: [String: [String: Int]]) {
        let columns = ["offloaded", "inline", "retried", "failed", "lanes", "lane_calls"]
        print("  " + "algorithm".padding(toLength: 22, withPad: " ", startingAt: 0)
              + columns.map { $0.leftPadded(12) }.joined() + "fill".leftPadded(6))
        for (algorithm, counters) in algorithms.sorted(by: { $0.key < $1.key })
        where all || counters.values.contains(where: { $0 != 0 }) {
            let calls = counters["lane_calls"] ?? 0
            let fill = calls > 0 ? String(format: "%.1f", Double(counters["lanes"] ?? 0) / Double(calls)) : "-"
            print("  " + algorithm.padding(toLength: 22, withPad: " ", startingAt: 0)
                  + columns.map { String(counters[$0] ?? 0).leftPadded(12) }.joined() + fill.leftPadded(6))
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}

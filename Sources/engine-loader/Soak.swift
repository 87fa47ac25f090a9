import ArgumentParser
import EngineHarness
import Foundation

struct SoakCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Mixed operations through the engine (or the provider) in random interleavings, each checked against default OpenSSL.",
        discussion: """
            Rounds of 1-64 async jobs woken by wait fds or callbacks (some with spurious resumes), the pool \
            reshaped and sync offload switched between rounds, and a second thread calling outside jobs. \
            Exit status 0 only if every result agreed with default OpenSSL and the engine's counters show \
            every operation run exactly once.
            """)

    @OptionGroup var options: EngineOptions

    @Option(help: "Operations to run (at least; the last round completes).")
    var operations = 1_000_000

    @Option(help: "Seed of the random interleaving (default: from the clock).")
    var seed: UInt64?

    @Flag(help: "Run the operations through the .so as a provider (EVP in a library context with it preferred); the engine, loaded too, reshapes the shared pool.")
    var provider = false

    func run() throws {
        let engine = try options.load()
        defer { engine.close() }
        let seed = seed ?? UInt64(Date().timeIntervalSince1970 * 1000)
        let loaded = provider ? try LoadedProvider(path: engine.path) : nil
        defer { loaded?.close() }
        print("soak: \(operations) operations, seed \(seed), \(engine.path)\(provider ? " as a provider" : "")")
        let report = try Soak.run(engine: engine, provider: loaded, operations: operations, seed: seed) { print("soak: \($0)") }
        for (algorithm, counted) in report.counted.sorted(by: { $0.key < $1.key }) {
            let issued = report.issued[algorithm] ?? 0
            print("soak: \(algorithm): \(issued) issued; offloaded \(counted["offloaded"]!), handed back \(counted["completed"]!), inline \(counted["inline"]!), queue-full retries \(counted["retried"]!), in 8-lane calls \(counted["lanes"]!) (\(counted["lane_calls"]!) calls)")
        }
        print("soak: \(report.operations) operations in \(report.rounds) rounds (\(report.spuriousRounds) with spurious resumes), \(report.reshapes) pool reshapes, \(String(format: "%.0f", report.seconds)) s, \(Int(Double(report.operations) / max(report.seconds, 0.001))) ops/s")
        report.mismatches.forEach { print("soak: MISMATCH \($0)") }
        report.accountingErrors.forEach { print("soak: ACCOUNTING \($0)") }
        print("soak: \(report.mismatches.count) mismatches, \(report.accountingErrors.count) accounting errors")
        if !report.passed { throw ExitCode.failure }
    }
}

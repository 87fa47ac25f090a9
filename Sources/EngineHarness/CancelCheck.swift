import CLinux
import COpenSSL
import Foundation

/// Connections freed while their operation is on a worker: with
/// ASYNC_WAIT_CTX_free, and with SSL_free mid-handshake, in both wake modes.
/// Each freed eventfd's number goes at once to a new eventfd, as a busy
/// server's next accept() would take it; once the worker has handed every
/// operation back, none of them may have been written, no callback may have
/// come, and the engine must count each wake-up as withheld. Under ASan
/// (scripts/sanitize.sh) a write to freed memory fails the run as well.
///
/// The jobs of freed connections are never resumed and OpenSSL never frees
/// them, nor what they hold (a TLS job holds an ENGINE reference): run this
/// in a process of its own, such as `engine-loader check --only cancel`.
public enum CancelCheck {
    /// One worker this slow keeps every operation in flight until its owner is gone
    /// (and no caller computes its own, however deep the queue).
    public static let settings = [("THREADS", "1"), ("WORKER_DELAY_USEC", "300000"), ("CALLER_RUNS_DEPTH", "0")]

    public static func run(engine: LoadedEngine, connections: Int = 4) throws -> CheckReport {
        var report = CheckReport(section: "cancel")
        for (name, value) in settings { try engine.set(name, value) }
        let key = try RSAKeyPair(bits: 2048)
        let identity = try TLSIdentity(rsaBits: 2048)
        for mode in WakeMode.allCases {
            try abandon(engine, &report, "ASYNC_WAIT_CTX_free, \(mode.rawValue)", expected: connections) {
                let operations = (0..<connections).map { _ in RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key) }
                let batch = try AsyncBatch.start(RSAPrivateOperation.jobBodies(operations, on: key.engineKey).bodies, mode: mode)
                return (batch.abandonPending(), { batch.callbacks(within: 0.2) })
            }
            try abandon(engine, &report, "SSL_free mid-handshake, \(mode.rawValue)", expected: connections) {
                var options = TLSHandshakes.Options()
                options.connections = connections
                options.wake = mode
                options.groups = "X25519"
                let abandoned = try TLSHandshakes.abandonMidHandshake(identity: identity, options: options)
                return (abandoned.fds, { abandoned.callbacks(within: 0.2) })
            }
        }
        try engine.set("WORKER_DELAY_USEC", "0")
        let correct = SelfCheck.freshSignaturesAgreeing(key, count: 4)
        report.note(correct == 4, "afterwards \(correct)/4 signatures byte-equal with default OpenSSL")
        return report
    }

    /// `body` frees its connections mid-operation and returns their fds and
    /// a look for late callbacks.
    static func abandon(_ engine: LoadedEngine, _ report: inout CheckReport, _ label: String, expected: Int,
                        _ body: () throws -> (fds: [Int32], lateCallbacks: () -> [Int])) throws {
        let before = try engine.stats()
        let (freed, lateCallbacks) = try body()
        let reused = takeNumbers(freed)
        defer { reused.forEach { close($0) } }
        let settled = engine.waitUntilNothingInFlight()
        let written = reused.filter { fd in
            var count: UInt64 = 0
            return read(fd, &count, 8) != -1 || errno != EAGAIN
        }
        let callbacks = lateCallbacks()
        let after = try engine.stats()
        let withheld = (after.header["wakeups_withheld"] ?? 0) - (before.header["wakeups_withheld"] ?? 0)
        let abandoned = (after.header["jobs_abandoned"] ?? 0) - (before.header["jobs_abandoned"] ?? 0)
        let held = (after.header["records_alive"] ?? 0) - (before.header["records_alive"] ?? 0)
        let ok = freed.count == expected && Set(reused) == Set(freed) && settled && written.isEmpty
            && callbacks.isEmpty && withheld == expected && abandoned == expected && held == expected
        report.note(ok, "\(label): \(freed.count) connections freed with operations in flight, "
            + "\(reused.count) of their fd numbers reused at once, \(written.count) written to, "
            + "\(callbacks.count) late callbacks, \(withheld) wake-ups withheld, \(abandoned) jobs counted "
            + "abandoned, holding \(held) records\(settled ? "" : ", OPERATIONS LOST")")
    }

    /// New eventfds until each of `numbers` is one of them; the others are closed.
    static func takeNumbers(_ numbers: [Int32]) -> [Int32] {
        var taken: [Int32] = [], spare: [Int32] = []
        while Set(taken) != Set(numbers) && taken.count + spare.count < 4096 {
            let fd = eventfd(0, Int32(EFD_NONBLOCK))
            guard fd >= 0 else { break }
            if numbers.contains(fd) { taken.append(fd) } else { spare.append(fd) }
        }
        spare.forEach { close($0) }
        return taken
    }
}

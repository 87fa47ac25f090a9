import CEngineShim
import Synchronization

/// Per-algorithm counters, updated lock-free from application and worker threads.
final class Statistics: Sendable {
    final class Counters: Sendable {
        let offloaded = Atomic<Int>(0)
        /// Handed back by a worker (woken, or withheld): offloaded minus completed are in flight.
        let completed = Atomic<Int>(0)
        let inline = Atomic<Int>(0)
        let retried = Atomic<Int>(0)
        let failed = Atomic<Int>(0)
        /// Computed in multi-buffer calls, and those calls: lanes / calls is the average fill.
        let lanes = Atomic<Int>(0)
        let laneCalls = Atomic<Int>(0)
        /// Offloaded operations, recently: from submit to a worker's start, and to the owner's wake-up.
        let queueLatency = LatencyHistogram()
        let wakeLatency = LatencyHistogram()
    }

    static let algorithmNames: [String] = (0..<Int(SA_ALG_COUNT.rawValue)).map { index in
        switch sa_algorithm(UInt32(index)) {
        case SA_ALG_RSA_PRIVATE_ENCRYPT: "rsa_private_encrypt"
        case SA_ALG_RSA_PRIVATE_DECRYPT: "rsa_private_decrypt"
        case SA_ALG_EC_KEYGEN: "ec_keygen"
        case SA_ALG_ECDH_DERIVE: "ecdh_derive"
        case SA_ALG_ECDSA_SIGN: "ecdsa_sign"
        case SA_ALG_ECDSA_SIGN_SETUP: "ecdsa_sign_setup"
        case SA_ALG_X25519_KEYGEN: "x25519_keygen"
        case SA_ALG_X25519_DERIVE: "x25519_derive"
        case SA_ALG_X448_KEYGEN: "x448_keygen"
        case SA_ALG_X448_DERIVE: "x448_derive"
        case SA_ALG_SIGN_STEP: "sign_step"
        default: "algorithm_\(index)"
        }
    }

    private let counters: [Counters] = Statistics.algorithmNames.map { _ in Counters() }
    /// Deepest the running pool's queue has been (the last pool's, once stopped).
    let queueHighWater = Atomic<Int>(0)
    /// Finished operations whose connection the application had freed: not woken.
    let wakeupsWithheld = Atomic<Int>(0)
    /// Operation records not yet freed; at rest, one per abandoned job.
    let recordsAlive = Atomic<Int>(0)
    /// Jobs whose wait ctx the application freed while they waited: never resumed.
    let jobsAbandoned = Atomic<Int>(0)
    /// Jobs for which no eventfd could be made: computed on the calling thread.
    let waitFDsRefused = Atomic<Int>(0)
    /// Operations their submitter computed because every worker was busy and the queue deep (CALLER_RUNS_DEPTH).
    let callerRan = Atomic<Int>(0)
    /// A key store's: waits ended by its deadline, and calls that returned after it.
    let deadlinesMissed = Atomic<Int>(0)
    let lateResults = Atomic<Int>(0)

    func counters(for algorithm: sa_algorithm) -> Counters {
        counters[Int(algorithm.rawValue)]
    }

    /// Offloaded and not yet handed back by a worker, over all algorithms.
    var inFlight: Int {
        counters.reduce(0) { $0 + $1.offloaded.load(ordering: .relaxed) - $1.completed.load(ordering: .acquiring) }
    }

    func noteQueueDepth(_ depth: Int) {
        var seen = queueHighWater.load(ordering: .relaxed)
        while depth > seen {
            let (exchanged, original) = queueHighWater.compareExchange(
                expected: seen, desired: depth, ordering: .relaxed)
            if exchanged { return }
            seen = original
        }
    }

    /// One header line, then one line per algorithm: `name key=value ...`.
    func report(header: String) -> String {
        header + " queue_high_water=\(queueHighWater.load(ordering: .relaxed))"
            + " wakeups_withheld=\(wakeupsWithheld.load(ordering: .relaxed))"
            + " records_alive=\(recordsAlive.load(ordering: .relaxed))"
            + " jobs_abandoned=\(jobsAbandoned.load(ordering: .relaxed))"
            + " wait_fds_refused=\(waitFDsRefused.load(ordering: .relaxed))"
            + " caller_ran=\(callerRan.load(ordering: .relaxed))\n"
            + algorithmLines()
    }

    /// One line per algorithm, its name prefixed: `PREFIXname key=value ...`.
    func algorithmLines(prefix: String = "") -> String {
        var text = ""
        let now = monotonicNanoseconds()
        for (name, counter) in zip(Self.algorithmNames, counters) {
            text += "\(prefix)\(name) offloaded=\(counter.offloaded.load(ordering: .relaxed))"
                + " completed=\(counter.completed.load(ordering: .acquiring))"
                + " inline=\(counter.inline.load(ordering: .relaxed))"
                + " retried=\(counter.retried.load(ordering: .relaxed))"
                + " failed=\(counter.failed.load(ordering: .relaxed))"
                + " lanes=\(counter.lanes.load(ordering: .relaxed))"
                + " lane_calls=\(counter.laneCalls.load(ordering: .relaxed))"
                + Self.percentiles("queue", counter.queueLatency, now) + Self.percentiles("wake", counter.wakeLatency, now) + "\n"
        }
        return text
    }

    /// ` NAME_p50_us=… NAME_p99_us=… NAME_p999_us=…` over the histogram's window (0: none in it).
    static func percentiles(_ name: String, _ histogram: LatencyHistogram, _ now: Int) -> String {
        let snapshot = histogram.snapshot(now: now)
        return [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)].map { label, fraction in
            " \(name)_\(label)_us=\(LatencyHistogram.percentile(fraction, of: snapshot))"
        }.joined()
    }

    /// A worker starts OPERATION: its time in the queue.
    func noteStart(_ operation: UnsafeMutablePointer<sa_operation>, now: Int) {
        guard operation.pointee.submitted_ns > 0 else { return }
        counters(for: operation.pointee.algorithm).queueLatency.record(
            nanoseconds: now - Int(operation.pointee.submitted_ns), now: now)
    }

    /// OPERATION's owner is woken: its whole time on the pool.
    func noteWake(_ operation: UnsafeMutablePointer<sa_operation>, now: Int) {
        guard operation.pointee.submitted_ns > 0 else { return }
        counters(for: operation.pointee.algorithm).wakeLatency.record(
            nanoseconds: now - Int(operation.pointee.submitted_ns), now: now)
    }
}

extension Atomic where Value == Int {
    func increment() { wrappingAdd(1, ordering: .relaxed) }
}

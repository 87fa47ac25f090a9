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

    func counters(for algorithm: sa_algorithm) -> Counters {
        counters[Int(algorithm.rawValue)]
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
        var text = header + " queue_high_water=\(queueHighWater.load(ordering: .relaxed))"
            + " wakeups_withheld=\(wakeupsWithheld.load(ordering: .relaxed))"
            + " records_alive=\(recordsAlive.load(ordering: .relaxed))"
            + " jobs_abandoned=\(jobsAbandoned.load(ordering: .relaxed))"
            + " wait_fds_refused=\(waitFDsRefused.load(ordering: .relaxed))\n"
        for (name, counter) in zip(Self.algorithmNames, counters) {
            text += "\(name) offloaded=\(counter.offloaded.load(ordering: .relaxed))"
                + " completed=\(counter.completed.load(ordering: .acquiring))"
                + " inline=\(counter.inline.load(ordering: .relaxed))"
                + " retried=\(counter.retried.load(ordering: .relaxed))"
                + " failed=\(counter.failed.load(ordering: .relaxed))"
                + " lanes=\(counter.lanes.load(ordering: .relaxed))"
                + " lane_calls=\(counter.laneCalls.load(ordering: .relaxed))\n"
        }
        return text
    }
}

extension Atomic where Value == Int {
    func increment() { wrappingAdd(1, ordering: .relaxed) }
}

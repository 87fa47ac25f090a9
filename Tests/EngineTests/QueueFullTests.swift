import COpenSSL
import EngineHarness
import XCTest

/// A full queue tells the application ASYNC_STATUS_EAGAIN and wakes it at once;
/// the operation is retried on resume, never failed and never lost.
class QueueFullTests: EngineTestCase {
    var queueDepth: Int { 1 }
    override var engineSettings: [(String, String)] { [("THREADS", "1"), ("QUEUE_DEPTH", "\(queueDepth)")] }

    /// The counters' changes over the run; the retries are returned with the outcome.
    var lastCounters: (before: EngineStats, after: EngineStats)?

    func runFullQueue(mode: WakeMode) throws -> (AsyncBatch.Outcome, Int) {
        let (outcome, counters) = try runSignatureJobs(24, padding: RSA_NO_PADDING, mode: mode)
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 24,
                       "every operation reaches a worker exactly once")
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "failed"), 0)
        XCTAssertLessThanOrEqual(counters.after.header["queue_high_water"] ?? 99, queueDepth)
        lastCounters = counters
        return (outcome, delta(counters, "rsa_private_encrypt", "retried"))
    }

    func testWaitFDJobsRetryWhenQueueIsFull() throws {
        let (_, retried) = try runFullQueue(mode: .waitFD)
        XCTAssertGreaterThan(retried, 0, "24 jobs on a small queue must have met it full")
    }

    func testCallbackJobsSeeEagainStatusWhenQueueIsFull() throws {
        let (outcome, retried) = try runFullQueue(mode: .callback)
        XCTAssertGreaterThan(retried, 0)
        XCTAssertGreaterThan(outcome.eagainStatuses, 0,
                             "the callback must have been called with ASYNC_STATUS_EAGAIN set")
    }
}

/// A single, deliberately slow worker (as a hardware accelerator would be)
/// behind queues of every small depth: every result stays correct and every
/// operation reaches the worker exactly once.
final class SlowWorkerTests: EngineTestCase {
    override var engineSettings: [(String, String)] { [("THREADS", "1"), ("WORKER_DELAY_USEC", "300")] }

    func testEveryQueueDepthWithASlowWorker() throws {
        let key = try RSAKeyPair(bits: 1024)
        var retriedAtDepthOne = 0
        for depth in 1...8 {
            try engine.set("QUEUE_DEPTH", String(depth))
            for mode in WakeMode.allCases {
                let operations = (0..<24).map { index in
                    RSAPrivateOperation.random(index % 2 == 0 ? .encrypt : .decrypt,
                                               padding: index % 2 == 0 ? RSA_PKCS1_PADDING : RSA_PKCS1_OAEP_PADDING, key: key)
                }
                var results: [(result: Int32, output: [UInt8])] = []
                let counters = try countersDelta {
                    results = try SelfCheck.run(operations, on: key, mode: mode == .waitFD ? .waitFD : .callback)
                }
                for (operation, got) in zip(operations, results) {
                    let expected = operation.perform(on: key.softwareKey)
                    XCTAssertEqual(got.result, expected.result, "depth \(depth) \(mode.rawValue) \(operation)")
                    XCTAssertEqual(got.output, expected.output, "depth \(depth) \(mode.rawValue) \(operation)")
                }
                let offloaded = delta(counters, "rsa_private_encrypt", "offloaded") + delta(counters, "rsa_private_decrypt", "offloaded")
                XCTAssertEqual(offloaded, operations.count, "depth \(depth) \(mode.rawValue): each exactly once")
                if depth == 1 {
                    retriedAtDepthOne += delta(counters, "rsa_private_encrypt", "retried") + delta(counters, "rsa_private_decrypt", "retried")
                }
                XCTAssertLessThanOrEqual(counters.after.header["queue_high_water"] ?? 99, depth)
            }
        }
        XCTAssertGreaterThan(retriedAtDepthOne, 0, "a one-slot queue before a slow worker must have been full")
    }
}

/// The histograms' window: two halves of 5 s (SwiftEngine's LatencyHistogram).
enum LatencyWindow { static let seconds = 10 }

/// The pool's own latency counters: one worker 20 ms per operation, 8 signatures at once in
/// jobs. Each waits for the worker at least 20 ms, and the later ones queue behind the
/// earlier (the last about 140 ms): the percentiles over the recent window say so.
final class PoolLatencyCounterTests: EngineTestCase {
    override var engineSettings: [(String, String)] { [("THREADS", "1"), ("WORKER_DELAY_USEC", "20000")] }

    func testQueueAndWakeLatenciesPerAlgorithm() throws {
        // The window holds what this process's earlier tests offloaded: wait until it is empty.
        let giveUp = Date().addingTimeInterval(2.5 * Double(LatencyWindow.seconds))
        while try engine.stats().algorithms["rsa_private_encrypt"]?["wake_p50_us"] != 0 && Date() < giveUp {
            usleep(200_000)
        }
        let key = try RSAKeyPair(bits: 1024)
        let operations = (0..<8).map { _ in RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key) }
        let counters = try countersDelta { _ = try SelfCheck.run(operations, on: key, mode: .waitFD) }
        let line = counters.after.algorithms["rsa_private_encrypt"] ?? [:]
        XCTAssertGreaterThanOrEqual(line["wake_p50_us"] ?? 0, 20_000, "each waited for the 20 ms worker: \(line)")
        XCTAssertGreaterThanOrEqual(line["queue_p99_us"] ?? 0, 65_536, "the last ones queued behind the rest: \(line)")
        XCTAssertGreaterThanOrEqual(line["wake_p99_us"] ?? 0, line["queue_p99_us"] ?? 0, "a wake-up comes after the start")
        XCTAssertLessThan(line["queue_p50_us"] ?? .max, 1 << 23, "and within the window's bounds")
    }
}

/// CALLER_RUNS_DEPTH: with the one (slow) worker busy and the queue that deep (MULTIBUFFER=0:
/// as on a CPU without lanes),
/// a job computes its operation itself, counted inline and as caller_ran;
/// every result stays byte-equal and every operation is counted once.
class CallerRunsCase: EngineTestCase {
    override var engineSettings: [(String, String)] { [("THREADS", "1"), ("WORKER_DELAY_USEC", "5000"), ("MULTIBUFFER", "0")] }

    func checkCallersCompute() throws {
        for mode in WakeMode.allCases {
            // A sleeping worker takes a while to wake (on a busy host or under the sanitizers
            // longer than 64 submissions take): a batch in which it never got busy is run again.
            var ran = 0
            for _ in 0..<3 where ran == 0 {
                let (_, counters) = try runSignatureJobs(256, padding: RSA_PKCS1_PADDING, mode: mode)
                ran = (counters.after.header["caller_ran"] ?? 0) - (counters.before.header["caller_ran"] ?? 0)
                let inline = delta(counters, "rsa_private_encrypt", "inline")
                let offloaded = delta(counters, "rsa_private_encrypt", "offloaded")
                XCTAssertEqual(inline, ran, "\(mode): what the callers ran is counted inline")
                XCTAssertEqual(offloaded + inline, 256, "\(mode): each operation once")
            }
            XCTAssertGreaterThan(ran, 0, "\(mode): 256 jobs behind a 5 ms worker find the queue deep")
        }
    }
}

final class CallerRunsTests: CallerRunsCase {
    override var callerRunsDepth: String? { "2" }

    func testJobsComputeThemselvesWhenTheQueueIsDeep() throws { try checkCallersCompute() }
}

/// Without CALLER_RUNS_DEPTH set, callers compute at saturation (four queued per worker, here 4).
final class CallerRunsByDefaultTests: CallerRunsCase {
    override var callerRunsDepth: String? { nil }

    func testByDefaultJobsComputeThemselvesWhenTheQueueIsDeep() throws { try checkCallersCompute() }
}

/// CALLER_RUNS_DEPTH=0: however deep the queue, every operation goes to the worker.
final class CallerNeverRunsTests: CallerRunsCase {
    override var callerRunsDepth: String? { "0" }

    func testEveryOperationIsOffloaded() throws {
        for mode in WakeMode.allCases {
            let (_, counters) = try runSignatureJobs(64, padding: RSA_PKCS1_PADDING, mode: mode)
            XCTAssertEqual((counters.after.header["caller_ran"] ?? 0) - (counters.before.header["caller_ran"] ?? 0), 0, "\(mode)")
            XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 64, "\(mode)")
            XCTAssertEqual(delta(counters, "rsa_private_encrypt", "inline"), 0, "\(mode)")
        }
    }
}

extension EngineTestCase {
    /// `count` RSA-2048 private encryptions, each in its own job, every result
    /// checked byte-equal with OpenSSL's own; the outcome and the counters' change.
    func runSignatureJobs(_ count: Int, padding: Int32, mode: WakeMode,
                          file: StaticString = #filePath, line: UInt = #line)
        throws -> (AsyncBatch.Outcome, (before: EngineStats, after: EngineStats)) {
        let key = try RSAKeyPair(bits: 2048)
        let operations = (0..<count).map { _ in RSAPrivateOperation.random(.encrypt, padding: padding, key: key) }
        let (bodies, outputs) = RSAPrivateOperation.jobBodies(operations, on: key.engineKey)
        var outcome: AsyncBatch.Outcome!
        let counters = try countersDelta { outcome = try AsyncBatch.run(bodies, mode: mode) }
        for (index, operation) in operations.enumerated() {
            let expected = operation.perform(on: key.softwareKey)
            XCTAssertEqual(outcome.results[index], expected.result, "\(mode)", file: file, line: line)
            XCTAssertEqual(outputs[index].output, expected.output, "\(mode)", file: file, line: line)
        }
        return (outcome, counters)
    }
}

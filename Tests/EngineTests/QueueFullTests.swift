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
        let key = try RSAKeyPair(bits: 2048)
        let operations = (0..<24).map { _ in RSAPrivateOperation.random(.encrypt, padding: RSA_NO_PADDING, key: key) }
        let (bodies, outputs) = RSAPrivateOperation.jobBodies(operations, on: key.engineKey)
        var outcome: AsyncBatch.Outcome!
        let counters = try countersDelta { outcome = try AsyncBatch.run(bodies, mode: mode) }
        for (index, operation) in operations.enumerated() {
            let expected = operation.perform(on: key.softwareKey)
            XCTAssertEqual(outcome.results[index], expected.result)
            XCTAssertEqual(outputs[index].output, expected.output)
        }
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), operations.count,
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

import COpenSSL
import EngineHarness
import XCTest

/// A full queue tells the application ASYNC_STATUS_EAGAIN and wakes it at once;
/// the operation is retried on resume, never failed and never lost.
final class QueueFullTests: EngineTestCase {
    override var engineSettings: [(String, String)] { [("THREADS", "1"), ("QUEUE_DEPTH", "1")] }

    func runFullQueue(mode: WakeMode) throws -> (AsyncBatch.Outcome, Int) {
        let key = try RSAKeyPair(bits: 2048)
        let operations = (0..<24).map { _ in RSAPrivateOperation.random(.encrypt, padding: RSA_NO_PADDING, key: key) }
        let outputs = operations.map { _ in Box() }
        let bodies: [() -> Int32] = zip(operations, outputs).map { operation, box in
            let rsa = key.engineKey
            return { let (result, output) = operation.perform(on: rsa); box.output = output; return result }
        }
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
        XCTAssertLessThanOrEqual(counters.after.header["queue_high_water"] ?? 99, 1)
        return (outcome, delta(counters, "rsa_private_encrypt", "retried"))
    }

    func testWaitFDJobsRetryWhenQueueIsFull() throws {
        let (_, retried) = try runFullQueue(mode: .waitFD)
        XCTAssertGreaterThan(retried, 0, "24 jobs on a one-slot queue must have met it full")
    }

    func testCallbackJobsSeeEagainStatusWhenQueueIsFull() throws {
        let (outcome, retried) = try runFullQueue(mode: .callback)
        XCTAssertGreaterThan(retried, 0)
        XCTAssertGreaterThan(outcome.eagainStatuses, 0,
                             "the callback must have been called with ASYNC_STATUS_EAGAIN set")
    }
}

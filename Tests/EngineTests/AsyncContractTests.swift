import COpenSSL
import EngineHarness
import Foundation
import XCTest

/// The engine's side of SSL_set_async_callback(3): wait fds, callbacks,
/// spurious resumes, blocked pauses, and sync offload.
final class AsyncContractTests: EngineTestCase {
    func signs(_ count: Int, key: RSAKeyPair, padding: Int32 = RSA_PKCS1_PADDING) -> [RSAPrivateOperation] {
        (0..<count).map { _ in RSAPrivateOperation.random(.encrypt, padding: padding, key: key) }
    }

    func assertMatchesSoftware(_ operations: [RSAPrivateOperation], _ results: [(result: Int32, output: [UInt8])],
                               key: RSAKeyPair, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(operations.count, results.count, file: file, line: line)
        for (operation, got) in zip(operations, results) {
            let expected = operation.perform(on: key.softwareKey)
            XCTAssertEqual(got.result, expected.result, "\(operation)", file: file, line: line)
            XCTAssertEqual(got.output, expected.output, "\(operation)", file: file, line: line)
        }
    }

    func testSixtyFourConcurrentJobsOnWaitFDs() throws {
        let key = try RSAKeyPair(bits: 2048)
        let operations = signs(64, key: key)
        var results: [(result: Int32, output: [UInt8])] = []
        let counters = try countersDelta { results = try SelfCheck.run(operations, on: key, mode: .waitFD) }
        assertMatchesSoftware(operations, results, key: key)
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 64)
        XCTAssertGreaterThan(counters.after.header["queue_high_water"] ?? 0, 1,
                             "64 paused jobs must have queued more than one operation at once")
    }

    func testSixtyFourConcurrentJobsWithCallbacks() throws {
        let key = try RSAKeyPair(bits: 2048)
        let operations = signs(64, key: key)
        var results: [(result: Int32, output: [UInt8])] = []
        let counters = try countersDelta { results = try SelfCheck.run(operations, on: key, mode: .callback) }
        assertMatchesSoftware(operations, results, key: key)
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 64)
    }

    /// One eventfd per wait ctx, registered once and reused; closed with the ctx.
    func testOneReusedWaitFDPerWaitContext() throws {
        // A slowed worker: a quick signature can be done before its job comes to pause,
        // and then no fd is left to look at (the entry leaves again unannounced).
        try engine.set("WORKER_DELAY_USEC", "2000")
        let key = try RSAKeyPair(bits: 1024)
        let waitContext = ASYNC_WAIT_CTX_new()!
        var seen: [Int32] = []
        for _ in 0..<3 {
            var job: OpaquePointer?
            var returned: Int32 = 0
            var rsa = key.engineKey
            var status = ASYNC_start_job(&job, waitContext, &returned, { argument in
                let rsa = argument!.load(as: OpaquePointer.self)
                var digest = [UInt8](repeating: 7, count: 36)
                var signature = [UInt8](repeating: 0, count: Int(RSA_size(rsa)))
                return RSA_private_encrypt(36, &digest, &signature, rsa, RSA_PKCS1_PADDING)
            }, &rsa, MemoryLayout<OpaquePointer>.size)
            while status == ASYNC_PAUSE {
                var count = 0
                ASYNC_WAIT_CTX_get_all_fds(waitContext, nil, &count)
                XCTAssertEqual(count, 1, "exactly one wait fd per wait ctx")
                var fd: Int32 = -1
                ASYNC_WAIT_CTX_get_all_fds(waitContext, &fd, &count)
                seen.append(fd)
                var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                XCTAssertEqual(poll(&descriptor, 1, 30_000), 1, "the wait fd must become readable")
                status = ASYNC_start_job(&job, waitContext, &returned, nil, nil, 0)
            }
            XCTAssertEqual(status, ASYNC_FINISH)
            XCTAssertEqual(returned, RSA_size(key.engineKey))
        }
        XCTAssertEqual(Set(seen).count, 1, "the same eventfd is reused: \(seen)")
        guard let fd = seen.first else { return ASYNC_WAIT_CTX_free(waitContext) }
        XCTAssertTrue(isEventFD(fd), "while its wait ctx lives, the fd is our eventfd")
        ASYNC_WAIT_CTX_free(waitContext)
        // The worker may still hold the eventfd for a moment (it wakes the job, then lets go:
        // that is what keeps a late wake-up off a reused fd). The number may be reused at once
        // (the stats publisher opens files), but not by an eventfd of ours.
        for _ in 0..<100 where isEventFD(fd) { usleep(10_000) }
        XCTAssertFalse(isEventFD(fd), "freeing the wait ctx closes its eventfd")
    }

    func testSpuriousResumesPauseAgain() throws {
        try engine.set("THREADS", "1")
        let key = try RSAKeyPair(bits: 4096)
        let operations = signs(8, key: key)
        for mode in WakeMode.allCases {
            let (bodies, outputs) = RSAPrivateOperation.jobBodies(operations, on: key.engineKey)
            let outcome = try AsyncBatch.run(bodies, mode: mode, spurious: true)
            XCTAssertGreaterThan(outcome.spuriousResumes, 0, "one worker cannot have finished 8 4096-bit signs at once")
            assertMatchesSoftware(operations, zip(outcome.results, outputs).map { ($0, $1.output) }, key: key)
        }
    }

    /// With ASYNC_block_pause the engine cannot pause; the operation must still complete.
    func testBlockedPauseStillCompletes() throws {
        let key = try RSAKeyPair(bits: 2048)
        let operation = RSAPrivateOperation.random(.encrypt, padding: RSA_PKCS1_PADDING, key: key)
        let box = Box()
        let rsa = key.engineKey
        let outcome = try AsyncBatch.run([{
            ASYNC_block_pause()
            let (result, output) = operation.perform(on: rsa)
            ASYNC_unblock_pause()
            box.output = output
            return result
        }], mode: .waitFD)
        assertMatchesSoftware([operation], [(outcome.results[0], box.output)], key: key)
    }

    func testSyncOffloadRunsOnThePool() throws {
        try engine.set("SYNC_OFFLOAD", "1")
        let key = try RSAKeyPair(bits: 2048)
        let operations = signs(4, key: key) + (0..<4).map { _ in
            RSAPrivateOperation.random(.decrypt, padding: RSA_PKCS1_OAEP_PADDING, key: key)
        }
        var results: [(result: Int32, output: [UInt8])] = []
        let counters = try countersDelta { results = try SelfCheck.run(operations, on: key, mode: .sync) }
        assertMatchesSoftware(operations, results, key: key)
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "offloaded"), 4)
        XCTAssertEqual(delta(counters, "rsa_private_decrypt", "offloaded"), 4)
        XCTAssertEqual(delta(counters, "rsa_private_encrypt", "inline"), 0)
    }

    /// Sync offload from many threads at once with a one-slot queue: callers
    /// wait for room, none fails.
    func testSyncOffloadFromManyThreadsWithTinyQueue() throws {
        try engine.set("SYNC_OFFLOAD", "1")
        try engine.set("QUEUE_DEPTH", "1")
        try engine.set("THREADS", "1")
        let key = try RSAKeyPair(bits: 1024)
        let operations = signs(32, key: key)
        let results = Locked<[Int: (Int32, [UInt8])]>([:])
        DispatchQueue.concurrentPerform(iterations: operations.count) { index in
            let got = operations[index].perform(on: key.engineKey)
            results.withLock { $0[index] = got }
        }
        let ordered = results.withLock { table in (0..<operations.count).map { table[$0]! } }
        assertMatchesSoftware(operations, ordered.map { ($0.0, $0.1) }, key: key)
    }
}

final class Box: @unchecked Sendable {
    var output: [UInt8] = []
    var text: [String] = []
}

/// Whether fd is open on an eventfd, as /proc shows it.
func isEventFD(_ fd: Int32) -> Bool {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) == "anon_inode:[eventfd]"
}


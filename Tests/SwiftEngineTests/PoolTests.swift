import EngineHarness
import Synchronization
import XCTest
@testable import SwiftEngine

/// The pool on its own, with plain work items: no OpenSSL involved.
final class WorkerPoolTests: XCTestCase {
    final class Recorder: @unchecked Sendable {
        let seen = Locked<[Int]>([])
        let gate = Locked<Bool>(true)
    }

    func item(_ value: Int) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: value)! }

    func testRunsEveryItemExactlyOnceAndShutdownDrains() {
        let recorder = Recorder()
        let pool = WorkerPool(threadCount: 3, queueCapacity: 10_000, notifyBatch: 4,
                              execute: { _ in }, notify: { raw in
            recorder.seen.withLock { $0.append(Int(bitPattern: raw)) }
        })
        XCTAssertTrue(pool.start())
        for value in 1...5_000 { XCTAssertEqual(pool.trySubmit(item(value)) == .full, false) }
        pool.shutdown()
        XCTAssertEqual(recorder.seen.withLock { $0.sorted() }, Array(1...5_000))
        XCTAssertEqual(pool.trySubmit(item(1)), .stopped, "a stopped pool takes nothing")
    }

    func testFullQueueIsReportedNotBlocked() {
        let release = Atomic<Bool>(false)
        let pool = WorkerPool(threadCount: 1, queueCapacity: 2, execute: { _ in
            while !release.load(ordering: .acquiring) { usleep(1_000) }
        }, notify: { _ in })
        XCTAssertTrue(pool.start())
        var outcomes: [WorkerPool.SubmitOutcome] = []
        for value in 1...6 { outcomes.append(pool.trySubmit(item(value))) }
        XCTAssertTrue(outcomes.contains(.full), "\(outcomes)")
        XCTAssertLessThanOrEqual(outcomes.filter { $0 != .full }.count, 3, "one running and two queued at most")
        release.store(true, ordering: .releasing)
        pool.shutdown()
    }

    /// With work queued and the application still submitting, completions
    /// are told in batches, never more than notifyBatch held back, and none
    /// lost; alone, each is told at once.
    func testNotificationsAreBatchedOnlyWhileWorkIsQueued() {
        let executed = Atomic<Int>(0)
        let notified = Atomic<Int>(0)
        let maxHeldBack = Atomic<Int>(0)
        let pool = WorkerPool(threadCount: 1, queueCapacity: 100, notifyBatch: 3,
                              notifyDelayMicroseconds: 1_000_000, execute: { _ in
            let held = executed.wrappingAdd(1, ordering: .relaxed).newValue - notified.load(ordering: .relaxed)
            if held > maxHeldBack.load(ordering: .relaxed) { maxHeldBack.store(held, ordering: .relaxed) }
            usleep(2_000)
        }, notify: { _ in notified.wrappingAdd(1, ordering: .relaxed) })
        XCTAssertTrue(pool.start())
        // A busy application: a submission every 500 µs while each item takes 2 ms.
        for value in 1...30 {
            _ = pool.trySubmit(item(value))
            usleep(500)
        }
        for _ in 0..<1000 where notified.load(ordering: .relaxed) < 30 { usleep(1_000) }
        XCTAssertEqual(notified.load(ordering: .relaxed), 30)
        XCTAssertGreaterThan(maxHeldBack.load(ordering: .relaxed), 1, "a backlog must batch")
        XCTAssertLessThanOrEqual(maxHeldBack.load(ordering: .relaxed), 3 + 1)

        _ = pool.trySubmit(item(31))
        for _ in 0..<1000 where notified.load(ordering: .relaxed) < 31 { usleep(1_000) }
        XCTAssertEqual(notified.load(ordering: .relaxed), 31, "a lone operation is told at once")
        pool.shutdown()
    }

    /// An application that submitted nothing while a piece of work ran is
    /// waiting for it (in its poll): that result is told before the worker
    /// starts on the next, however much is queued and however long the delay.
    func testAWaitingApplicationIsToldAtOnce() {
        let gate = Atomic<Bool>(false)
        let seen = events(of: 1...8, notifyDelayMicroseconds: 1_000_000, whileSubmitted: {
            gate.store(true, ordering: .releasing)   // every submission made: from item 2 on, none arrives
        }) { _ in
            while !gate.load(ordering: .acquiring) { usleep(100) }
            usleep(1_000)
        }
        assertEachToldBeforeTheNextBegins(2...7, in: seen)
    }

    /// Where work slower than the notify delay runs, no result is held for
    /// the next piece of work, even while the application keeps submitting:
    /// each is told before the worker starts on the next, so a backlog adds
    /// no further operation's time to anyone's wait. The slow items (odd)
    /// alternate with instant ones (even), as RSA-4096 signatures do with
    /// X25519 in a TLS server's queue; instant fillers (100 and up) keep coming.
    func testResultsSlowerThanTheDelayAreToldBeforeTheNextBegins() {
        let seen = events(of: 1...6, notifyDelayMicroseconds: 1_000, fillers: 60) { raw in
            if Int(bitPattern: raw) % 2 == 1 { usleep(5_000) }
        }
        assertEachToldBeforeTheNextBegins(1...5, in: seen)
    }

    /// "start N" and "told N" as a one-worker pool (notifyBatch 64) runs
    /// `values`; `whileSubmitted` runs once they are queued, then `fillers`
    /// more items (100, 101, ...) come one every 500 µs: a busy application.
    private func events(of values: ClosedRange<Int>, notifyDelayMicroseconds: Int, fillers: Int = 0,
                        whileSubmitted: () -> Void = {},
                        execute: @escaping @Sendable (UnsafeMutableRawPointer) -> Void) -> [String] {
        let events = Locked<[String]>([])
        let pool = WorkerPool(threadCount: 1, queueCapacity: 200, notifyBatch: 64,
                              notifyDelayMicroseconds: notifyDelayMicroseconds, execute: { raw in
            events.withLock { $0.append("start \(Int(bitPattern: raw))") }
            execute(raw)
        }, notify: { raw in events.withLock { $0.append("told \(Int(bitPattern: raw))") } })
        XCTAssertTrue(pool.start())
        for value in values { XCTAssertNotEqual(pool.trySubmit(item(value)), .full) }
        whileSubmitted()
        for filler in 0..<fillers {
            XCTAssertNotEqual(pool.trySubmit(item(100 + filler)), .full)
            usleep(500)
        }
        let expected = 2 * (values.count + fillers)
        for _ in 0..<2000 where events.withLock({ $0.count }) < expected { usleep(1_000) }
        pool.shutdown()
        let seen = events.withLock { $0 }
        XCTAssertEqual(seen.count, expected, "\(seen)")
        return seen
    }

    private func assertEachToldBeforeTheNextBegins(_ values: ClosedRange<Int>, in seen: [String],
                                                   file: StaticString = #filePath, line: UInt = #line) {
        for value in values {
            let told = seen.firstIndex(of: "told \(value)"), next = seen.firstIndex(of: "start \(value + 1)")
            XCTAssertLessThan(told ?? .max, next ?? .min, "\(value) told before \(value + 1) began: \(seen)",
                              file: file, line: line)
        }
    }

    /// Fork preparation waits for running work to finish and holds the rest back.
    func testLockForForkWaitsUntilNoWorkerIsBusy() {
        let running = Atomic<Int>(0)
        let pool = WorkerPool(threadCount: 2, queueCapacity: 100, execute: { _ in
            running.wrappingAdd(1, ordering: .relaxed)
            usleep(5_000)
            running.wrappingSubtract(1, ordering: .relaxed)
        }, notify: { _ in })
        XCTAssertTrue(pool.start())
        for value in 1...20 { _ = pool.trySubmit(item(value)) }
        usleep(2_000)
        pool.lockForFork()
        XCTAssertEqual(running.load(ordering: .relaxed), 0, "no operation runs while a fork is prepared")
        usleep(10_000)
        XCTAssertEqual(running.load(ordering: .relaxed), 0, "and none starts")
        pool.unlockAfterFork()
        pool.shutdown()
    }

    func testSubmitWaitingForRoomWaitsThenQueues() {
        let done = Atomic<Int>(0)
        let pool = WorkerPool(threadCount: 1, queueCapacity: 1, execute: { _ in usleep(2_000) },
                              notify: { _ in done.wrappingAdd(1, ordering: .relaxed) })
        XCTAssertTrue(pool.start())
        for value in 1...20 {
            guard case .queued = pool.submitWaitingForRoom(item(value)) else { return XCTFail("not queued") }
        }
        pool.shutdown()
        XCTAssertEqual(done.load(ordering: .relaxed), 20)
    }

    func testShutdownFromAWorkerDoesNotDeadlock() {
        let finished = Atomic<Bool>(false)
        let holder = Locked<WorkerPool?>(nil)
        let pool = WorkerPool(threadCount: 2, queueCapacity: 4, execute: { _ in }, notify: { _ in
            holder.withLock { $0 }?.shutdown()
            finished.store(true, ordering: .releasing)
        })
        holder.withLock { $0 = pool }
        XCTAssertTrue(pool.start())
        _ = pool.trySubmit(item(1))
        for _ in 0..<500 where !finished.load(ordering: .acquiring) { usleep(2_000) }
        XCTAssertTrue(finished.load(ordering: .acquiring))
    }
}

final class ConfigurationTests: XCTestCase {
    func testValidAndInvalidSettings() {
        var configuration = Configuration()
        XCTAssertTrue(configuration.set("THREADS", to: 4))
        XCTAssertEqual(configuration.workerCount, 4)
        XCTAssertTrue(configuration.set("THREADS", to: 0))
        XCTAssertGreaterThanOrEqual(configuration.workerCount, 1, "0 means one per online CPU")
        XCTAssertFalse(configuration.set("THREADS", to: -1))
        XCTAssertFalse(configuration.set("QUEUE_DEPTH", to: 0))
        XCTAssertTrue(configuration.set("QUEUE_DEPTH", to: "64"))
        XCTAssertEqual(configuration.queueDepth, 64)
        XCTAssertFalse(configuration.set("SYNC_OFFLOAD", to: "yes"))
        XCTAssertTrue(configuration.set("SYNC_OFFLOAD", to: "1"))
        XCTAssertTrue(configuration.syncOffload)
        XCTAssertTrue(configuration.set("STATS_FILE", to: "/tmp/x"))
        XCTAssertEqual(configuration.statsFile, "/tmp/x")
        XCTAssertFalse(configuration.set("UNKNOWN", to: 1))
    }

    func testCallersRunAtFourQueuedPerWorkerUnlessSet() {
        var configuration = Configuration()
        XCTAssertTrue(configuration.set("THREADS", to: 3))
        XCTAssertEqual(configuration.effectiveCallerRunsDepth, 12, "by default every worker has its next ones waiting")
        XCTAssertTrue(configuration.set("CALLER_RUNS_DEPTH", to: 0))
        XCTAssertEqual(configuration.effectiveCallerRunsDepth, 0, "0: never")
        XCTAssertTrue(configuration.set("CALLER_RUNS_DEPTH", to: 5))
        XCTAssertTrue(configuration.set("THREADS", to: 1))
        XCTAssertEqual(configuration.effectiveCallerRunsDepth, 5)
    }
}

final class RingBufferTests: XCTestCase {
    func testFIFOAcrossWrapAround() {
        var ring = RingBuffer(capacity: 3)
        defer { ring.deallocate() }
        var popped: [Int] = []
        for value in 1...10 {
            ring.push(UnsafeMutableRawPointer(bitPattern: value)!)
            if ring.isFull || value % 2 == 0 { popped.append(Int(bitPattern: ring.pop()!)) }
        }
        while let item = ring.pop() { popped.append(Int(bitPattern: item)) }
        XCTAssertEqual(popped, Array(1...10))
        XCTAssertTrue(ring.isEmpty)
    }
}

/// Gathering like items for one multi-buffer call, with plain items whose
/// value modulo 10 is their key (0: never shares a call).
final class LaneGatheringTests: XCTestCase {
    func item(_ value: Int) -> UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: value)! }
    func value(_ item: UnsafeMutableRawPointer) -> Int { Int(bitPattern: item) }

    func testTakeMovesOnlyMatchesAndKeepsTheRestInOrder() {
        var queue = RingBuffer(capacity: 16)
        defer { queue.deallocate() }
        // Wrap around the ring first, so that taking crosses its end.
        for value in 100..<110 { queue.push(item(value)) }
        for _ in 0..<10 { _ = queue.pop() }
        for value in [11, 22, 31, 42, 51, 61, 72, 81] { queue.push(item(value)) }
        var taken: [UnsafeMutableRawPointer] = []
        queue.take(upTo: 3, ifAtLeast: 2, within: 16, into: &taken) { self.value($0) % 10 == 1 }
        XCTAssertEqual(taken.map(value), [11, 31, 51], "oldest first, at most the limit")
        var rest: [Int] = []
        while let next = queue.pop() { rest.append(value(next)) }
        XCTAssertEqual(rest, [22, 42, 61, 72, 81])
    }

    func testTakeLeavesTheQueueAloneBelowTheMinimumOrOutsideTheWindow() {
        var queue = RingBuffer(capacity: 8)
        defer { queue.deallocate() }
        for value in [12, 23, 34, 41, 51] { queue.push(item(value)) }
        var taken: [UnsafeMutableRawPointer] = []
        queue.take(upTo: 7, ifAtLeast: 3, within: 8, into: &taken) { self.value($0) % 10 == 1 }
        XCTAssertTrue(taken.isEmpty, "two matches, three wanted")
        queue.take(upTo: 7, ifAtLeast: 1, within: 3, into: &taken) { self.value($0) % 10 == 1 }
        XCTAssertTrue(taken.isEmpty, "the matches lie beyond the window")
        XCTAssertEqual(queue.count, 5)
    }

    /// One worker held on a first item while like and unlike items queue:
    /// the next take gathers only the like ones, up to the width, and only
    /// when there are enough; the others run one by one, each exactly once.
    func testWorkerGathersLikeItemsAboveTheMinimumFill() {
        let release = Atomic<Bool>(false)
        let calls = Locked<[[Int]]>([])
        let singles = Locked<[Int]>([])
        let lanes = WorkerPool.Lanes(width: 4, key: { Int(bitPattern: $0) % 10 },
                                     minimumFill: { $0 == 1 ? 3 : ($0 == 2 ? 5 : nil) },
                                     execute: { items in calls.withLock { $0.append(items.map { Int(bitPattern: $0) }) } })
        let pool = WorkerPool(threadCount: 1, queueCapacity: 64, lanes: lanes, execute: { raw in
            if Int(bitPattern: raw) == 1000 { while !release.load(ordering: .acquiring) { usleep(1_000) } }
            singles.withLock { $0.append(Int(bitPattern: raw)) }
        }, notify: { _ in })
        XCTAssertTrue(pool.start())
        XCTAssertEqual(pool.trySubmit(item(1000)), .queued(depth: 1))
        while pool.occupancy().busy == 0 { usleep(100) }
        // Key 1: six like items (width 4: a call of 4, then 2 below the minimum of 3);
        // key 2: two items, below its minimum of 5; key 3: never in lanes.
        for value in [11, 21, 12, 31, 13, 41, 22, 51, 61] { _ = pool.trySubmit(item(value)) }
        release.store(true, ordering: .releasing)
        pool.shutdown()
        XCTAssertEqual(calls.withLock { $0 }, [[11, 21, 31, 41]])
        XCTAssertEqual(singles.withLock { $0 }, [1000, 12, 13, 22, 51, 61])
    }
}

extension WorkerPoolTests {
    /// With every worker busy and CALLER_RUNS_DEPTH queued, an item no lane call
    /// takes is the caller's; one of a kind with lanes is still queued; below the
    /// depth, or with a worker free, everything is queued.
    func testCallerRunsOnlyWithEveryWorkerBusyAndTheQueueDeep() {
        let release = Atomic<Bool>(false)
        let lanes = WorkerPool.Lanes(width: 4, key: { Int(bitPattern: $0) % 10 },
                                     minimumFill: { $0 == 1 ? 2 : nil }, execute: { _ in })
        let pool = WorkerPool(threadCount: 2, queueCapacity: 64, callerRunsDepth: 2, lanes: lanes, execute: { _ in
            while !release.load(ordering: .acquiring) { usleep(1_000) }
        }, notify: { _ in })
        XCTAssertTrue(pool.start())
        XCTAssertEqual(pool.trySubmit(item(1002)), .queued(depth: 1))
        while pool.occupancy().busy < 1 { usleep(100) }
        XCTAssertEqual(pool.trySubmit(item(1003)), .queued(depth: 1), "a worker was free")
        while pool.occupancy().busy < 2 { usleep(100) }
        XCTAssertEqual(pool.trySubmit(item(1004)), .queued(depth: 1))
        XCTAssertEqual(pool.trySubmit(item(1005)), .queued(depth: 2), "below the depth")
        XCTAssertEqual(pool.trySubmit(item(1006)), .callerRuns)
        XCTAssertEqual(pool.trySubmit(item(1001)), .queued(depth: 3), "a kind with lanes waits for its call")
        XCTAssertEqual(pool.occupancy().queued, 3, "the caller's item was not queued")
        release.store(true, ordering: .releasing)
        pool.shutdown()
    }

    func testNoCallerRunsByDefault() {
        let release = Atomic<Bool>(false)
        let pool = WorkerPool(threadCount: 1, queueCapacity: 64, execute: { _ in
            while !release.load(ordering: .acquiring) { usleep(1_000) }
        }, notify: { _ in })
        XCTAssertTrue(pool.start())
        var outcomes: [WorkerPool.SubmitOutcome] = []
        for value in 1...20 { outcomes.append(pool.trySubmit(item(value))) }
        XCTAssertFalse(outcomes.contains(.callerRuns), "\(outcomes)")
        release.store(true, ordering: .releasing)
        pool.shutdown()
    }
}

/// The pool's latency histograms: buckets of three significant bits over a window of two halves.
final class LatencyHistogramTests: XCTestCase {
    let half = LatencyHistogram.halfNanoseconds

    func testPercentilesAreBucketBounds() {
        let histogram = LatencyHistogram()
        let now = 100 * half
        for _ in 0..<990 { histogram.record(nanoseconds: 10_000, now: now) }      // 10 µs: bucket [10, 11)
        for _ in 0..<9 { histogram.record(nanoseconds: 3_000_000, now: now) }     // 3 ms: [2816, 3072)
        histogram.record(nanoseconds: 60_000_000_000, now: now)                   // 60 s: the last bucket
        let snapshot = histogram.snapshot(now: now)
        XCTAssertEqual(snapshot.reduce(0, +), 1000)
        XCTAssertEqual(LatencyHistogram.percentile(0.5, of: snapshot), 11)
        XCTAssertEqual(LatencyHistogram.percentile(0.99, of: snapshot), 11)
        XCTAssertEqual(LatencyHistogram.percentile(0.995, of: snapshot), 3072)
        XCTAssertEqual(LatencyHistogram.percentile(1.0, of: snapshot), 1 << 24)
        XCTAssertEqual(LatencyHistogram.percentile(0.5, of: Array(repeating: 0, count: LatencyHistogram.bucketCount)), 0)
    }

    func testTheWindowForgetsOldHalves() {
        let histogram = LatencyHistogram()
        let start = 100 * half
        histogram.record(nanoseconds: 1_000_000, now: start)                     // 1 ms
        histogram.record(nanoseconds: 5_000, now: start + half)                  // the next half: both count
        XCTAssertEqual(histogram.snapshot(now: start + half).reduce(0, +), 2)
        histogram.record(nanoseconds: 5_000, now: start + 2 * half)              // the first half's turn again: emptied
        let snapshot = histogram.snapshot(now: start + 2 * half)
        XCTAssertEqual(snapshot.reduce(0, +), 2)
        XCTAssertEqual(LatencyHistogram.percentile(1.0, of: snapshot), 6, "the 1 ms sample is gone")
        XCTAssertEqual(histogram.snapshot(now: start + 5 * half).reduce(0, +), 0, "nothing recorded for a whole window")
        histogram.record(nanoseconds: 5_000, now: start + 9 * half)
        XCTAssertEqual(histogram.snapshot(now: start + 9 * half).reduce(0, +), 1, "both halves emptied after a long gap")
    }

    /// Every latency lies in one bucket that ends above it and starts where the one before ends,
    /// no bucket is wider than an eighth of its start, and a held wake-up's 1 ms on a 1.1 ms
    /// operation (2.1 ms) reads apart from it, which power-of-two buckets (both 2,048) could not.
    func testBucketsTileTheRangeWithinAnEighth() {
        var previous = 0
        var microseconds = 0
        while microseconds < 1 << 25 {
            let bucket = LatencyHistogram.bucket(microseconds: microseconds)
            XCTAssert(bucket == previous || bucket == previous + 1, "\(microseconds) µs: bucket \(bucket) after \(previous)")
            XCTAssertLessThan(bucket, LatencyHistogram.bucketCount)
            if bucket < LatencyHistogram.bucketCount - 1 {
                XCTAssertLessThan(microseconds, LatencyHistogram.upperBound(of: bucket), "\(microseconds) µs")
            }
            if bucket > 0 {
                let start = LatencyHistogram.upperBound(of: bucket - 1)
                XCTAssertGreaterThanOrEqual(microseconds, start, "\(microseconds) µs")
                if bucket < LatencyHistogram.bucketCount - 1 {
                    XCTAssertLessThanOrEqual(LatencyHistogram.upperBound(of: bucket) - start, max(1, start / 8), "bucket \(bucket)")
                }
            }
            previous = bucket
            microseconds += microseconds < 4096 ? 1 : microseconds / 4096
        }
        XCTAssertEqual(LatencyHistogram.bucket(microseconds: 1 << 30), LatencyHistogram.bucketCount - 1)
        XCTAssertEqual(LatencyHistogram.bucket(microseconds: -5), 0)
        XCTAssertNotEqual(LatencyHistogram.upperBound(of: LatencyHistogram.bucket(microseconds: 1_100)),
                          LatencyHistogram.upperBound(of: LatencyHistogram.bucket(microseconds: 2_100)))
    }
}

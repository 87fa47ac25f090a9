import Synchronization

/// Latencies in microseconds, in power-of-two buckets, over a recent window,
/// so that a running server's counters show where its handshake time goes
/// (a histogram: a mean would hide the tail). The window is two halves of
/// `halfNanoseconds`: records go to the current half, a report reads both,
/// and a half is emptied when its turn comes round again. Lock-free: a
/// record is one relaxed add (two when it starts a new half).
final class LatencyHistogram: @unchecked Sendable {
    /// [0, 1) µs, [1, 2), [2, 4) ... [2^23, ∞): the last one holds 8.4 s and more.
    static let bucketCount = 25
    static let halfNanoseconds = 5_000_000_000

    private let counts: UnsafeMutablePointer<Atomic<Int>>
    /// The half-window (monotonic time / halfNanoseconds) the last record went into.
    private let period = Atomic<Int>(Int.min)

    init() {
        counts = .allocate(capacity: 2 * Self.bucketCount)
        for index in 0..<(2 * Self.bucketCount) { (counts + index).initialize(to: Atomic(0)) }
    }

    deinit {
        counts.deinitialize(count: 2 * Self.bucketCount)
        counts.deallocate()
    }

    static func bucket(microseconds: Int) -> Int {
        microseconds <= 0 ? 0 : min(bucketCount - 1, Int.bitWidth - microseconds.leadingZeroBitCount)
    }

    /// The largest latency bucket `bucket` holds, in µs (the last one's lower bound).
    static func upperBound(of bucket: Int) -> Int {
        bucket == bucketCount - 1 ? 1 << (bucketCount - 2) : 1 << bucket
    }

    func record(nanoseconds: Int, now: Int) {
        let current = now / Self.halfNanoseconds
        let seen = period.load(ordering: .relaxed)
        if current != seen, period.compareExchange(expected: seen, desired: current, ordering: .relaxed).exchanged {
            // The half this period writes last held period - 2's (or older): empty it,
            // and the other one too when it is older than the window.
            clear(half: current & 1)
            if seen == Int.min || current - seen >= 2 { clear(half: (current + 1) & 1) }
        }
        let index = (current & 1) * Self.bucketCount + Self.bucket(microseconds: nanoseconds / 1000)
        counts[index].wrappingAdd(1, ordering: .relaxed)
    }

    private func clear(half: Int) {
        for bucket in 0..<Self.bucketCount { counts[half * Self.bucketCount + bucket].store(0, ordering: .relaxed) }
    }

    /// Per bucket, the window's counts (nothing when no record came for a whole window).
    func snapshot(now: Int) -> [Int] {
        let seen = period.load(ordering: .relaxed)
        guard seen != Int.min, now / Self.halfNanoseconds - seen < 2 else { return Array(repeating: 0, count: Self.bucketCount) }
        return (0..<Self.bucketCount).map {
            counts[$0].load(ordering: .relaxed) + counts[Self.bucketCount + $0].load(ordering: .relaxed)
        }
    }

    /// The bucket bound (µs) at or below which `fraction` of the window's latencies lie; 0 when it is empty.
    static func percentile(_ fraction: Double, of snapshot: [Int]) -> Int {
        let total = snapshot.reduce(0, +)
        guard total > 0 else { return 0 }
        let rank = max(1, Int((fraction * Double(total)).rounded(.up)))
        var seen = 0
        for (bucket, count) in snapshot.enumerated() {
            seen += count
            if seen >= rank { return upperBound(of: bucket) }
        }
        return upperBound(of: bucketCount - 1)
    }
}

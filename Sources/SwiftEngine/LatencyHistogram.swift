import Synchronization

/// Latencies in microseconds, over a recent window, so that a running
/// server's counters show where its handshake time goes (a histogram: a mean
/// would hide the tail). Buckets keep three significant bits, eight to each
/// power of two (within 12.5%): fine enough that a held wake-up's 1 ms shows
/// on a 1-2 ms signature, where power-of-two buckets could not tell 1.1 from
/// 2 ms. The window is two halves of `halfNanoseconds`: records go to the
/// current half, a report reads both, and a half is emptied when its turn
/// comes round again. Lock-free: a
/// record is one relaxed add (two when it starts a new half).
final class LatencyHistogram: @unchecked Sendable {
    /// [0, 1) µs ... [7, 8), then eight to each power of two: [8, 9) ... [15, 16),
    /// [16, 18) ... [30, 32), ... up to [15·2^20, 2^24); the last one, [2^24, ∞), holds 16.8 s and more.
    static let subBuckets = 8
    static let largestExponent = 23
    static let bucketCount = subBuckets * (largestExponent - 1) + 1
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
        if microseconds < subBuckets { return max(0, microseconds) }
        let exponent = Int.bitWidth - 1 - microseconds.leadingZeroBitCount   // 3 or more
        if exponent > largestExponent { return bucketCount - 1 }
        return subBuckets * (exponent - 2) + ((microseconds >> (exponent - 3)) & (subBuckets - 1))
    }

    /// Where bucket `bucket` ends (its latencies lie below), in µs; the last one's start.
    static func upperBound(of bucket: Int) -> Int {
        if bucket < subBuckets { return bucket + 1 }
        if bucket == bucketCount - 1 { return 1 << (largestExponent + 1) }
        let exponent = bucket / subBuckets + 2
        return (subBuckets + bucket % subBuckets + 1) << (exponent - 3)
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

    /// The bucket bound (µs) below which `fraction` of the window's latencies lie; 0 when it is empty.
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

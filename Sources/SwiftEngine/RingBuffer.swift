/// A fixed-capacity FIFO of work items; the pool guards it with its lock.
struct RingBuffer {
    private let slots: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    let capacity: Int
    private var head = 0
    private(set) var count = 0

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
        slots = .allocate(capacity: capacity)
        slots.initialize(repeating: nil, count: capacity)
    }

    /// Frees the storage; the buffer must not be used afterwards.
    func deallocate() { slots.deallocate() }

    var isEmpty: Bool { count == 0 }
    var isFull: Bool { count == capacity }

    mutating func push(_ item: UnsafeMutableRawPointer) {
        precondition(!isFull)
        slots[(head + count) % capacity] = item
        count += 1
    }

    private func index(_ offset: Int) -> Int { (head + offset) % capacity }

    /// Moves up to `limit` items that `matches`, found among the first
    /// `window`, to the end of `taken` (oldest first), but only if at least
    /// `minimum` are there. The others keep their order. Costs the window,
    /// not the queue: the kept items slide toward the tail over the gaps.
    mutating func take(upTo limit: Int, ifAtLeast minimum: Int, within window: Int,
                       into taken: inout [UnsafeMutableRawPointer],
                       where matches: (UnsafeMutableRawPointer) -> Bool) {
        let scanned = min(window, count)
        var found = 0
        var end = 0
        while end < scanned && found < limit {
            if matches(slots[index(end)]!) { found += 1 }
            end += 1
        }
        guard found > 0, found >= minimum else { return }
        let first = taken.count
        var write = end - 1
        for offset in stride(from: end - 1, through: 0, by: -1) {
            let item = slots[index(offset)]!
            if matches(item) {
                taken.append(item)
            } else {
                slots[index(write)] = item
                write -= 1
            }
        }
        taken[first...].reverse()
        for offset in 0..<found { slots[index(offset)] = nil }
        head = index(found)
        count -= found
    }

    mutating func pop() -> UnsafeMutableRawPointer? {
        guard count > 0 else { return nil }
        let item = slots[head]
        slots[head] = nil
        head = (head + 1) % capacity
        count -= 1
        return item
    }
}

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

    mutating func pop() -> UnsafeMutableRawPointer? {
        guard count > 0 else { return nil }
        let item = slots[head]
        slots[head] = nil
        head = (head + 1) % capacity
        count -= 1
        return item
    }
}

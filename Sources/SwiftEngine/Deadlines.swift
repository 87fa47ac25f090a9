import Glibc

/// How long a pool's items may keep their owners waiting, for a key store
/// whose device can fail to answer: past the deadline the owner is woken with
/// an error, and a worker stuck in the call is replaced.
struct DeadlinePolicy: Sendable {
    let nanoseconds: Int
    /// Workers started in place of stuck ones, alive at once at most.
    let spareThreads: Int
    /// Ends the item's wait unless its result came first; true when a worker
    /// is inside its call, stuck (called with the watch's lock held, so the
    /// item is alive).
    let expire: @Sendable (UnsafeMutableRawPointer) -> Bool
    /// Whether the item's worker returned from a call its owner stopped waiting for.
    let outlived: @Sendable (UnsafeMutableRawPointer) -> Bool
}

/// The items a pool owes answers for, in the order they are due: all share
/// one deadline, so submission order is deadline order and one thread
/// sleeping until the oldest is due watches them all. An item is watched
/// from before it is queued until its worker hands it back, and a worker
/// forgets it (under this lock) before letting go of it.
final class DeadlineWatch: @unchecked Sendable {
    private struct Due {
        let item: UnsafeMutableRawPointer
        let sequence: Int
        let at: Int
    }

    let policy: DeadlinePolicy
    /// Called (without the lock) when an expired item's worker is stuck in its call.
    var onStuck: @Sendable () -> Void = {}
    private let lock = PThreadLock()
    private let changed = PThreadCondition()
    /// Oldest first from `head`; entries whose item is no longer watched under
    /// their sequence are skipped (handed back, or a new record at a reused address).
    private var due: [Due] = []
    private var head = 0
    private var watched: [UnsafeMutableRawPointer: Int] = [:]
    private var nextSequence = 0
    private var stopping = false
    private var thread: pthread_t?

    init(_ policy: DeadlinePolicy) {
        self.policy = policy
    }

    func start() -> Bool {
        thread = EngineThread.start(named: "deadlines") { [self] in run() }
        return thread != nil
    }

    func stop() {
        lock.withLock { stopping = true }
        changed.signal()
        if let thread { pthread_join(thread, nil) }
        thread = nil
    }

    func watch(_ item: UnsafeMutableRawPointer) {
        let first = lock.withLock { () -> Bool in
            nextSequence += 1
            watched[item] = nextSequence
            due.append(Due(item: item, sequence: nextSequence, at: monotonicNanoseconds() + policy.nanoseconds))
            return due.count - head == 1
        }
        if first { changed.signal() }
    }

    func forget(_ item: UnsafeMutableRawPointer) {
        lock.withLock { _ = watched.removeValue(forKey: item) }
    }

    /// In flight and watched now (for the counters).
    var count: Int { lock.withLock { watched.count } }

    private func run() {
        lock.lock()
        while !stopping {
            skipSettled()
            guard head < due.count else {
                changed.wait(lock)
                continue
            }
            let first = due[head]
            let now = monotonicNanoseconds()
            if first.at > now {
                changed.wait(lock, microseconds: (first.at - now) / 1000 + 1)
                continue
            }
            head += 1
            watched.removeValue(forKey: first.item)
            if policy.expire(first.item) {
                lock.unlock()
                onStuck()
                lock.lock()
            }
        }
        lock.unlock()
    }

    /// With the lock held: drops handed-back items from the front, and the dead space now and then.
    private func skipSettled() {
        while head < due.count && watched[due[head].item] != due[head].sequence { head += 1 }
        if head > 1024 && head * 2 > due.count {
            due.removeFirst(head)
            head = 0
        }
    }

    // MARK: Fork (the pool calls these with its own lock held)

    func lockForFork() { lock.lock() }
    func unlockAfterFork() { lock.unlock() }
}

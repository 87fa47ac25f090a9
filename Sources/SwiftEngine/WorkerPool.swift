import Glibc
import Synchronization

/// N threads taking opaque work items from one bounded FIFO. It knows nothing
/// of OpenSSL: the engine hands it records, a handler that runs one and a
/// handler that tells its owner it is done.
///
/// While more work is queued, a worker tells owners in batches: of up to
/// `notifyBatch` results, the first held at most `notifyDelay`. The
/// application is then woken once for several results instead of once each,
/// and the cores stay on the math. With nothing queued a worker tells each
/// owner at once, so a lone operation never waits.
///
/// With `lanes`, a worker that takes an item also takes like items already
/// queued (same key) for one multi-buffer call, when there are enough of them.
final class WorkerPool: @unchecked Sendable {
    typealias Handler = @Sendable (UnsafeMutableRawPointer) -> Void

    /// How a worker gathers like items for one multi-buffer call.
    struct Lanes: Sendable {
        let width: Int
        /// Items of one key may share a call; 0 never shares.
        let key: @Sendable (UnsafeMutableRawPointer) -> Int
        /// Fewest items of a key worth one call; nil: none of that key does.
        let minimumFill: @Sendable (Int) -> Int?
        let execute: @Sendable ([UnsafeMutableRawPointer]) -> Void
    }

    /// How deep into the queue a worker looks for like items: bounds the time
    /// the lock is held, whatever the queue's depth.
    static let laneWindow = 256

    enum SubmitOutcome: Equatable {
        case queued(depth: Int)
        case full
        case stopped
    }

    let threadCount: Int
    let notifyBatch: Int
    let notifyDelayNanoseconds: Int
    private let execute: Handler
    private let notify: Handler
    private let threadWillExit: @Sendable () -> Void
    private let lanes: Lanes?
    private let lock = PThreadLock()
    private let workAvailable = PThreadCondition()
    private let roomAvailable = PThreadCondition()
    private var queue: RingBuffer
    /// queue.count, for idle workers watching without the lock.
    private let queued = Atomic<Int>(0)
    private let stoppingFlag = Atomic<Bool>(false)
    /// How long an idle worker watches for new work before it sleeps.
    let idleSpinNanoseconds: Int
    private var sleepingWorkers = 0
    /// Workers outside the lock running or notifying an operation.
    private var busyWorkers = 0
    private var forking = false
    private let workersQuiet = PThreadCondition()
    private let forkFinished = PThreadCondition()
    private var waitingSubmitters = 0
    private var stopping = false
    private var threads: [pthread_t] = []
    /// Per worker: items taken from the queue and not yet handed to `notify`.
    private var inFlight: [[UnsafeMutableRawPointer]]

    init(threadCount: Int, queueCapacity: Int, notifyBatch: Int = 1, notifyDelayMicroseconds: Int = 0,
         idleSpinMicroseconds: Int = 0, lanes: Lanes? = nil, execute: @escaping Handler,
         notify: @escaping Handler, threadWillExit: @escaping @Sendable () -> Void = {}) {
        self.threadWillExit = threadWillExit
        self.lanes = lanes
        notifyDelayNanoseconds = max(0, notifyDelayMicroseconds) * 1000
        self.threadCount = threadCount
        idleSpinNanoseconds = max(0, idleSpinMicroseconds) * 1000
        self.notifyBatch = max(1, notifyBatch)
        self.execute = execute
        self.notify = notify
        queue = RingBuffer(capacity: queueCapacity)
        inFlight = Array(repeating: [], count: threadCount)
    }

    deinit { queue.deallocate() }

    /// Returns false if no thread could start.
    func start() -> Bool {
        for index in 0..<threadCount {
            guard let thread = EngineThread.start(named: "\(index)", { [self] in
                runWorker(index)
                threadWillExit()
            }) else { break }
            threads.append(thread)
        }
        if threads.isEmpty { lock.withLock { stopping = true } }
        return !threads.isEmpty
    }

    /// Never blocks: a full queue is the caller's to retry.
    func trySubmit(_ item: UnsafeMutableRawPointer) -> SubmitOutcome {
        lock.lock()
        if stopping { lock.unlock(); return .stopped }
        if queue.isFull { lock.unlock(); return .full }
        return enqueueAndUnlock(item)
    }

    /// Waits for room: for callers outside async jobs, who may block.
    func submitWaitingForRoom(_ item: UnsafeMutableRawPointer) -> SubmitOutcome {
        lock.lock()
        while queue.isFull && !stopping {
            waitingSubmitters += 1
            roomAvailable.wait(lock)
            waitingSubmitters -= 1
        }
        if stopping { lock.unlock(); return .stopped }
        return enqueueAndUnlock(item)
    }

    private func enqueueAndUnlock(_ item: UnsafeMutableRawPointer) -> SubmitOutcome {
        queue.push(item)
        let depth = queue.count
        queued.store(depth, ordering: .relaxed)
        let wakeOne = sleepingWorkers > 0
        lock.unlock()
        if wakeOne { workAvailable.signal() }
        return .queued(depth: depth)
    }

    /// Runs everything already queued, then joins the threads. From one of
    /// the pool's own threads (a handler dropping the last reference to the
    /// engine) that thread is detached instead: it exits when its handler returns.
    func shutdown() {
        lock.withLock { stopping = true }
        stoppingFlag.store(true, ordering: .relaxed)
        workAvailable.broadcast()
        roomAvailable.broadcast()
        for thread in threads {
            if pthread_equal(thread, pthread_self()) != 0 {
                pthread_detach(thread)
            } else {
                pthread_join(thread, nil)
            }
        }
        threads.removeAll()
    }

    /// Spins (yielding the CPU) until work is queued or the spin time is over.
    private func watchForWork() {
        let deadline = monotonicNanoseconds() + idleSpinNanoseconds
        while queued.load(ordering: .relaxed) == 0 && !stoppingFlag.load(ordering: .relaxed)
                && monotonicNanoseconds() < deadline {
            sched_yield()
        }
    }

    /// With the lock held: adds the like items queued behind `first` to
    /// `batch` if together they fill enough lanes. True: run `batch` in lanes.
    private func gatherLikeItems(_ first: UnsafeMutableRawPointer, into batch: inout [UnsafeMutableRawPointer]) -> Bool {
        guard let lanes else { return false }
        let key = lanes.key(first)
        guard key != 0, let minimum = lanes.minimumFill(key), minimum <= lanes.width,
              queue.count >= minimum - 1 else { return false }
        queue.take(upTo: lanes.width - 1, ifAtLeast: minimum - 1, within: Self.laneWindow,
                   into: &batch) { lanes.key($0) == key }
        return batch.count >= minimum
    }

    private func runWorker(_ index: Int) {
        var done: [UnsafeMutableRawPointer] = []
        done.reserveCapacity(notifyBatch)
        var batch: [UnsafeMutableRawPointer] = []
        batch.reserveCapacity(lanes?.width ?? 1)
        var justWatched = false
        var heldSince = 0
        /// With the lock held: the lock is let go for work, counted as busy.
        func leaveForWork() {
            busyWorkers += 1
            lock.unlock()
        }
        func returnFromWork() {
            lock.lock()
            busyWorkers -= 1
            if forking && busyWorkers == 0 { workersQuiet.signal() }
        }
        /// Called with the lock not held; `done` left the in-flight list already.
        func notifyAll() {
            for item in done { notify(item) }
            done.removeAll(keepingCapacity: true)
        }
        lock.lock()
        while true {
            while forking { forkFinished.wait(lock) }
            if let item = queue.pop() {
                batch.removeAll(keepingCapacity: true)
                batch.append(item)
                let inLanes = gatherLikeItems(item, into: &batch)
                queued.store(queue.count, ordering: .relaxed)
                inFlight[index].append(contentsOf: batch)
                justWatched = false
                let wakeSubmitter = waitingSubmitters > 0
                let flush = done.count >= notifyBatch
                    || (!done.isEmpty && monotonicNanoseconds() - heldSince >= notifyDelayNanoseconds)
                if flush { inFlight[index].removeFirst(done.count) }
                leaveForWork()
                if wakeSubmitter { roomAvailable.signal() }
                if flush { notifyAll() }
                if inLanes, let lanes { lanes.execute(batch) } else { execute(item) }
                if done.isEmpty { heldSince = monotonicNanoseconds() }
                done.append(contentsOf: batch)
                returnFromWork()
            } else if !done.isEmpty {
                inFlight[index].removeFirst(done.count)
                leaveForWork()
                notifyAll()
                returnFromWork()
            } else if stopping {
                break
            } else if idleSpinNanoseconds > 0 && !justWatched {
                lock.unlock()
                watchForWork()
                justWatched = true
                lock.lock()
            } else {
                justWatched = false
                sleepingWorkers += 1
                workAvailable.wait(lock)
                sleepingWorkers -= 1
            }
        }
        lock.unlock()
    }

    /// Items waiting in the queue, and workers running or notifying one, now.
    func occupancy() -> (queued: Int, busy: Int) {
        lock.withLock { (queue.count, busyWorkers) }
    }

    // MARK: Fork

    /// Before fork: waits until no worker is running an operation or waking
    /// its owner, and keeps them from starting another, so that no worker
    /// holds one of OpenSSL's locks (a key's, the ENGINE list's) that the
    /// child would find locked forever. Returns with the lock held.
    func lockForFork() {
        lock.lock()
        forking = true
        while busyWorkers > 0 { workersQuiet.wait(lock) }
    }

    /// In the parent after fork (and in the child, where no worker is left).
    func unlockAfterFork() {
        forking = false
        lock.unlock()
        forkFinished.broadcast()
    }

    /// In a forked child, where none of the workers exist: everything queued or
    /// in a worker's hands at the fork, oldest first. The pool is dead after this.
    func orphansAfterFork() -> [UnsafeMutableRawPointer] {
        var orphans = inFlight.flatMap { $0 }
        while let item = queue.pop() { orphans.append(item) }
        inFlight = Array(repeating: [], count: threadCount)
        threads.removeAll()
        return orphans
    }
}

func monotonicNanoseconds() -> Int {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec * 1_000_000_000 + now.tv_nsec
}

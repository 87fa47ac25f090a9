import CLinux
import Glibc
import Synchronization

/// N threads taking opaque work items from one bounded FIFO. It knows nothing
/// of OpenSSL: the engine hands it records, a handler that runs one and a
/// handler that tells its owner it is done.
///
/// While more work is queued, a worker tells owners in batches: of up to
/// `notifyBatch` results, the first held at most `notifyDelay`. The
/// application is then woken once for several results instead of once each,
/// and the cores stay on the math. A result is held only while the
/// application is busy, known by its submissions: when none came while the
/// last piece of work ran, the application is waiting (in its poll) and is
/// told at once, since holding would only add to its latency. And only while
/// the next piece of work is expected to end within that delay, judged by the
/// slowest of the worker's recent ones (a decaying maximum: a queue that mixes
/// RSA-4096 with X25519 may hand either next): where slow operations run,
/// each result is told before the next begins, instead of waiting one more
/// operation's time.
/// With nothing queued a worker tells each owner at once, so a lone
/// operation never waits.
///
/// With `lanes`, a worker that takes an item also takes like items already
/// queued (same key) for one multi-buffer call, when there are enough of them.
///
/// With `callerRunsDepth`, a submitter that finds every worker busy and that
/// many items queued computes its item itself (one no lane call would take):
/// at saturation no core waits on a hand-off that gains nothing.
///
/// With a `deadline`, items that keep their owners waiting too long are
/// ended by a watch, and a worker stuck in one is replaced, up to a limit.
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
        /// Every worker busy and the queue deep: the submitter computes it.
        case callerRuns
    }

    let threadCount: Int
    let notifyBatch: Int
    let notifyDelayNanoseconds: Int
    /// 0: never.
    let callerRunsDepth: Int
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
    /// Items queued, of all time (wrapping): a worker that sees it move while it works knows the application is busy.
    private var submissions = 0
    private var stopping = false
    private var threads: [pthread_t] = []
    /// Per worker: items taken from the queue and not yet handed to `notify`.
    private var inFlight: [[UnsafeMutableRawPointer]]
    private let deadlines: DeadlineWatch?
    /// Workers started in place of stuck ones and alive; of all time.
    private var replacements = 0
    private var replacementsStarted = 0

    init(threadCount: Int, queueCapacity: Int, notifyBatch: Int = 1, notifyDelayMicroseconds: Int = 0,
         idleSpinMicroseconds: Int = 0, callerRunsDepth: Int = 0, lanes: Lanes? = nil, deadline: DeadlinePolicy? = nil,
         execute: @escaping Handler, notify: @escaping Handler,
         threadWillExit: @escaping @Sendable () -> Void = {}) {
        self.threadWillExit = threadWillExit
        self.lanes = lanes
        notifyDelayNanoseconds = max(0, notifyDelayMicroseconds) * 1000
        self.threadCount = threadCount
        idleSpinNanoseconds = max(0, idleSpinMicroseconds) * 1000
        self.notifyBatch = max(1, notifyBatch)
        self.callerRunsDepth = max(0, callerRunsDepth)
        self.execute = execute
        self.notify = notify
        queue = RingBuffer(capacity: queueCapacity)
        inFlight = Array(repeating: [], count: threadCount)
        deadlines = deadline.map { DeadlineWatch($0) }
        deadlines?.onStuck = { [unowned self] in replaceStuckWorker() }
    }

    deinit { queue.deallocate() }

    /// Returns false if no thread could start.
    func start() -> Bool {
        lock.withLock {
            for index in 0..<threadCount {
                guard let thread = startWorker(index) else { break }
                threads.append(thread)
            }
            if threads.isEmpty || deadlines?.start() == false { stopping = true }
            return !stopping
        }
    }

    private func startWorker(_ index: Int) -> pthread_t? {
        EngineThread.start(named: "\(index)", { [self] in
            runWorker(index)
            threadWillExit()
        })
    }

    /// Never blocks: a full queue is the caller's to retry.
    func trySubmit(_ item: UnsafeMutableRawPointer) -> SubmitOutcome {
        deadlines?.watch(item)
        lock.lock()
        if stopping { lock.unlock(); return refused(item, .stopped) }
        if queue.isFull { lock.unlock(); return refused(item, .full) }
        if callerRunsDepth > 0 && busyWorkers >= threads.count && queue.count >= callerRunsDepth && !sharesLanes(item) {
            lock.unlock()
            return refused(item, .callerRuns)
        }
        return enqueueAndUnlock(item)
    }

    /// Whether a lane call could take `item` (its kind has lanes on this CPU).
    private func sharesLanes(_ item: UnsafeMutableRawPointer) -> Bool {
        laneKind(of: item) != nil
    }

    /// `item`'s lane key and the fewest like items worth one call; nil: it never shares one.
    private func laneKind(of item: UnsafeMutableRawPointer) -> (key: Int, minimum: Int)? {
        guard let lanes else { return nil }
        let key = lanes.key(item)
        guard key != 0, let minimum = lanes.minimumFill(key), minimum <= lanes.width else { return nil }
        return (key, minimum)
    }

    /// Waits for room: for callers outside async jobs, who may block.
    func submitWaitingForRoom(_ item: UnsafeMutableRawPointer) -> SubmitOutcome {
        deadlines?.watch(item)
        lock.lock()
        while queue.isFull && !stopping {
            waitingSubmitters += 1
            roomAvailable.wait(lock)
            waitingSubmitters -= 1
        }
        if stopping { lock.unlock(); return refused(item, .stopped) }
        return enqueueAndUnlock(item)
    }

    /// Watched from before it is queued (a worker may hand it back at once); not queued after all.
    private func refused(_ item: UnsafeMutableRawPointer, _ outcome: SubmitOutcome) -> SubmitOutcome {
        deadlines?.forget(item)
        return outcome
    }

    /// A worker is stuck in a call past its deadline: another takes its place,
    /// up to the spare limit. The first to return from such a call later exits.
    private func replaceStuckWorker() {
        lock.withLock {
            guard let deadlines, !stopping, replacements < deadlines.policy.spareThreads else { return }
            let index = inFlight.count
            inFlight.append([])
            guard let thread = startWorker(index) else { return }
            threads.append(thread)
            replacements += 1
            replacementsStarted += 1
        }
    }

    /// Workers started in place of stuck ones: alive now, and ever.
    func replacementCounts() -> (alive: Int, started: Int) {
        lock.withLock { (replacements, replacementsStarted) }
    }

    private func enqueueAndUnlock(_ item: UnsafeMutableRawPointer) -> SubmitOutcome {
        queue.push(item)
        submissions &+= 1
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
    ///
    /// With a deadline, a worker stuck in a call is waited for that long at
    /// most, then left to finish (or never) on its own: exit must not hang on
    /// a device that does not answer.
    func shutdown() {
        let joining = lock.withLock {
            stopping = true
            return threads
        }
        stoppingFlag.store(true, ordering: .relaxed)
        workAvailable.broadcast()
        roomAvailable.broadcast()
        let giveUpAt = deadlines.map { realtime(afterNanoseconds: $0.policy.nanoseconds) }
        for thread in joining {
            if pthread_equal(thread, pthread_self()) != 0 {
                pthread_detach(thread)
            } else if var giveUpAt {
                if pthread_timedjoin_np(thread, nil, &giveUpAt) != 0 { pthread_detach(thread) }
            } else {
                pthread_join(thread, nil)
            }
        }
        lock.withLock { threads.removeAll() }
        deadlines?.stop()
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
        guard let lanes, let kind = laneKind(of: first), queue.count >= kind.minimum - 1 else { return false }
        let (key, minimum) = kind
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
        /// `submissions` when this worker's last piece of work began.
        var submissionsAtStart = 0
        /// The slowest of this worker's recent pieces of work, decaying by an eighth each: what the next may take.
        var expectedWorkNanoseconds = 0
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
            for item in done {
                deadlines?.forget(item)
                notify(item)
            }
            done.removeAll(keepingCapacity: true)
        }
        /// Back from a call its owner stopped waiting for, with a replacement running: this worker goes.
        var retiring = false
        lock.lock()
        while true {
            while forking { forkFinished.wait(lock) }
            if retiring {
                inFlight[index].removeFirst(done.count)
                leaveForWork()
                notifyAll()
                returnFromWork()
                if !stopping {
                    threads.removeAll { pthread_equal($0, pthread_self()) != 0 }
                    pthread_detach(pthread_self())
                }
                break
            }
            if let item = queue.pop() {
                batch.removeAll(keepingCapacity: true)
                batch.append(item)
                let inLanes = gatherLikeItems(item, into: &batch)
                queued.store(queue.count, ordering: .relaxed)
                inFlight[index].append(contentsOf: batch)
                justWatched = false
                let wakeSubmitter = waitingSubmitters > 0
                let applicationWaits = submissions == submissionsAtStart
                submissionsAtStart = submissions
                let flush = done.count >= notifyBatch
                    || (!done.isEmpty
                        && (applicationWaits
                            || monotonicNanoseconds() - heldSince + expectedWorkNanoseconds >= notifyDelayNanoseconds))
                if flush { inFlight[index].removeFirst(done.count) }
                leaveForWork()
                if wakeSubmitter { roomAvailable.signal() }
                if flush { notifyAll() }
                let started = monotonicNanoseconds()
                if inLanes, let lanes { lanes.execute(batch) } else { execute(item) }
                let finished = monotonicNanoseconds()
                expectedWorkNanoseconds = max(finished - started, expectedWorkNanoseconds - expectedWorkNanoseconds / 8)
                let outlived = deadlines?.policy.outlived(item) ?? false
                if done.isEmpty { heldSince = finished }
                done.append(contentsOf: batch)
                returnFromWork()
                if outlived && replacements > 0 {
                    replacements -= 1
                    retiring = true
                }
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
    ///
    /// With a deadline, a worker stuck in a device's call is waited for that
    /// long at most: a fork must not hang on a device that does not answer.
    func lockForFork() {
        lock.lock()
        forking = true
        let giveUpAt = deadlines.map { monotonicNanoseconds() + $0.policy.nanoseconds }
        while busyWorkers > 0 {
            guard let giveUpAt else { workersQuiet.wait(lock); continue }
            let left = giveUpAt - monotonicNanoseconds()
            if left <= 0 { break }
            workersQuiet.wait(lock, microseconds: left / 1000 + 1)
        }
        deadlines?.lockForFork()
    }

    /// In the parent after fork (and in the child, where no worker is left).
    func unlockAfterFork() {
        deadlines?.unlockAfterFork()
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

    /// In a forked child: the orphans, and the pool (locked for the fork) let go
    /// of without tearing it down: its threads are gone.
    func abandonAfterFork() -> [UnsafeMutableRawPointer] {
        let orphans = orphansAfterFork()
        unlockAfterFork()
        _ = Unmanaged.passRetained(self)
        return orphans
    }
}

/// CLOCK_REALTIME that far ahead, as pthread's timed waits take it.
func realtime(afterNanoseconds nanoseconds: Int) -> timespec {
    var at = timespec()
    clock_gettime(CLOCK_REALTIME, &at)
    let total = at.tv_nsec + nanoseconds
    at.tv_sec += total / 1_000_000_000
    at.tv_nsec = total % 1_000_000_000
    return at
}

func monotonicNanoseconds() -> Int {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec * 1_000_000_000 + now.tv_nsec
}

import CEngineShim
import Glibc
import Synchronization

/// Workers of their own for a slow forward target (a PKCS#11 token, a remote
/// key store): its operations wait on a device, so it needs many in flight,
/// sized by latency rather than by cores, and its waits must never hold back
/// the CPU work (key shares, the default target's signatures, the 8-lane
/// math) queued on the engine's pool. No lanes, no held wake-ups, no idle
/// spinning: its workers sleep while the device works. A device that does not
/// answer costs its callers one deadline, never the event loop: past it the
/// job is woken with an error and a stuck worker is replaced.
final class KeyStorePool: @unchecked Sendable {
    /// A network HSM keeps about 30 requests in flight.
    static let defaultThreads = 32
    /// Longer than any healthy device takes (a TPM: hundreds of ms), shorter than a client's patience.
    static let defaultDeadlineMilliseconds = 5000
    /// The settings a key store's provider section may give its own pool.
    static let settingNames = Set(["THREADS", "QUEUE_DEPTH", "WORKER_DELAY_USEC"] + Configuration.keyStoreNames)

    let name: String
    let statistics = Statistics()
    private let lock = PThreadLock()
    private var configuration: Configuration
    private var pool: WorkerPool?

    init(name: String) {
        self.name = name
        configuration = Self.defaults
    }

    static var defaults: Configuration {
        var configuration = Configuration()
        configuration.threads = defaultThreads
        configuration.notifyBatch = 1
        configuration.notifyDelayMicroseconds = 0
        configuration.idleSpinMicroseconds = 0
        configuration.multibuffer = false
        configuration.deadlineMilliseconds = defaultDeadlineMilliseconds
        configuration.spareThreads = defaultThreads
        return configuration
    }

    /// Back to the defaults, for an instance loaded again with its section's settings.
    func reset() {
        lock.withLock {
            configuration = Self.defaults
            return takePool()
        }?.shutdown()
    }

    /// One of `settingNames`; a new shape takes effect by draining the running pool.
    func set(_ setting: String, to value: String) -> Bool {
        guard Self.settingNames.contains(setting) else { return false }
        let retired: WorkerPool?? = lock.withLock {
            var updated = configuration
            guard updated.set(setting, to: value) else { return nil }
            configuration = updated
            return .some(takePool())
        }
        guard let retired else { return false }
        retired?.shutdown()
        return true
    }

    /// The running pool, started if needed (nil while the process exits).
    func currentPool(exiting: Bool) -> WorkerPool? {
        lock.withLock {
            if let pool { return pool }
            if exiting { return nil }
            let statistics = self.statistics
            let delay = UInt32(configuration.workerDelayMicroseconds)
            let gate = FirstCallGate()
            let fresh = WorkerPool(threadCount: configuration.workerCount,
                                   queueCapacity: configuration.queueDepth,
                                   deadline: deadlinePolicy(opening: gate),
                                   execute: { item in
                                       gate.run(item) {
                                           EngineRuntime.execute(item, counting: statistics, delayMicroseconds: delay)
                                       }
                                   },
                                   notify: { EngineRuntime.shared.notify($0, counting: statistics) },
                                   threadWillExit: { sa_worker_will_exit() })
            guard fresh.start() else { return nil }
            pool = fresh
            return fresh
        }
    }

    /// Nil without a deadline. Ending a wait counts as the caller's failure.
    private func deadlinePolicy(opening gate: FirstCallGate) -> DeadlinePolicy? {
        guard configuration.deadlineMilliseconds > 0 else { return nil }
        let statistics = self.statistics
        return DeadlinePolicy(
            nanoseconds: configuration.deadlineMilliseconds * 1_000_000,
            spareThreads: configuration.spareThreads,
            expire: { item in
                let operation = item.assumingMemoryBound(to: sa_operation.self)
                guard sa_operation_expire(operation) != 0 else { return false }
                statistics.deadlinesMissed.increment()
                statistics.counters(for: operation.pointee.algorithm).failed.increment()
                EngineRuntime.shared.wake(operation)
                EngineRuntime.shared.publisher.noteChange()
                guard sa_operation_started(operation) != 0 else { return false }
                gate.open()
                return true
            },
            outlived: { item in
                let operation = item.assumingMemoryBound(to: sa_operation.self)
                return sa_operation_started(operation) != 0 && sa_operation_missed_deadline(operation) != 0
            })
    }

    /// Drains and joins the workers; the next operation starts new ones.
    func retire() {
        lock.withLock { takePool() }?.shutdown()
    }

    private func takePool() -> WorkerPool? {
        defer { pool = nil }
        return pool
    }

    // MARK: Fork (the engine's runtime calls these in its handlers, in order)

    func lockForFork() {
        lock.lock()
        pool?.lockForFork()
    }

    func unlockAfterFork() {
        pool?.unlockAfterFork()
        lock.unlock()
    }

    /// In the child: the operations that were queued or running, for a new pool.
    func orphansAfterFork() -> [UnsafeMutableRawPointer] {
        let orphans = pool?.abandonAfterFork() ?? []
        pool = nil
        lock.unlock()
        return orphans
    }

    // MARK: Counters

    /// `NAME.pool threads=... ...`, then its algorithms as `NAME.ALGORITHM counters...`.
    /// in_flight: offloaded and not yet handed back (a caller past its deadline
    /// is answered, its call may still be in flight).
    func report() -> String {
        let header = lock.withLock {
            let (queued, busy) = pool?.occupancy() ?? (0, 0)
            let (spares, replaced) = pool?.replacementCounts() ?? (0, 0)
            return "\(name).pool threads=\(configuration.workerCount) running_threads=\(pool?.threadCount ?? 0)"
                + " queue_depth=\(configuration.queueDepth) queued=\(queued) busy_threads=\(busy)"
                + " queue_high_water=\(statistics.queueHighWater.load(ordering: .relaxed))"
                + " in_flight=\(statistics.inFlight) deadline_msec=\(configuration.deadlineMilliseconds)"
                + " deadlines_missed=\(statistics.deadlinesMissed.load(ordering: .relaxed))"
                + " late_results=\(statistics.lateResults.load(ordering: .relaxed))"
                + " workers_replaced=\(replaced) spare_threads_running=\(spares)"
        }
        return header + "\n" + statistics.algorithmLines(prefix: "\(name).")
    }
}

/// A new pool's calls into the target run one at a time until one whole
/// private-key operation has returned (a digest-signature's init and update
/// do not count: its final does). pkcs11-provider re-initialises its PKCS#11
/// module after a fork (HAProxy's master-worker, nginx) on first use, then
/// opens sessions, logs in and finds the key's handle again, and that is not
/// safe from many threads at once: under HAProxy -W with 32 workers, 87 of
/// the first 200 handshakes after the fork failed with an internal error,
/// none without the fork. A first call stuck past its deadline opens the
/// gate: the others must not wait behind a device that does not answer.
final class FirstCallGate: @unchecked Sendable {
    private let passed = Atomic<Bool>(false)
    private let lock = PThreadLock()
    private let turn = PThreadCondition()
    private var running = false

    func run(_ item: UnsafeMutableRawPointer, _ body: () -> Void) {
        if passed.load(ordering: .acquiring) { return body() }
        lock.lock()
        while running && !passed.load(ordering: .acquiring) { turn.wait(lock) }
        if passed.load(ordering: .acquiring) {
            lock.unlock()
            return body()
        }
        running = true
        lock.unlock()
        body()
        lock.withLock {
            running = false
            if item.assumingMemoryBound(to: sa_operation.self).pointee.algorithm != SA_ALG_SIGN_STEP {
                passed.store(true, ordering: .releasing)
            }
        }
        turn.broadcast()
    }

    func open() {
        lock.withLock { passed.store(true, ordering: .releasing) }
        turn.broadcast()
    }
}

import CEngineShim
import Glibc
import Synchronization

/// The engine's one piece of global state: configuration, statistics and the
/// pool, which starts on first use and stops when the last ENGINE finishes.
final class EngineRuntime: @unchecked Sendable {
    static let shared = EngineRuntime()

    let statistics = Statistics()
    let publisher = StatsPublisher(report: { EngineRuntime.shared.report() })
    private let lock = PThreadLock()
    private var configuration = Configuration.fromEnvironment()
    private var pool: WorkerPool?
    private var activeEngines = 0
    /// Set once the at-exit report is written, so a finish during exit adds no second one.
    private var exitReportWritten = false
    /// Set at exit: no pool is started any more.
    private var exiting = false
    /// This process's start time, read once (and again in a forked child).
    private var processStart = EngineRuntime.readProcessStart()
    /// Read on every inline/offload decision, so kept outside the lock.
    private let syncOffload = Atomic<Bool>(false)

    private init() {
        syncOffload.store(configuration.syncOffload, ordering: .relaxed)
        pthread_atfork({ EngineRuntime.shared.prepareForFork() },
                       { EngineRuntime.shared.resumeAfterForkInParent() },
                       { EngineRuntime.shared.restartAfterForkInChild() })
        atexit { EngineRuntime.shared.processWillExit() }
    }

    /// Runs before OpenSSL's own cleanup (it registered its handler first).
    /// The workers are joined now, while OpenSSL can still free what each
    /// thread holds; an operation after this runs on its caller's thread.
    private func processWillExit() {
        reportAtExitIfUnfinished()
        let retired: WorkerPool? = lock.withLock {
            exiting = true
            return takePool()
        }
        retired?.shutdown()
        publisher.stop()
        publisher.removeFile()
    }

    /// Applications that leak a key never let the engine finish (openssl
    /// speed leaks its ECDSA key): their counters are written at exit instead.
    private func reportAtExitIfUnfinished() {
        let statsFile: String? = lock.withLock {
            guard activeEngines > 0, let path = configuration.statsFile else { return nil }
            exitReportWritten = true
            return path
        }
        if let statsFile { appendReport(to: statsFile) }
    }

    // MARK: Fork

    /// Every lock the engine's threads take, held across fork in the one order
    /// they nest, so the child finds none of them held by a thread it lacks.
    private func prepareForFork() {
        publisher.lockForFork()
        lock.lock()
        pool?.lockForFork()
    }

    private func resumeAfterForkInParent() {
        pool?.unlockAfterFork()
        lock.unlock()
        publisher.unlockAfterFork()
    }

    /// The child has none of the pool's threads. Operations that were queued or
    /// running at the fork still have paused jobs waiting in the child: a new
    /// pool runs them (again, where their result was not yet stored), and every
    /// wait fd becomes the child's own.
    private func restartAfterForkInChild() {
        publisher.unlockAfterFork()
        var orphans: [UnsafeMutableRawPointer] = []
        if let old = pool {
            orphans = old.orphansAfterFork()
            old.unlockAfterFork()
            _ = Unmanaged.passRetained(old)   // its threads are gone; never tear it down
        }
        pool = nil
        processStart = Self.readProcessStart()
        sa_wake_fds_renew_after_fork()
        let directory = activeEngines > 0 ? configuration.statsDirectory : nil
        lock.unlock()
        publisher.forgetAfterFork()
        publisher.start(directory: directory)
        adopt(orphans)
    }

    private func adopt(_ orphans: [UnsafeMutableRawPointer]) {
        guard !orphans.isEmpty, let pool = currentPool() else { return }
        for item in orphans {
            // Already counted as offloaded in the parent's (copied) counters.
            _ = pool.submitWaitingForRoom(item)
        }
    }

    var prefersInline: Bool { !syncOffload.load(ordering: .relaxed) }

    // MARK: Configuration

    func set(_ name: String, to value: Int) -> Bool {
        reconfigure { $0.set(name, to: value) }
    }

    func set(_ name: String, to value: String) -> Bool {
        reconfigure { $0.set(name, to: value) }
    }

    /// A new pool shape takes effect by draining the running pool; the next
    /// operation starts one with the new settings.
    private func reconfigure(_ change: (inout Configuration) -> Bool) -> Bool {
        var retired: WorkerPool?
        let accepted = lock.withLock { () -> Bool in
            var updated = configuration
            guard change(&updated) else { return false }
            let reshaped = updated.workerCount != configuration.workerCount
                || updated.queueDepth != configuration.queueDepth
                || updated.notifyBatch != configuration.notifyBatch
                || updated.notifyDelayMicroseconds != configuration.notifyDelayMicroseconds
                || updated.idleSpinMicroseconds != configuration.idleSpinMicroseconds
                || updated.workerDelayMicroseconds != configuration.workerDelayMicroseconds
                || updated.multibuffer != configuration.multibuffer
                || updated.multibufferMinimumFill != configuration.multibufferMinimumFill
            configuration = updated
            syncOffload.store(updated.syncOffload, ordering: .relaxed)
            if reshaped { retired = takePool() }
            return true
        }
        retired?.shutdown()
        return accepted
    }

    // MARK: Life cycle

    func engineDidInit() {
        let directory = lock.withLock { () -> String? in
            activeEngines += 1
            return configuration.statsDirectory
        }
        publisher.start(directory: directory)
    }

    /// The last finish drains in-flight operations and joins the threads; an
    /// engine loaded again afterwards starts from the environment's settings.
    func engineDidFinish() {
        var retired: WorkerPool?
        var statsFile: String?
        var last = false
        lock.withLock {
            activeEngines = max(0, activeEngines - 1)
            guard activeEngines == 0 else { return }
            last = true
            retired = takePool()
            statsFile = exitReportWritten ? nil : configuration.statsFile
            configuration = Configuration.fromEnvironment()
            syncOffload.store(configuration.syncOffload, ordering: .relaxed)
        }
        retired?.shutdown()
        if last { publisher.stop() }
        if let statsFile { appendReport(to: statsFile) }
    }

    /// The workers leave now, taking their per-thread OpenSSL state with
    /// them; the next operation starts a new pool.
    func retirePool() {
        let retired = lock.withLock { takePool() }
        retired?.shutdown()
    }

    private func takePool() -> WorkerPool? {
        defer { pool = nil }
        return pool
    }

    /// The running pool, started if needed.
    func currentPool() -> WorkerPool? {
        lock.withLock {
            if let pool { return pool }
            if exiting { return nil }
            let delay = UInt32(configuration.workerDelayMicroseconds)
            let policy = LanePolicy(enabled: configuration.multibuffer,
                                    minimumFillOverride: configuration.multibufferMinimumFill)
            let lanes = WorkerPool.Lanes(width: LanePolicy.width, key: LanePolicy.key(of:),
                                         minimumFill: { policy.minimumFill(forKey: $0) },
                                         execute: { items in
                                             if delay > 0 { usleep(delay) }
                                             EngineRuntime.shared.executeLanes(items)
                                         })
            let fresh = WorkerPool(threadCount: configuration.workerCount,
                                   queueCapacity: configuration.queueDepth,
                                   notifyBatch: configuration.notifyBatch,
                                   notifyDelayMicroseconds: configuration.notifyDelayMicroseconds,
                                   idleSpinMicroseconds: configuration.idleSpinMicroseconds,
                                   lanes: lanes,
                                   execute: { item in
                                       if delay > 0 { usleep(delay) }
                                       EngineRuntime.shared.execute(item)
                                   },
                                   notify: { EngineRuntime.shared.notify($0) },
                                   threadWillExit: { sa_worker_will_exit() })
            guard fresh.start() else { return nil }
            statistics.queueHighWater.store(0, ordering: .relaxed)
            pool = fresh
            return fresh
        }
    }

    // MARK: Operations

    func submit(_ operation: UnsafeMutablePointer<sa_operation>) -> sa_submit_result {
        guard let pool = currentPool() else { return SA_SUBMIT_UNAVAILABLE }
        return account(pool.trySubmit(UnsafeMutableRawPointer(operation)), operation)
    }

    /// Sync offload: queue (waiting for room) and block until a worker is done.
    func runAndWait(_ operation: UnsafeMutablePointer<sa_operation>) -> Bool {
        guard let pool = currentPool(), let waiter = ThreadWaiter.current() else { return false }
        operation.pointee.wake = sa_wake(fd: waiter.fd, callback: nil, callback_arg: nil, guard: nil)
        guard account(pool.submitWaitingForRoom(UnsafeMutableRawPointer(operation)),
                      operation) == SA_SUBMIT_QUEUED else { return false }
        waiter.wait()
        return true
    }

    private func account(_ outcome: WorkerPool.SubmitOutcome,
                         _ operation: UnsafeMutablePointer<sa_operation>) -> sa_submit_result {
        let counters = statistics.counters(for: operation.pointee.algorithm)
        switch outcome {
        case .queued(let depth):
            publisher.noteChange()
            counters.offloaded.increment()
            statistics.noteQueueDepth(depth)
            return SA_SUBMIT_QUEUED
        case .full:
            publisher.noteChange()
            counters.retried.increment()
            return SA_SUBMIT_FULL
        case .stopped:
            return SA_SUBMIT_UNAVAILABLE
        }
    }

    func noteInline(_ algorithm: sa_algorithm, succeeded: Bool) {
        let counters = statistics.counters(for: algorithm)
        publisher.noteChange()
        counters.inline.increment()
        if !succeeded { counters.failed.increment() }
    }

    /// A worker's part in one operation: the math, then the result made
    /// visible to its job (a spurious resume from here on finds it done).
    private func execute(_ item: UnsafeMutableRawPointer) {
        let operation = item.assumingMemoryBound(to: sa_operation.self)
        if sa_operation_execute(operation) == 0 {
            statistics.counters(for: operation.pointee.algorithm).failed.increment()
        }
        sa_operation_publish_done(operation)
    }

    /// Like operations together: one 8-lane call for those that qualify, the
    /// rest one by one; each result made visible to its job.
    private func executeLanes(_ items: [UnsafeMutableRawPointer]) {
        var operations = items.map { Optional($0.assumingMemoryBound(to: sa_operation.self)) }
        var succeeded = [Int32](repeating: 0, count: items.count)
        let inLanes = Int(sa_operations_execute_lanes(&operations, Int32(items.count), &succeeded))
        let counters = statistics.counters(for: operations[0]!.pointee.algorithm)
        if inLanes > 0 {
            counters.lanes.wrappingAdd(inLanes, ordering: .relaxed)
            counters.laneCalls.increment()
        }
        for (operation, ok) in zip(operations, succeeded) {
            if ok == 0 { counters.failed.increment() }
            sa_operation_publish_done(operation!)
        }
    }

    /// Then the owner is woken and the worker lets go of the record.
    private func notify(_ item: UnsafeMutableRawPointer) {
        let operation = item.assumingMemoryBound(to: sa_operation.self)
        let algorithm = operation.pointee.algorithm
        let delivered = Wakeup.deliver(operation.pointee.wake)
        sa_operation_release(operation)
        if !delivered { statistics.wakeupsWithheld.increment() }
        // Last: whoever sees the count knows this worker is done with the record and its wake-up.
        statistics.counters(for: algorithm).completed.wrappingAdd(1, ordering: .releasing)
        publisher.noteChange()
    }

    // MARK: Statistics

    func report() -> String {
        let header = lock.withLock {
            let (queued, busy) = pool?.occupancy() ?? (0, 0)
            return "swiftasync pid=\(getpid()) start=\(processStart) command=\(Self.commandName)"
                + " threads=\(configuration.workerCount) running_threads=\(pool?.threadCount ?? 0)"
                + " queue_depth=\(configuration.queueDepth) sync_offload=\(configuration.syncOffload ? 1 : 0)"
                + " queued=\(queued) busy_threads=\(busy)"
                + " multibuffer=\(LanePolicy.status(enabled: configuration.multibuffer))"
        }
        return statistics.report(header: header)
    }

    /// When this process started, in clock ticks since boot (/proc/self/stat,
    /// field 22): with the pid it names the process, even after the pid is reused.
    static func readProcessStart() -> Int {
        guard let line = firstLine(of: "/proc/self/stat"), let close = line.lastIndex(of: ")") else { return 0 }
        let fields = line[line.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? Int(fields[19]) ?? 0 : 0
    }

    /// This process's name, as /proc shows it (spaces made underscores).
    static let commandName: String = {
        guard let name = firstLine(of: "/proc/self/comm") else { return "unknown" }
        return String(name.map { $0 == " " ? "_" : $0 })
    }()

    /// A file's first line, without its newline.
    private static func firstLine(of path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 1024)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 && $0 != 10 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private func appendReport(to path: String) {
        guard let file = fopen(path, "a") else { return }
        fputs(report(), file)
        fclose(file)
    }
}

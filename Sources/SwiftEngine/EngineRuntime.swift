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
    /// Slow forward targets' pools; an operation's `pool` is its index + 1 (0: the pool above).
    private var keyStores: [KeyStorePool] = []
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
        let (retired, stores): (WorkerPool?, [KeyStorePool]) = lock.withLock {
            exiting = true
            return (takePool(), keyStores)
        }
        retired?.shutdown()
        stores.forEach { $0.retire() }
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
        keyStores.forEach { $0.lockForFork() }
    }

    private func resumeAfterForkInParent() {
        keyStores.reversed().forEach { $0.unlockAfterFork() }
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
        let storeOrphans = keyStores.reversed().map { ($0, $0.orphansAfterFork()) }
        let orphans = pool?.abandonAfterFork() ?? []
        pool = nil
        processStart = Self.readProcessStart()
        sa_wake_fds_renew_after_fork()
        let directory = activeEngines > 0 ? configuration.statsDirectory : nil
        lock.unlock()
        publisher.forgetAfterFork()
        publisher.start(directory: directory)
        adopt(orphans, into: currentPool())
        for (store, orphans) in storeOrphans where !orphans.isEmpty {
            adopt(orphans, into: store.currentPool(exiting: false))
        }
    }

    private func adopt(_ orphans: [UnsafeMutableRawPointer], into pool: WorkerPool?) {
        guard !orphans.isEmpty, let pool else { return }
        for item in orphans {
            // Already counted as offloaded in the parent's (copied) counters.
            _ = pool.submitWaitingForRoom(item)
        }
    }

    var prefersInline: Bool { !syncOffload.load(ordering: .relaxed) }

    // MARK: Configuration

    /// The engine's pool computes on the CPU: a key store's settings are not its.
    func set(_ name: String, to value: Int) -> Bool {
        !Configuration.keyStoreNames.contains(name) && reconfigure { $0.set(name, to: value) }
    }

    func set(_ name: String, to value: String) -> Bool {
        !Configuration.keyStoreNames.contains(name) && reconfigure { $0.set(name, to: value) }
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
                || updated.effectiveCallerRunsDepth != configuration.effectiveCallerRunsDepth
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
        var stores: [KeyStorePool] = []
        var statsFile: String?
        var last = false
        lock.withLock {
            activeEngines = max(0, activeEngines - 1)
            guard activeEngines == 0 else { return }
            last = true
            retired = takePool()
            stores = keyStores
            statsFile = exitReportWritten ? nil : configuration.statsFile
            configuration = Configuration.fromEnvironment()
            syncOffload.store(configuration.syncOffload, ordering: .relaxed)
        }
        retired?.shutdown()
        stores.forEach { $0.retire() }
        if last { publisher.stop() }
        if let statsFile { appendReport(to: statsFile) }
    }

    /// The workers leave now, taking their per-thread OpenSSL state with
    /// them; the next operation starts a new pool.
    func retirePool() {
        let (retired, stores) = lock.withLock { (takePool(), keyStores) }
        retired?.shutdown()
        stores.forEach { $0.retire() }
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
                                             EngineRuntime.shared.executeLanes(items, delayMicroseconds: delay)
                                         })
            let fresh = WorkerPool(threadCount: configuration.workerCount,
                                   queueCapacity: configuration.queueDepth,
                                   notifyBatch: configuration.notifyBatch,
                                   notifyDelayMicroseconds: configuration.notifyDelayMicroseconds,
                                   idleSpinMicroseconds: configuration.idleSpinMicroseconds,
                                   callerRunsDepth: configuration.effectiveCallerRunsDepth,
                                   lanes: lanes,
                                   execute: { item in
                                       EngineRuntime.execute(item, counting: EngineRuntime.shared.statistics,
                                                             delayMicroseconds: delay)
                                   },
                                   notify: { EngineRuntime.shared.notify($0, counting: EngineRuntime.shared.statistics) },
                                   threadWillExit: { sa_worker_will_exit() })
            guard fresh.start() else { return nil }
            statistics.queueHighWater.store(0, ordering: .relaxed)
            pool = fresh
            return fresh
        }
    }

    // MARK: Key stores

    /// The pool id of the key store NAME (a provider instance), made on first use; an
    /// instance loaded again starts from the defaults (its counters go on).
    func registerKeyStore(_ name: String) -> Int32 {
        let (id, existing) = lock.withLock { () -> (Int32, KeyStorePool?) in
            if let index = keyStores.firstIndex(where: { $0.name == name }) { return (Int32(index + 1), keyStores[index]) }
            keyStores.append(KeyStorePool(name: name))
            return (Int32(keyStores.count), nil)
        }
        existing?.reset()
        return id
    }

    func keyStore(_ id: Int32) -> KeyStorePool? {
        lock.withLock { keyStoreLocked(id) }
    }

    private func keyStoreLocked(_ id: Int32) -> KeyStorePool? {
        id > 0 && Int(id) <= keyStores.count ? keyStores[Int(id) - 1] : nil
    }

    /// The pool an operation goes to, and the counters it is counted in.
    private func route(_ operation: UnsafeMutablePointer<sa_operation>) -> (WorkerPool?, Statistics) {
        let id = operation.pointee.pool
        guard id > 0 else { return (currentPool(), statistics) }
        let (store, processExiting) = lock.withLock { (keyStoreLocked(id), exiting) }
        guard let store else { return (nil, statistics) }
        return (store.currentPool(exiting: processExiting), store.statistics)
    }

    // MARK: Operations

    func submit(_ operation: UnsafeMutablePointer<sa_operation>) -> sa_submit_result {
        let (pool, statistics) = route(operation)
        guard let pool else { return SA_SUBMIT_UNAVAILABLE }
        operation.pointee.submitted_ns = UInt64(monotonicNanoseconds())
        return account(pool.trySubmit(UnsafeMutableRawPointer(operation)), operation, statistics)
    }

    /// Sync offload: queue (waiting for room) and block until a worker is done.
    func runAndWait(_ operation: UnsafeMutablePointer<sa_operation>) -> Bool {
        let (pool, statistics) = route(operation)
        guard let pool, let waiter = ThreadWaiter.current() else { return false }
        operation.pointee.wake = sa_wake(fd: waiter.fd, callback: nil, callback_arg: nil, guard: nil)
        operation.pointee.submitted_ns = UInt64(monotonicNanoseconds())
        guard account(pool.submitWaitingForRoom(UnsafeMutableRawPointer(operation)),
                      operation, statistics) == SA_SUBMIT_QUEUED else { return false }
        waiter.wait()
        return true
    }

    private func account(_ outcome: WorkerPool.SubmitOutcome,
                         _ operation: UnsafeMutablePointer<sa_operation>,
                         _ statistics: Statistics) -> sa_submit_result {
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
        case .callerRuns:
            // Counted inline by the caller, which computes it.
            statistics.callerRan.increment()
            return SA_SUBMIT_UNAVAILABLE
        }
    }

    /// On the application's thread: the engine pool's counters take no lock.
    func noteInline(_ algorithm: sa_algorithm, inPool id: Int32, succeeded: Bool) {
        let counters = (id > 0 ? keyStore(id)?.statistics ?? statistics : statistics).counters(for: algorithm)
        publisher.noteChange()
        counters.inline.increment()
        if !succeeded { counters.failed.increment() }
    }

    /// A worker's part in one operation: the math, then the result made
    /// visible to its job (a spurious resume from here on finds it done).
    /// A result after the deadline is dropped (counted as late where the call was made).
    /// `delayMicroseconds`: WORKER_DELAY_USEC, after its time in the queue is noted.
    static func execute(_ item: UnsafeMutableRawPointer, counting statistics: Statistics, delayMicroseconds: UInt32 = 0) {
        let operation = item.assumingMemoryBound(to: sa_operation.self)
        statistics.noteStart(operation, now: monotonicNanoseconds())
        if delayMicroseconds > 0 { usleep(delayMicroseconds) }
        let succeeded = sa_operation_execute(operation) != 0
        if sa_operation_publish_done(operation) == 0 {
            if sa_operation_started(operation) != 0 { statistics.lateResults.increment() }
        } else if !succeeded {
            statistics.counters(for: operation.pointee.algorithm).failed.increment()
        }
    }

    /// Like operations together: one 8-lane call for those that qualify, the
    /// rest one by one; each result made visible to its job.
    private func executeLanes(_ items: [UnsafeMutableRawPointer], delayMicroseconds: UInt32) {
        var operations = items.map { Optional($0.assumingMemoryBound(to: sa_operation.self)) }
        let now = monotonicNanoseconds()
        for operation in operations { statistics.noteStart(operation!, now: now) }
        if delayMicroseconds > 0 { usleep(delayMicroseconds) }
        var succeeded = [Int32](repeating: 0, count: items.count)
        let inLanes = Int(sa_operations_execute_lanes(&operations, Int32(items.count), &succeeded))
        let counters = statistics.counters(for: operations[0]!.pointee.algorithm)
        if inLanes > 0 {
            counters.lanes.wrappingAdd(inLanes, ordering: .relaxed)
            counters.laneCalls.increment()
        }
        for (operation, ok) in zip(operations, succeeded) {
            if ok == 0 { counters.failed.increment() }
            _ = sa_operation_publish_done(operation!)   // the engine's pool has no deadline
        }
    }

    /// Then the owner is woken (unless its deadline woke it already) and the
    /// worker lets go of the record.
    func notify(_ item: UnsafeMutableRawPointer, counting statistics: Statistics) {
        let operation = item.assumingMemoryBound(to: sa_operation.self)
        let algorithm = operation.pointee.algorithm
        if sa_operation_missed_deadline(operation) == 0 {
            statistics.noteWake(operation, now: monotonicNanoseconds())
            wake(operation)
        }
        sa_operation_release(operation)
        // Last: whoever sees the count knows this worker is done with the record and its wake-up.
        statistics.counters(for: algorithm).completed.wrappingAdd(1, ordering: .releasing)
        publisher.noteChange()
    }

    /// Wakes the operation's owner; one the application had freed is counted as withheld.
    func wake(_ operation: UnsafeMutablePointer<sa_operation>) {
        if !Wakeup.deliver(operation.pointee.wake) { statistics.wakeupsWithheld.increment() }
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
        let stores = lock.withLock { keyStores }
        return statistics.report(header: header) + stores.map { $0.report() }.joined()
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

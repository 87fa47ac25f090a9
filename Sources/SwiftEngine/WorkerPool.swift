import Glibc

/// N threads taking opaque work items from one bounded FIFO. It knows nothing
/// of OpenSSL: the engine hands it records, a handler that runs one and a
/// handler that tells its owner it is done.
///
/// While more work is queued, a worker tells owners in batches of up to
/// `notifyBatch`: the application is woken once for several results instead
/// of once each, and the cores stay on the math. With nothing queued it tells
/// each owner at once, so a lone operation never waits.
final class WorkerPool: @unchecked Sendable {
    typealias Handler = @Sendable (UnsafeMutableRawPointer) -> Void

    enum SubmitOutcome: Equatable {
        case queued(depth: Int)
        case full
        case stopped
    }

    let threadCount: Int
    let notifyBatch: Int
    private let execute: Handler
    private let notify: Handler
    private let lock = PThreadLock()
    private let workAvailable = PThreadCondition()
    private let roomAvailable = PThreadCondition()
    private var queue: RingBuffer
    private var sleepingWorkers = 0
    private var waitingSubmitters = 0
    private var stopping = false
    private var threads: [pthread_t] = []

    init(threadCount: Int, queueCapacity: Int, notifyBatch: Int = 1,
         execute: @escaping Handler, notify: @escaping Handler) {
        self.threadCount = threadCount
        self.notifyBatch = max(1, notifyBatch)
        self.execute = execute
        self.notify = notify
        queue = RingBuffer(capacity: queueCapacity)
    }

    deinit { queue.deallocate() }

    /// Starts the threads with every signal blocked: signals belong to the
    /// host application's threads. Returns false if no thread could start.
    func start() -> Bool {
        var all = sigset_t(), previous = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }

        for _ in 0..<threadCount {
            var thread = pthread_t()
            let context = Unmanaged.passRetained(self).toOpaque()
            let created = pthread_create(&thread, nil, { context in
                let pool = Unmanaged<WorkerPool>.fromOpaque(context!).takeRetainedValue()
                pool.runWorker()
                return nil
            }, context)
            if created != 0 {
                Unmanaged<WorkerPool>.fromOpaque(context).release()
                break
            }
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

    private func runWorker() {
        var done: [UnsafeMutableRawPointer] = []
        done.reserveCapacity(notifyBatch)
        func notifyAll() {
            for item in done { notify(item) }
            done.removeAll(keepingCapacity: true)
        }
        lock.lock()
        while true {
            if let item = queue.pop() {
                let wakeSubmitter = waitingSubmitters > 0
                lock.unlock()
                if wakeSubmitter { roomAvailable.signal() }
                if done.count >= notifyBatch { notifyAll() }
                execute(item)
                done.append(item)
                lock.lock()
            } else if !done.isEmpty {
                lock.unlock()
                notifyAll()
                lock.lock()
            } else if stopping {
                break
            } else {
                sleepingWorkers += 1
                workAvailable.wait(lock)
                sleepingWorkers -= 1
            }
        }
        lock.unlock()
    }
}

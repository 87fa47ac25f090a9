import COpenSSL
import Foundation

/// How a paused job's owner learns it can resume.
public enum WakeMode: String, CaseIterable, Sendable {
    /// The engine's eventfd in the job's ASYNC_WAIT_CTX, waited on with poll().
    case waitFD = "wait-fd"
    /// ASYNC_WAIT_CTX_set_callback: the engine calls back from its worker.
    case callback
}

/// Runs operations each in its own ASYNC_JOB, all at once, on the calling
/// thread, the way an event-driven application does; returns their results.
///
/// The operation bodies run on OpenSSL's fibre stacks: keep them to one call
/// into OpenSSL with locals, no class-property access held across it.
public final class AsyncBatch {
    public struct Outcome {
        public var results: [Int32]
        /// Resumes that found the operation still running (forced spurious resumes).
        public var spuriousResumes = 0
        /// Pauses the engine ended with ASYNC_STATUS_EAGAIN (callback mode only).
        public var eagainStatuses = 0
    }

    final class Slot {
        let body: () -> Int32
        var job: OpaquePointer?
        var waitContext: OpaquePointer!
        var result: Int32 = 0
        var finished = false
        init(body: @escaping () -> Int32) {
            self.body = body
            waitContext = ASYNC_WAIT_CTX_new()
        }
        deinit { ASYNC_WAIT_CTX_free(waitContext) }
    }

    /// - Parameters:
    ///   - spurious: resume every paused job once before its wake-up arrives.
    ///   - timeout: seconds without any wake-up before giving up (a hang is a failure).
    public static func run(_ bodies: [() -> Int32], mode: WakeMode, spurious: Bool = false,
                           timeout: Double = 60) throws -> Outcome {
        try start(bodies, mode: mode, spurious: spurious).finish(timeout: timeout)
    }

    /// Starts every job and leaves them paused (or finished): the caller can
    /// do something, such as fork, while their operations are in flight.
    public static func start(_ bodies: [() -> Int32], mode: WakeMode, spurious: Bool = false) throws -> AsyncBatch {
        let running = AsyncBatch(slots: bodies.map(Slot.init), mode: mode)
        if mode == .callback {
            for (index, slot) in running.slots.enumerated() {
                ASYNC_WAIT_CTX_set_callback(slot.waitContext, CallbackPipe.callback,
                                            CallbackPipe.argument(batch: running.batch, index: index))
            }
        }
        for index in running.slots.indices where try !step(running.slots[index]) {
            running.pending.insert(index)
        }
        if spurious {
            for index in running.pending.sorted() {
                if try step(running.slots[index]) { running.pending.remove(index) } else { running.outcome.spuriousResumes += 1 }
            }
        }
        return running
    }

    let slots: [Slot]
    let mode: WakeMode
    let batch = CallbackPipe.newBatch()
    var pending = Set<Int>()
    var outcome = Outcome(results: [])

    init(slots: [Slot], mode: WakeMode) {
        self.slots = slots
        self.mode = mode
    }

    /// Frees the wait ctx of every job still paused, as an application does
    /// when it closes connections mid-operation; those jobs are never
    /// resumed. Returns the wait fds the freed ctxs had.
    public func abandonPending() -> [Int32] {
        var fds: [Int32] = []
        for index in pending.sorted() {
            fds += Self.waitFDs(slots[index].waitContext)
            ASYNC_WAIT_CTX_free(slots[index].waitContext)
            slots[index].waitContext = nil
        }
        pending.removeAll()
        return fds
    }

    /// Jobs of this batch called back within `seconds`.
    public func callbacks(within seconds: Double) -> [Int] {
        CallbackPipe.tokens(batch: batch, within: seconds)
    }

    /// Resumes jobs as their wake-ups arrive until all have finished.
    public func finish(timeout: Double = 60) throws -> Outcome {
        while !pending.isEmpty {
            let ready = mode == .waitFD
                ? try Self.readyByFD(slots, pending, timeout: timeout)
                : try CallbackPipe.wait(batch: batch, timeout: timeout)
            for index in ready where pending.contains(index) {
                if mode == .callback,
                   ASYNC_WAIT_CTX_get_status(slots[index].waitContext) == ASYNC_STATUS_EAGAIN {
                    outcome.eagainStatuses += 1
                }
                if try Self.step(slots[index]) { pending.remove(index) }
            }
        }
        outcome.results = slots.map(\.result)
        return outcome
    }

    /// Starts or resumes one job; true once it has finished.
    private static func step(_ slot: Slot) throws -> Bool {
        var returned: Int32 = 0
        var context = Unmanaged.passUnretained(slot).toOpaque()
        let status = ASYNC_start_job(&slot.job, slot.waitContext, &returned, { argument in
            let slot = Unmanaged<Slot>.fromOpaque(
                argument!.load(as: UnsafeMutableRawPointer.self)).takeUnretainedValue()
            let body = slot.body
            return body()
        }, &context, MemoryLayout<UnsafeMutableRawPointer>.size)
        switch status {
        case ASYNC_PAUSE:
            return false
        case ASYNC_FINISH:
            slot.result = returned
            slot.finished = true
            return true
        default:
            throw HarnessError("ASYNC_start_job returned \(status)")
        }
    }

    static func waitFDs(_ waitContext: OpaquePointer) -> [Int32] {
        var count = 0
        ASYNC_WAIT_CTX_get_all_fds(waitContext, nil, &count)
        var fds = [Int32](repeating: -1, count: count)
        ASYNC_WAIT_CTX_get_all_fds(waitContext, &fds, &count)
        return fds
    }

    private static func readyByFD(_ slots: [Slot], _ pending: Set<Int>, timeout: Double) throws -> [Int] {
        var polled: [pollfd] = []
        var owners: [Int] = []
        for index in pending.sorted() {
            let fds = waitFDs(slots[index].waitContext)
            guard !fds.isEmpty else { throw HarnessError("paused job \(index) registered no wait fd") }
            for fd in fds {
                polled.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
                owners.append(index)
            }
        }
        let count = poll(&polled, nfds_t(polled.count), Int32(timeout * 1000))
        guard count > 0 else { throw HarnessError("no wait fd became readable in \(timeout) s") }
        return zip(polled, owners).filter { $0.0.revents != 0 }.map(\.1)
    }
}

/// Where async callbacks land: one pipe for the life of the process, so a
/// worker calling back late never writes to a closed or reused fd. The
/// engine calls back from its worker threads; the pipe hands the job to the
/// loop's thread, as an event loop would. A token is (batch << 20) | (index + 1).
enum CallbackPipe {
    static let fds: (read: Int32, write: Int32) = {
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0, "pipe failed")
        return (fds[0], fds[1])
    }()
    private static let batches = Locked(UInt64(0))

    static func newBatch() -> UInt64 { batches.withLock { $0 += 1; return $0 } }

    static func argument(batch: UInt64, index: Int) -> UnsafeMutableRawPointer? {
        UnsafeMutableRawPointer(bitPattern: UInt((batch << 20) | UInt64(index + 1)))
    }

    static let callback: ASYNC_callback_fn = { argument in
        var token = UInt64(UInt(bitPattern: argument))
        return write(CallbackPipe.fds.write, &token, 8) == 8 ? 1 : 0
    }

    /// Like wait, with none for a timeout.
    static func tokens(batch: UInt64, within seconds: Double) -> [Int] {
        (try? wait(batch: batch, timeout: seconds)) ?? []
    }

    /// Job indices of this batch that were called back; waits up to `timeout`.
    static func wait(batch: UInt64, timeout: Double) throws -> [Int] {
        var descriptor = pollfd(fd: fds.read, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, Int32(timeout * 1000)) == 1 else {
            throw HarnessError("no async callback in \(timeout) s")
        }
        var tokens = [UInt64](repeating: 0, count: 256)
        let bytes = read(fds.read, &tokens, tokens.count * 8)
        guard bytes > 0 else { throw HarnessError("callback pipe read failed") }
        return tokens.prefix(bytes / 8).filter { $0 >> 20 == batch }.map { Int($0 & 0xFFFFF) - 1 }
    }
}

extension CallbackPipe {
    /// SSL_CTX_set_async_callback's form; the token is the SSL's callback arg.
    static let sslCallback: SSL_async_callback_fn = { _, argument in
        var token = UInt64(UInt(bitPattern: argument))
        return write(CallbackPipe.fds.write, &token, 8) == 8 ? 1 : 0
    }
}

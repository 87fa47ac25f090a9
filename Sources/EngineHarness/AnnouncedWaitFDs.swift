import COpenSSL
import Foundation

/// An application's view of a job's wait fds. It learns of them only from
/// ASYNC_WAIT_CTX_get_changed_fds when the job pauses (HAProxy puts exactly
/// those into its poller), and at close it deletes from its fd table every
/// fd SSL_get_all_async_fds returns. An fd in the wait ctx that no pause
/// announced is one it never saw: HAProxy dies on it.
public enum AnnouncedWaitFDs {
    public struct Outcome {
        public var result: Int32
        /// Times the job paused before it finished.
        public var pauses: Int
        /// Fds the wait ctx holds at the end that no pause announced.
        public var unannounced: [Int32]
        /// Pauses that found an error on the thread's queue (SSL_get_error would say SSL_ERROR_SSL).
        public var pausesWithErrorsQueued: Int
    }

    final class Job {
        let body: () -> Int32
        init(_ body: @escaping () -> Int32) { self.body = body }
    }

    /// Runs `body` in one job to its end, waking it as the application would:
    /// on the announced fds (wait-fd mode), or by resuming it every 100 µs
    /// (callback mode; the callback does nothing). A job that pauses with no
    /// announced fd to wait on, or does not finish in `timeout` seconds, throws.
    public static func run(_ body: @escaping () -> Int32, mode: WakeMode, timeout: Double = 30) throws -> Outcome {
        guard let waitContext = ASYNC_WAIT_CTX_new() else { throw HarnessError("ASYNC_WAIT_CTX_new") }
        defer { ASYNC_WAIT_CTX_free(waitContext) }
        if mode == .callback {
            ASYNC_WAIT_CTX_set_callback(waitContext, { _ in 1 }, nil)
        }
        let job = Job(body)
        var asyncJob: OpaquePointer?
        var returned: Int32 = 0
        var announced = Set<Int32>()
        var pauses = 0, pausesWithErrorsQueued = 0
        let deadline = Date().addingTimeInterval(timeout)
        var context = Unmanaged.passUnretained(job).toOpaque()
        var status = ASYNC_start_job(&asyncJob, waitContext, &returned, { argument in
            let job = Unmanaged<Job>.fromOpaque(argument!.load(as: UnsafeMutableRawPointer.self)).takeUnretainedValue()
            let body = job.body
            return body()
        }, &context, MemoryLayout<UnsafeMutableRawPointer>.size)
        while status == ASYNC_PAUSE {
            pauses += 1
            if ERR_peek_error() != 0 { pausesWithErrorsQueued += 1 }
            let (added, deleted) = changedFDs(waitContext)
            announced.formUnion(added)
            announced.subtract(deleted)
            guard Date() < deadline else { throw HarnessError("the job did not finish in \(timeout) s") }
            if mode == .waitFD {
                guard !announced.isEmpty else { throw HarnessError("the job paused with no announced wait fd") }
                var polled = announced.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
                _ = poll(&polled, nfds_t(polled.count), 100)
            } else {
                usleep(100)
            }
            status = ASYNC_start_job(&asyncJob, waitContext, &returned, nil, nil, 0)
        }
        guard status == ASYNC_FINISH else { throw HarnessError("ASYNC_start_job returned \(status)") }
        let unannounced = AsyncBatch.waitFDs(waitContext).filter { !announced.contains($0) }
        return Outcome(result: returned, pauses: pauses, unannounced: unannounced,
                       pausesWithErrorsQueued: pausesWithErrorsQueued)
    }

    static func changedFDs(_ waitContext: OpaquePointer) -> (added: [Int32], deleted: [Int32]) {
        var addedCount = 0, deletedCount = 0
        ASYNC_WAIT_CTX_get_changed_fds(waitContext, nil, &addedCount, nil, &deletedCount)
        var added = [Int32](repeating: -1, count: addedCount)
        var deleted = [Int32](repeating: -1, count: deletedCount)
        ASYNC_WAIT_CTX_get_changed_fds(waitContext, &added, &addedCount, &deleted, &deletedCount)
        return (added, deleted)
    }
}

import CEngineShim
import Glibc
import Synchronization

/// Live counters for readers outside the process (`engine-loader stats`):
/// nginx and HAProxy give no ctrl access, and a failed engine load looks like
/// success there. While the engine is in use, a thread rewrites
/// `<directory>/<pid>.stats` in place whenever something changed, at most
/// every `interval`; the report ends with an `end` line, so a reader can tell
/// a torn read. The file is world-writable in a sticky directory: servers
/// create it as root and keep writing it after dropping privileges. It goes
/// when the process exits.
final class StatsPublisher: @unchecked Sendable {
    static let defaultDirectory = "/dev/shm/swiftasync"
    static let intervalMicroseconds = 200_000

    private let report: @Sendable () -> String
    private let lock = PThreadLock()
    private let stopRequested = PThreadCondition()
    private var thread: pthread_t?
    private var running = false
    private var directory: String?
    private var publishedPath: String?
    /// Set by every counted event, cleared by each publication.
    private let changed = Atomic<Bool>(false)

    init(report: @escaping @Sendable () -> String) {
        self.report = report
    }

    func noteChange() {
        changed.store(true, ordering: .relaxed)
    }

    /// Starts publishing into `directory` (nil: stop publishing).
    func start(directory: String?) {
        lock.withLock {
            self.directory = directory
            guard directory != nil, !running else { return }
            // The thread's first step waits for this lock: it sees `running` set.
            thread = EngineThread.start(named: "stat") { [self] in run() }
            running = thread != nil
        }
    }

    /// Publishes a last time and joins the thread (the engine's last finish).
    func stop() {
        let joining: pthread_t? = lock.withLock {
            running = false
            defer { thread = nil }
            return thread
        }
        stopRequested.signal()
        if let joining { pthread_join(joining, nil) }
        lock.withLock { publishLocked() }
    }

    /// Held across fork (taken before the engine's other locks: a publication
    /// holds it while it takes them), so no publication is half done in the child.
    func lockForFork() { lock.lock() }
    func unlockAfterFork() { lock.unlock() }

    /// In a forked child: the thread is gone, and the parent's file is not ours.
    func forgetAfterFork() {
        thread = nil
        running = false
        publishedPath = nil
        changed.store(true, ordering: .relaxed)
    }

    /// At exit: readers should not find a process that is gone, and nothing
    /// later in the exit (OpenSSL finishing the engine) may write it again.
    func removeFile() {
        lock.withLock {
            directory = nil
            if let publishedPath { unlink(publishedPath) }
            publishedPath = nil
        }
    }

    /// Each publication runs with the lock held, so that fork (which takes the
    /// lock first) never copies a half-done one: the Swift runtime's and
    /// libc's locks it may take stay free in the child.
    private func run() {
        changed.store(true, ordering: .relaxed)
        lock.lock()
        while running {
            // A publication that failed (no fd left: the process is at its limit) is tried again.
            if changed.exchange(false, ordering: .relaxed) && !publishLocked() { changed.store(true, ordering: .relaxed) }
            stopRequested.wait(lock, microseconds: Self.intervalMicroseconds)
        }
        lock.unlock()
    }

    /// False when the file could not be written.
    @discardableResult
    private func publishLocked() -> Bool {
        guard let directory else { return true }
        let text = report() + "end\n"
        if mkdir(directory, 0o1777) == 0 { chmod(directory, 0o1777) }
        let path = "\(directory)/\(getpid()).stats"
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o666)
        guard fd >= 0 else { return false }
        fchmod(fd, 0o666)
        let length = text.utf8.count
        let written = text.utf8CString.withUnsafeBufferPointer { pwrite(fd, $0.baseAddress, length, 0) }
        if written == length { ftruncate(fd, off_t(length)) }
        close(fd)
        publishedPath = path
        return written == length
    }
}

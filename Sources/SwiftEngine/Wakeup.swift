import CEngineShim
import Glibc

/// How a finished operation's owner learns of it: the app's async callback,
/// or one count added to an eventfd (a job's wait fd, or a blocked thread's).
enum Wakeup {
    /// False if the owner had freed the connection: nothing was delivered.
    static func deliver(_ wake: sa_wake) -> Bool {
        if wake.guard != nil {
            var wake = wake
            return sa_wake_deliver(&wake) != 0
        }
        if wake.fd >= 0 {
            var one: UInt64 = 1
            while write(wake.fd, &one, MemoryLayout<UInt64>.size) < 0 && errno == EINTR {}
        }
        return true
    }
}

/// A blocking eventfd per application thread, for sync offload: created on
/// the thread's first wait, closed when the thread exits.
struct ThreadWaiter {
    let fd: Int32

    private static let key: pthread_key_t? = {
        var key = pthread_key_t()
        let created = pthread_key_create(&key) { stored in
            close(Int32(Int(bitPattern: stored)) - 1)
        }
        return created == 0 ? key : nil
    }()

    static func current() -> ThreadWaiter? {
        guard let key else { return nil }
        if let stored = pthread_getspecific(key) {
            return ThreadWaiter(fd: Int32(Int(bitPattern: stored)) - 1)
        }
        let fd = sa_eventfd_new_blocking()
        guard fd >= 0 else { return nil }
        pthread_setspecific(key, UnsafeRawPointer(bitPattern: Int(fd) + 1))
        return ThreadWaiter(fd: fd)
    }

    /// Blocks until a worker has added to the eventfd, consuming it.
    func wait() {
        var count: UInt64 = 0
        while read(fd, &count, MemoryLayout<UInt64>.size) < 0 && errno == EINTR {}
    }
}

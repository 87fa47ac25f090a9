import Glibc

/// A value shared between threads, behind a pthread mutex.
///
/// Not Synchronization's Mutex: under contention it hands the lock over in
/// the kernel (a PI futex), which ThreadSanitizer cannot see, so every value
/// it guards would be reported as a race. pthread locks it understands.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    public func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

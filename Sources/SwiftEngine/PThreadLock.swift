import Glibc

/// A pthread mutex with condition variables: what the pool's queue and the
/// engine's state need, without Foundation. Heap-allocated so it never moves.
final class PThreadLock: @unchecked Sendable {
    fileprivate let mutex: UnsafeMutablePointer<pthread_mutex_t>

    init() {
        mutex = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}

final class PThreadCondition: @unchecked Sendable {
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    init() {
        condition = .allocate(capacity: 1)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        condition.deallocate()
    }

    /// Waits with `lock` held; returns with it held again.
    func wait(_ lock: PThreadLock) { pthread_cond_wait(condition, lock.mutex) }

    /// The same, giving up after `microseconds`.
    func wait(_ lock: PThreadLock, microseconds: Int) {
        var until = realtime(afterNanoseconds: microseconds * 1000)
        pthread_cond_timedwait(condition, lock.mutex, &until)
    }
    func signal() { pthread_cond_signal(condition) }
    func broadcast() { pthread_cond_broadcast(condition) }
}

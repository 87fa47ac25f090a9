import CLinux
import Glibc

/// The engine's own threads. They start with every signal blocked, because
/// signals belong to the host application's threads, and they are named
/// "swiftasync-…" (a worker by its index, the stats publisher "stat": Linux
/// keeps 15 bytes), so that top, gdb and the tests can tell them from the host's.
enum EngineThread {
    static let namePrefix = "swiftasync-"

    private final class Start {
        let body: () -> Void
        init(body: @escaping () -> Void) { self.body = body }
    }

    /// Returns nil if the thread could not be created. A longer name is cut, not refused.
    static func start(named name: String, _ body: @escaping () -> Void) -> pthread_t? {
        var all = sigset_t(), previous = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_SETMASK, &all, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let start = Unmanaged.passRetained(Start(body: body)).toOpaque()
        var thread = pthread_t()
        guard pthread_create(&thread, nil, { context in
            Unmanaged<Start>.fromOpaque(context!).takeRetainedValue().body()
            return nil
        }, start) == 0 else {
            Unmanaged<Start>.fromOpaque(start).release()
            return nil
        }
        // Named here rather than by the thread itself: named before anyone can look.
        pthread_setname_np(thread, String((namePrefix + name).utf8.prefix(15))!)
        return thread
    }
}

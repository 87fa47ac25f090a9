import CLinux
import COpenSSL
import EngineHarness
import Glibc

/// The reference for linking the engine into a TLS application: one
/// event-loop thread, epoll, non-blocking sockets, SSL_MODE_ASYNC and
/// SSL_CTX_set_async_callback, following SSL_set_async_callback(3):
///
/// 1-3. SSL_do_handshake/SSL_read/SSL_write return SSL_ERROR_WANT_ASYNC: the
///      engine took the operation; the connection waits, registered nowhere.
/// 4-5. The engine's worker calls `asyncCallback` with the connection's token.
///      It must not touch the SSL: it queues the token and wakes the loop
///      through an eventfd.
/// 6-9. On the loop thread, SSL_get_async_status tells OK (the result is
///      ready: call the same SSL function again) or EAGAIN (the engine was
///      busy: call it again on the next turn of the loop).
final class EventLoopServer {
    struct Summary {
        var handshakes = 0
        var loopCPUSeconds = 0.0
    }

    private final class Connection {
        let fd: Int32
        let ssl: OpaquePointer
        let token: UInt64
        var handshaken = false
        var request: [UInt8] = []
        var response: [UInt8] = []
        var written = 0
        init(fd: Int32, ssl: OpaquePointer, token: UInt64) {
            self.fd = fd
            self.ssl = ssl
            self.token = token
        }
        deinit {
            SSL_free(ssl)
            close(fd)
        }
    }

    private let context: OpaquePointer
    private let listener: Int32
    private let epoll: Int32
    private let wakeup: Int32
    private var connections: [UInt64: Connection] = [:]
    private var nextToken: UInt64 = 1
    private var retryNextTurn: [UInt64] = []
    private var summary = Summary()
    private static let response = Array("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n".utf8)

    /// Tokens the engine's workers handed over: the only state shared with them.
    private static let ready = Locked<[UInt64]>([])
    nonisolated(unsafe) private static var readyWakeup: Int32 = -1

    private static let listenerToken: UInt64 = 0
    private static let wakeupToken = UInt64.max

    init(context: OpaquePointer, port: Int) throws {
        self.context = context
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.listener = listener
        var yes: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 1024) == 0 else { throw HarnessError("cannot listen on 127.0.0.1:\(port)") }
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        wakeup = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        Self.readyWakeup = wakeup
        SSL_CTX_set_async_callback(context, Self.asyncCallback)
        watch(listener, token: Self.listenerToken, events: EPOLLIN.rawValue, add: true)
        watch(wakeup, token: Self.wakeupToken, events: EPOLLIN.rawValue, add: true)
    }

    /// Step 5, on an engine worker: hand the connection back to the loop.
    private static let asyncCallback: SSL_async_callback_fn = { _, argument in
        ready.withLock { $0.append(UInt64(UInt(bitPattern: argument))) }
        var one: UInt64 = 1
        return write(readyWakeup, &one, 8) == 8 ? 1 : 0
    }

    /// Serves until `handshakes` full handshakes have completed (nil: forever).
    func run(handshakes limit: Int?) -> Summary {
        let cpuAtStart = threadCPUSeconds()
        var events = [epoll_event](repeating: epoll_event(), count: 256)
        while limit.map({ summary.handshakes < $0 }) ?? true || !connections.isEmpty {
            let timeout: Int32 = retryNextTurn.isEmpty ? 1000 : 0
            let count = epoll_wait(epoll, &events, Int32(events.count), timeout)
            for event in events.prefix(Int(max(count, 0))) {
                switch event.data.u64 {
                case Self.listenerToken: acceptAll(limit: limit)
                case Self.wakeupToken: resumeCalledBack()
                case let token: if let connection = connections[token] { drive(connection) }
                }
            }
            let retry = retryNextTurn
            retryNextTurn.removeAll()
            for token in retry { if let connection = connections[token] { drive(connection) } }
        }
        summary.loopCPUSeconds = threadCPUSeconds() - cpuAtStart
        return summary
    }

    private func acceptAll(limit: Int?) {
        while true {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            guard let ssl = SSL_new(context) else { close(fd); continue }
            SSL_set_fd(ssl, fd)
            SSL_set_accept_state(ssl)
            let token = nextToken
            nextToken += 1
            SSL_set_async_callback_arg(ssl, UnsafeMutableRawPointer(bitPattern: UInt(token)))
            let connection = Connection(fd: fd, ssl: ssl, token: token)
            connections[token] = connection
            watch(fd, token: token, events: EPOLLIN.rawValue, add: true)
            drive(connection)
        }
    }

    /// Steps 6-9: each called-back connection asks why, then carries on.
    private func resumeCalledBack() {
        var count: UInt64 = 0
        _ = read(wakeup, &count, 8)
        let tokens = Self.ready.withLock { ready -> [UInt64] in
            defer { ready.removeAll(keepingCapacity: true) }
            return ready
        }
        for token in tokens {
            guard let connection = connections[token] else { continue }   // closed meanwhile
            var status: Int32 = 0
            if SSL_get_async_status(connection.ssl, &status) == 1, status == ASYNC_STATUS_EAGAIN {
                retryNextTurn.append(token)
            } else {
                drive(connection)
            }
        }
    }

    /// Runs the connection as far as it can go: handshake, request, response, close.
    private func drive(_ connection: Connection) {
        while true {
            let result: Int32
            if !connection.handshaken {
                result = SSL_do_handshake(connection.ssl)
                if result == 1 {
                    connection.handshaken = true
                    summary.handshakes += 1
                    continue
                }
            } else if connection.response.isEmpty {
                var buffer = [UInt8](repeating: 0, count: 4096)
                result = SSL_read(connection.ssl, &buffer, Int32(buffer.count))
                if result > 0 {
                    connection.request += buffer.prefix(Int(result))
                    if connection.request.suffix(4) == [13, 10, 13, 10] { connection.response = Self.response }
                    continue
                }
            } else {
                result = connection.response[connection.written...].withUnsafeBytes {
                    SSL_write(connection.ssl, $0.baseAddress, Int32($0.count))
                }
                if result > 0 {
                    connection.written += Int(result)
                    if connection.written == connection.response.count { return finish(connection) }
                    continue
                }
            }
            switch SSL_get_error(connection.ssl, result) {
            case SSL_ERROR_WANT_READ: return watch(connection.fd, token: connection.token, events: EPOLLIN.rawValue)
            case SSL_ERROR_WANT_WRITE: return watch(connection.fd, token: connection.token, events: EPOLLOUT.rawValue)
            case SSL_ERROR_WANT_ASYNC: return   // steps 1-3: the callback brings it back
            default: return finish(connection)
            }
        }
    }

    private func finish(_ connection: Connection) {
        SSL_shutdown(connection.ssl)
        epoll_ctl(epoll, EPOLL_CTL_DEL, connection.fd, nil)
        connections[connection.token] = nil
        ERR_clear_error()
    }

    private func watch(_ fd: Int32, token: UInt64, events: UInt32, add: Bool = false) {
        var event = epoll_event()
        event.events = events
        event.data.u64 = token
        epoll_ctl(epoll, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &event)
    }

    private func threadCPUSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}

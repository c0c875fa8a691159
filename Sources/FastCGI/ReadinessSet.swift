import CFastCGI

#if canImport(Glibc)
import Glibc
#endif

/// The sockets kv-fcgi's workers wait on, in one epoll set shared by every worker: the listening
/// socket, nginx's connections between requests, and a stop event.
///
/// Every socket is armed one-shot: a readiness is handed to exactly one worker, and the socket
/// stays silent until that worker re-arms it. So a connection is never served by two workers
/// at once, and an idle kept-alive connection costs a file descriptor but no thread.
///
/// Written on epoll directly rather than on SwiftNIO: libfcgi reads and writes a connection
/// with its own blocking calls on the worker's thread, so what is needed is "which connection
/// has a request", not an event loop that owns the sockets.
final class ReadinessSet: @unchecked Sendable {
    enum Ready: Equatable {
        /// The listening socket has connections to accept.
        case listener
        /// A connection has bytes (a request, or nginx closing it).
        case connection(Int32)
        /// `stop()` was called.
        case stop
        /// Nothing: interrupted, or a failure the caller should log (errno is set).
        case nothing(failed: Bool)
    }

    let listenFD: Int32
    private let epollFD: Int32
    private let stopFD: Int32

    init(listenFD: Int32) throws(FastCGIServer.SocketFailure) {
        self.listenFD = listenFD
        epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        stopFD = eventfd(0, Int32(EFD_CLOEXEC))
        guard epollFD >= 0, stopFD >= 0 else {
            let reason = String(cString: strerror(errno))
            if epollFD >= 0 { close(epollFD) }
            if stopFD >= 0 { close(stopFD) }
            throw FastCGIServer.SocketFailure("cannot create the epoll set: \(reason)")
        }
        // Accepting after a readiness must not block: another process on the same socket (a
        // second kv-fcgi under the same systemd socket) may have taken the connection.
        let flags = fcntl(listenFD, F_GETFL)
        guard flags >= 0, fcntl(listenFD, F_SETFL, flags | O_NONBLOCK) == 0,
              add(listenFD, oneShot: true), add(stopFD, oneShot: false) else {
            let reason = String(cString: strerror(errno))
            close(epollFD); close(stopFD)
            throw FastCGIServer.SocketFailure("cannot watch the listening socket: \(reason)")
        }
    }

    deinit {
        close(epollFD)
        close(stopFD)
    }

    /// Blocks until sockets are ready and hands up to `limit` of them to this caller alone,
    /// replacing `ready`'s contents.
    func wait(limit: Int, into ready: inout [Ready]) {
        ready.removeAll(keepingCapacity: true)
        withUnsafeTemporaryAllocation(of: epoll_event.self, capacity: limit) { events in
            guard let base = events.baseAddress else { return }
            let count = epoll_wait(epollFD, base, Int32(events.count), -1)
            guard count > 0 else {
                ready.append(.nothing(failed: count < 0 && errno != EINTR))
                return
            }
            for event in events.prefix(Int(count)) {
                switch event.data.fd {
                case stopFD: ready.append(.stop)
                case listenFD: ready.append(.listener)
                case let fd: ready.append(.connection(fd))
                }
            }
        }
    }

    /// Watches a newly accepted connection; false (errno set) if it cannot be watched.
    func watch(_ fd: Int32) -> Bool {
        add(fd, oneShot: true)
    }

    /// Makes a socket handed out by `wait()` ready-able again (the connection or the listener).
    func rearm(_ fd: Int32) -> Bool {
        var event = Self.event(fd, oneShot: true)
        return epoll_ctl(epollFD, EPOLL_CTL_MOD, fd, &event) == 0
    }

    /// Wakes every waiting worker with `.stop`, now and on every later `wait()` (the event is
    /// level-triggered and never consumed).
    func stop() {
        var one: UInt64 = 1
        _ = write(stopFD, &one, MemoryLayout<UInt64>.size)
    }

    private func add(_ fd: Int32, oneShot: Bool) -> Bool {
        var event = Self.event(fd, oneShot: oneShot)
        return epoll_ctl(epollFD, EPOLL_CTL_ADD, fd, &event) == 0
    }

    private static func event(_ fd: Int32, oneShot: Bool) -> epoll_event {
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | (oneShot ? EPOLLONESHOT.rawValue : 0)
        event.data.fd = fd
        return event
    }
}

import CFastCGI
import CoreMetrics
import KVSystem
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A FastCGI responder on libfcgi: `threads` workers, each with its own `FCGX_Request` (at a
/// fixed address, as libfcgi requires) and its own per-thread state from `makeWorker`, all
/// taking work from one `ReadinessSet`.
///
/// nginx keeps its FastCGI connections open between requests (`fastcgi_keep_conn on`), which
/// saves a connect, an accept and a close per request. libfcgi's own loop would pin a thread to
/// each kept connection, blocked reading the next request, so more kept connections than
/// threads would hang requests (measured: 4 threads, 12 concurrent slow requests, 8 hung every
/// time). Here a worker reads a connection only once it has a request: between requests a
/// connection waits in the readiness set, costing a file descriptor and no thread, so any number
/// of connections share the threads without starving. Without keep-alive (nginx closes after
/// each request) the same loop serves one request per connection.
public final class FastCGIServer: @unchecked Sendable {
    /// Answers requests on one worker thread; not shared between threads.
    public protocol Worker: AnyObject {
        /// Writes an answer to each request of `batch`: those whose connections became ready
        /// together (at most `batchLimit`), so their work can be shared (one store round trip).
        func handle(_ batch: [FastCGIRequest])
    }

    public let listenFD: Int32
    public let threadCount: Int
    /// Longest a worker waits on one read or write of nginx's connection: a stalled connection
    /// costs a thread for at most this long, never for good.
    public let ioTimeoutSeconds: Int
    private let logger: Logger
    private let makeWorker: @Sendable () -> any Worker
    private var threads: [WorkerThread] = []
    private var readiness: ReadinessSet?

    /// The most requests one worker takes at a wake-up.
    public let batchLimit: Int
    /// How many workers take requests at once (`WorkerTurns`).
    public let activeThreads: Int

    public init(listenFD: Int32, threads: Int, activeThreads: Int, batchLimit: Int = 32, ioTimeoutSeconds: Int = 60, logger: Logger,
                makeWorker: @escaping @Sendable () -> any Worker) {
        self.listenFD = listenFD
        self.threadCount = threads
        self.activeThreads = min(max(1, activeThreads), threads)
        self.batchLimit = max(1, batchLimit)
        self.ioTimeoutSeconds = ioTimeoutSeconds
        self.logger = logger
        self.makeWorker = makeWorker
    }

    /// Initialises libfcgi once per process.
    public static func initialise() {
        FCGX_Init()
    }

    /// Starts the workers. Call `stop()` to end them.
    public func start() throws {
        let readiness = try ReadinessSet(listenFD: listenFD)
        self.readiness = readiness
        let turns = WorkerTurns(count: activeThreads)
        for index in 0..<threadCount {
            let loop = WorkerLoop(readiness: readiness, turns: turns, index: index, batchLimit: batchLimit, ioTimeoutSeconds: ioTimeoutSeconds,
                                  logger: logger, makeWorker: makeWorker)
            guard let thread = WorkerThread.start({ loop.run() }) else {
                throw SocketFailure("cannot start worker thread \(index)")
            }
            threads.append(thread)
        }
    }

    /// Stops taking requests; each worker finishes the request it is answering, then exits.
    /// Returns when all have exited. Connections still open close with the process; nginx
    /// retries a request that fails on a kept connection once, on a new one.
    public func stop() {
        FCGX_ShutdownPending()
        readiness?.stop()
        for thread in threads { thread.join() }
        threads.removeAll()
        readiness = nil
    }

    public struct SocketFailure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// The listening socket systemd or spawn-fcgi passed in, if any: `LISTEN_FDS` (fd 3, when
    /// `LISTEN_PID` is this process) or a listening socket on fd 0 (spawn-fcgi's convention).
    public static func inheritedListener() -> Int32? {
        if let pid = getenv("LISTEN_PID").flatMap({ Int32(String(cString: $0)) }), pid == getpid(),
           let count = getenv("LISTEN_FDS").flatMap({ Int(String(cString: $0)) }), count >= 1 {
            return 3
        }
        var listening: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        if getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening != 0 {
            return 0
        }
        return nil
    }
}

/// One worker thread's loop: wait for ready sockets, accept, serve the requests that arrived
/// together as one batch, re-arm their connections.
private final class WorkerLoop: @unchecked Sendable {
    private let readiness: ReadinessSet
    private let turn: WorkerTurns.Turn
    private let index: Int
    private let batchLimit: Int
    private let ioTimeoutSeconds: Int
    private let logger: Logger
    private let makeWorker: @Sendable () -> any Worker
    /// When this thread last logged an accept failure (they can repeat thousands of times a second).
    private var lastAcceptFailureLog: Int64 = .min
    typealias Worker = FastCGIServer.Worker

    /// nginx's FastCGI connections: how many were accepted, and how many are open. With
    /// keep-alive the first grows only when nginx needs more connections than it keeps.
    private static let accepted = Counter(label: "kv_fcgi_connections_accepted_total")
    private static let open = Meter(label: "kv_fcgi_connections")

    /// Connections taken per wake-up of the listener, so one worker does not accept a burst of
    /// thousands while its peers could be serving requests.
    private static let acceptsPerWakeUp = 64
    /// The most a finished request's unread body is read to keep its connection; a longer rest
    /// (a large POST refused unread) closes the connection instead.
    private static let discardableBodyBytes = 64 << 10

    init(readiness: ReadinessSet, turns: WorkerTurns, index: Int, batchLimit: Int, ioTimeoutSeconds: Int, logger: Logger,
         makeWorker: @escaping @Sendable () -> any Worker) {
        self.readiness = readiness
        self.turn = WorkerTurns.Turn(turns)
        self.index = index
        self.batchLimit = batchLimit
        self.ioTimeoutSeconds = ioTimeoutSeconds
        self.logger = logger
        self.makeWorker = makeWorker
    }

    func run() {
        let worker = makeWorker()
        // One FCGX_Request per request of a batch, at fixed addresses as libfcgi requires.
        let slots = UnsafeMutablePointer<FCGX_Request>.allocate(capacity: batchLimit)
        defer { slots.deallocate() }
        // No listening socket for libfcgi (-1): when it fails to read a request it closes the
        // connection and would accept a new one itself; with -1 that accept fails at once and the
        // worker comes back here, where accepting is done.
        for slot in 0..<batchLimit where FCGX_InitRequest(slots + slot, -1, 0) != 0 {
            logger.error("FCGX_InitRequest failed", metadata: ["worker": "\(index)"])
            return
        }
        var ready: [ReadinessSet.Ready] = []
        var batch: [FastCGIRequest] = []
        var stopping = false
        while !stopping {
            turn.take()
            defer { turn.stepAside() }
            readiness.wait(limit: batchLimit, into: &ready)
            batch.removeAll(keepingCapacity: true)
            for item in ready {
                switch item {
                case .stop: stopping = true
                case .listener: acceptConnections()
                case .connection(let fd):
                    let slot = slots + batch.count
                    if begin(fd, in: slot) { batch.append(FastCGIRequest(raw: slot, turn: turn)) }
                case .nothing(failed: true):
                    // Never seen; if epoll itself fails, a pause keeps the loop from spinning.
                    logger.error("waiting for FastCGI connections failed", metadata: ["error": "\(String(cString: strerror(errno)))"])
                    var pause = timespec(tv_sec: 0, tv_nsec: 10_000_000)
                    nanosleep(&pause, nil)
                case .nothing(failed: false): break  // interrupted
                }
            }
            guard !batch.isEmpty else { continue }
            worker.handle(batch)
            for request in batch { end(request) }
        }
        for slot in 0..<batchLimit { FCGX_Free(slots + slot, 1) }
        logger.debug("worker stopped", metadata: ["worker": "\(index)"])
    }

    /// Takes the connections waiting in the listen backlog into the readiness set.
    private func acceptConnections() {
        defer {
            if !readiness.rearm(readiness.listenFD) {
                logger.critical("cannot watch the listening socket any more", metadata: ["error": "\(String(cString: strerror(errno)))"])
            }
        }
        for _ in 0..<Self.acceptsPerWakeUp {
            let fd = accept(readiness.listenFD, nil, nil)
            if fd < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK: return
                case EINTR, ECONNABORTED: continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors or memory: the connection stays in the backlog. A short
                    // pause keeps the loop from spinning on a listener that stays readable.
                    acceptFailed()
                    var pause = timespec(tv_sec: 0, tv_nsec: 10_000_000)
                    nanosleep(&pause, nil)
                    return
                default:
                    acceptFailed()
                    return
                }
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)  // (accept4 is not in Swift's Glibc module)
            // libfcgi reads and writes with plain blocking calls; the socket timeouts make one that
            // waits too long fail (the request is abandoned, the connection closed).
            var timeout = timeval(tv_sec: ioTimeoutSeconds, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            Self.accepted.increment()
            guard readiness.watch(fd) else {
                logger.error("cannot watch a FastCGI connection; closed", metadata: ["error": "\(String(cString: strerror(errno)))"])
                close(fd)
                continue
            }
            Self.open.increment()
        }
    }

    private func acceptFailed() {
        let reason = String(cString: strerror(errno))
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        guard now.tv_sec > lastAcceptFailureLog else { return }
        lastAcceptFailureLog = Int64(now.tv_sec)
        logger.error("cannot accept FastCGI connections (at most one line a second per worker)", metadata: ["error": "\(reason)", "worker": "\(index)"])
    }

    /// Reads the request waiting on `fd` into `slot`; false when there is none.
    private func begin(_ fd: Int32, in slot: UnsafeMutablePointer<FCGX_Request>) -> Bool {
        slot.pointee.ipcFd = fd
        // FCGX_Accept_r first finishes the slot's previous request, closing its connection
        // unless it was kept: this one must survive that.
        slot.pointee.keepConnection = 1
        guard FCGX_Accept_r(slot) >= 0 else {
            // No request: nginx closed the connection (it does so with idle ones), or sent
            // something that is not FastCGI. libfcgi has closed it.
            slot.pointee.ipcFd = -1
            Self.open.decrement()
            return false
        }
        return true
    }

    /// Sends the answered request's end, then hands its connection back to the readiness set,
    /// or closes it if nginx did not ask to keep it (or it failed).
    private func end(_ request: FastCGIRequest) {
        let fd = request.raw.pointee.ipcFd
        // The next request's records follow this one's body on the connection, so the connection
        // can be kept only once the body has been read to its end.
        if !request.discardBody(limit: Self.discardableBodyBytes) {
            request.raw.pointee.keepConnection = 0
        }
        FCGX_Finish_r(request.raw)
        guard request.raw.pointee.ipcFd >= 0 else {  // closed by libfcgi: not kept, or failed
            Self.open.decrement()
            return
        }
        request.raw.pointee.ipcFd = -1
        if !readiness.rearm(fd) {
            logger.error("cannot watch a FastCGI connection after its request; closed", metadata: ["error": "\(String(cString: strerror(errno)))"])
            close(fd)
            Self.open.decrement()
        }
    }
}

import CFastCGI
import KVSystem
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// A FastCGI responder on libfcgi: `threads` workers, each with its own `FCGX_Request` (at a
/// fixed address, as libfcgi requires) and its own per-thread state from `makeWorker`, all
/// accepting on one listening socket.
///
/// One connection per request (nginx without `fastcgi_keep_conn`): with keep-alive, libfcgi pins
/// a worker to each kept nginx connection and requests beyond the thread count hang until
/// timeout (measured: 4 threads, 12 concurrent slow requests, 8 hung every time). Without it, excess connections wait in the listen backlog and are
/// served in turn.
public final class FastCGIServer: @unchecked Sendable {
    /// Answers requests on one worker thread; not shared between threads.
    public protocol Worker: AnyObject {
        func handle(_ request: FastCGIRequest)
    }

    public let listenFD: Int32
    public let threadCount: Int
    /// Longest a worker waits on one read or write of nginx's connection: a stalled connection
    /// costs a thread for at most this long, never for good.
    public let ioTimeoutSeconds: Int
    private let logger: Logger
    private let makeWorker: @Sendable () -> any Worker
    private var threads: [WorkerThread] = []

    public init(listenFD: Int32, threads: Int, ioTimeoutSeconds: Int = 60, logger: Logger, makeWorker: @escaping @Sendable () -> any Worker) {
        self.listenFD = listenFD
        self.threadCount = threads
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
        for index in 0..<threadCount {
            let fd = listenFD, logger = self.logger, makeWorker = self.makeWorker, timeout = ioTimeoutSeconds
            guard let thread = WorkerThread.start({
                Self.workerLoop(listenFD: fd, index: index, ioTimeoutSeconds: timeout, logger: logger, worker: makeWorker())
            }) else {
                throw SocketFailure("cannot start worker thread \(index)")
            }
            threads.append(thread)
        }
    }

    /// Stops accepting; each worker finishes the request it is answering, then exits.
    /// Returns when all have exited.
    public func stop() {
        FCGX_ShutdownPending()
        // Blocked accept() calls return EINVAL once the socket is shut down, which ends
        // FCGX_Accept_r with an error, so no worker waits for one more request.
        shutdown(listenFD, Int32(SHUT_RDWR))
        for thread in threads { thread.join() }
        threads.removeAll()
    }

    private static func workerLoop(listenFD: Int32, index: Int, ioTimeoutSeconds: Int, logger: Logger, worker: any Worker) {
        let request = UnsafeMutablePointer<FCGX_Request>.allocate(capacity: 1)
        defer { request.deallocate() }
        guard FCGX_InitRequest(request, listenFD, 0) == 0 else {
            logger.error("FCGX_InitRequest failed", metadata: ["worker": "\(index)"])
            return
        }
        while FCGX_Accept_r(request) >= 0 {
            // libfcgi reads and writes with plain blocking calls; the socket timeouts make one that
            // waits too long fail (the request is abandoned, the thread goes back to accepting).
            var timeout = timeval(tv_sec: ioTimeoutSeconds, tv_usec: 0)
            setsockopt(request.pointee.ipcFd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(request.pointee.ipcFd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            worker.handle(FastCGIRequest(raw: request))
            FCGX_Finish_r(request)
        }
        FCGX_Free(request, 1)
        logger.debug("worker stopped", metadata: ["worker": "\(index)"])
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

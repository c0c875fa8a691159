#if canImport(Glibc)
import Glibc
#endif

/// A plain POSIX thread. Started from a library function on purpose: closures written in
/// top-level `main.swift` code inherit main-actor isolation and trap when run on a pthread
/// (`dispatch_assert_queue_fail`, SIGILL, as seen with Swift 6.3 on Linux).
public final class WorkerThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: @Sendable () -> Void

    private init(body: @escaping @Sendable () -> Void) {
        self.body = body
    }

    /// Starts `body` on a new thread with a stack of `stackBytes`. The default leaves room for
    /// the JSON reader's 512 levels of recursion in a debug build, which needs close to 1 MiB
    /// (640 KiB overflowed on a 600-deep body); only the pages touched are resident.
    public static func start(stackBytes: Int = 4 << 20, _ body: @escaping @Sendable () -> Void) -> WorkerThread? {
        let worker = WorkerThread(body: body)
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, stackBytes)
        let context = Unmanaged.passRetained(worker).toOpaque()
        let result = pthread_create(&worker.thread, &attributes, { context in
            guard let context else { return nil }
            let worker = Unmanaged<WorkerThread>.fromOpaque(context).takeRetainedValue()
            worker.body()
            return nil
        }, context)
        guard result == 0 else {
            Unmanaged<WorkerThread>.fromOpaque(context).release()
            return nil
        }
        return worker
    }

    /// Moves the calling thread to Linux's `SCHED_IDLE` class: it runs only on CPU time the
    /// other threads leave (a weight of 3 against 1,024 for an ordinary thread, below nice 19).
    /// For background work that must not take the CPU from the threads answering clients.
    /// Returns false when the system refused.
    @discardableResult
    public static func lowerCurrentToIdlePriority() -> Bool {
        #if os(Linux)
        var parameters = sched_param(sched_priority: 0)
        let schedIdle: Int32 = 5  // SCHED_IDLE, <sched.h> (not exported to Swift)
        return pthread_setschedparam(pthread_self(), schedIdle, &parameters) == 0
        #else
        return false
        #endif
    }

    public func join() {
        pthread_join(thread, nil)
    }
}

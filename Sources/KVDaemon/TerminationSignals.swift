#if canImport(Glibc)
import Glibc
#endif

/// SIGTERM/SIGINT (stop) and SIGHUP (reload) for the thread-based daemon (kv-fcgi): the signals
/// are blocked in every thread and taken by `sigwait` on one, so libfcgi's own SIGTERM handler
/// (which only sets a flag) never runs and the daemon can stop its workers in order.
public enum TerminationSignals {
    public static let reload = SIGHUP

    /// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and in every thread it starts later,
    /// and ignores SIGPIPE (a client that went away is an error code, not a crash).
    /// Call before starting any thread.
    public static func block() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGHUP)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Waits for SIGTERM, SIGINT or SIGHUP and returns which arrived.
    public static func wait() -> Int32 {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGHUP)
        var received: Int32 = 0
        while sigwait(&set, &received) != 0 {}
        return received
    }

    public static func name(_ signal: Int32) -> String {
        signal == SIGTERM ? "SIGTERM" : signal == SIGINT ? "SIGINT" : signal == SIGHUP ? "SIGHUP" : "signal \(signal)"
    }
}

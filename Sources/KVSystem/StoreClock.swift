import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Time as the keyspace sees it. Injected so that tests advance time by hand instead of sleeping.
public protocol StoreClock: Sendable {
    /// Monotonic nanoseconds on the scale of `NIODeadline.uptimeNanoseconds`; deadlines live here.
    func monotonicNanoseconds() -> Int64
    /// Unix time in milliseconds; used only to convert absolute deadlines (`PXAT`, `EXAT`).
    func unixMilliseconds() -> Int64
}

/// The real clocks: `CLOCK_MONOTONIC` (through NIO) and `CLOCK_REALTIME`.
public struct SystemClock: StoreClock {
    public init() {}

    public func monotonicNanoseconds() -> Int64 {
        Int64(NIODeadline.now().uptimeNanoseconds)
    }

    public func unixMilliseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }
}

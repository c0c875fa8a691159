/// When to try kv-stored again after failed connection attempts: 50 ms, doubling, at most 2 s.
/// Pure, so the schedule is tested without waiting.
public struct ReconnectBackoff: Sendable, Equatable {
    public var initialMilliseconds: Int64
    public var maximumMilliseconds: Int64
    public private(set) var failures = 0

    public init(initialMilliseconds: Int64 = 50, maximumMilliseconds: Int64 = 2000) {
        self.initialMilliseconds = initialMilliseconds
        self.maximumMilliseconds = maximumMilliseconds
    }

    /// Records a failed attempt and returns how long to wait before the next one.
    public mutating func failed() -> Int64 {
        failures += 1
        let shift = min(failures - 1, 20)
        return min(maximumMilliseconds, initialMilliseconds << shift)
    }

    public mutating func succeeded() {
        failures = 0
    }
}

import DequeModule
import NIOConcurrencyHelpers

/// `SCAN`'s cursors. kv-stored walks its keys in order, so where a scan stands is a key; Redis
/// clients (redis-cli `--scan`, redis-py's `scan_iter`) need a number, so each cursor handed
/// out is a random number standing for the key the next call goes on after. The numbers are
/// kept for the last `maxCursors` calls (and `maxBytes` of keys), oldest dropped first: a
/// scan left idle while that many others ran gets `-ERR invalid cursor` and starts again.
/// Shared by every connection, as Redis's cursors are.
public final class ScanCursors: Sendable {
    public static let maxCursors = 4096, maxBytes = 16 << 20

    private struct Table {
        var keys: [UInt64: [UInt8]] = [:]
        var order = Deque<UInt64>()
        var bytes = 0
    }

    private let table = NIOLockedValueBox(Table())

    public init() {}

    /// A new cursor standing for `key` (never 0: that is the start).
    public func save(_ key: [UInt8]) -> UInt64 {
        table.withLockedValue { table in
            var cursor: UInt64
            repeat { cursor = UInt64.random(in: 1...UInt64.max) } while table.keys[cursor] != nil
            table.keys[cursor] = key
            table.order.append(cursor)
            table.bytes += key.count
            while table.order.count > Self.maxCursors || (table.bytes > Self.maxBytes && table.order.count > 1), let oldest = table.order.popFirst() {
                table.bytes -= table.keys.removeValue(forKey: oldest)?.count ?? 0
            }
            return cursor
        }
    }

    /// The key `cursor` stands for; nil when it was never handed out or has been dropped. A
    /// cursor stays valid after use, so a client may repeat a call.
    public func key(for cursor: UInt64) -> [UInt8]? {
        table.withLockedValue { $0.keys[cursor] }
    }

    public var count: Int { table.withLockedValue { $0.order.count } }
}

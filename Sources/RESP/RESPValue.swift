import NIOCore

/// One RESP2/RESP3 value, as a client receives it.
/// (kv-stored's command path uses the leaner `RESPCommand` instead.)
public indirect enum RESPValue: Sendable, Equatable {
    case simpleString(ByteBuffer)
    case error(ByteBuffer)
    case integer(Int64)
    case bulkString(ByteBuffer)
    /// RESP2 `$-1`/`*-1` and RESP3 `_`.
    case null
    case array([RESPValue])
    /// RESP3 `%`: keys and values alternate.
    case map([RESPValue])
    /// RESP3 `~`.
    case set([RESPValue])
    /// RESP3 `>`: out-of-band data such as pub/sub messages.
    case push([RESPValue])
    /// RESP3 `#`.
    case boolean(Bool)
    /// RESP3 `,` and `(`, kept as their text.
    case double(ByteBuffer)
    case bigNumber(ByteBuffer)
    /// RESP3 `=`: the format prefix (`txt:`) is kept.
    case verbatimString(ByteBuffer)
    /// RESP3 `!`.
    case blobError(ByteBuffer)

    /// The text of a string-like value.
    public var string: String? {
        switch self {
        case .simpleString(let b), .bulkString(let b), .error(let b), .blobError(let b), .verbatimString(let b):
            return String(buffer: b)
        default:
            return nil
        }
    }

    /// Elements of an aggregate (array, set, push; a map's keys and values interleaved).
    public var elements: [RESPValue]? {
        switch self {
        case .array(let a), .set(let a), .push(let a), .map(let a): return a
        default: return nil
        }
    }
}

/// The protocol a connection speaks: RESP2 by default, RESP3 after `HELLO 3`.
public enum RESPVersion: Int, Sendable {
    case v2 = 2
    case v3 = 3
}

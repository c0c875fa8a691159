/// The one error type of KvServer. Each front end maps `code` once:
/// kv-fcgi to an HTTP status, kv-ws to an `error` message.
public struct KVError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong, in a small fixed set.
    public enum Code: String, Sendable, CaseIterable {
        /// The key is empty, not UTF-8, or otherwise unusable.
        case invalidKey
        /// A request body or message is not the JSON the API expects.
        case invalidJSON
        /// A message or request is well-formed JSON but not a valid request (missing `value`, bad `type`).
        case invalidRequest
        /// The `ttl` is not a valid duration.
        case invalidTTL
        /// A key, value or frame is larger than the configured limit.
        case tooLarge
        /// kv-stored cannot be reached right now; retrying later may succeed.
        case storageUnavailable
        /// kv-stored answered with something this client does not understand, or an internal error.
        case storageError
        /// The store is at its memory limit (kv-stored's `--max-memory`, Redis's `maxmemory`):
        /// writes are refused until keys are deleted or expire; reads and deletes still work.
        case storageFull
    }

    public var code: Code
    /// A human-readable sentence that says what is wrong, safe to show to clients.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }
}

/// The rules every key obeys, over HTTP and WebSocket alike (one key space):
/// a non-empty UTF-8 string of at most `Limits.maxKeyBytes` bytes.
public enum StorageKey {
    /// Checks `bytes` against the key rules; throws `KVError` saying which rule failed.
    public static func validate(_ bytes: UnsafeRawBufferPointer, limits: Limits) throws(KVError) {
        if bytes.isEmpty {
            throw KVError(.invalidKey, "key must not be empty")
        }
        if bytes.count > limits.maxKeyBytes {
            throw KVError(.tooLarge, "key is \(bytes.count) bytes, the limit is \(limits.maxKeyBytes)")
        }
        if let offset = UTF8Validation.firstInvalidOffset(bytes) {
            throw KVError(.invalidKey, "key is not valid UTF-8 (byte \(offset))")
        }
    }

    public static func validate<C: Collection>(_ bytes: C, limits: Limits) throws(KVError) where C.Element == UInt8 {
        let array = Array(bytes)
        let result: KVError? = array.withUnsafeBytes { raw in
            do throws(KVError) { try validate(raw, limits: limits); return nil } catch { return error }
        }
        if let result { throw result }
    }
}

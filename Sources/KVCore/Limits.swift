/// Size limits shared by every process. nginx's `client_max_body_size` and
/// `large_client_header_buffers` are set to match these defaults (see nginx/).
public struct Limits: Sendable, Equatable {
    /// Longest key, in bytes of its UTF-8 form. docs/api.md promises at least 1 MiB.
    public var maxKeyBytes: Int
    /// Longest value, in bytes of its JSON text. docs/api.md promises at least 512 MiB (Redis's default).
    public var maxValueBytes: Int

    public init(maxKeyBytes: Int = Limits.defaultMaxKeyBytes, maxValueBytes: Int = Limits.defaultMaxValueBytes) {
        self.maxKeyBytes = maxKeyBytes
        self.maxValueBytes = maxValueBytes
    }

    public static let defaultMaxKeyBytes = 1 << 20
    public static let defaultMaxValueBytes = 512 << 20
    /// Values are stored with 32-bit lengths; no configuration may exceed this.
    public static let absoluteMaxBytes = Int(UInt32.max)
}

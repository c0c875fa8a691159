#if canImport(Glibc)
import Glibc
#endif

/// Standard error, written with write(2) directly: one call for a whole line where the kernel
/// allows (so lines of concurrent threads never interleave), the rest retried, EINTR included;
/// a closed stderr is given up silently (nothing else could report it).
public struct StandardError: TextOutputStream {
    public init() {}

    public mutating func write(_ string: String) {
        Self.write(string)
    }

    public static func write(_ string: String) {
        var text = string
        text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(2, bytes.baseAddress.map { $0 + offset }, bytes.count - offset)
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }
    }
}

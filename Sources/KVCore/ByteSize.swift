/// Sizes as admins write them in settings: `1048576`, `512k`, `64m`, `4g` (also `kb`, `mb`,
/// `gb`, any case; powers of 1024, as Redis reads `maxmemory`).
public enum ByteSize {
    /// The size in bytes; nil for anything else, negative numbers, or more than `Int.max`.
    public static func parse(_ text: String) -> Int? {
        var digits = Substring(text.lowercased())
        var shift = 0
        for (suffix, bits) in [("kb", 10), ("mb", 20), ("gb", 30), ("k", 10), ("m", 20), ("g", 30), ("b", 0)] where digits.hasSuffix(suffix) {
            digits = digits.dropLast(suffix.count)
            shift = bits
            break
        }
        guard !digits.isEmpty, digits.count <= 19, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let value = Int(digits) else { return nil }
        let scaled = value.multipliedReportingOverflow(by: 1 << shift)
        return scaled.overflow ? nil : scaled.partialValue
    }
}

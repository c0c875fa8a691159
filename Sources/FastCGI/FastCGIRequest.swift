import CFastCGI

#if canImport(Glibc)
import Glibc
#endif

/// The request a worker is answering: its FastCGI params, its body stream, its output stream.
/// Valid only inside `FastCGIServer`'s handler call.
public struct FastCGIRequest {
    let raw: UnsafeMutablePointer<FCGX_Request>
    /// The worker's turn to take requests, given up before moving a large body or response.
    let turn: WorkerTurns.Turn?

    /// Bodies and responses above this size are moved after stepping aside: another worker
    /// takes requests meanwhile.
    static let largeBytes = 1 << 20

    init(raw: UnsafeMutablePointer<FCGX_Request>, turn: WorkerTurns.Turn? = nil) {
        self.raw = raw
        self.turn = turn
    }

    /// A FastCGI param (`REQUEST_METHOD`, `REQUEST_URI`, `CONTENT_LENGTH`, …) as raw bytes.
    public func paramBytes(_ name: String) -> [UInt8]? {
        guard let value = FCGX_GetParam(name, raw.pointee.envp) else { return nil }
        return Array(UnsafeRawBufferPointer(start: value, count: strlen(value)))
    }

    public func param(_ name: String) -> String? {
        paramBytes(name).map { String(decoding: $0, as: UTF8.self) }
    }

    public enum BodyError: Error, Equatable {
        /// The declared length is above the limit; nothing was read.
        case tooLarge(Int)
        /// The stream ended before the declared length.
        case truncated(Int)
    }

    /// Reads the whole body (`CONTENT_LENGTH` bytes), refusing lengths above `limit` unread.
    public func readBody(limit: Int) throws(BodyError) -> [UInt8] {
        let declared = Int(param("CONTENT_LENGTH") ?? "") ?? 0
        guard declared <= limit else { throw .tooLarge(declared) }
        guard declared > 0 else { return [] }
        if declared > Self.largeBytes { turn?.stepAside() }
        var body = [UInt8](repeating: 0, count: declared)
        var filled = 0
        while filled < declared {
            let n = body.withUnsafeMutableBytes { buffer -> Int32 in
                guard let base = buffer.baseAddress else { return 0 }  // never: declared > 0
                let chunk = min(declared - filled, 1 << 20)
                return FCGX_GetStr(base.advanced(by: filled).assumingMemoryBound(to: CChar.self), Int32(chunk), raw.pointee.in)
            }
            if n <= 0 { throw .truncated(filled) }
            filled += Int(n)
        }
        return body
    }

    /// Lets another worker thread take requests while this one waits on something slow (a store
    /// that does not answer at once). The worker takes a turn again after its batch.
    public func stepAside() {
        turn?.stepAside()
    }

    /// Reads and drops what is left of the body, up to `limit` bytes. True when the body's end
    /// was reached (nginx always ends a body with an empty record, also when there is none).
    func discardBody(limit: Int) -> Bool {
        withUnsafeTemporaryAllocation(of: CChar.self, capacity: 8192) { chunk -> Bool in
            guard let base = chunk.baseAddress else { return false }
            var discarded = 0
            while FCGX_HasSeenEOF(raw.pointee.in) == 0 {
                guard discarded <= limit else { return false }
                let n = FCGX_GetStr(base, Int32(chunk.count), raw.pointee.in)
                if n <= 0 { return FCGX_HasSeenEOF(raw.pointee.in) != 0 }
                discarded += Int(n)
            }
            return true
        }
    }

    /// Writes bytes to the response; false when nginx has gone away.
    @discardableResult
    public func write(_ bytes: [UInt8]) -> Bool {
        if bytes.count > Self.largeBytes { turn?.stepAside() }
        var offset = 0
        while offset < bytes.count {
            let chunk = min(bytes.count - offset, 1 << 20)
            let n = bytes.withUnsafeBytes { raw -> Int32 in
                guard let base = raw.baseAddress else { return -1 }  // never: offset < count
                return FCGX_PutStr(base.advanced(by: offset).assumingMemoryBound(to: CChar.self), Int32(chunk), self.raw.pointee.out)
            }
            if n < 0 { return false }
            offset += chunk
        }
        return true
    }
}

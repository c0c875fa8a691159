import KVFuzzTargets

#if FUZZING
import CLibFuzzer
#endif

#if canImport(Glibc)
import Glibc
#endif

// kv-fuzz: KvServer's parsers under libFuzzer (scripts/fuzz.sh, `make fuzz`). libFuzzer drives
// one function per process, so the target is chosen by KV_FUZZ_TARGET (json, ttl, resp,
// ws-message, key-path, log). Built with -DFUZZING (and -sanitize=fuzzer), main hands over to
// libFuzzer's driver; built without, kv-fuzz replays files instead: `kv-fuzz TARGET FILE…`
// (what a crash report names), with no fuzzer involved.

/// A line on standard error (written to fd 2: the C `stderr` global is not concurrency-safe in Swift 6).
private func printError(_ line: String) {
    let bytes = Array((line + "\n").utf8)
    _ = bytes.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

/// The target of this process, read once.
private let target: FuzzTarget = {
    let name = getenv("KV_FUZZ_TARGET").map { String(cString: $0) } ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        printError("kv-fuzz: set KV_FUZZ_TARGET to one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))")
        exit(2)
    }
    return target
}()

/// libFuzzer's entry point: a broken promise is a crash, which libFuzzer saves and reports.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    do throws(FuzzTarget.Violation) {
        try target.run(UnsafeRawBufferPointer(start: data, count: size))
    } catch {
        printError("kv-fuzz \(target.rawValue): \(error)")
        abort()
    }
    return 0
}

#if FUZZING
/// The fuzzing build's entry point: libFuzzer's driver, with its own command line.
@main
struct KVFuzzMain {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) })
    }
}
#else
@main
struct KVFuzzReplay {
    static func main() {
        let arguments = CommandLine.arguments.dropFirst()
        guard let name = arguments.first, let target = FuzzTarget(rawValue: name), arguments.count >= 2 else {
            printError("usage: kv-fuzz TARGET FILE…  (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
            exit(2)
        }
        var failed = false
        for path in arguments.dropFirst() {
            guard let file = fopen(path, "rb") else {
                printError("kv-fuzz: cannot open \(path)")
                exit(2)
            }
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let n = fread(&chunk, 1, chunk.count, file)
                if n <= 0 { break }
                bytes += chunk[0..<n]
            }
            fclose(file)
            do throws(FuzzTarget.Violation) {
                try target.run(bytes: bytes)
                print("ok \(path)")
            } catch {
                print("FAILED \(path): \(error)")
                failed = true
            }
        }
        exit(failed ? 1 : 0)
    }
}
#endif

import Foundation
import KVFuzzTargets
import Testing

/// The fuzz harnesses run as plain tests: every committed seed, and every input a fuzzer once
/// found failing (`fuzz/regressions/<target>/`, kept there once fixed), must pass.
@Suite("Fuzz corpora and regressions")
struct FuzzCorpusTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fuzz")

    static func inputs(_ folder: String, _ target: FuzzTarget) -> [URL] {
        let directory = root.appendingPathComponent(folder).appendingPathComponent(target.rawValue)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { directory.appendingPathComponent($0) }
    }

    @Test("every seed and every regression input passes its harness", arguments: FuzzTarget.allCases)
    func replay(target: FuzzTarget) throws {
        let seeds = Self.inputs("corpus", target)
        #expect(!seeds.isEmpty, "fuzz/corpus/\(target.rawValue) has seeds")
        for file in seeds + Self.inputs("regressions", target) {
            let bytes = [UInt8](try Data(contentsOf: file))
            do throws(FuzzTarget.Violation) {
                try target.run(bytes: bytes)
            } catch {
                Issue.record("\(file.lastPathComponent): \(error)")
            }
        }
    }
}

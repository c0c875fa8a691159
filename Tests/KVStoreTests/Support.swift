import KVSystem
import NIOConcurrencyHelpers
import NIOCore
import Testing
@testable import KVStore

/// A clock that moves only when a test says so.
final class ManualClock: StoreClock, Sendable {
    private let nanoseconds: NIOLockedValueBox<Int64>
    private let unixOffsetMilliseconds: Int64

    init(startNanoseconds: Int64 = 1_000_000_000, unixMilliseconds: Int64 = 1_700_000_000_000) {
        nanoseconds = NIOLockedValueBox(startNanoseconds)
        unixOffsetMilliseconds = unixMilliseconds - startNanoseconds / 1_000_000
    }

    func advance(milliseconds: Int64) {
        nanoseconds.withLockedValue { $0 += milliseconds * 1_000_000 }
    }

    func monotonicNanoseconds() -> Int64 { nanoseconds.withLockedValue { $0 } }
    func unixMilliseconds() -> Int64 { monotonicNanoseconds() / 1_000_000 + unixOffsetMilliseconds }
}

/// Collects every change it is given, for assertions.
final class RecordingSubscriber: ChangeSubscriber, Sendable {
    private let box = NIOLockedValueBox<[ChangePush]>([])
    func deliver(_ push: ChangePush) { box.withLockedValue { $0.append(push) } }
    var events: [ChangeEvent] { box.withLockedValue { $0.map(\.event) } }
    /// The pattern each change came through (nil: the key itself).
    var patterns: [String?] { box.withLockedValue { $0.map { $0.pattern.map { String(decoding: $0, as: UTF8.self) } } } }
    var summary: [String] {
        events.map { e in
            let key = String(decoding: e.entry.keyBytes, as: UTF8.self)
            let value = e.kind == .set ? "=" + String(decoding: e.entry.valueBytes, as: UTF8.self) : ""
            return "\(e.kind.rawValue) \(key)\(value) @\(e.revision)"
        }
    }
}

extension Keyspace {
    mutating func set(_ key: String, _ value: String, expiry: Expiry = .none, condition: SetCondition = .always,
                      returningPrevious: Bool = true) -> SetOutcome {
        Array(key.utf8).withUnsafeBytes { k in
            Array(value.utf8).withUnsafeBytes { v in set(k, value: v, expiry: expiry, condition: condition, returningPrevious: returningPrevious) }
        }
    }

    /// The identity of `key`'s entry allocation, without keeping a reference to it.
    mutating func allocation(_ key: String) -> ObjectIdentifier? {
        Array(key.utf8).withUnsafeBytes { lookup($0) }.map { ObjectIdentifier($0.storage) }
    }

    mutating func get(_ key: String) -> String? {
        Array(key.utf8).withUnsafeBytes { lookup($0) }.map { String(decoding: $0.valueBytes, as: UTF8.self) }
    }

    @discardableResult
    mutating func delete(_ key: String) -> Bool {
        Array(key.utf8).withUnsafeBytes { delete($0) }
    }

    mutating func persist(_ key: String) -> Bool {
        Array(key.utf8).withUnsafeBytes { persist($0) }
    }

    mutating func subscribe(_ key: String, _ subscriber: any ChangeSubscriber) {
        subscribe(Array(key.utf8), subscriber)
    }
}

import Logging

/// An in-memory log handler: tests read what was logged instead of bootstrapping LoggingSystem.
final class RecordingLogHandler: LogHandler, @unchecked Sendable {
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
    }

    private let records = NIOLockedValueBox<[Record]>([])
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        records.withLockedValue { $0.append(Record(level: event.level, message: event.message.description)) }
    }

    var logged: [Record] { records.withLockedValue { $0 } }

    var logger: Logger { Logger(label: "test") { _ in self } }
}

/// For logs that must not fail in a test: a failure is the test's.
@Sendable func unexpectedLogFailure(_ message: String) {
    Issue.record("the log failed: \(message)")
}

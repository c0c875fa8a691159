import KVCore

/// What a client may do to a key (docs/access.md).
public enum AccessOperation: String, CaseIterable, Sendable {
    /// HTTP GET and HEAD (conditional ones included), WebSocket `get`.
    case read
    /// HTTP POST, WebSocket `set`.
    case write
    /// HTTP DELETE, WebSocket `delete`.
    case delete
    /// WebSocket `subscribe`: the values of every later change.
    case subscribe
}

/// For one operation, the key prefixes allowed and the prefixes excepted from them. The longest
/// listed prefix that starts the key decides; a key no listed prefix starts is refused.
///
/// A lookup costs one hash of a key prefix per distinct prefix length in the table (longest
/// first), never a walk over the rules, so a token with many rules costs no more per request
/// than one with few, and a long key costs no more than the longest prefix.
struct PrefixTable: Sendable, Equatable {
    /// The distinct lengths of the listed prefixes, longest first.
    private(set) var lengths: [Int] = []
    /// Listed prefix → allowed (true) or excepted (false).
    private(set) var entries: [Prefix: Bool] = [:]

    /// Key bytes hashed in one call (Hasher takes a buffer much faster than byte by byte).
    struct Prefix: Hashable, Sendable {
        var bytes: ArraySlice<UInt8>

        func hash(into hasher: inout Hasher) {
            bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
        }

        static func == (a: Prefix, b: Prefix) -> Bool { a.bytes == b.bytes }
    }

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }

    /// Lists `prefix`. A prefix both allowed and excepted is excepted: a mistake refuses.
    mutating func add(_ prefix: [UInt8], allowed: Bool) {
        let slice = Prefix(bytes: prefix[...])
        if let existing = entries[slice] {
            entries[slice] = existing && allowed
            return
        }
        entries[slice] = allowed
        if !lengths.contains(prefix.count) {
            lengths.append(prefix.count)
            lengths.sort(by: >)
        }
    }

    /// Whether the keys starting with `prefix` are all allowed, none is, or some are: the
    /// prefix's own verdict, unless a longer listed prefix under it says otherwise. A walk over
    /// the rules, done once per listing or prefix subscription, not per key.
    func coverage(of prefix: [UInt8]) -> AccessCoverage {
        let verdict = allows(prefix)
        for (listed, allowed) in entries where allowed != verdict && listed.bytes.count > prefix.count && listed.bytes.starts(with: prefix) {
            return .some
        }
        return verdict ? .all : .none
    }

    func allows(_ key: [UInt8]) -> Bool {
        for length in lengths where length <= key.count {
            if let allowed = entries[Prefix(bytes: key[0..<length])] { return allowed }
        }
        return false
    }
}

/// How much of a prefix's keys an identity may reach (listing and prefix subscriptions).
public enum AccessCoverage: Sendable, Equatable {
    case all
    /// Some keys are allowed and some are not: each key is checked as it is shown.
    case some
    case none
}

/// What one identity may do: a `PrefixTable` per operation. Keys are matched as stored, that
/// is after the request's single percent-decoding, so `%2F` or `%2E%2E` in a URL cannot reach
/// outside a prefix: they are the bytes `/` and `..` of the key by then.
public struct AccessRules: Sendable, Equatable {
    private var tables: [PrefixTable]

    /// Nothing at all.
    public static let none = AccessRules(tables: Array(repeating: PrefixTable(), count: AccessOperation.allCases.count))

    /// Every operation on every key: the service without an access file.
    public static let everything: AccessRules = {
        var rules = AccessRules.none
        for operation in AccessOperation.allCases { rules.allow(operation, prefix: []) }
        return rules
    }()

    private init(tables: [PrefixTable]) { self.tables = tables }

    private static func index(_ operation: AccessOperation) -> Int {
        switch operation {
        case .read: 0
        case .write: 1
        case .delete: 2
        case .subscribe: 3
        }
    }

    public mutating func allow(_ operation: AccessOperation, prefix: [UInt8]) {
        tables[Self.index(operation)].add(prefix, allowed: true)
    }

    public mutating func except(_ operation: AccessOperation, prefix: [UInt8]) {
        tables[Self.index(operation)].add(prefix, allowed: false)
    }

    public func allows(_ operation: AccessOperation, key: [UInt8]) -> Bool {
        tables[Self.index(operation)].allows(key)
    }

    public func coverage(_ operation: AccessOperation, prefix: [UInt8]) -> AccessCoverage {
        tables[Self.index(operation)].coverage(of: prefix)
    }

    /// How many prefixes are listed, over all operations (for the reload log line).
    public var ruleCount: Int { tables.reduce(0) { $0 + $1.count } }
}

extension AccessRules {
    /// The members a rules object may have: the operations, `all` (the four at once) and
    /// `except` (an object of the same shape, without a nested `except`).
    static let memberNames = AccessOperation.allCases.map(\.rawValue) + ["all", "except"]

    /// Reads a rules object, as written in the access file and in a JWT's `kv` claim:
    /// `{"read": ["app/"], "write": ["app/user/42/"], "except": {"read": ["app/secret/"]}}`.
    static func parse(_ value: JSONValue, in document: JSONDocument, at path: String) throws(AccessFileError) -> AccessRules {
        var rules = AccessRules.none
        try add(value, in: document, at: path, allowed: true, to: &rules)
        return rules
    }

    private static func add(_ value: JSONValue, in document: JSONDocument, at path: String, allowed: Bool, to rules: inout AccessRules) throws(AccessFileError) {
        guard value.kind == .object, let members = value.members else {
            throw AccessFileError("\(path) must be an object of operations to key prefixes, such as {\"read\": [\"app/\"]}", at: value.range.lowerBound)
        }
        for member in members {
            let memberPath = "\(path).\(member.name)"
            if member.name == "except" {
                guard allowed else { throw AccessFileError("\(memberPath): an except cannot have its own except", at: member.value.range.lowerBound) }
                try add(member.value, in: document, at: memberPath, allowed: false, to: &rules)
                continue
            }
            let operations: [AccessOperation]
            if member.name == "all" {
                operations = AccessOperation.allCases
            } else if let operation = AccessOperation(rawValue: member.name) {
                operations = [operation]
            } else {
                throw AccessFileError(
                    "\(memberPath): unknown operation; use \(memberNames.joined(separator: ", "))", at: member.value.range.lowerBound)
            }
            guard member.value.kind == .array, let elements = member.value.elements else {
                throw AccessFileError("\(memberPath) must be an array of key prefixes (\"\" is every key)", at: member.value.range.lowerBound)
            }
            for element in elements {
                guard let prefix = document.string(element) else {
                    throw AccessFileError("\(memberPath) must hold strings (key prefixes)", at: element.range.lowerBound)
                }
                for operation in operations {
                    if allowed { rules.allow(operation, prefix: Array(prefix.utf8)) } else { rules.except(operation, prefix: Array(prefix.utf8)) }
                }
            }
        }
    }
}

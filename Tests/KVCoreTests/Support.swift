import KVTestSupport

/// Random compact JSON texts covering every value kind.
enum RandomJSON {
    static func value(_ rng: inout SplitMix64, depth: Int) -> String {
        switch rng.next() % (depth > 4 ? 5 : 7) {
        case 0: return "null"
        case 1: return rng.next() % 2 == 0 ? "true" : "false"
        case 2: return number(&rng)
        case 3, 4: return string(&rng)
        case 5: return "[" + (0..<Int(rng.next() % 4)).map { _ in value(&rng, depth: depth + 1) }.joined(separator: ",") + "]"
        default:
            let members = (0..<Int(rng.next() % 4)).map { i in "\"k\(i)\":" + value(&rng, depth: depth + 1) }
            return "{" + members.joined(separator: ",") + "}"
        }
    }

    static func number(_ rng: inout SplitMix64) -> String {
        var text = rng.next() % 2 == 0 ? "-" : ""
        text += rng.next() % 4 == 0 ? "0" : String(1 + rng.next() % 9) + String(rng.next() % 100_000_000_000)
        if rng.next() % 2 == 0 { text += "." + String(rng.next() % 1000) }
        if rng.next() % 3 == 0 { text += ["e", "E"][Int(rng.next() % 2)] + ["", "+", "-"][Int(rng.next() % 3)] + String(rng.next() % 300) }
        return text
    }

    static func string(_ rng: inout SplitMix64) -> String {
        let pieces = ["a", " ", "é", "😀", "\\n", "\\\"", "\\\\", "\\u00e9", "\\ud83d\\ude00", "\\/", "{", "]", ",", ":"]
        return "\"" + (0..<Int(rng.next() % 6)).map { _ in pieces[Int(rng.next() % UInt64(pieces.count))] }.joined() + "\""
    }
}

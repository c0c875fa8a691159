import KVCore
import RESP

/// The options of `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]`, as Redis reads them.
struct SetOptions: Equatable {
    var condition: SetCondition = .always
    var expiry: Expiry = .none
    var returnPrevious = false

    struct Failure: Error, Equatable {
        var message: String
    }

    static let syntaxError = Failure(message: "ERR syntax error")
    static let badExpire = Failure(message: "ERR invalid expire time in 'set' command")

    /// Reads the options in `args` from index `start` on.
    static func parse(_ args: RESPArguments, from start: Int) -> Result<SetOptions, Failure> {
        var options = SetOptions()
        var expirySeen = false
        var i = start
        while i < args.count {
            let word = args.string(i).uppercased()
            switch word {
            case "NX", "XX":
                guard options.condition == .always else { return .failure(syntaxError) }
                options.condition = word == "NX" ? .ifAbsent : .ifPresent
            case "GET":
                options.returnPrevious = true
            case "KEEPTTL":
                guard !expirySeen else { return .failure(syntaxError) }
                expirySeen = true
                options.expiry = .keep
            case "EX", "PX", "EXAT", "PXAT":
                guard !expirySeen, i + 1 < args.count else { return .failure(syntaxError) }
                expirySeen = true
                i += 1
                guard let n = args.integer(i) else {
                    return .failure(Failure(message: "ERR value is not an integer or out of range"))
                }
                // Bounded so deadlines in nanoseconds cannot overflow; the front ends allow at most 100 years.
                let ms = word.hasPrefix("E") ? n.multipliedReportingOverflow(by: 1000) : (partialValue: n, overflow: false)
                guard n > 0, !ms.overflow else { return .failure(badExpire) }
                if word.hasSuffix("AT") {
                    guard ms.partialValue <= 253_402_300_799_000 else { return .failure(badExpire) }  // year 9999
                    options.expiry = .atUnixMilliseconds(ms.partialValue)
                } else {
                    guard ms.partialValue <= TTL.maxMilliseconds else { return .failure(badExpire) }
                    options.expiry = .after(milliseconds: ms.partialValue)
                }
            default:
                return .failure(syntaxError)
            }
            i += 1
        }
        return .success(options)
    }
}

import Dispatch
import KVAccess

/// CPU time of one access check as kv-fcgi makes it per request (read the Authorization
/// header, find the token or the cached JWT, match the key against the rules), with the
/// access file given: bench/access.sh runs it on its file of 1,000 tokens and 10,000 rules.
///
/// Usage: kv-access-bench ACCESS_FILE KEY TOKEN [TOKEN…]   (prints one line per token)
@main
enum AccessBench {
    static func main() throws {
        let arguments = CommandLine.arguments
        guard arguments.count >= 4 else {
            print("usage: kv-access-bench ACCESS_FILE KEY TOKEN [TOKEN…]")
            return
        }
        let control = try AccessControl.loadBlocking(path: arguments[1])
        let key = Array(arguments[2].utf8)
        for token in arguments[3...] {
            let header = "Bearer " + token
            // Warm up (a JWT is verified once, then served from the policy's cache).
            guard case .identity(let identity) = control.authenticateBlocking(Credential.fromAuthorization(header)),
                identity.allows(.read, key: key)
            else {
                print("the token does not read \(arguments[2])")
                return
            }
            let iterations = 200_000
            var allowed = 0
            let start = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<iterations {
                if case .identity(let identity) = control.authenticateBlocking(Credential.fromAuthorization(header)),
                    identity.allows(.read, key: key)
                {
                    allowed += 1
                }
            }
            let nanoseconds = Double(DispatchTime.now().uptimeNanoseconds - start) / Double(iterations)
            print("\(identity.kind.rawValue) \(String(format: nanoseconds)) \(allowed == iterations ? "allowed" : "REFUSED")")
        }
    }

    /// ns with one decimal, without Foundation.
    static func String(format nanoseconds: Double) -> Swift.String {
        let tenths = Int((nanoseconds * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }
}

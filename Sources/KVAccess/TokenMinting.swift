import Crypto
import JWTKit

/// Signing JWTs the way an application's backend would, for `kvctl jwt sign` and the tests.
/// KvServer itself only verifies.
public enum TokenMinting {
    /// The claims KvServer reads (docs/access.md).
    public struct Claims: JWTPayload {
        public var sub: String
        /// Seconds since 1970.
        public var exp: Int64
        public var nbf: Int64?
        public var iss: String?
        public var aud: String?
        public var kv: Rules

        public init(sub: String, exp: Int64, nbf: Int64? = nil, iss: String? = nil, aud: String? = nil, kv: Rules) {
            self.sub = sub
            self.exp = exp
            self.nbf = nbf
            self.iss = iss
            self.aud = aud
            self.kv = kv
        }

        public func verify(using algorithm: some JWTAlgorithm) async throws {}
    }

    /// The `kv` claim: key prefixes per operation, and the exceptions.
    public struct Rules: Codable, Sendable {
        public var read, write, delete, subscribe, all: [String]?
        public var except: Exceptions?

        public init(read: [String]? = nil, write: [String]? = nil, delete: [String]? = nil, subscribe: [String]? = nil, all: [String]? = nil,
                    except: Exceptions? = nil) {
            (self.read, self.write, self.delete, self.subscribe, self.all, self.except) = (read, write, delete, subscribe, all, except)
        }
    }

    public struct Exceptions: Codable, Sendable {
        public var read, write, delete, subscribe, all: [String]?

        public init(read: [String]? = nil, write: [String]? = nil, delete: [String]? = nil, subscribe: [String]? = nil, all: [String]? = nil) {
            (self.read, self.write, self.delete, self.subscribe, self.all) = (read, write, delete, subscribe, all)
        }
    }

    public enum Key: Sendable {
        case hs256(secret: String)
        case eddsa(Curve25519.Signing.PrivateKey)
        case es256(P256.Signing.PrivateKey)
    }

    public static func sign(_ claims: Claims, with key: Key, kid: String? = nil) async throws -> String {
        let keys = JWTKeyCollection()
        let identifier = kid.map { JWKIdentifier(string: $0) }
        switch key {
        case .hs256(let secret): await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: identifier)
        case .eddsa(let privateKey): await keys.add(eddsa: EdDSA.PrivateKey(backing: privateKey), kid: identifier)
        case .es256(let privateKey): await keys.add(ecdsa: try ES256PrivateKey(backing: privateKey), kid: identifier)
        }
        return try await keys.sign(claims, kid: identifier)
    }
}

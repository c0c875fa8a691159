import KVCore

#if canImport(Glibc)
import Glibc
#endif

extension StoreAddress {
    /// Refuses credentials for kv-stored, which has no logins (its socket's mode and group are
    /// its access control): a password meant for Redis must not be silently ignored.
    public func check(credentials: StoreCredentials?) throws(KVError) {
        if credentials != nil, case .kvStored = self {
            throw KVError(.invalidRequest, "\(StoreCredentials.passwordVariable) is set, but the store is kv-stored, which has no passwords")
        }
    }
}

/// How the front ends log in to a Redis/Valkey store that asks for it (`requirepass`, ACL
/// users): from the environment, `KV_STORE_PASSWORD` and optionally `KV_STORE_USER`, never
/// from the command line, where every local user could read it in the process list.
public struct StoreCredentials: Sendable, Equatable {
    /// An ACL user; nil is Redis's `default` user.
    public var user: String?
    public var password: String

    public init(user: String? = nil, password: String) {
        self.user = user
        self.password = password
    }

    public static let passwordVariable = "KV_STORE_PASSWORD"
    public static let userVariable = "KV_STORE_USER"

    /// The credentials in the environment, or nil when `KV_STORE_PASSWORD` is unset or empty.
    public static func fromEnvironment(_ lookup: (String) -> String? = { getenv($0).map { String(cString: $0) } }) -> StoreCredentials? {
        guard let password = lookup(passwordVariable), !password.isEmpty else { return nil }
        let user = lookup(userVariable).flatMap { $0.isEmpty ? nil : $0 }
        return StoreCredentials(user: user, password: password)
    }

    /// `AUTH [user] password`.
    func auth<A: CommandArgument>() -> [A] {
        [A("AUTH")] + (user.map { [A($0)] } ?? []) + [A(password)]
    }

    /// `HELLO 3 AUTH user password`: the protocol switch and the login in one command.
    func hello<A: CommandArgument>() -> [A] {
        [A("HELLO"), A("3"), A("AUTH"), A(user ?? "default"), A(password)]
    }
}

import ArgumentParser
import KVAccess
import KVCore
import KVSystem

#if canImport(Glibc)
import Glibc
#endif

/// kvctl: the admin's tool for the access file (docs/access.md).
@main
struct KVCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kvctl",
        abstract: "KvServer's admin tool: mint tokens, check an access file, sign test JWTs.",
        version: KvServerVersion.current, subcommands: [Token.self, Access.self, JWT.self])
}

/// `--read`, `--write`, `--delete`, `--subscribe` and `--all` prefixes, as one rules object.
struct RuleOptions: ParsableArguments {
    @Option(help: "A key prefix the token may read (GET, HEAD, WebSocket get); repeat for more. \"\" is every key.")
    var read: [String] = []
    @Option(help: "A key prefix the token may write (POST, WebSocket set).")
    var write: [String] = []
    @Option(help: "A key prefix the token may delete.")
    var delete: [String] = []
    @Option(help: "A key prefix the token may subscribe to (WebSocket).")
    var subscribe: [String] = []
    @Option(help: "A key prefix the token may do all four to.")
    var all: [String] = []

    var listed: [(String, [String])] {
        [("read", read), ("write", write), ("delete", delete), ("subscribe", subscribe), ("all", all)].filter { !$0.1.isEmpty }
    }

    /// The rules as JSON, in the access file's shape.
    var json: String {
        let members = listed.map { name, prefixes in
            "\"\(name)\": [" + prefixes.map { String(decoding: JSONText.quoted($0), as: UTF8.self) }.joined(separator: ", ") + "]"
        }
        return "{" + members.joined(separator: ", ") + "}"
    }
}

extension KVCtl {
    struct Token: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Static bearer tokens.", subcommands: [New.self, Hash.self])

        struct New: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Mint a random token and print the line to add to the access file's \"tokens\".",
                discussion: "The token itself is printed once and stored nowhere: the file keeps only its SHA-256.")

            @Option(help: "The token's name in the file and in logs (e.g. the client it is for).")
            var id: String

            @OptionGroup var rules: RuleOptions

            func validate() throws {
                guard (1...200).contains(id.utf8.count), id.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7F }) else {
                    throw ValidationError("--id must be 1 to 200 visible characters")
                }
                if rules.listed.isEmpty {
                    throw ValidationError("give at least one of --read, --write, --delete, --subscribe, --all (a token with no rules may do nothing)")
                }
            }

            func run() {
                let token = BearerToken.mint()
                let idText = String(decoding: JSONText.quoted(id), as: UTF8.self)
                print("token (give it to the client; it is not kept anywhere):")
                print("  \(token)")
                print("entry for the \"tokens\" array of the access file:")
                print("  {\"id\": \(idText), \"sha256\": \"\(BearerToken.hashHex(token))\", \"rules\": \(rules.json)}")
                print("then: kvctl access check FILE && systemctl reload kv-fcgi kv-ws")
            }
        }

        struct Hash: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Print the SHA-256 the access file keeps for a token read from standard input.")

            func run() throws {
                guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                    throw ValidationError("no token on standard input")
                }
                print(BearerToken.hashHex(line))
            }
        }
    }

    struct Access: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Access files.", subcommands: [Check.self])

        struct Check: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Read an access file as kv-fcgi and kv-ws would; print what it grants, or the error and its line (exit 1).")

            @Argument(help: "The access file, e.g. /etc/kvserver/access.json.")
            var file: String

            func run() async throws {
                do throws(AccessFileError) {
                    let control = try await AccessControl.load(path: file)
                    print("\(file): ok: \(control.policy.summary)")
                } catch {
                    var stderr = StandardError()
                    print("\(file): \(error)", to: &stderr)
                    throw ExitCode(1)
                }
            }
        }
    }

    struct JWT: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Signed tokens, as an application's backend mints them.", subcommands: [Sign.self])

        struct Sign: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Sign an HS256 JWT with the secret of an access file's key, to try rules out with curl.",
                discussion: "Applications mint their own with any JWT library; the claims are sub, exp, and kv (the rules).")

            @Option(help: "A file holding the HS256 secret (as in the access file's key; a final newline is dropped).")
            var secretFile: String
            @Option(help: "The key's kid in the access file.")
            var kid: String?
            @Option(help: "The subject: who the token is for (logs show jwt:<sub>).")
            var sub: String
            @Option(help: "Seconds until it expires.")
            var ttl: Int64 = 3600
            @OptionGroup var rules: RuleOptions

            func validate() throws {
                guard (1...(10 * 365 * 86400)).contains(ttl) else { throw ValidationError("--ttl must be from 1 s to 10 years") }
            }

            func run() async throws {
                var secret: String
                do throws(AccessFileError) {
                    secret = String(decoding: try AccessControl.read(secretFile), as: UTF8.self)
                } catch {
                    throw ValidationError("--secret-file: \(error)")
                }
                if secret.hasSuffix("\n") { secret.removeLast() }
                var now = timespec()
                clock_gettime(CLOCK_REALTIME, &now)
                let claims = TokenMinting.Claims(
                    sub: sub, exp: Int64(now.tv_sec) + ttl,
                    kv: TokenMinting.Rules(read: rules.read.nonEmpty, write: rules.write.nonEmpty, delete: rules.delete.nonEmpty,
                                           subscribe: rules.subscribe.nonEmpty, all: rules.all.nonEmpty))
                print(try await TokenMinting.sign(claims, with: .hs256(secret: secret), kid: kid))
            }
        }
    }
}

extension Array {
    fileprivate var nonEmpty: Self? { isEmpty ? nil : self }
}


#if canImport(Glibc)
import Glibc
import KVSystem
#endif

/// The unix-socket file policy every KvServer daemon follows.
public enum SocketFile {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// A socket file left by a process that died is removed; a live server's socket, or a file
    /// that is not a socket, is an error (never delete what we do not own).
    public static func removeStale(at path: String) throws(Failure) {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw Failure("\(path) exists and is not a socket; refusing to replace it")
        }
        if isAcceptingConnections(path: path) {
            throw Failure("another process is already serving on \(path)")
        }
        unlink(path)
    }

    /// Gives the socket its mode and, when named, its group (so nginx's user can connect
    /// without the socket being world-writable).
    public static func applyPermissions(path: String, mode: UInt32, group: String?) throws(Failure) {
        if let group {
            guard let entry = getgrnam(group) else { throw Failure("socket group \"\(group)\" does not exist") }
            guard chown(path, uid_t.max, entry.pointee.gr_gid) == 0 else {
                throw Failure("cannot give \(path) to group \(group): \(String(cString: strerror(errno)))")
            }
        }
        guard chmod(path, mode_t(mode)) == 0 else {
            throw Failure("cannot chmod \(path): \(String(cString: strerror(errno)))")
        }
    }

    /// Whether something accepts connections on `path` right now.
    public static func isAcceptingConnections(path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        guard var address = UnixAddress(path: path) else { return false }
        return address.withSockaddr { connect(fd, $0, $1) } == 0
    }

    /// Runs `body` (which binds a socket) under a umask that makes the new socket file's mode
    /// exactly `mode` from the moment it exists. The umask is process-wide; daemons bind at
    /// start-up, before they create any other file.
    public static func withCreationMode<T>(_ mode: UInt32, _ body: () throws -> T) rethrows -> T {
        let previous = umask(mode_t(~mode & 0o777))
        defer { umask(previous) }
        return try body()
    }

    /// A listening unix socket at `path`: stale file replaced, and mode and group applied
    /// before `listen`, so no client can connect to it before its permissions are final.
    public static func listen(path: String, mode: UInt32, group: String?, backlog: Int32) throws(Failure) -> Int32 {
        try removeStale(at: path)
        guard var address = UnixAddress(path: path) else { throw Failure("socket path too long (max 107 bytes): \(path)") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket(): \(String(cString: strerror(errno)))") }
        guard withCreationMode(mode, { address.withSockaddr({ bind(fd, $0, $1) }) }) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Failure("cannot bind \(path): \(reason)")
        }
        do throws(Failure) {
            try applyPermissions(path: path, mode: mode, group: group)
        } catch {
            close(fd)
            unlink(path)
            throw error
        }
        guard Glibc.listen(fd, backlog) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(path)
            throw Failure("cannot listen on \(path): \(reason)")
        }
        return fd
    }
}


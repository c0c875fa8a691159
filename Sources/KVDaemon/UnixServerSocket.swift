import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

extension SocketFile {
    /// Binds `bootstrap` to a unix socket at `path`, with its mode set as the file is created
    /// (umask) and its group right after, so it is never reachable with other permissions, and
    /// before the caller says it is ready. If the group cannot be set, the socket is closed and
    /// removed and the error thrown.
    public static func bindServer(_ bootstrap: ServerBootstrap, path: String, mode: UInt32, group: String?) async throws -> any Channel {
        let channel = try await withCreationMode(mode) {
            bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: false)
        }.get()
        do {
            try applyPermissions(path: path, mode: mode, group: group)
        } catch {
            try? await channel.close()
            unlink(path)
            throw error
        }
        return channel
    }
}

// swift-tools-version: 6.0
import PackageDescription

// One library per concern, thin executables:
//   KVCore   — domain rules both front ends share: keys, TTL grammar, strict JSON, errors, change events.
//   RESP     — the wire codec kv-stored speaks (a subset of Redis RESP2/RESP3).
//   KVStore  — the keyspace, active expiry, change feed and the kv-stored server.
//   KVClient — clients of kv-stored for kv-fcgi (blocking) and kv-ws (SwiftNIO).
//   KVMetrics — swift-metrics bootstrapped with a Prometheus registry, and its exposition.
//   KVAccess — access control: the access file, bearer tokens and JWTs, key-prefix rules.
// Executables only wire libraries together; tests import libraries, never executables.
let package = Package(
    name: "KvServer",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kv-stored", targets: ["kv-stored"]),
        .executable(name: "kv-fcgi", targets: ["kv-fcgi"]),
        .executable(name: "kv-ws", targets: ["kv-ws"]),
        .executable(name: "kvctl", targets: ["kvctl"]),
        .library(name: "KVCore", targets: ["KVCore"]),
        .library(name: "KVClient", targets: ["KVClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.8.0"),
        .package(url: "https://github.com/swift-extras/swift-extras-base64.git", from: "1.2.0"),
    ],
    targets: [
        .target(name: "KVCore"),
        // The small system pieces several targets share: unix addresses, worker threads, clocks.
        .target(name: "KVSystem", dependencies: [.product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "KVDaemon",
            dependencies: [
                "KVCore", "KVSystem",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(name: "KVHTTP", dependencies: ["KVCore", "KVAccess"]),
        .target(
            name: "KVAccess",
            dependencies: [
                "KVCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "ExtrasBase64", package: "swift-extras-base64"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "KVMetrics",
            dependencies: [
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .systemLibrary(name: "CFastCGI", pkgConfig: "fcgi", providers: [.apt(["libfcgi-dev"])]),
        // CRC-32C for the log's record checksums (see the file for why it is written here).
        .target(name: "CRC32C"),
        // Cache prefetch hints for a pipelined burst's key lookups (see the header for why).
        .target(name: "CPrefetch"),
        // glibc's malloc_trim, for giving back the memory a restart's scratch leaves behind.
        .systemLibrary(name: "CMalloc"),
        .target(name: "FastCGI", dependencies: [
            "CFastCGI", "KVSystem", .product(name: "Logging", package: "swift-log"), .product(name: "CoreMetrics", package: "swift-metrics"),
        ]),
        .target(
            name: "KVFCGI",
            dependencies: [
                "FastCGI", "KVAccess", "KVHTTP", "KVClient", "KVCore", "KVDaemon", "KVMetrics", "RESP",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "KVWebSocket",
            dependencies: [
                "KVAccess", "KVClient", "KVCore", "KVDaemon", "KVMetrics", "RESP",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "kv-ws",
            dependencies: [
                "KVWebSocket", "KVClient", "KVMetrics", "KVCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "kvctl",
            dependencies: ["KVAccess", "KVCore", "KVSystem", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .executableTarget(
            name: "kv-fcgi",
            dependencies: [
                "KVFCGI", "KVClient", "KVMetrics", "KVCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "RESP",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(
            name: "KVStore",
            dependencies: [
                "CMalloc", "CPrefetch", "CRC32C", "KVCore", "KVDaemon", "KVMetrics", "KVSystem", "RESP",
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "KVClient",
            dependencies: [
                "KVCore", "KVSystem", "RESP",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "kv-stored",
            dependencies: [
                "KVStore", "KVMetrics", "KVCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The parsers under a fuzzer (docs/security.md): the harnesses, and the executable
        // libFuzzer drives (scripts/fuzz.sh builds it with -sanitize=fuzzer).
        .target(
            name: "KVFuzzTargets",
            dependencies: ["KVCore", "KVHTTP", "KVStore", "KVWebSocket", "RESP", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .target(name: "CLibFuzzer"),
        .executableTarget(name: "kv-fuzz", dependencies: ["KVFuzzTargets", "CLibFuzzer"]),
        // CPU time per MB of each parser on hostile shapes (bench/parsers.sh, docs/BENCHMARKS.md).
        .executableTarget(
            name: "kv-parse-bench",
            dependencies: ["KVCore", "KVHTTP", "KVStore", "KVWebSocket", "RESP", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // CPU time of one access check on a large access file (bench/access.sh, docs/BENCHMARKS.md).
        .executableTarget(name: "kv-access-bench", dependencies: ["KVAccess"]),
        .testTarget(name: "KVFuzzTargetsTests", dependencies: ["KVFuzzTargets"]),
        // What several test targets share (a seeded generator).
        .target(name: "KVTestSupport", path: "Tests/KVTestSupport"),
        .testTarget(name: "KVCoreTests", dependencies: ["KVCore", "KVTestSupport"]),
        .testTarget(name: "KVHTTPTests", dependencies: ["KVHTTP", "KVCore", "KVAccess"]),
        .testTarget(
            name: "KVAccessTests",
            dependencies: [
                "KVAccess", "KVCore",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .testTarget(
            name: "KVWebSocketTests",
            dependencies: [
                "KVWebSocket", "KVAccess", "KVCore", "RESP",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        .testTarget(
            name: "RESPTests",
            dependencies: [
                "RESP", "KVTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "KVStoreTests",
            dependencies: [
                "KVStore", "KVCore", "KVSystem", "RESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "KVClientTests",
            dependencies: ["KVClient", "KVCore", "RESP", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "KVAccess", "KVClient",
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Crypto", package: "swift-crypto"), "KVCore", "KVDaemon", "KVSystem", "RESP",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)

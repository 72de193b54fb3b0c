// swift-tools-version: 6.2
import PackageDescription

let package = Package(
    name: "recotap-keyd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "recotap-keyd", targets: ["recotap-keyd"]),
        .executable(name: "recotap-api-mock", targets: ["recotap-api-mock"]),
        .executable(name: "recotap-keyctl", targets: ["recotap-keyctl"]),
        .library(name: "RecotapKeyd", targets: ["RecotapKeyd"]),
        .library(name: "RecotapAPIMock", targets: ["RecotapAPIMock"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.81.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-configuration", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
        .package(url: "https://github.com/jpsim/Yams", "5.4.0"..<"7.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.26.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.30.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess", from: "1.0.0", traits: []),
    ],
    targets: [
        .systemLibrary(
            name: "CSystemd",
            path: "Sources/CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            path: "Sources/CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // The git revision (README "Install from source"): a C function, so a new revision recompiles
        // one C file and relinks, nothing else.
        .target(name: "CBuildInfo", path: "Sources/CBuildInfo"),
        // The address of Swift concurrency's global enqueue hook, which a static runtime
        // does not export (Sources/recotap-keyd/ConcurrencyOnEventLoops.swift).
        .target(name: "CConcurrencyHook", path: "Sources/CConcurrencyHook"),
        .target(
            name: "RecotapKeyd",
            dependencies: [
                "CSystemd",
                "CSQLite",
                "CBuildInfo",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Configuration", package: "swift-configuration"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Subprocess", package: "swift-subprocess"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .target(
            name: "RecotapAPIMock",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "recotap-keyd",
            dependencies: [
                "RecotapKeyd",
                "RecotapKeyctl",
                "CConcurrencyHook",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "recotap-keyctl",
            dependencies: ["RecotapKeyctl"]
        ),
        // recotap-keyctl's commands: its own executable runs them, and so does
        // recotap-keyd when called as recotap-keyctl (the installed symlink).
        .target(
            name: "RecotapKeyctl",
            dependencies: [
                "RecotapKeyd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "recotap-api-mock",
            dependencies: [
                "RecotapAPIMock",
                "CBuildInfo",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "recotap-keyd-bench",
            dependencies: [
                "RecotapKeyd",
                "RecotapAPIMock",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // Fuzzing (README, "Hostile input"): the targets, and the runner libFuzzer
        // links (`make fuzz`); built normally, the runner replays files.
        .target(
            name: "RecotapKeydFuzzTargets",
            dependencies: [
                "RecotapKeyd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Fuzz/Targets"
        ),
        .executableTarget(
            name: "recotap-keyd-fuzz",
            dependencies: ["RecotapKeydFuzzTargets"],
            path: "Fuzz/Runner"
        ),
        .testTarget(
            name: "RecotapKeydTests",
            dependencies: [
                "RecotapKeyd",
                "RecotapAPIMock",
                "RecotapKeydFuzzTargets",
                "CSQLite",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ],
            exclude: ["Fixtures"]
        ),
    ],
    swiftLanguageModes: [.v6]
)

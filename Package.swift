// swift-tools-version: 6.2
// 6.2 is the oldest toolchain that builds the package: it uses `Span` and `@_lifetime` (the
// `Lifetimes` experimental feature) and `nonisolated(nonsending)`, all new in Swift 6.2. An older
// toolchain stops here with SwiftPM's "requires a minimum Swift tools version of 6.2".
//
// Linux only: io_uring (Linux 6.0 or newer). Elsewhere (macOS) the build stops at once with one
// message saying so; a cross-platform package depends on UringStreams with
// `condition: .when(platforms: [.linux])` (see the README).
import PackageDescription

// Layers, each a target depending only on the one below:
// CLiburing (the system's liburing) -> CURing (C shim over liburing) -> UringRing (one io_uring) ->
// UringRuntime (event loop executor, sockets, buffers, transports and protocols) -> UringTLS (TLS
// as a transport layer over a socket's transport; CTLS, the C shim over OpenSSL, is used by it
// alone, over the system's OpenSSL, COpenSSL) -> UringStreams (asyncio's streams API and the
// functions that make connections and servers).
let strictSwift: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    // Bytes.span returns a Span whose lifetime is tied to the Bytes (@_lifetime).
    .enableExperimentalFeature("Lifetimes"),
]

/// An executable under Sources/Examples/<name> using the streams API and ArgumentParser.
func example(_ name: String, _ dependencies: [Target.Dependency] = []) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["UringStreams", .product(name: "ArgumentParser", package: "swift-argument-parser")]
            + dependencies,
        path: "Sources/Examples/\(name)", swiftSettings: strictSwift)
}

let package = Package(
    name: "UringStreams",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "UringStreams", targets: ["UringStreams"]),
        // Opt-in bridges, each its own product so the core depends on neither swift-metrics nor
        // swift-service-lifecycle.
        .library(name: "UringStreamsMetrics", targets: ["UringStreamsMetrics"]),
        .library(name: "UringStreamsServiceLifecycle", targets: ["UringStreamsServiceLifecycle"]),
        .executable(name: "tcp-echo-client", targets: ["tcp-echo-client"]),
        .executable(name: "tcp-echo-server", targets: ["tcp-echo-server"]),
        .executable(name: "http-headers", targets: ["http-headers"]),
        .executable(name: "socketpair-wait", targets: ["socketpair-wait"]),
        .executable(name: "tls-echo-server", targets: ["tls-echo-server"]),
        .executable(name: "service-echo-server", targets: ["service-echo-server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `swift package generate-documentation --target UringStreams` (the DocC catalog is
        // Sources/UringStreams/UringStreams.docc); a plugin, so nothing of it is linked.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
    ],
    targets: [
        // The system's liburing and OpenSSL, through pkg-config: when one is missing SwiftPM says
        // which Debian package to install.
        .systemLibrary(name: "CLiburing", pkgConfig: "liburing", providers: [.apt(["liburing-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .target(name: "CURing", dependencies: ["CLiburing"]),
        .target(name: "UringRing", dependencies: ["CURing"], swiftSettings: strictSwift),
        .target(
            name: "UringRuntime", dependencies: ["UringRing", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSwift),
        .target(name: "CTLS", dependencies: ["COpenSSL"]),
        .target(name: "UringTLS", dependencies: ["UringRuntime", "CTLS"], swiftSettings: strictSwift),
        .target(name: "UringStreams", dependencies: ["UringRuntime", "UringTLS"], swiftSettings: strictSwift),
        .target(
            name: "UringStreamsMetrics",
            dependencies: ["UringStreams", .product(name: "Metrics", package: "swift-metrics")],
            swiftSettings: strictSwift),
        .target(
            name: "UringStreamsServiceLifecycle",
            dependencies: ["UringStreams", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")],
            swiftSettings: strictSwift),
        // Python's repr() for the examples that print as the asyncio ones do; no product exports it.
        .target(name: "PythonRepr", swiftSettings: strictSwift),
        example("tcp-echo-client", ["PythonRepr"]),
        example("tcp-echo-server", ["PythonRepr"]),
        example("http-headers"),
        example("socketpair-wait"),
        example("tls-echo-server"),
        .executableTarget(
            name: "service-echo-server",
            dependencies: [
                "UringStreams", "UringStreamsServiceLifecycle", "PythonRepr",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/Examples/service-echo-server", swiftSettings: strictSwift),
        // The test targets' spawns of child processes, counted in one place (see its file).
        .target(name: "TestChildProcesses", path: "Tests/TestChildProcesses", swiftSettings: strictSwift),
        .testTarget(
            name: "UringRuntimeTests",
            dependencies: [
                "UringRuntime", "UringRing", "TestChildProcesses", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift),
        .testTarget(
            name: "UringStreamsTests",
            dependencies: [
                "UringStreams", "UringRuntime", "TestChildProcesses", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSwift),
        .testTarget(
            name: "UringStreamsEcosystemTests",
            dependencies: [
                "UringStreams", "UringStreamsMetrics", "UringStreamsServiceLifecycle",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSwift),
    ]
)

// swift-tools-version: 6.1
import PackageDescription

// Layers, each a target depending only on the one below:
// CURing (C shim over liburing) -> UringRing (one io_uring) ->
// UringRuntime (event loop executor, sockets, buffers, transports and protocols) -> UringTLS (TLS
// as a transport layer over a socket's transport; CTLS, the C shim over OpenSSL, is used by it
// alone) -> UringStreams (asyncio's streams API and the functions that make connections and
// servers).
let strictSwift: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    // Bytes.span returns a Span whose lifetime is tied to the Bytes (@_lifetime).
    .enableExperimentalFeature("Lifetimes"),
]

/// An executable under Sources/Examples/<name> using the streams API and ArgumentParser.
func example(_ name: String) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["UringStreams", .product(name: "ArgumentParser", package: "swift-argument-parser")],
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
        .executable(name: "loopback-bench", targets: ["loopback-bench"]),
        .executable(name: "tls-echo-server", targets: ["tls-echo-server"]),
        .executable(name: "service-echo-server", targets: ["service-echo-server"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
    ],
    targets: [
        .target(
            name: "CURing",
            linkerSettings: [.linkedLibrary("uring")]
        ),
        .target(name: "UringRing", dependencies: ["CURing"], swiftSettings: strictSwift),
        .target(
            name: "UringRuntime", dependencies: ["UringRing", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSwift),
        .target(
            name: "CTLS",
            linkerSettings: [.linkedLibrary("ssl"), .linkedLibrary("crypto")]
        ),
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
        example("tcp-echo-client"),
        example("tcp-echo-server"),
        example("http-headers"),
        example("socketpair-wait"),
        example("loopback-bench"),
        example("tls-echo-server"),
        .executableTarget(
            name: "service-echo-server",
            dependencies: [
                "UringStreams", "UringStreamsServiceLifecycle",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Sources/Examples/service-echo-server", swiftSettings: strictSwift),
        .testTarget(
            name: "UringRuntimeTests",
            dependencies: ["UringRuntime", "UringRing", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSwift),
        .testTarget(
            name: "UringStreamsTests",
            dependencies: ["UringStreams", "UringRuntime", .product(name: "Logging", package: "swift-log")],
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

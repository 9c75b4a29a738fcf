// swift-tools-version: 6.2
// 6.2 as the library it measures (ordo-one/benchmark itself needs 6.1 or newer).
import PackageDescription

// Benchmarks live in their own package so the library's build and tests stay light:
// `cd Benchmarks && swift package benchmark`.
let benchmarkTarget: (String) -> Target = { name in
    .executableTarget(
        name: name,
        dependencies: [
            .product(name: "Benchmark", package: "benchmark"),
            .product(name: "UringStreams", package: "UringStreams"),
        ],
        path: "Benchmarks/\(name)",
        swiftSettings: [.swiftLanguageMode(.v6)],
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    )
}

let package = Package(
    name: "UringStreamsBenchmarks",
    platforms: [.macOS(.v15)],
    products: [
        // What the comparison harness (Benchmarks/compare) measures for UringStreams.
        .executable(name: "echo-bench-server", targets: ["echo-bench-server"]),
        // A Swift-only echo load test in one process: `swift run -c release loopback-bench` here.
        .executable(name: "loopback-bench", targets: ["loopback-bench"]),
    ],
    dependencies: [
        // Named: a path dependency is otherwise known by its folder name, which differs per checkout.
        .package(name: "UringStreams", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        // The incumbent Swift choice, as a peer in the comparison (never a library dependency).
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // TLS for that peer in the TLS scenarios (BoringSSL inside; never a library dependency).
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // loopback-bench's latency percentiles (also what ordo-one/benchmark records with).
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        benchmarkTarget("ReaderFraming"),
        benchmarkTarget("LoopbackEcho"),
        .executableTarget(
            name: "echo-bench-server",
            dependencies: [
                .product(name: "UringStreams", package: "UringStreams"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Servers/echo-bench-server",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "loopback-bench",
            dependencies: [
                .product(name: "UringStreams", package: "UringStreams"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "Tools/loopback-bench",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .executableTarget(
            name: "nio-echo-server",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            path: "Peers/nio-echo-server",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)

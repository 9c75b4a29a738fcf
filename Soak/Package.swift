// swift-tools-version: 6.1
import PackageDescription

// The soak tool lives in its own package, as the benchmarks do, so the library's build and tests
// stay light: `scripts/soak` (or `cd Soak && swift run -c release soak`).
// `soak-server` is a UringStreams server with echo, line and slow-consumer modes; `soak` is the
// driver: plain C sockets on threads of their own (epoll and blocking I/O), so the load it puts on
// the server does not depend on the code under test.
let package = Package(
    name: "UringStreamsSoak",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "soak", targets: ["soak"]),
        .executable(name: "soak-server", targets: ["soak-server"]),
    ],
    dependencies: [
        // Named: a path dependency is otherwise known by its folder name, which differs per checkout.
        .package(name: "UringStreams", path: ".."),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .executableTarget(
            name: "soak-server",
            dependencies: [
                .product(name: "UringStreams", package: "UringStreams"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                "CSoakHeap",
            ],
            path: "Sources/soak-server",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
        .target(name: "CSoakHeap", path: "Sources/CSoakHeap"),
        .executableTarget(
            name: "soak",
            path: "Sources/soak",
            cSettings: [.define("_GNU_SOURCE"), .unsafeFlags(["-Wall", "-Wextra", "-Wno-unused-parameter"])],
            linkerSettings: [.linkedLibrary("pthread"), .linkedLibrary("m")]
        ),
    ]
)

// swift-tools-version: 6.1
// The StreamReader fuzzer: a package of its own, so the project's `swift build` and `swift test`
// never see it. Build and run it with scripts/fuzz (docs/fuzzing.md).
import Foundation
import PackageDescription

// The fuzzer checks the reader's buffered byte count and chunk-record cost after every step, which
// only `package` API (StreamReader.bufferedMemory) tells. SwiftPM gives each package's modules its
// identity as package name, and a path dependency's identity is its directory name: compiling the
// fuzzer with that same name lets it see the root package's `package` declarations.
let rootDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
let rootPackageName = String(
    rootDirectory.lastPathComponent.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "_" })
let fuzzerPackageName = (rootPackageName.first?.isNumber ?? true) ? "_" + rootPackageName : rootPackageName

let package = Package(
    name: "UringStreamsFuzz",
    dependencies: [.package(name: "UringStreams", path: "..")],
    targets: [
        .executableTarget(
            name: "StreamReaderFuzzer",
            dependencies: [.product(name: "UringStreams", package: "UringStreams")],
            // SwiftPM's own -package-name (this package's) would come after ours and win.
            packageAccess: false,
            swiftSettings: [
                .swiftLanguageMode(.v6),
                // No main: libFuzzer's comes with -sanitize=fuzzer.
                .unsafeFlags(["-parse-as-library", "-package-name", fuzzerPackageName]),
            ])
    ]
)

// swift-tools-version:6.1
// Micro benchmarks of Meridian's hot paths (package-benchmark). A package of its own, so the
// main build and CI stay lean: run with `swift package benchmark` from this folder.
import PackageDescription

let package = Package(
    name: "MeridianBenchmarks",
    platforms: [.macOS(.v14)],
    dependencies: [
        .package(name: "Meridian", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "MeridianMicro",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "MeridianCore", package: "Meridian"),
                .product(name: "MeridianRESP", package: "Meridian"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/MeridianMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)

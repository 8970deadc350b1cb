// swift-tools-version:6.0
// The package graph is the architecture diagram: MeridianCore is pure (standard library plus
// NIOCore's ByteBuffer), every other module adds one concern on top of it.
import PackageDescription

let package = Package(
    name: "Meridian",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "meridian-server", targets: ["meridian-server"]),
        .executable(name: "meridian", targets: ["meridian"]),
        .library(name: "MeridianCore", targets: ["MeridianCore"]),
        .library(name: "MeridianRESP", targets: ["MeridianRESP"]),
        .library(name: "MeridianStorage", targets: ["MeridianStorage"]),
        .library(name: "MeridianPaxos", targets: ["MeridianPaxos"]),
        .library(name: "MeridianCluster", targets: ["MeridianCluster"]),
        .library(name: "MeridianServer", targets: ["MeridianServer"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // Pure values and state machines. No IO, no clocks, no threads.
        .target(
            name: "MeridianCore",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")]
        ),
        // The YAML configuration contract, parsed into Core's value types.
        .target(
            name: "MeridianConfig",
            dependencies: ["MeridianCore", .product(name: "Yams", package: "Yams")]
        ),
        // The strong protocol's state machines: Paxos roles, leases, the applied state of strong
        // keys. Deterministic; no IO, no clocks.
        .target(name: "MeridianPaxos", dependencies: ["MeridianCore"]),
        // Scale-out inside a data center (docs/CLUSTER.md): placement, membership, replication
        // between a partition's replicas, hints, anti-entropy, moves. Deterministic; no IO.
        .target(name: "MeridianCluster", dependencies: ["MeridianCore"]),
        // RESP2/RESP3 codec and the command table.
        .target(
            name: "MeridianRESP",
            dependencies: ["MeridianCore", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // RocksDB's C API (Debian: librocksdb-dev).
        .systemLibrary(name: "CRocksDB", pkgConfig: "rocksdb", providers: [.apt(["librocksdb-dev"])]),
        // The durable store: every RocksDB call, the write-behind queue and group commit.
        .target(
            name: "MeridianStorage",
            dependencies: ["MeridianCore", "CRocksDB", .product(name: "Logging", package: "swift-log")]
        ),
        // zstd's C API (Debian: libzstd-dev).
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // The peer protocol: frames, delta-batch codec, zstd. Bytes in, values out; no IO.
        .target(
            name: "MeridianWire",
            dependencies: ["MeridianCore", "MeridianPaxos", "MeridianCluster", "CZstd", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // Deterministic simulations that drive Core's state machines with seeded faults.
        .target(
            name: "MeridianSimulation", dependencies: ["MeridianCore", "MeridianPaxos", "MeridianCluster", "MeridianWire"]
        ),
        // The NIO shell: listeners, command execution, the sharded keyspace, INFO.
        .target(
            name: "MeridianServer",
            dependencies: [
                "MeridianCore", "MeridianConfig", "MeridianRESP", "MeridianStorage", "MeridianWire", "MeridianPaxos",
                "MeridianCluster",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "meridian-server",
            dependencies: [
                "MeridianServer", "MeridianConfig", "MeridianStorage", "MeridianCluster", "MeridianPaxos",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "meridian",
            dependencies: [
                "MeridianCore", "MeridianConfig", "MeridianWire", "MeridianCluster", "MeridianSimulation",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(name: "MeridianCoreTests", dependencies: ["MeridianCore"]),
        .testTarget(name: "MeridianConfigTests", dependencies: ["MeridianConfig"]),
        .testTarget(name: "MeridianStorageTests", dependencies: ["MeridianStorage", "MeridianCore"]),
        .testTarget(
            name: "SimulationTests", dependencies: ["MeridianSimulation", "MeridianPaxos", "MeridianCluster", "MeridianCore"]
        ),
        .testTarget(name: "MeridianClusterTests", dependencies: ["MeridianCluster", "MeridianCore", "MeridianSimulation"]),
        .testTarget(name: "MeridianPaxosTests", dependencies: ["MeridianPaxos", "MeridianWire", "MeridianCore"]),
        .testTarget(
            name: "MeridianWireTests",
            dependencies: ["MeridianWire", "MeridianCore", "MeridianCluster", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "MeridianRESPTests",
            dependencies: ["MeridianRESP", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "MeridianServerTests",
            dependencies: [
                "MeridianServer", "MeridianCore", "MeridianStorage", "MeridianPaxos", "MeridianWire", "MeridianCluster",
                "MeridianSimulation",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)

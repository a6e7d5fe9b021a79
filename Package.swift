// swift-tools-version: 6.1
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

/// The libraries' async functions run on their caller's executor (SE-0461): an `await` on a
/// publish or a delivery from the main actor or an actor of the application's stays there
/// instead of hopping to the global executor and back, once per message. What must run
/// elsewhere says so (`@concurrent`, or a task of its own).
let librarySettings: [SwiftSetting] = strictSettings + [
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
]

let package = Package(
    name: "swift-rabbitmq",
    products: [
        .library(name: "RabbitMQ", targets: ["RabbitMQ"]),
        .library(name: "RabbitMQPatterns", targets: ["RabbitMQPatterns"]),
        .executable(name: "rmq", targets: ["rmq"]),
        .executable(name: "rabbitmq-bench", targets: ["rabbitmq-bench"]),
        .executable(name: "rabbitmq-example", targets: ["rabbitmq-example"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/apple/swift-service-context", from: "1.5.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // C
        .systemLibrary(
            name: "CRabbitMQ",
            path: "Modules/CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),

        // Libraries
        .target(
            name: "RabbitMQ",
            dependencies: [
                "CRabbitMQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
                .product(name: "ServiceContextModule", package: "swift-service-context"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: librarySettings
        ),
        .target(
            name: "RabbitMQPatterns",
            dependencies: [
                "RabbitMQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: librarySettings
        ),
        // The raw rabbitmq-c baseline the benchmark compares the Swift layer against.
        .target(
            name: "CRabbitMQBaseline",
            dependencies: ["CRabbitMQ"]
        ),
        .target(
            name: "RabbitMQTestSupport",
            dependencies: [
                "RabbitMQ",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            swiftSettings: strictSettings
        ),

        // Executables
        .executableTarget(
            name: "rmq",
            dependencies: [
                "RabbitMQ", "RabbitMQPatterns",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "rabbitmq-bench",
            dependencies: [
                "RabbitMQ", "RabbitMQPatterns", "CRabbitMQBaseline",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strictSettings
        ),
        .executableTarget(
            name: "rabbitmq-example",
            dependencies: [
                "RabbitMQ", "RabbitMQPatterns",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        // libFuzzer target for the C boundary (scripts/fuzz.sh); built normally, it runs the
        // corpus in Tests/FuzzCorpus once.
        .executableTarget(
            name: "rabbitmq-fuzz",
            dependencies: ["RabbitMQ"],
            swiftSettings: strictSettings
        ),

        // Tests
        .testTarget(
            name: "RabbitMQTests",
            dependencies: [
                "RabbitMQ", "CRabbitMQ",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "RabbitMQPatternsTests",
            dependencies: ["RabbitMQPatterns"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "FaultTests",
            dependencies: ["RabbitMQ", "RabbitMQTestSupport", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "CoreIntegrationTests",
            dependencies: [
                "RabbitMQ", "RabbitMQTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "PatternsIntegrationTests",
            dependencies: [
                "RabbitMQ", "RabbitMQPatterns", "RabbitMQTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "RMQToolTests",
            dependencies: ["RabbitMQ", "RabbitMQPatterns", "RabbitMQTestSupport"],
            swiftSettings: strictSettings
        ),
    ]
)

// swift-tools-version: 6.1
import PackageDescription

let strictSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swift-rabbitmq",
    products: [
        .library(name: "RabbitMQ", targets: ["RabbitMQ"]),
        .executable(name: "rabbitmq-example", targets: ["rabbitmq-example"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
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
            ],
            swiftSettings: strictSettings
        ),
        .target(
            name: "RabbitMQTestSupport",
            dependencies: ["RabbitMQ"],
            swiftSettings: strictSettings
        ),

        // Executables
        .executableTarget(
            name: "rabbitmq-example",
            dependencies: ["RabbitMQ"],
            swiftSettings: strictSettings
        ),

        // Tests
        .testTarget(
            name: "RabbitMQTests",
            dependencies: ["RabbitMQ", "CRabbitMQ"],
            swiftSettings: strictSettings
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: ["RabbitMQ", "RabbitMQTestSupport"],
            swiftSettings: strictSettings
        ),
    ]
)

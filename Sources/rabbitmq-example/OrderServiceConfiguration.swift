import Foundation
import Logging

/// The service's settings, read from the environment so that the same binary runs on a
/// laptop, in a container and in a test.
struct OrderServiceConfiguration: Sendable {
    /// The broker. `RABBITMQ_URL`. Default: `amqp://guest:guest@127.0.0.1:5672/`.
    var brokerURL: String
    /// How many orders the publisher places. `ORDERS_COUNT`. Default: 20.
    var orderCount: Int
    /// Keep running after the orders are processed, until SIGTERM or SIGINT.
    /// `ORDERS_KEEP_RUNNING=1`. Default: exit once every order is processed.
    var keepRunning: Bool
    /// The prefix of every exchange and queue the service declares, so that several copies
    /// (or tests) can share a broker. `ORDERS_PREFIX`. Default: `orders`.
    var prefix: String
    /// Every how many orders one fails its first fulfilment attempt, to show a retry.
    /// `ORDERS_FAIL_EVERY`. Default: 5 (0: none fails).
    var failEvery: Int
    /// The delay before a failed fulfilment is tried again. `ORDERS_RETRY_DELAY_MS`. Default: 200.
    var retryDelay: Duration
    /// Print the Prometheus text exposition on standard output at exit. `ORDERS_METRICS`
    /// (`stdout` or `none`). Default: `stdout`.
    var printMetrics: Bool
    /// The log level (standard error). `ORDERS_LOG_LEVEL`. Default: `info`.
    var logLevel: Logger.Level

    /// The settings in `environment`.
    /// - Throws: ``OrderServiceError`` naming the variable that has a value it cannot use.
    init(environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        func integer(_ name: String, default value: Int, minimum: Int) throws -> Int {
            guard let text = environment[name] else { return value }
            guard let number = Int(text), number >= minimum else {
                throw OrderServiceError("\(name) must be an integer of at least \(minimum), not '\(text)'")
            }
            return number
        }
        brokerURL = environment["RABBITMQ_URL"] ?? "amqp://guest:guest@127.0.0.1:5672/"
        orderCount = try integer("ORDERS_COUNT", default: 20, minimum: 1)
        keepRunning = environment["ORDERS_KEEP_RUNNING"] == "1"
        prefix = environment["ORDERS_PREFIX"] ?? "orders"
        guard !prefix.isEmpty else { throw OrderServiceError("ORDERS_PREFIX must not be empty") }
        failEvery = try integer("ORDERS_FAIL_EVERY", default: 5, minimum: 0)
        retryDelay = .milliseconds(try integer("ORDERS_RETRY_DELAY_MS", default: 200, minimum: 1))
        switch environment["ORDERS_METRICS"] ?? "stdout" {
        case "stdout": printMetrics = true
        case "none": printMetrics = false
        case let other: throw OrderServiceError("ORDERS_METRICS must be 'stdout' or 'none', not '\(other)'")
        }
        let level = environment["ORDERS_LOG_LEVEL"] ?? "info"
        guard let logLevel = Logger.Level(rawValue: level) else {
            throw OrderServiceError("ORDERS_LOG_LEVEL must be one of trace, debug, info, notice, warning, error, critical")
        }
        self.logLevel = logLevel
    }

    /// The topic exchange the order events go to.
    var eventsExchange: String { prefix + ".events" }
    /// The audit log's subscription queue.
    var auditQueue: String { prefix + ".audit" }
    /// The pricing RPC server's request queue.
    var pricingQueue: String { prefix + ".pricing" }
    /// The fulfilment retry queue's base name.
    var fulfilmentQueue: String { prefix + ".fulfilment" }
}

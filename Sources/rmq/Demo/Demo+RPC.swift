import Foundation
import RabbitMQ
import RabbitMQPatterns

extension Demo {
    /// A typed RPC server; calls that succeed, fail remotely, find no server, time out; then
    /// a burst of concurrent calls, timed.
    func rpc(calls: Int, concurrency: Int) async throws {
        let queue = name("pricing")
        let server = RabbitMQRPCServer(
            connection: connection, queue: queue, configuration: .init(concurrency: 32)
        ) { (request: PriceRequest) -> PriceQuote in
            switch request.sku {
            case "slow":
                try await Task.sleep(for: .seconds(1))
                return PriceQuote(sku: request.sku, cents: 1)
            case let sku where sku.hasPrefix("A-"):
                return PriceQuote(sku: sku, cents: 1250)
            default:
                throw RabbitMQPatternsError.permanentFailure("unknown sku \(request.sku)")
            }
        }
        // The queue must exist before the first call, or the call is unroutable.
        let setup = try await connection.openChannel()
        topology.record(queues: [queue])
        try await setup.queueDeclare(queue, durable: true)

        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            defer { group.cancelAll() }
            try await RabbitMQRPCClient.withClient(connection: connection) { client in
                let quote = try await client.call(PriceRequest(sku: "A-1"), routingKey: queue, as: PriceQuote.self)
                let remote = await outcome {
                    try await client.call(PriceRequest(sku: "Z-9"), routingKey: queue, as: PriceQuote.self)
                }
                let unroutable = await outcome {
                    try await client.call(PriceRequest(sku: "A-1"), routingKey: name("nobody"), as: PriceQuote.self)
                }
                let late = await outcome {
                    try await client.call(
                        PriceRequest(sku: "slow"), routingKey: queue, as: PriceQuote.self, timeout: .milliseconds(300))
                }

                let started = ContinuousClock.now
                try await withThrowingTaskGroup(of: Void.self) { callers in
                    for worker in 0..<concurrency {
                        callers.addTask {
                            for index in stride(from: worker, to: calls, by: concurrency) {
                                let quote = try await client.call(
                                    PriceRequest(sku: "A-\(index)"), routingKey: queue, as: PriceQuote.self)
                                guard quote.sku == "A-\(index)" else {
                                    throw CLIError("demo: call A-\(index) got the reply for \(quote.sku)")
                                }
                            }
                        }
                    }
                    try await callers.waitForAll()
                }
                let elapsed = ContinuousClock.now - started
                let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                report("rpc", [
                    "queue \(queue), direct reply-to; server answers PriceRequest with PriceQuote",
                    "price(A-1) = \(quote.cents) cents; price(Z-9) -> \(remote); no server -> \(unroutable)",
                    "slow call with a 300 ms timeout -> \(late)",
                    String(
                        format: "%d calls, %d concurrent, every reply matched to its call: %.2f s, %.0f calls/s",
                        calls, concurrency, seconds, Double(calls) / max(seconds, 1e-9)),
                ])
            }
        }
        try await setup.close()
    }

    /// "ok", or the code and message of the error `body` threw.
    private func outcome<T: Sendable>(_ body: () async throws -> T) async -> String {
        do {
            _ = try await body()
            return "ok"
        } catch let error as RabbitMQPatternsError {
            return "\(error.code) (\(error.message))"
        } catch {
            return "\(error)"
        }
    }
}

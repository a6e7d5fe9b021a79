import CRabbitMQBaseline
import Foundation
import RabbitMQ
import RabbitMQPatterns

extension SwiftScenarios {
    /// The payload of the envelope scenario: `text` holds the size under test.
    struct EnvelopePayload: Codable, Sendable, Equatable {
        var sequence: Int
        var text: String
    }

    /// Envelopes without a broker: one ``RabbitMQEnvelope`` encoded to its JSON body and
    /// decoded back `count` times, its payload text `size` bytes long. check = decoded
    /// envelopes whose id and data equal the encoded one's.
    func envelope(size: Int, count: Int) async throws -> RunResult {
        // As for fieldTable: a CPU-bound loop, off the cooperative pool.
        let outcome: Result<RunResult, any Error> = await DedicatedThread.run {
            Result {
                let text = String(decoding: Self.body(size: size), as: UTF8.self)
                let sent = RabbitMQEnvelope(
                    type: "bench.payload.sent", data: EnvelopePayload(sequence: 1, text: text),
                    metadata: RabbitMQEnvelopeMetadata(source: "rabbitmq-bench", correlationID: "bench-1"))
                var matched: UInt64 = 0
                let start = RunResult.sample()
                for _ in 0..<count {
                    let body = try sent.encodedBody()
                    let received = try RabbitMQEnvelope<EnvelopePayload>(decoding: body)
                    if received.id == sent.id && received.data == sent.data { matched += 1 }
                }
                let end = RunResult.sample()
                return RunResult(messages: UInt64(count), start: start, end: end, p50: nil, p99: nil, check: matched)
            }
        }
        return try outcome.get()
    }

    /// Sequential calls with the patterns layer's ``RabbitMQRPCClient`` in its default
    /// configuration (direct reply-to, mandatory requests that expire with their timeout), as
    /// an application would make them, to the `rpc` scenario's echo server. check = replies
    /// whose body equals the request.
    func rpcPatterns(
        serverQueue: String, size: Int, count: Int, maxSeconds: Double, isolation: isolated (any Actor)? = #isolation
    ) async throws -> RunResult {
        try await withConnection(maxSeconds: maxSeconds) { connection, deadline in
            try await RabbitMQRPCClient.withClient(connection: connection) { client in
                let body = Self.body(size: size)
                // The client opens its channel and reply consumer in run(), and the first call
                // waits for them: one call before the measurement keeps that set-up out of it,
                // as the C client's basic.consume is.
                _ = try await client.call(body, routingKey: serverQueue)
                var latencies = [UInt64](repeating: 0, count: count)
                var matched: UInt64 = 0
                let start = RunResult.sample()
                for call in 0..<count {
                    let started = crmq_bench_monotonic_ns()
                    let reply = try await client.call(body, routingKey: serverQueue)
                    latencies[call] = crmq_bench_monotonic_ns() - started
                    if reply.body == body { matched += 1 }
                    if call & 255 == 255 { try deadline.check(call) }
                }
                let end = RunResult.sample()
                let (p50, p99) = RunResult.percentiles(&latencies)
                return RunResult(messages: UInt64(count), start: start, end: end, p50: p50, p99: p99, check: matched)
            }
        }
    }
}

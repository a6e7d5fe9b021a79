import Foundation
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
}

import RabbitMQ
import RabbitMQTestSupport
import Testing

/// Requests that AMQP cannot carry (a short string over 255 bytes, a method larger than a
/// frame) are refused where they are made, with a typed error; the channel and the
/// connection go on.
@Suite("Requests that cannot be sent", .timeLimit(.minutes(3)))
struct UnsendableRequestTests {
    static let tooLong = String(repeating: "n", count: 256)
    static let longKey: RabbitMQFieldTable = [tooLong: "v"]
    static let tooBig: RabbitMQFieldTable = ["x-big": .string(String(repeating: "a", count: 200_000))]

    /// Defect: the I/O thread failed to encode such a method and dropped the connection
    /// (every channel failed, recovery ran, and the caller got a retriable `connectionClosed`
    /// for what can never succeed).
    @Test func aRequestThatCannotBeEncodedFailsAloneWithATypedError() async throws {
        let connection = try await TestBroker.connect(name: TestBroker.uniqueName("unsendable"))
        let log = ConnectionEventLog(connection)
        let channel = try await connection.openChannel()
        let queue = TestBroker.uniqueName("unsendable-q")
        _ = try await channel.queueDeclare(queue, durable: true, autoDelete: true)

        let requests: [(String, @Sendable () async throws -> Void)] = [
            ("queue.declare with a long name", { _ = try await channel.queueDeclare(Self.tooLong) }),
            ("queue.declare with big arguments", { _ = try await channel.queueDeclare(TestBroker.uniqueName("big"), arguments: Self.tooBig) }),
            ("exchange.declare with a long name", { try await channel.exchangeDeclare(Self.tooLong) }),
            ("queue.bind with a long routing key", { try await channel.queueBind(queue: queue, exchange: "amq.direct", routingKey: Self.tooLong) }),
            ("queue.bind with big arguments", { try await channel.queueBind(queue: queue, exchange: "amq.headers", arguments: Self.tooBig) }),
            ("queue.delete with a long name", { _ = try await channel.queueDelete(Self.tooLong) }),
            ("basic.get from a long name", { _ = try await channel.get(queue: Self.tooLong) }),
            ("basic.consume with a long tag", { _ = try await channel.consume(queue: queue, consumerTag: Self.tooLong) }),
            ("basic.consume with big arguments", { _ = try await channel.consume(queue: queue, arguments: Self.tooBig) }),
            ("queue.declare with a long argument name", { _ = try await channel.queueDeclare(TestBroker.uniqueName("key"), arguments: Self.longKey) }),
            ("basic.publish with a long header name", { try await channel.publish("x", routingKey: queue, properties: .init(headers: Self.longKey)) }),
            ("basic.publish with a long nested header name", { try await channel.publish("x", routingKey: queue, properties: .init(headers: ["t": .table(Self.longKey)])) }),
        ]
        for (what, request) in requests {
            let error = await #expect(throws: RabbitMQError.self, "\(what)") { try await request() }
            #expect(error?.code == .invalidConfiguration, "\(what): \(String(describing: error))")
        }
        // Nothing else was disturbed: the same channel still works, the connection never dropped.
        #expect(channel.isOpen)
        try await channel.publish("still here", routingKey: queue)
        try await eventually("the message") { try await channel.get(queue: queue, autoAck: true) != nil }
        #expect(!log.all.contains { if case .disconnected = $0 { true } else { false } }, "\(log.all)")
        try await connection.close()
    }
}

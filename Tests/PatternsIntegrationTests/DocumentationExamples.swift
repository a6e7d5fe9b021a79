import RabbitMQ
import RabbitMQPatterns
import RabbitMQTestSupport
import Testing

// The code samples of the RabbitMQPatterns DocC articles
// (Sources/RabbitMQPatterns/RabbitMQPatterns.docc), compiled and run against the test broker.
// Each function's body holds its article's code blocks verbatim (DocumentationSampleTests in
// RabbitMQTests checks it); the lines around them only hand values in and out. The names are
// the articles', so each test runs in a virtual host of its own
// (TestBroker.inScratchVirtualHost): a broker a user points the tests at keeps its own
// entities of those names.

struct OrderPlaced: Codable, Sendable {
    var orderID: Int
    var cents: Int
}

struct PriceRequest: Codable, Sendable {
    var sku: String
}

struct Price: Codable, Sendable, Equatable {
    var sku: String
    var cents: Int
}

struct Email: Codable, Sendable {
    var to: String
}

@Suite("Documentation: RabbitMQPatterns articles", .timeLimit(.minutes(5)))
struct PatternsDocumentationExampleTests {
    @Test func envelopeExampleRuns() throws {
        let decoded = try envelopeExample()
        #expect(decoded.data.orderID == 42)
        #expect(decoded.metadata.correlationID == "req-7")
    }

    @Test func directExampleRuns() async throws {
        try await TestBroker.inScratchVirtualHost { connection in
            let warehouse = Warehouse()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await directExample(connection: connection, warehouse: warehouse) }
                defer { group.cancelAll() }
                try await eventually("order 42 to be shipped") { warehouse.shipped.all == ["42 uk"] }
            }
        }
    }

    @Test func topicExampleRuns() async throws {
        try await TestBroker.inScratchVirtualHost { connection in
            let auditLog = AuditLog()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await topicExample(connection: connection, auditLog: auditLog) }
                defer { group.cancelAll() }
                try await eventually("the event to be audited") { auditLog.types.all == ["shop.order.placed"] }
            }
        }
    }

    @Test func fanoutExampleRuns() async throws {
        try await TestBroker.inScratchVirtualHost { connection in
            let result = try await fanoutExample(connection: connection)
            #expect(result == 42)
        }
    }

    @Test func undecodableExampleRuns() async throws {
        try await TestBroker.inScratchVirtualHost { connection in
            let undecodable = UndecodableLog()
            let payments = try await undecodableExample(connection: connection, undecodable: undecodable)
            let orders = try await connection.openChannel()
            try await orders.confirmSelect()
            try await orders.publishAndWaitForConfirm(Array("{}".utf8), exchange: "payments", routingKey: "paid")
            try await orders.publishAndWaitForConfirm(
                RabbitMQEnvelope(type: "shop.order.paid", data: OrderPlaced(orderID: 7, cents: 100)).encodedBody(),
                exchange: "payments", routingKey: "paid")
            var iterator = payments.makeAsyncIterator()
            let paid = try #require(try await iterator.next())
            try paid.ack()
            #expect(paid.data.orderID == 7)
            #expect(payments.undecodableCount == 1)
            #expect(undecodable.entries.all.map(\.queue) == ["orders.payments"])
            try await payments.cancel()
        }
    }

    @Test func rpcExampleRuns() async throws {
        try await TestBroker.inScratchVirtualHost { connection in
            try await connection.openChannel().queueDeclare("pricing", durable: true)
            let price = try await withThrowingTaskGroup(of: Price?.self) { group in
                group.addTask {
                    try await rpcServerExample(connection: connection)
                    return nil
                }
                defer { group.cancelAll() }
                return try await rpcClientExample(connection: connection)
            }
            #expect(price == Price(sku: "A-1", cents: 1250))
        }
    }

    @Test func retryExampleRuns() async throws {
        let mailer = Mailer()
        try await TestBroker.inScratchVirtualHost { connection in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await retryExample(connection: connection, mailer: mailer) }
                defer { group.cancelAll() }
                try await eventually("the email to be sent on its second attempt") { mailer.sent.all == ["a@example.com"] }
            }
        }
    }
}

private func envelopeExample() throws -> RabbitMQEnvelope<OrderPlaced> {
    let envelope = RabbitMQEnvelope(
        type: "shop.order.placed", data: OrderPlaced(orderID: 42, cents: 1999),
        metadata: RabbitMQEnvelopeMetadata(source: "shop", correlationID: "req-7"))
    let body = try envelope.encodedBody()  // {"id":"6f1c…","timestamp":"2024-05-17T12:30:00.123Z","version":"1.0",…}
    let decoded = try RabbitMQEnvelope<OrderPlaced>(decoding: body)

    do {
        _ = try RabbitMQEnvelope<OrderPlaced>(decoding: Array(#"{"id": 7}"#.utf8))
    } catch {
        print(error.field ?? "-")  // "id": the missing or mistyped field
    }
    return decoded
}

/// Runs until its task is cancelled.
private func directExample(connection: RabbitMQConnection, warehouse: Warehouse) async throws {
    let envelope = RabbitMQEnvelope(type: "shop.order.placed", data: OrderPlaced(orderID: 42, cents: 1999))

    let orders = try await RabbitMQDirectExchange.declare("orders", on: connection)
    let europe = try await orders.subscribe(
        OrderPlaced.self, queue: "orders.eu", bindingKeys: ["eu", "uk"],
        options: RabbitMQQueueOptions(messageTTL: .seconds(3600), maxLength: 10_000, overflow: .rejectPublish))

    try await orders.publish(envelope, routingKey: "uk")  // returns once the broker has it

    for try await message in europe {
        try await warehouse.ship(message.data, region: message.delivery.routingKey)  // order 42, "uk"
        try message.ack()
    }
}

/// Stands in for an application's warehouse.
private final class Warehouse: Sendable {
    let shipped = Recorded<String>()

    func ship(_ order: OrderPlaced, region: String) async throws {
        shipped.append("\(order.orderID) \(region)")
    }
}

/// Stands in for an application's audit log.
private final class AuditLog: Sendable {
    let types = Recorded<String>()

    func record(_ type: String, id: some Hashable & Sendable) async throws {
        types.append(type)
    }
}

/// Runs until its task is cancelled.
private func topicExample(connection: RabbitMQConnection, auditLog: AuditLog) async throws {
    let envelope = RabbitMQEnvelope(type: "shop.order.placed", data: OrderPlaced(orderID: 42, cents: 1999))

    let events = try await RabbitMQTopicExchange.declare("events", on: connection)
    let audit = try await events.subscribe(OrderPlaced.self, queue: "audit", patterns: ["shop.#"])

    try await events.publish(envelope)  // routing key "shop.order.placed"

    for try await message in audit {
        // The type is also in message.delivery.properties.headers?["event_type"].
        try await auditLog.record(message.envelope.type, id: message.envelope.id)
        try message.ack()  // message.reject() would send it to "audit.dead-letter"
    }
}

private func fanoutExample(connection: RabbitMQConnection) async throws -> Int {
    let envelope = RabbitMQEnvelope(type: "shop.order.placed", data: OrderPlaced(orderID: 42, cents: 1999))

    let notices = try await RabbitMQFanoutExchange.declare("notices", on: connection)
    let mine = try await notices.subscribe(OrderPlaced.self)  // a server-named exclusive queue

    try await notices.publish(envelope)  // every subscriber gets a copy

    for try await message in mine {
        try message.ack()
        return message.data.orderID
    }
    return 0
}

/// Stands in for an application's record of what it could not read.
private final class UndecodableLog: Sendable {
    let entries = Recorded<(queue: String, error: String)>()

    func record(_ queue: String, _ error: String) {
        entries.append((queue, error))
    }
}

private func undecodableExample(
    connection: RabbitMQConnection, undecodable: UndecodableLog
) async throws -> RabbitMQSubscription<OrderPlaced> {
    // Not "orders": directExampleRuns, which runs alongside, deletes that one.
    let orders = try await RabbitMQDirectExchange.declare("payments", on: connection)

    let payments = try await orders.subscribe(
        OrderPlaced.self, queue: "orders.payments", bindingKeys: ["paid"],
        onUndecodable: { rejected in
            // Already in "orders.payments.dead-letter"; rejected.delivery has the bytes.
            undecodable.record(rejected.queue, rejected.error.message)
        })

    return payments
}

private func rpcServerExample(connection: RabbitMQConnection) async throws {
    let server = RabbitMQRPCServer(connection: connection, queue: "pricing") { (request: PriceRequest) -> Price in
        guard request.sku.hasPrefix("A-") else {
            throw RabbitMQPatternsError.permanentFailure("unknown sku")  // the caller gets a .remoteError
        }
        return Price(sku: request.sku, cents: 1250)
    }
    try await server.run()  // answers requests until its task is cancelled
}

private func rpcClientExample(connection: RabbitMQConnection) async throws -> Price {
    let price = try await RabbitMQRPCClient.withClient(connection: connection) { rpc in
        try await rpc.call(PriceRequest(sku: "A-1"), routingKey: "pricing", as: Price.self, timeout: .seconds(5))
    }
    return price
}

private func retryExample(connection: RabbitMQConnection, mailer: Mailer) async throws {
    let emails = try await RabbitMQRetryQueue.declare("emails", on: connection)  // delays 1 s, 5 s, 25 s

    try await emails.publish(RabbitMQEnvelope(type: "email.requested", data: Email(to: "a@example.com")))

    try await emails.run(Email.self) { attempt in
        // Throwing retries it after 1 s, 5 s, 25 s, then parks it in "emails.dead-letter".
        try await mailer.send(attempt.data)
    }
}

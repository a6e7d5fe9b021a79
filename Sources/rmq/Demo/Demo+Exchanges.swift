import RabbitMQ
import RabbitMQPatterns

extension Demo {
    /// Orders routed by region to two queues with limits, manual acks.
    func direct() async throws {
        let orders = try await RabbitMQDirectExchange.declare(name("orders"), on: connection)
        // Each subscription dead-letters what does not decode into a queue of its own.
        let queues = [name("orders.eu"), name("orders.us")]
        topology.record(queues: queues + queues.map { $0 + ".dead-letter" }, exchanges: [orders.name, orders.deadLetterExchange])
        let options = RabbitMQQueueOptions(messageTTL: .seconds(60), maxLength: 1000, overflow: .rejectPublish)
        let eu = try await orders.subscribe(
            DemoOrder.self, queue: name("orders.eu"), bindingKeys: ["eu", "uk"], options: options)
        let us = try await orders.subscribe(DemoOrder.self, queue: name("orders.us"), bindingKeys: ["us"], options: options)
        let sent = [("o-1", "eu", 1200), ("o-2", "us", 800), ("o-3", "uk", 450), ("o-4", "eu", 990), ("o-5", "us", 2500)]
        for (id, region, cents) in sent {
            try await orders.publish(Self.order(id, region, cents), routingKey: region)
        }
        var unroutable = "no error"
        do {
            try await orders.publish(Self.order("o-6", "mars", 1), routingKey: "mars")
        } catch let error as RabbitMQPatternsError where error.code == .unroutable {
            unroutable = "unroutable, as expected"
        }
        let euIDs = try await take(3, from: eu).map(\.data.id)
        let usIDs = try await take(2, from: us).map(\.data.id)
        try await eu.cancel()
        try await us.cancel()
        report("direct", [
            "exchange \(orders.name): published 5 orders with routing key = region (confirmed)",
            "\(eu.queue) [eu, uk] got \(euIDs.joined(separator: ", ")); \(us.queue) [us] got \(usIDs.joined(separator: ", "))",
            "queues: TTL 60 s, max 1000, overflow reject-publish; an order for 'mars': \(unroutable)",
        ])
        try await orders.close()
    }

    /// Events routed by type to pattern subscribers; an undecodable event is dead-lettered.
    func topic() async throws {
        let events = try await RabbitMQTopicExchange.declare(name("events"), on: connection)
        let queues = [name("audit"), name("billing")]
        topology.record(queues: queues + queues.map { $0 + ".dead-letter" }, exchanges: [events.name, events.deadLetterExchange])
        let audit = try await events.subscribe(DemoOrder.self, queue: name("audit"), patterns: ["#"])
        let billing = try await events.subscribe(DemoOrder.self, queue: name("billing"), patterns: ["shop.*.placed"])
        // Not an envelope: both subscriptions reject it and the broker dead-letters it.
        try await events.channel.publishAndWaitForConfirm(
            Array("{not json".utf8), exchange: events.name, routingKey: "shop.order.placed")
        let types = ["shop.order.placed", "shop.order.shipped", "shop.refund.issued", "shop.order.placed"]
        for (index, type) in types.enumerated() {
            var envelope = Self.order("e-\(index + 1)", "eu", 100 * (index + 1))
            envelope.type = type
            try await events.publish(envelope)
        }
        let audited = try await take(4, from: audit)
        let billed = try await take(2, from: billing)
        let deadLetterQueue = billing.deadLetterQueue ?? "?"
        let deadLetters = try await events.channel.consume(queue: deadLetterQueue, autoAck: true)
        let deadLetter = try await within("the dead letter on \(deadLetterQueue)") {
            var iterator = deadLetters.makeAsyncIterator()
            guard let delivery = try await iterator.next() else { throw CLIError("demo: \(deadLetterQueue) ended") }
            return delivery
        }
        try await deadLetters.cancel()
        let death = deadLetter.properties.headers?["x-death"].flatMap { value -> String? in
            guard case .array(let deaths) = value, let first = deaths.first?.tableValue else { return nil }
            return first["reason"]?.stringValue
        }
        let auditHeaders = audited[0].delivery.properties.headers
        try await audit.cancel()
        try await billing.cancel()
        report("topic", [
            "exchange \(events.name): published 1 message that is not JSON, then \(types.count) events (routing key = type)",
            "\(audit.queue) [#] got \(audited.count) (first: \(audited[0].envelope.type), headers event_type="
                + "\(auditHeaders?["event_type"]?.stringValue ?? "?"), version=\(auditHeaders?["version"]?.stringValue ?? "?"))",
            "\(billing.queue) [shop.*.placed] got \(billed.map(\.data.id).joined(separator: ", "))",
            "the bad one was dead-lettered to \(deadLetterQueue) (x-death reason: \(death ?? "?")), not redelivered",
        ])
        try await events.close()
    }

    /// One broadcast, three subscribers with their own exclusive queues.
    func fanout() async throws {
        let notices = try await RabbitMQFanoutExchange.declare(name("notices"), on: connection)
        // The subscribers share one dead-letter queue, named as its exchange.
        topology.record(queues: [notices.deadLetterExchange], exchanges: [notices.name, notices.deadLetterExchange])
        var subscribers: [RabbitMQSubscription<DemoOrder>] = []
        for _ in 0..<3 { subscribers.append(try await notices.subscribe(DemoOrder.self)) }
        try await notices.publish(Self.order("n-1", "all", 0))
        try await notices.publish(Self.order("n-2", "all", 0))
        var counts: [Int] = []
        for subscriber in subscribers {
            counts.append(try await take(2, from: subscriber).count)
            try await subscriber.cancel()
        }
        report("fanout", [
            "exchange \(notices.name): published 2 notices",
            "3 subscribers, each on its own server-named exclusive queue, got \(counts.map(String.init).joined(separator: ", "))",
        ])
        try await notices.close()
    }
}

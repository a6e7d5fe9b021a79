import Instrumentation
import Testing

@testable import RabbitMQ

/// The trace context's way into and out of message headers, without a broker.
@Suite("Trace context in headers")
struct HeadersPropagationTests {
    /// An instrument that propagates one value under `traceparent`, the way a W3C
    /// propagator does, so the extraction helpers can be checked without a tracer.
    struct EchoInstrument: Instrument {
        enum Key: ServiceContextKey { typealias Value = String }

        func inject<Carrier, Inject: Injector>(
            _ context: ServiceContext, into carrier: inout Carrier, using injector: Inject
        ) where Carrier == Inject.Carrier {
            if let value = context[Key.self] { injector.inject(value, forKey: "traceparent", into: &carrier) }
        }

        func extract<Carrier, Extract: Extractor>(
            _ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract
        ) where Carrier == Extract.Carrier {
            if let value = extractor.extract(key: "traceparent", from: carrier) { context[Key.self] = value }
        }
    }

    static func delivery(headers: RabbitMQFieldTable?) -> RabbitMQDelivery {
        RabbitMQDelivery(
            body: [], properties: RabbitMQProperties(headers: headers), exchange: "", routingKey: "q",
            redelivered: false, deliveryTag: 1, consumerTag: "c", messageCount: nil, channel: nil, epoch: 0)
    }

    @Test func theInjectorWritesLongStringsAndReplacesAValue() {
        var headers: RabbitMQFieldTable = ["other": .int32(1), "traceparent": .string("old")]
        RabbitMQHeadersInjector().inject("new", forKey: "traceparent", into: &headers)
        RabbitMQHeadersInjector().inject("vendor=1", forKey: "tracestate", into: &headers)
        #expect(headers == ["other": .int32(1), "traceparent": .string("new"), "tracestate": .string("vendor=1")])
    }

    @Test func theExtractorReadsStringsAndUTF8BytesOnly() {
        let headers: RabbitMQFieldTable = [
            "string": .string("00-abc"), "bytes": .bytes(Array("00-def".utf8)), "invalid": .bytes([0xFF, 0xFE]),
            "number": .int64(7),
        ]
        let extractor = RabbitMQHeadersExtractor()
        #expect(extractor.extract(key: "string", from: headers) == "00-abc")
        #expect(extractor.extract(key: "bytes", from: headers) == "00-def")
        #expect(extractor.extract(key: "invalid", from: headers) == nil)
        #expect(extractor.extract(key: "number", from: headers) == nil)
        #expect(extractor.extract(key: "missing", from: headers) == nil)
    }

    @Test func aContextSurvivesTheRoundTripThroughHeaders() {
        var context = ServiceContext.topLevel
        context[EchoInstrument.Key.self] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        var headers: RabbitMQFieldTable = [:]
        EchoInstrument().inject(context, into: &headers, using: RabbitMQHeadersInjector())
        let extracted = Self.delivery(headers: headers).extractServiceContext(using: EchoInstrument())
        #expect(extracted[EchoInstrument.Key.self] == context[EchoInstrument.Key.self])
    }

    @Test func aDeliveryWithoutHeadersLeavesTheContextAsItWas() {
        var base = ServiceContext.topLevel
        base[EchoInstrument.Key.self] = "kept"
        #expect(Self.delivery(headers: nil).extractServiceContext(using: EchoInstrument(), into: base)[EchoInstrument.Key.self] == "kept")
        #expect(Self.delivery(headers: [:]).extractServiceContext(using: EchoInstrument()).isEmpty)
    }

    @Test func destinationNamesFollowTheRabbitMQConventions() {
        #expect(MessagingAttributes.destination(exchange: "orders", routingKey: "eu") == "orders:eu")
        #expect(MessagingAttributes.destination(exchange: "", routingKey: "jobs") == "jobs")
        #expect(MessagingAttributes.destination(exchange: "fanout", routingKey: "") == "fanout")
        #expect(MessagingAttributes.destination(exchange: "", routingKey: "") == "amq.default")
        #expect(MessagingAttributes.destination(exchange: "orders", routingKey: "eu", queue: "eu-q") == "orders:eu:eu-q")
        #expect(MessagingAttributes.exchangeName("") == "amq.default")
    }
}

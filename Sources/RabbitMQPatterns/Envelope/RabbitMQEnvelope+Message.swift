import Foundation
import RabbitMQ

extension RabbitMQEnvelope {
    /// The envelope as UTF-8 JSON, the body it is published with: the six keys in their
    /// documented order, then the keys of `data` and `metadata` sorted, so that an envelope
    /// always encodes to the same bytes.
    ///
    /// - Throws: ``RabbitMQPatternsError`` (`invalidEnvelope`) for what decoding would refuse:
    ///   an empty type, a timestamp outside the years 1 to 9999, a payload or metadata number
    ///   that is not finite (`Double.nan`).
    public func encodedBody() throws(RabbitMQPatternsError) -> [UInt8] {
        let encoder = EnvelopeJSON.encoder()
        do {
            try validateForEncoding(codingPath: [])
        } catch {
            throw EnvelopeJSON.patternsError(error)
        }
        // Foundation's encoder does not keep the order of keys, so the top level is written here.
        func encode(_ value: some Encodable, at field: String) throws(RabbitMQPatternsError) -> Data {
            do {
                return try encoder.encode(value)
            } catch {
                throw EnvelopeJSON.patternsError(error, under: field)
            }
        }
        var body: [UInt8] = []
        for (key, value) in [
            ("id", try encode(id.uuidString.lowercased(), at: "id")),
            ("timestamp", try encode(EnvelopeTimestamp.format(timestamp), at: "timestamp")),
            ("version", try encode(version, at: "version")),
            ("type", try encode(type, at: "type")),
            ("data", try encode(data, at: "data")),
            ("metadata", try encode(metadata, at: "metadata")),
        ] {
            body.append(body.isEmpty ? UInt8(ascii: "{") : UInt8(ascii: ","))
            body += Array("\"\(key)\":".utf8)
            body += value
        }
        body.append(UInt8(ascii: "}"))
        return body
    }

    /// Decodes and validates an envelope from a message body.
    ///
    /// - Throws: ``RabbitMQPatternsError`` (`invalidEnvelope`) naming the missing or
    ///   mistyped field (`nil` when the body is not JSON at all).
    public init(decoding body: [UInt8]) throws(RabbitMQPatternsError) {
        do {
            self = try EnvelopeJSON.decoder().decode(Self.self, from: Data(body))
        } catch {
            throw EnvelopeJSON.patternsError(error)
        }
    }

    /// The AMQP properties an envelope is published with: content type `application/json`,
    /// encoding `utf-8`, message-id = ``id``, type = ``type``, timestamp, correlation-id =
    /// metadata `correlation_id`, app-id = metadata `source`.
    ///
    /// - Parameters:
    ///   - persistent: Delivery mode persistent (written to disk on durable queues). Default: true.
    ///   - headers: Application headers to add. Default: none.
    public func properties(persistent: Bool = true, headers: RabbitMQFieldTable? = nil) -> RabbitMQProperties {
        RabbitMQProperties(
            contentType: "application/json", contentEncoding: "utf-8", headers: headers,
            deliveryMode: persistent ? .persistent : .transient, correlationID: metadata.correlationID,
            messageID: id.uuidString.lowercased(), timestamp: Self.amqpTimestamp(timestamp), type: type,
            appID: metadata.source)
    }

    /// The AMQP timestamp property (whole seconds since 1970) of `date`: 0 before 1970 or for
    /// a date that is not a number, never a trap.
    static func amqpTimestamp(_ date: Date) -> UInt64 {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        guard seconds.isFinite, seconds > 0 else { return 0 }
        return seconds < 1.8e19 ? UInt64(seconds) : .max
    }
}

import Foundation
import RabbitMQ
import RabbitMQPatterns

/// What `rmq publish` sends for each body: the properties from the flags and, with
/// `--envelope`, the body wrapped as an envelope's data.
struct MessageTemplate: Sendable {
    var properties: RabbitMQProperties
    var envelopeType: String?

    func message(from body: [UInt8], line: Int?) throws -> OutgoingMessage {
        guard let envelopeType else { return OutgoingMessage(body: body, properties: properties) }
        let place = line.map { "line \($0) " } ?? "the body "
        guard let text = String(validating: body, as: UTF8.self) else {
            throw CLIError("--envelope: \(place)is not UTF-8")
        }
        let data: JSONValue
        do {
            data = try JSONParser.parse(text)
        } catch {
            throw CLIError("--envelope: \(place)is not valid JSON: \(error)")
        }
        let metadata = RabbitMQEnvelopeMetadata(source: properties.appID, correlationID: properties.correlationID)
        var envelope = RabbitMQEnvelope(type: envelopeType, data: data, metadata: metadata)
        if let id = properties.messageID, let uuid = UUID(uuidString: id) { envelope.id = uuid }
        // Envelope properties first, then whatever the flags set explicitly.
        var merged = envelope.properties(persistent: true, headers: properties.headers)
        if let contentType = properties.contentType { merged.contentType = contentType }
        if let deliveryMode = properties.deliveryMode { merged.deliveryMode = deliveryMode }
        merged.replyTo = properties.replyTo
        merged.expiration = properties.expiration
        return OutgoingMessage(body: try envelope.encodedBody(), properties: merged)
    }
}
